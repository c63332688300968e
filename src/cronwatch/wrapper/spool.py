"""The spool: runs that could not be written to the database wait here as files.

Each run is one JSON file, written atomically (temporary file + rename), named by its run
id so replaying is idempotent (the store ignores ids it already has). The first writable
of these directories is used; all of them are replayed:

1. ``<database>.spool/`` beside the database (not for a server URL such as postgresql://);
2. ``$XDG_STATE_HOME/cronwatch/spool/<hash of the database path>/``;
3. ``$TMPDIR/cronwatch-<uid>/spool/<hash>/``.

Every wrapped run checks for spooled runs, so that check avoids imports and hashing
unless a spool directory exists; ``json`` and ``base64`` are imported only to write or read
a spooled run.
"""

from __future__ import annotations

import os

from cronwatch.system import ours_alone, private_dirs

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from collections.abc import Iterator

    from cronwatch.core.model import Run


def _target(db_path: str) -> tuple[str, bool]:
    """(what identifies the database, whether it is a local file)."""
    if db_path.startswith("sqlite://"):
        db_path = db_path[len("sqlite://") :]
    elif "://" in db_path:  # a database server: nothing to put a directory beside
        return db_path, False
    return os.path.abspath(os.path.expanduser(db_path)), True


def _fallback_bases() -> list[str]:
    """The parents of the per-database fallback directories."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    env = os.environ
    tmp = env.get("TMPDIR") or env.get("TEMP") or env.get("TMP") or "/tmp"
    ours = os.path.join(tmp, f"cronwatch-{os.getuid()}")
    bases = [os.path.join(state, "cronwatch", "spool")]
    if ours_alone(ours):
        bases.append(os.path.join(ours, "spool"))
    return bases


def spool_dirs(db_path: str) -> list[str]:
    import hashlib

    target, local = _target(db_path)
    digest = hashlib.sha1(target.encode()).hexdigest()[:16]
    beside = [target + ".spool"] if local else []
    return beside + [os.path.join(base, digest) for base in _fallback_bases()]


def encode_run(run: Run) -> dict[str, object]:
    import base64

    d = run.to_dict(output=False)
    # Output is binary: keep it exactly.
    for key in ("stdout", "stderr"):
        value = getattr(run, key)
        d[key + "_b64"] = None if value is None else base64.b64encode(value).decode()
    d["merged"] = run.merged
    return d


def decode_run(d: dict[str, object]) -> Run:
    import base64

    from cronwatch.core.model import Run

    run = Run.from_dict(d)
    for key in ("stdout", "stderr"):
        value = d.get(key + "_b64")
        setattr(run, key, None if value is None else base64.b64decode(str(value)))
    run.source = str(d.get("source") or run.source)
    return run


def spool_run(db_path: str, run: Run, *, owner: str | None = None) -> str:
    """Write ``run`` to the first writable spool directory; return the file's path.

    ``owner``: an open run's (its wrapper's process token, ``record_run``'s owner), spooled
    as ``ID.open.json`` beside its end's ``ID.json``: replayed in either order, the end
    wins (``record_run`` does not reopen a finished run)."""
    import json
    import tempfile

    record = encode_run(run)
    if owner is not None:
        record["owner"] = owner
    data = json.dumps(record).encode()
    errors = []
    for d in spool_dirs(db_path):
        try:
            private_dirs(d)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")  # 0600
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            path = os.path.join(d, f"{run.id}{'.open' if owner is not None else ''}.json")
            os.replace(tmp, path)
            return path
        except OSError as e:
            errors.append(f"{d}: {e.strerror or e}")
    raise OSError("no writable spool directory (" + "; ".join(errors) + ")")


def spooled(db_path: str) -> Iterator[tuple[str, Run | None, str | None]]:
    """(path, run, owner) for every spooled file, oldest first; run is None if the file is
    unreadable; owner is an open run's (see spool_run), else None."""
    import json

    entries = []
    for d in spool_dirs(db_path):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.endswith(".json") and not name.startswith(".tmp-"):
                entries.append(os.path.join(d, name))
    entries.sort(key=os.path.basename)  # run ids are time-ordered
    for path in entries:
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read())
            owner = record.get("owner")
            yield path, decode_run(record), None if owner is None else str(owner)
        except (OSError, ValueError, TypeError, AttributeError):
            yield path, None, None


def _has_files(d: str) -> bool:
    try:
        return any(n.endswith(".json") and not n.startswith(".tmp-") for n in os.listdir(d))
    except OSError:
        return False


def has_spooled(db_path: str) -> bool:
    target, local = _target(db_path)
    if local and _has_files(target + ".spool"):
        return True
    if not any(os.path.isdir(base) for base in _fallback_bases()):
        return False  # the common case: no hashing needed
    return any(_has_files(d) for d in spool_dirs(db_path))


def replay(store: object, db_path: str, now: float) -> int:
    """Merge spooled runs into ``store``; delete each file once its run is committed.

    A spooled run closes its open record if the wrapper made one (even one that `check`
    has meanwhile closed as abandoned: the real outcome wins), and is left pending its
    evaluation: it was spooled because the database could not be used, so nothing has
    evaluated it yet."""
    merged = 0
    for path, run, owner in spooled(db_path):
        if run is None:
            # Keep unreadable files aside rather than deleting data we do not understand.
            try:
                os.replace(path, path + ".bad")
            except OSError:
                pass
            continue
        if owner is not None:  # an open run: on record as running, its wrapper its owner
            store.record_run(run, now=now, owner=owner)  # type: ignore[attr-defined]
        else:
            store.record_run(run, now=now, pending=True)  # type: ignore[attr-defined]
        try:
            os.unlink(path)
        except OSError:
            pass
        merged += 1
    return merged
