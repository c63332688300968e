"""The outbox: pings that could not be delivered wait here, one file each, until they can.

A file's name (nanosecond clock, process id, sequence number) sorts in the order the pings
were queued; each is written atomically (temporary file, fsync, rename, fsync of the
directory) and deleted only after the server answered 2xx. A ping the server refuses for
good (400, 404 unknown key, ...) is kept aside as ``NAME.failed`` with a warning, never
deleted silently. Replay goes in order and stops sending to a server at its first failure,
so one server's pings are never reordered; the server deduplicates by run id, so a ping
sent twice (we died between its 2xx and the delete) still counts once. An flock on
``.lock`` keeps two flushers from sending the same files at once.

Directories, the first writable one used, all flushed: ``$XDG_STATE_HOME/cronwatch/outbox/``
and ``$TMPDIR/cronwatch-<uid>/outbox/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from cronwatch.remote.ping import PERMANENT, BadServer, Ping, send
from cronwatch.remote.transport import DEFAULT_TIMEOUT, Transport
from cronwatch.system import ours_alone, private_dirs, state_dir

_SUFFIX = ".ping"
_last_ns = 0
_seq = 0


def dirs() -> list[str]:
    tmp = os.environ.get("TMPDIR") or "/tmp"
    ours = os.path.join(tmp, f"cronwatch-{os.getuid()}")
    return [os.path.join(state_dir(), "outbox")] + (
        [os.path.join(ours, "outbox")] if ours_alone(ours) else []
    )


def directory() -> str:
    """The outbox directory new pings go to (for messages)."""
    for d in dirs():
        if os.path.isdir(d) and os.access(d, os.W_OK):
            return d
    return dirs()[0]


def _name() -> str:
    global _last_ns, _seq
    _last_ns = max(_last_ns + 1, time.time_ns())  # never backwards within a process
    _seq += 1
    return f"{_last_ns:020d}-{os.getpid():07d}-{_seq:06d}"


def spool(p: Ping, *, failed: bool = False) -> str:
    """Write ``p`` to the outbox (or aside, as refused, with ``failed``); return the path."""
    data = p.to_json()
    errors = []
    name = _name() + _SUFFIX + (".failed" if failed else "")
    for d in dirs():
        try:
            private_dirs(d)
            tmp = os.path.join(d, f".tmp-{name}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            path = os.path.join(d, name)
            os.replace(tmp, path)
            _fsync_dir(d)
            return path
        except OSError as e:
            errors.append(f"{d}: {e.strerror or e}")
    raise OSError("no writable outbox directory (" + "; ".join(errors) + ")")


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def entries() -> list[str]:
    """Paths of the pings waiting, in the order they are to be sent."""
    found: list[str] = []
    for d in dirs():
        try:
            names = os.listdir(d)
        except OSError:
            continue
        found.extend(os.path.join(d, n) for n in names if n.endswith(_SUFFIX) and n[0] != ".")
    found.sort(key=os.path.basename)
    return found


def has_pending() -> bool:
    for d in dirs():
        try:
            if any(n.endswith(_SUFFIX) and n[0] != "." for n in os.listdir(d)):
                return True
        except OSError:
            continue
    return False


def load(path: str) -> Ping | None:
    try:
        with open(path, "rb") as f:
            return Ping.from_json(f.read())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def waiting_for(origin: str) -> bool:
    """Whether a ping to this server (scheme://host:port) is still waiting."""
    return any((p := load(path)) is not None and p.origin == origin for path in entries())


@dataclass
class FlushResult:
    delivered: int = 0
    refused: int = 0
    pending: int = 0
    busy: bool = False  # another process is flushing
    errors: dict[str, str] = field(default_factory=dict)  # origin -> why it was skipped


@contextmanager
def _locked(deadline: float | None) -> Iterator[bool]:
    import fcntl

    fd = -1
    for d in dirs():
        try:
            private_dirs(d)
            fd = os.open(os.path.join(d, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            break
        except OSError:
            continue
    if fd < 0:
        yield True  # nowhere to lock: nothing can be spooled either
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.02)
        yield True
    finally:
        os.close(fd)  # releases the lock


def flush(
    *, transport: Transport | None = None, timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None, origin: str | None = None,
) -> FlushResult:  # fmt: skip
    """Deliver the waiting pings in order, each within ``timeout``, all before ``deadline``;
    only those to ``origin`` (scheme://host:port) if given."""
    r = FlushResult()
    with _locked(deadline) as got:
        if not got:
            r.busy = True
        else:
            _flush(r, transport, timeout, deadline, origin)
    r.pending = len(entries())
    return r


def _flush(
    r: FlushResult, transport: Transport | None, timeout: float, deadline: float | None,
    only: str | None,
) -> None:  # fmt: skip
    progress = True
    while progress:  # again after progress: pings queued meanwhile go too
        progress = False
        for path in entries():
            if deadline is not None and time.monotonic() >= deadline:
                return
            p = load(path)
            if p is None:
                if os.path.exists(path):  # unreadable: keep it aside, never delete data
                    _aside(path, ".bad")
                continue
            if p.origin in r.errors or (only is not None and p.origin != only):
                continue  # that server is away: its later pings wait, in order
            try:
                status = send(p, transport=transport, timeout=timeout, deadline=deadline)
            except BadServer:
                status = 400  # can never work: aside with the refused ones
            except Exception as e:
                r.errors[p.origin] = _why(e)
                continue
            if 200 <= status < 300:
                _unlink(path)
                r.delivered += 1
                progress = True
            elif status in PERMANENT:
                _aside(path, ".failed")
                r.refused += 1
                progress = True
            else:  # 5xx, 429, 408: try again later
                r.errors[p.origin] = f"HTTP {status}"


def _unlink(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)


def _aside(path: str, suffix: str) -> None:
    with suppress(OSError):
        os.replace(path, path + suffix)


def _why(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # urllib's URLError wraps the OSError
    e = reason if isinstance(reason, BaseException) else e
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def submit(
    p: Ping, *, transport: Transport | None = None, timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None, keep: bool = True,
) -> tuple[str, str]:  # fmt: skip
    """Send ``p`` now, after whatever waits for its server; queue it when that fails.

    Returns (outcome, detail): ``sent``; ``spooled`` (in the outbox now); ``queued`` (not
    sent and, with ``keep=False``, left to the caller); ``rejected`` (refused for good, kept
    aside as .failed when ``keep``). Never waits past ``deadline`` (default: now + timeout).
    """
    deadline = time.monotonic() + timeout if deadline is None else deadline
    detail = ""
    if has_pending():  # only this server's: one that is gone must not hold up the others
        r = flush(transport=transport, timeout=timeout, deadline=deadline, origin=p.origin)
        detail = r.errors.get(p.origin, "another flush is running" if r.busy else "")
        if r.pending and waiting_for(p.origin):
            if keep:
                spool(p)
                return "spooled", detail or "older pings are still waiting"
            return "queued", detail
    try:
        status = send(p, transport=transport, timeout=timeout, deadline=deadline)
    except BadServer as e:
        if keep:
            spool(p, failed=True)
        return "rejected", str(e)
    except Exception as e:
        if keep:
            spool(p)
            return "spooled", _why(e)
        return "failed", _why(e)
    if 200 <= status < 300:
        return "sent", ""
    if status in PERMANENT:
        if keep:
            spool(p, failed=True)
        return "rejected", f"HTTP {status}"
    if keep:
        spool(p)
        return "spooled", f"HTTP {status}"
    return "failed", f"HTTP {status}"
