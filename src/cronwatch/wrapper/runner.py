"""The wrapper: spawn the child first, tee its output, keep a capped capture, pass its exit on.

Only ``os`` and ``sys`` are imported before the child starts, so the job never waits for
our imports, the database or the dashboard. Everything slow happens after the spawn: the
run's open record on a thread while the child runs (record.on_start), the rest after it
exits.

Streams that go to one place (``2>&1``) reach the child as one pipe, so they stay in the
order written; output still written after the job exited (by something it left running)
is passed on by a relay process, so the wrapper exits without waiting for it.
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
    settle_name,
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
) -> bool:
    """Make a pipe (or a pty, if our stream is a terminal) for each captured stream: one
    for both when our stdout and stderr are the same place (see ``_one_place``). Returns
    whether the streams are merged."""
    if not capture:
        return False
    merged = _one_place()
    for target in (1,) if merged else (1, 2):
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
        if merged:
            actions.append((os.POSIX_SPAWN_DUP2, w, 2))
    for fd in list(fds) + child_ends:
        actions.append((os.POSIX_SPAWN_CLOSE, fd))
    return merged


# st_mode file types (the `stat` module is Python code the spawn must not wait for)
_S_IFMT, _S_IFIFO, _S_IFSOCK, _S_IFREG = 0o170000, 0o010000, 0o140000, 0o100000


def _one_place() -> bool:
    """Whether our stdout and stderr reach the same place in an order the job's writes
    decide: then the job gets one pipe for both, so its writes arrive as it made them.

    Two pipes would let the reader see the streams in whatever order it polls them
    (``>f 2>&1`` got "1 3 2 4" for "1 >&2 2 3 >&2 4"). The same place is one open file
    description (``2>&1``), or one pipe, socket or terminal however it was opened, or
    one file both append to (``>>log 2>>log``). Two descriptions of one regular file
    without O_APPEND (``>f 2>f``) each write at their own offset, and /dev/null opened
    twice keeps no order: those stay two streams, captured apart, as before.
    """
    try:
        out, err = os.fstat(1), os.fstat(2)
    except OSError:
        return False
    if (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino):
        return False
    kind = out.st_mode & _S_IFMT
    if kind in (_S_IFIFO, _S_IFSOCK) or os.isatty(1):
        return True
    try:
        import fcntl

        flags_out, flags_err = fcntl.fcntl(1, fcntl.F_GETFL), fcntl.fcntl(2, fcntl.F_GETFL)
        if kind == _S_IFREG and flags_out & flags_err & os.O_APPEND:
            return True
        # One description or two? Flip O_APPEND on fd 1 and see whether fd 2 sees it.
        # (Not the offset: moving a shared offset could misplace a concurrent write; for
        # a file written in sequence through one description the offset is its end, so
        # appending meanwhile writes to the same place.)
        fcntl.fcntl(1, fcntl.F_SETFL, flags_out ^ os.O_APPEND)
        try:
            shared = (fcntl.fcntl(2, fcntl.F_GETFL) ^ flags_err) & os.O_APPEND != 0
        finally:
            fcntl.fcntl(1, fcntl.F_SETFL, flags_out)
        return shared
    except OSError:
        return False


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
        res.merged = _prepare(o.capture, fds, actions, child_ends)
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
            said = f"cronwatch: {res.spawn_error}\n".encode()
            res.stdout, res.stderr = (said, None) if res.merged else (b"", said)
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
    if open_fds:
        # The job is gone but something it started still holds its output open (a
        # daemon, `cmd &`): hand the rest to a relay, so that it keeps its output path
        # and we neither wait for it nor cut it off (SIGPIPE on its next write).
        for fd in open_fds:
            poller.unregister(fd)
        _relay({fd: fds[fd] for fd in open_fds}, tee_ok)
        for fd in list(open_fds):
            os.close(fd)
            open_fds.discard(fd)
    if o.capture:
        by_target = {fds[r]: caps[r].value() for r in fds}
        if res.merged:  # one stream, in the order written: it is the run's stdout
            res.stdout, res.stderr = by_target.get(1, b""), None
        else:
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


def _relay(ends: dict[int, int], tee_ok: dict[int, bool]) -> None:
    """Copy what is still written to ``ends`` (read end -> our fd 1 or 2) in a process of
    its own, until every writer has closed them; we go on without waiting for it.

    A fork, not a new program: it starts in a fraction of an interpreter's start-up and
    runs nothing but os.read/os.write/poll on fds it already has. It copies without
    capturing (the run is recorded as the job left it) and lives exactly as long as the
    job's leftovers write: it ignores the signals a terminal or a service manager sends to
    the whole group (the leftover ignores them too, or it dies and the relay sees EOF),
    because a relay that died first would kill a surviving writer with SIGPIPE. When our
    own reader goes away, the relay closes the pipe so the writer learns it (EPIPE) as it
    would unwrapped; any other failure of our output drops the bytes and keeps draining.
    """
    try:
        pid = os.fork()
    except OSError:
        return  # as before: the leftover loses its output path, the job's run is intact
    if pid:
        return
    try:
        import _signal as signal

        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        # Hold nothing of ours open but what the relay reads and writes (a pipe of the
        # caller's kept open would keep the caller waiting). /proc, not closerange up to
        # the fd limit: without close_range(2) that is one close per possible fd.
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for target in {1, 2} - set(ends.values()):
            os.dup2(os.open(os.devnull, os.O_WRONLY), target)
        try:
            open_fds: Any = [int(name) for name in os.listdir("/proc/self/fd")]
        except OSError:
            open_fds = range(3, 1 << 16)
        for fd in open_fds:
            if fd > 2 and fd not in ends:
                try:
                    os.close(fd)
                except OSError:
                    pass
        _copy_until_eof(ends, dict(tee_ok))
    finally:
        os._exit(0)


def _copy_until_eof(ends: dict[int, int], ok: dict[int, bool]) -> None:
    import select

    poller = select.poll()
    for fd in ends:
        os.set_blocking(fd, True)
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    left = set(ends)
    while left:
        for fd, _ev in poller.poll():
            try:
                data = os.read(fd, 1 << 16)
            except OSError:  # EIO: a pty whose last writer is gone
                data = b""
            target = ends[fd]
            if data and ok[target]:
                try:
                    ok[target] = _write_all(target, data)
                except BrokenPipeError:
                    data = b""  # our reader is gone: the writer gets EPIPE, as unwrapped
            if not data:
                poller.unregister(fd)
                os.close(fd)
                left.discard(fd)


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


def main(args: list[str], *, name_form: bool, own_process: bool = False) -> int:
    """Entry point of ``cronwatch run`` and ``cronwatch --name``. Returns the exit code.

    ``own_process``: a wrapper process of its own (not a call from Python), which the
    post-run step may end early with the job's exit code (record.post_run)."""
    try:
        o = parse_run_args(args, name_form=name_form)
    except Usage as e:
        for w in e.warnings:  # they may explain it (`--timeout CMD`: CMD taken as a value)
            sys.stderr.write(f"cronwatch: warning: {w}\n")
        sys.stderr.write(f"cronwatch: {e}\n")
        return 2
    # Our own usage errors cost a warning line each, never the job: said before it starts.
    for w in [*o.warnings, settle_name(o)]:
        if w:
            sys.stderr.write(f"cronwatch: warning: {w}\n")
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

        after_run(o, res, own_process=own_process)
    except Exception as e:  # never let our failure change the job's outcome
        try:
            sys.stderr.write(f"cronwatch: warning: could not record the run: {e}\n")
        except Exception:
            pass
    return res.wrapper_exit
