"""The wrapper: spawn the child first, tee its output, keep a capped capture, pass its exit on.

Only ``os`` and ``sys`` are imported before the child starts, so the job never waits for
our imports, the database or the dashboard. Everything slow happens after it exits.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # no runtime `typing` import before the spawn
if TYPE_CHECKING:
    from typing import Any

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
    except (ValueError, OverflowError):  # "lots", "nan", "inf"
        raise Usage(f"invalid size {text!r}: expected bytes such as 65536, 512k or 1M") from None
    if value < 0:
        raise Usage(f"invalid size {text!r}: must not be negative")
    return value


def parse_duration_fast(text: str) -> float:
    # Same grammar as _utils.parse_duration, kept import-free for the pre-spawn path.
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    s = text.strip().lower()
    bad = f"invalid duration {text!r}: expected a duration such as 90s, 15m, 24h, 7d or 2w"
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not 0 <= value < float("inf"):  # also rejects nan
            raise Usage(bad)
        return value
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
            raise Usage(bad)
        try:
            total += float(num) * units[unit]
        except ValueError:  # "1.2.3s"
            raise Usage(bad) from None
        num = ""
        i += len(unit)
    if num or not s or total == float("inf"):
        raise Usage(bad)
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
        self.send_output = False
        self.config: str | None = None


VALUED = {"--db", "--max-output", "--timeout", "--kill-grace", "--dashboard", "--env",
           "--server", "--key", "--config", "--name"}  # fmt: skip
_FLAGS = {"--no-capture", "--capture", "--capture-output", "--no-dashboard", "--no-local"}


def remote_wanted(o: Options) -> bool:
    """Whether this run reports to a server (import-free: most runs are local only)."""
    if o.server or o.key or os.environ.get("CRONWATCH_URL") or os.environ.get("CRONWATCH_KEY"):
        return True
    if o.config:
        return True
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.exists(os.path.join(base, "cronwatch", "config.toml"))


def parse_run_args(args: list[str], *, name_form: bool) -> Options:
    """Parse ``NAME [options] -- CMD...`` (run form) or ``--name NAME [options] CMD...``."""
    o = Options()
    i = 0
    saw_dashdash = False
    while i < len(args):
        a = args[i]
        if a == "--":
            saw_dashdash = True
            o.command = args[i + 1 :]
            break
        if not a.startswith("--"):
            if name_form:
                o.command = args[i:]
                break
            if not o.name:  # the first bare word is the job name (options may come first)
                o.name = a
                i += 1
                continue
            raise Usage(
                "no command given: put it after --, as in: cronwatch run NAME -- CMD [ARGS...]"
            )
        key, eq, val = a.partition("=")
        if key in VALUED:
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
    elif key == "--capture":
        o.capture = True
    elif key == "--capture-output":  # remote mode: send the output with the finishing ping
        o.capture = o.send_output = True
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

    def tail_bytes(self) -> bytes:
        """The tail kept so far (the newest bytes after the head, at most its share)."""
        tail = b"".join(self.tail)
        keep = self.limit - self.limit // 2
        return tail[len(tail) - keep :] if len(tail) > keep else tail

    def resume(self, tail: bytes) -> None:
        """The tail is ``tail`` (kept elsewhere meanwhile, see teepipe)."""
        self.tail = [tail] if tail else []
        self.tail_len = len(tail)

    def value(self) -> bytes:
        from cronwatch.core.values import (
            join_capped,  # after the child exited: the import costs no one
        )

        return join_capped(bytes(self.head), self.tail_bytes(), self.total)


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
        self.run_id = ""


def _write_all(fd: int, data: bytes | memoryview) -> bool:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        except BrokenPipeError:  # the caller closes the job's side too
            raise
        except OSError:  # our stdout is unusable (closed, disk full): keep capturing
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
            _mirror_terminal(target, w)
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


def _mirror_terminal(target: int, slave: int) -> None:
    """Give the child's pty our terminal's size, and no output processing of its own:
    our terminal already turns "\\n" into "\\r\\n", so the bytes must pass through as
    written (else the user sees "\\r\\r\\n" and the capture gets "\\r\\n")."""
    import fcntl
    import termios

    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(target, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass
    try:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except (OSError, termios.error):
        pass


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
    import _signal as signal  # the C module: `signal` would import enum and more before the spawn

    forward = _Forwarder()
    try:
        # Block the forwarded signals from before the spawn: one that lands while
        # posix_spawnp returns waits for us instead of killing us and stranding the child.
        forward.block()
        # The child gets our original signal mask and dispositions (an ignored SIGHUP under
        # nohup stays ignored), except that Python ignores SIGPIPE and SIGXFSZ and a
        # shell-started job would not: reset those.
        pid = os.posix_spawnp(
            o.command[0],
            o.command,
            os.environ,
            file_actions=actions or None,
            setsigmask=forward.old_mask or (),
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError as e:
        import errno

        forward.unblock()
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
        forward.unblock()
        raise NotStarted(str(e)) from e
    forward.pid = pid
    for w in child_ends:
        os.close(w)
    if remote_wanted(o):  # after the spawn: the child never waits for this
        try:
            from cronwatch.core.model import new_run_id
            from cronwatch.remote.ping import on_start

            res.run_id = new_run_id(res.started_at)
            on_start(o, res.run_id, res.started_at)
        except Exception:
            pass
    open_fds = set(fds)
    try:
        status = _supervise(o, res, pid, fds, open_fds, forward, t0)
    except Exception as e:  # our bug: never strand the child; pass its output and exit on
        res.internal_error = f"{type(e).__name__}: {e}"
        status = _drain_plain(pid, fds, open_fds, forward)
    finally:
        forward.unblock()
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


_SI_KERNEL = 0x80  # si_code of a signal the kernel sent: the terminal's Ctrl-C, Ctrl-\, hangup


class _Forwarder:
    """Passes SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to us on to the child.

    While the child runs these stay blocked and are collected with sigtimedwait, which says
    who sent each one. The terminal sends Ctrl-C, Ctrl-\\ and hangups to its whole
    foreground process group, so the child (in our group) has that signal already:
    forwarding it would deliver it twice. Everything else (kill, systemd, timeout) is
    forwarded.
    """

    def __init__(self) -> None:
        import _signal as signal  # the C module: `signal` would import enum and more before the spawn

        self.sigs = {getattr(signal, name) for name in FORWARDED}
        self.pid = 0
        self.old_mask: set[int] | None = None

    def block(self) -> None:
        import _signal as signal  # the C module: `signal` would import enum and more before the spawn

        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.sigs)

    def __call__(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def relay(self) -> None:
        """Forward every signal that has arrived since the last call."""
        import _signal as signal  # the C module: `signal` would import enum and more before the spawn

        while self.old_mask is not None:
            info = signal.sigtimedwait(self.sigs, 0)
            if info is None:
                return
            if info.si_code == _SI_KERNEL and self._shares_our_group():
                continue
            self(info.si_signo)

    def _shares_our_group(self) -> bool:
        try:
            return os.getpgid(self.pid) == os.getpgrp()
        except OSError:
            return False

    def unblock(self) -> None:
        """The child is gone: drop what is still pending (moot now) and restore our mask."""
        if self.old_mask is None:
            return
        import _signal as signal  # the C module: `signal` would import enum and more before the spawn

        while signal.sigtimedwait(self.sigs, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
        self.old_mask = None


def _supervise(
    o: Options,
    res: Result,
    pid: int,
    fds: dict[int, int],
    open_fds: set[int],
    forward: _Forwarder,
    t0: float,
) -> int:
    import _signal as signal  # the C module: `signal` would import enum and more before the spawn
    import select
    import time

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
    read = os.read
    zero_copy: dict[int, Any] = {}  # fd -> teepipe.TailPipe once its stream is bulk
    may_zero_copy = hasattr(os, "splice")
    while open_fds or status is None:
        now = time.monotonic()
        waits: list[float] = []
        if status is None:
            forward.relay()
            waits.append(0.05)  # blocked signals cannot wake poll: look for them this often
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
            tail_pipe = zero_copy.get(fd)
            if tail_pipe is not None:  # bulk output: moved in the kernel (teepipe)
                from cronwatch.wrapper.teepipe import Unavailable

                target = fds[fd]
                try:
                    n = tail_pipe.step(fd, target if tee_ok[target] else None)
                except Unavailable:
                    caps[fd].resume(zero_copy.pop(fd).take())  # read from now on
                    may_zero_copy = False
                    continue
                except BrokenPipeError:  # as below
                    tee_ok[target] = False
                    n = 0
                except OSError:
                    tee_ok[target] = False
                    continue
                if n:
                    caps[fd].total += n
                    continue
                caps[fd].resume(zero_copy.pop(fd).take())
                poller.unregister(fd)
                os.close(fd)
                open_fds.discard(fd)
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
            cap = caps[fd]
            cap.add(data)
            target = fds[fd]
            if may_zero_copy and cap.total >= _ZERO_COPY_AFTER and tee_ok[target]:
                may_zero_copy = _start_zero_copy(fd, target, cap, zero_copy)
            if tee_ok[target]:
                try:
                    tee_ok[target] = _write_all(target, data)
                except BrokenPipeError:
                    # Nobody reads our side any more (`cronwatch run x -- yes | head -1`):
                    # the job must see that too, as it would unwrapped, or it writes forever.
                    tee_ok[target] = False
                    poller.unregister(fd)
                    os.close(fd)
                    open_fds.discard(fd)
        if status is None and pidfd < 0:
            wpid, st = os.waitpid(pid, 0 if pidfd == -2 else os.WNOHANG)
            if wpid:
                status = st
                exited_at = time.monotonic()
    for fd, tail_pipe in zero_copy.items():
        caps[fd].resume(tail_pipe.take())
    for fd in list(open_fds):
        poller.unregister(fd)
        os.close(fd)
        open_fds.discard(fd)
    if o.capture:
        by_target = {fds[r]: caps[r].value() for r in fds}
        res.stdout, res.stderr = by_target.get(1, b""), by_target.get(2, b"")
    assert status is not None
    return status


_ZERO_COPY_AFTER = 8 << 20  # bytes of one stream before it may go zero-copy (teepipe)


def _start_zero_copy(fd: int, target: int, cap: _Capture, zero_copy: dict[int, Any]) -> bool:
    """Move the rest of this bulk stream in the kernel, if it can be: the job's side is
    a pipe, ours takes splice, the head is complete. Returns whether to keep trying for
    the other stream."""
    import stat

    if len(cap.head) < cap.limit // 2:
        return True  # a head larger than 8 MiB: wait for it
    try:
        from cronwatch.wrapper.teepipe import TailPipe, Unavailable, splice_target

        if not (stat.S_ISFIFO(os.fstat(fd).st_mode) and splice_target(target)):
            return True
        zero_copy[fd] = TailPipe(cap.limit - cap.limit // 2, cap.tail_bytes())
    except (Unavailable, OSError, ImportError):
        return False
    cap.resume(b"")
    return True


def _drain_plain(pid: int, fds: dict[int, int], open_fds: set[int], forward: _Forwarder) -> int:
    import select

    while open_fds:
        forward.relay()
        ready, _, _ = select.select(list(open_fds), [], [], 0.1)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            try:
                if data:
                    _write_all(fds[fd], data)
                    continue
            except BrokenPipeError:
                pass
            os.close(fd)
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
        sys.stderr.write(
            f"cronwatch: warning: wrapper failed ({e}); running the command unwrapped\n"
        )
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
        from cronwatch.wrapper.record import after_run

        after_run(o, res)
    except Exception as e:  # never let our failure change the job's outcome
        try:
            sys.stderr.write(f"cronwatch: warning: could not record the run: {e}\n")
        except Exception:
            pass
    return res.wrapper_exit
