"""The spool: runs that could not be written to the database wait here as files.

Each run is one JSON file, written atomically (temporary file + rename), named by its run
id so replaying is idempotent (the store ignores ids it already has). The first writable
of these directories is used; all of them are replayed:

1. ``<database>.spool/`` beside the database;
2. ``$XDG_STATE_HOME/cronwatch/spool/<hash of the database path>/``;
3. ``$TMPDIR/cronwatch-<uid>/spool/<hash>/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator

from .models import Run


def spool_dirs(db_path: str) -> list[str]:
    digest = hashlib.sha1(os.path.abspath(db_path).encode()).hexdigest()[:16]
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return [
        os.path.abspath(db_path) + ".spool",
        os.path.join(state, "cronwatch", "spool", digest),
        os.path.join(tempfile.gettempdir(), f"cronwatch-{os.getuid()}", "spool", digest),
    ]


def encode_run(run: Run) -> dict[str, object]:
    d = run.to_dict(output=False)
    # Output is binary: keep it exactly.
    for key in ("stdout", "stderr"):
        value = getattr(run, key)
        d[key + "_b64"] = None if value is None else base64.b64encode(value).decode()
    return d


def decode_run(d: dict[str, object]) -> Run:
    run = Run.from_dict(d)
    for key in ("stdout", "stderr"):
        value = d.get(key + "_b64")
        setattr(run, key, None if value is None else base64.b64decode(str(value)))
    run.source = str(d.get("source") or run.source)
    return run


def spool_run(db_path: str, run: Run) -> str:
    """Write ``run`` to the first writable spool directory; return the file's path."""
    data = json.dumps(encode_run(run)).encode()
    errors = []
    for d in spool_dirs(db_path):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            path = os.path.join(d, f"{run.id}.json")
            os.replace(tmp, path)
            return path
        except OSError as e:
            errors.append(f"{d}: {e.strerror or e}")
    raise OSError("no writable spool directory (" + "; ".join(errors) + ")")


def spooled(db_path: str) -> Iterator[tuple[str, Run | None]]:
    """(path, run) for every spooled file, oldest first; run is None if the file is unreadable."""
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
                yield path, decode_run(json.loads(f.read()))
        except (OSError, ValueError):
            yield path, None


def has_spooled(db_path: str) -> bool:
    for d in spool_dirs(db_path):
        try:
            if any(n.endswith(".json") and not n.startswith(".tmp-") for n in os.listdir(d)):
                return True
        except OSError:
            continue
    return False


def replay(store: object, db_path: str, now: float) -> int:
    """Merge spooled runs into ``store``; delete each file once its run is committed."""
    merged = 0
    for path, run in spooled(db_path):
        if run is None:
            # Keep unreadable files aside rather than deleting data we do not understand.
            try:
                os.replace(path, path + ".bad")
            except OSError:
                pass
            continue
        store.record_runs([run], now=now)  # type: ignore[attr-defined]
        try:
            os.unlink(path)
        except OSError:
            pass
        merged += 1
    return merged
