"""The wrapper: spawn the child first, tee its output, keep a capped capture, pass its exit on.

Only ``os`` and ``sys`` are imported before the child starts, so the job never waits for
our imports, the database or the dashboard. Everything slow happens after it exits.
"""

from __future__ import annotations

import os
import sys

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
DEFAULT_MAX_OUTPUT = 1 << 20  # per stream
KILL_GRACE = 5.0


class Usage(Exception):
    """A usage error in the run command line: message, exit 2, nothing run."""


def name_ok(name: str) -> bool:
    return 1 <= len(name) <= 64 and name[0] not in "-_." and all(c in _NAME_CHARS for c in name)


def parse_size(text: str) -> int:
    s = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = 1
    if s and s[-1] in "kmg":
        mult = {"k": 1024, "m": 1024**2, "g": 1024**3}[s[-1]]
        s = s[:-1]
    try:
        value = int(float(s) * mult)
    except ValueError:
        raise Usage(f"invalid size {text!r}: expected bytes such as 65536, 512k or 1M") from None
    if value < 0:
        raise Usage(f"invalid size {text!r}: must not be negative")
    return value


def parse_duration_fast(text: str) -> float:
    # Same grammar as _utils.parse_duration, kept import-free for the pre-spawn path.
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    s = text.strip().lower()
    try:
        return float(s)
    except ValueError:
        pass
    total, num = 0.0, ""
    i = 0
    while i < len(s):
        c = s[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = "ms" if s.startswith("ms", i) else c
        if not num or unit not in units:
            raise Usage(f"invalid duration {text!r}: expected a duration such as 90s, 15m, 24h, 7d or 2w")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num or not s:
        raise Usage(f"invalid duration {text!r}: expected a duration such as 90s, 15m, 24h, 7d or 2w")
    return total


class Options:
    """Options of ``run`` (and the ``--name`` form), parsed without argparse."""

    def __init__(self) -> None:
        self.name = ""
        self.command: list[str] = []
        self.db: str | None = None
        self.capture = True
        self.max_output = DEFAULT_MAX_OUTPUT
        self.timeout: float | None = None
        self.kill_grace = KILL_GRACE
        self.dashboard: str | None = None
        self.no_dashboard = False
        self.env = ""
        self.server: str | None = None
        self.key: str | None = None
        self.local = True
        self.config: str | None = None


_VALUED = {"--db", "--max-output", "--timeout", "--kill-grace", "--dashboard", "--env",
           "--server", "--key", "--config", "--name"}  # fmt: skip
_FLAGS = {"--no-capture", "--capture", "--capture-output", "--no-dashboard", "--no-local"}


def parse_run_args(args: list[str], *, name_form: bool) -> Options:
    """Parse ``NAME [options] -- CMD...`` (run form) or ``--name NAME [options] CMD...``."""
    o = Options()
    i = 0
    if not name_form:
        if not args or args[0].startswith("-") and args[0] != "-":
            if args and args[0] == "--":
                raise Usage("no job name given: cronwatch run NAME -- CMD [ARGS...]")
            if not args:
                raise Usage("no job name given: cronwatch run NAME -- CMD [ARGS...]")
        o.name = args[0] if args and not args[0].startswith("-") else ""
        i = 1 if o.name else 0
    saw_dashdash = False
    while i < len(args):
        a = args[i]
        if a == "--":
            saw_dashdash = True
            o.command = args[i + 1 :]
            break
        if not a.startswith("--") or a == "-":
            if name_form:
                o.command = args[i:]
                break
            raise Usage("no command given: put it after --, as in: cronwatch run NAME -- CMD [ARGS...]")
        key, eq, val = a.partition("=")
        if key in _VALUED:
            if not eq:
                i += 1
                if i >= len(args):
                    raise Usage(f"option {key} needs a value")
                val = args[i]
            _apply(o, key, val)
        elif key in _FLAGS and not eq:
            _apply(o, key, "")
        else:
            raise Usage(f"unknown option {a!r} (see cronwatch run --help)")
        i += 1
    if not o.name:
        raise Usage("no job name given: cronwatch run NAME -- CMD [ARGS...]")
    if not name_ok(o.name):
        raise Usage(
            f"invalid job name {o.name!r}: a job name is 1-64 characters of a-z, 0-9, "
            "'-', '_' and '.', starting with a letter or digit"
        )
    if not o.command:
        if name_form or saw_dashdash:
            raise Usage("no command given: put the command after the options, e.g. "
                        "cronwatch --name NAME CMD [ARGS...]" if name_form else
                        "no command given: put it after --")  # fmt: skip
        raise Usage("no command given: put it after --")
    return o


def _apply(o: Options, key: str, val: str) -> None:
    if key == "--db":
        o.db = val
    elif key == "--name":
        o.name = val
    elif key == "--max-output":
        o.max_output = parse_size(val)
    elif key == "--timeout":
        o.timeout = parse_duration_fast(val)
        if o.timeout <= 0:
            raise Usage("--timeout must be positive")
    elif key == "--kill-grace":
        o.kill_grace = parse_duration_fast(val)
    elif key == "--dashboard":
        o.dashboard = val
    elif key == "--env":
        o.env = val
    elif key == "--server":
        o.server = val
    elif key == "--key":
        o.key = val
    elif key == "--config":
        o.config = val
    elif key == "--no-capture":
        o.capture = False
    elif key in ("--capture", "--capture-output"):
        o.capture = True
    elif key == "--no-dashboard":
        o.no_dashboard = True
    elif key == "--no-local":
        o.local = False


class _Capture:
    """Keep at most ``limit`` bytes of a stream: the head and a rolling tail."""

    __slots__ = ("limit", "head", "tail", "tail_len", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail: list[bytes] = []
        self.tail_len = 0
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
            if not data:
                return
        keep = self.limit - self.limit // 2
        if keep <= 0:
            return
        self.tail.append(data)
        self.tail_len += len(data)
        while self.tail_len - len(self.tail[0]) >= keep:
            self.tail_len -= len(self.tail.pop(0))

    def value(self) -> bytes:
        tail = b"".join(self.tail)
        keep = self.limit - self.limit // 2
        if len(tail) > keep:
            tail = tail[len(tail) - keep :]
        cut = self.total - len(self.head) - len(tail)
        if cut <= 0:
            return bytes(self.head) + tail
        return bytes(self.head) + b"\n[... cronwatch: %d bytes cut ...]\n" % cut + tail


class NotStarted(Exception):
    """Our own failure before the child was spawned: the command has not run."""


class Result:
    def __init__(self) -> None:
        self.started_at = 0.0
        self.ended_at = 0.0
        self.duration = 0.0
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.timed_out = False
        self.spawn_error = ""
        self.stdout: bytes | None = None
        self.stderr: bytes | None = None
        self.wrapper_exit = 0
        self.internal_error = ""


def _write_all(fd: int, data: bytes | memoryview) -> bool:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        except OSError:  # our stdout is gone (EPIPE, closed): keep capturing, stop teeing
            return False
        view = view[n:]
    return True


def _prepare(
    capture: bool, fds: dict[int, int], actions: list[tuple[int, ...]], child_ends: list[int]
) -> None:
    """Make a pipe (or a pty, if our stream is a terminal) for each captured stream."""
    if not capture:
        return
    for target in (1, 2):
        try:
            tty = os.isatty(target)
        except OSError:
            tty = False
        if tty:  # a terminal stays a terminal: give the child a pty of its own
            r, w = os.openpty()
        else:
            r, w = os.pipe()
            try:
                import fcntl

                fcntl.fcntl(r, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer wake-ups per GiB
            except OSError:
                pass
        fds[r] = target
        child_ends.append(w)
        actions.append((os.POSIX_SPAWN_DUP2, w, target))
    for fd in list(fds) + child_ends:
        actions.append((os.POSIX_SPAWN_CLOSE, fd))


def execute(o: Options) -> Result:
    """Run the command. Returns when it has exited and its output is drained.

    Raises NotStarted only if our own set-up failed before the command was spawned.
    """
    import time

    res = Result()
    res.started_at = time.time()
    t0 = time.monotonic()
    fds: dict[int, int] = {}  # read end -> our fd (1 or 2)
    actions: list[tuple[int, ...]] = []
    child_ends: list[int] = []
    try:
        _prepare(o.capture, fds, actions, child_ends)
    except Exception as e:
        raise NotStarted(str(e)) from e
    try:
        import signal

        # Python ignores SIGPIPE (and SIGXFSZ); a shell-started job would not, so reset them.
        pid = os.posix_spawnp(
            o.command[0],
            o.command,
            os.environ,
            file_actions=actions or None,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError as e:
        import errno

        for fd in list(fds) + child_ends:
            os.close(fd)
        res.exit_code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        reason = "command not found" if res.exit_code == 127 else (e.strerror or str(e))
        res.spawn_error = f"{o.command[0]}: {reason}"
        res.ended_at = time.time()
        res.duration = time.monotonic() - t0
        res.wrapper_exit = res.exit_code
        if o.capture:
            res.stdout, res.stderr = b"", f"cronwatch: {res.spawn_error}\n".encode()
        return res
    except Exception as e:
        raise NotStarted(str(e)) from e
    for w in child_ends:
        os.close(w)
    try:
        status = _supervise(o, res, pid, fds, t0)
    except Exception as e:  # our bug: never strand the child; pass its output and exit on
        res.internal_error = f"{type(e).__name__}: {e}"
        status = _drain_plain(pid, fds)
    res.ended_at = time.time()
    res.duration = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        res.signal = -code
        res.wrapper_exit = 128 - code
    else:
        res.exit_code = code
        res.wrapper_exit = code
    return res


def _supervise(o: Options, res: Result, pid: int, fds: dict[int, int], t0: float) -> int:
    import select
    import signal
    import time

    def forward(signum: int, _frame: object = None) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    caps = {r: _Capture(o.max_output) for r in fds}
    poller = select.poll()
    for r in fds:
        poller.register(r, select.POLLIN | select.POLLHUP | select.POLLERR)
    try:
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        pidfd = -1  # no pidfd: poll waitpid every 50 ms
    deadline = None if o.timeout is None else t0 + o.timeout
    kill_at: float | None = None
    status: int | None = None
    exited_at = 0.0
    tee_ok = {1: True, 2: True}
    open_fds = set(fds)
    read = os.read
    while open_fds or status is None:
        now = time.monotonic()
        waits: list[float] = []
        if status is None:
            if pidfd == -1:
                waits.append(0.05)
            if deadline is not None:
                if not res.timed_out and now >= deadline:
                    res.timed_out = True
                    forward(signal.SIGTERM)
                    kill_at = now + o.kill_grace
                if kill_at is not None and now >= kill_at:
                    forward(signal.SIGKILL)
                    kill_at = None
                if not res.timed_out:
                    waits.append(deadline - now)
                elif kill_at is not None:
                    waits.append(kill_at - now)
        else:
            # The child is gone but a grandchild may still hold the pipes open:
            # take what is there, then stop waiting after a short grace.
            left = exited_at + 0.2 - now
            if left <= 0:
                break
            waits.append(left)
        events = poller.poll(None if not waits else max(0.0, min(waits)) * 1000)
        for fd, _ev in events:
            if fd == pidfd:
                poller.unregister(pidfd)
                os.close(pidfd)
                pidfd = -2
                continue
            try:
                data = read(fd, 1 << 20)
            except OSError:  # EIO from a pty whose slave side closed
                data = b""
            if not data:
                poller.unregister(fd)
                os.close(fd)
                open_fds.discard(fd)
                continue
            caps[fd].add(data)
            target = fds[fd]
            if tee_ok[target]:
                tee_ok[target] = _write_all(target, data)
        if status is None and pidfd < 0:
            wpid, st = os.waitpid(pid, 0 if pidfd == -2 else os.WNOHANG)
            if wpid:
                status = st
                exited_at = time.monotonic()
    for fd in open_fds:
        poller.unregister(fd)
        os.close(fd)
    for name in FORWARDED:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    if o.capture:
        by_target = {fds[r]: caps[r].value() for r in fds}
        res.stdout, res.stderr = by_target.get(1, b""), by_target.get(2, b"")
    assert status is not None
    return status


def _drain_plain(pid: int, fds: dict[int, int]) -> int:
    import select

    open_fds = set(fds)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 0.5)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                _write_all(fds[fd], data)
            else:
                open_fds.discard(fd)
    return os.waitpid(pid, 0)[1]


def main(args: list[str], *, name_form: bool) -> int:
    """Entry point of ``cronwatch run`` and ``cronwatch --name``. Returns the exit code."""
    try:
        o = parse_run_args(args, name_form=name_form)
    except Usage as e:
        sys.stderr.write(f"cronwatch: {e}\n")
        return 2
    try:
        res = execute(o)
    except NotStarted as e:  # our own failure before the child ran: run it anyway
        sys.stderr.write(f"cronwatch: warning: wrapper failed ({e}); running the command unwrapped\n")
        sys.stderr.flush()
        try:
            os.execvp(o.command[0], o.command)
        except OSError:
            return 127
    if res.spawn_error:
        sys.stderr.write(f"cronwatch: {res.spawn_error}\n")
    if res.internal_error:
        sys.stderr.write(f"cronwatch: warning: output capture failed ({res.internal_error})\n")
    try:
        from .record import after_run

        after_run(o, res)
    except Exception as e:  # never let our failure change the job's outcome
        try:
            sys.stderr.write(f"cronwatch: warning: could not record the run: {e}\n")
        except Exception:
            pass
    return res.wrapper_exit
