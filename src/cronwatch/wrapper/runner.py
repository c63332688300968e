"""The wrapper: spawn the child first, tee its output, keep a capped capture, pass its exit on.

Only ``os`` and ``sys`` are imported before the child starts, so the job never waits for
our imports, the database or the dashboard. Everything slow happens after the spawn: the
run's open record on a thread while the child runs (record.on_start), the rest after it
exits.
"""

from __future__ import annotations

import os
import sys

from cronwatch.wrapper.options import (
    FORWARDED,
    NotStarted,
    Options,
    Result,
    Usage,
    parse_run_args,
)

TYPE_CHECKING = False  # no runtime `typing` import before the spawn
if TYPE_CHECKING:
    from typing import Any


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
    try:  # after the spawn: the child never waits for this
        from cronwatch.wrapper.record import on_start

        on_start(o, res)  # the run on record as open; the start ping
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
