"""Zero-copy pass-through of bulk output (Linux ``tee(2)`` and ``splice(2)``).

The wrapper normally reads a job's output into memory, writes it out and keeps the head
and the tail of it (runner.py). For a stream of gigabytes, touching every byte in user
space costs more than the job itself: `head -c 1G /dev/zero` through the wrapper took
~3x as long as through `cat`, and the time was the copies (benchmarks/README.md,
"Pass-through"). Once a stream has passed its captured head, ``TailPipe`` moves it in
the kernel instead: ``tee`` duplicates what the job's pipe holds into a second pipe (page
references, no copy), ``splice`` moves the original to our stdout, and the second pipe,
trimmed to the newest ``keep`` bytes by splicing the excess into /dev/null, is the tail.

Imported only when a stream turns out to be bulk; anything unusual (no ``tee`` in the C
library, a pipe that cannot be made large enough, an output that refuses ``splice``, a
job writing in pieces so small that the tail pipe runs out of slots) raises
``Unavailable`` and the caller goes back to reading, with the tail kept so far.
"""

from __future__ import annotations

import errno
import os
from typing import Any

SPLICE_F_NONBLOCK = 2
_F_SETPIPE_SZ = 1031
_CHUNK = 1 << 20


class Unavailable(Exception):
    """Zero-copy does not work here (or stopped working): read the stream instead."""


def _tee_function() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    tee = libc.tee  # AttributeError without it
    tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    tee.restype = ctypes.c_ssize_t
    return tee


MAX_KEEP = 1 << 19  # a tail pipe holds twice the tail; 1 MiB is the usual pipe-max-size


def splice_target(fd: int) -> bool:
    """Whether ``fd`` (our stdout or stderr) is something ``splice`` writes to: a pipe, a
    regular file, a socket or /dev/null (not a terminal)."""
    import stat

    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
            return True
        return stat.S_ISCHR(mode) and os.fstat(fd).st_rdev == os.stat(os.devnull).st_rdev
    except OSError:
        return False


class TailPipe:
    """The newest ``keep`` bytes of a stream, kept by ``tee`` in a pipe of our own."""

    def __init__(self, keep: int, initial: bytes) -> None:
        if keep > MAX_KEEP:
            raise Unavailable("tail larger than a pipe")
        try:
            self._tee: Any = _tee_function()
        except (OSError, AttributeError, ImportError) as e:
            raise Unavailable(f"no tee(2): {e}") from None
        import fcntl

        self.keep = keep
        self.r, self.w = os.pipe()
        self.null = -1
        try:
            # room for the tail plus a full read of the job's pipe on top of it
            want = max(2 * keep, 1 << 16)
            if fcntl.fcntl(self.w, _F_SETPIPE_SZ, want) < want:
                raise Unavailable("tail pipe too small")
            self.null = os.open(os.devnull, os.O_WRONLY)
            os.set_blocking(self.r, False)
            os.set_blocking(self.w, False)
            view = memoryview(initial[len(initial) - keep :] if keep else b"")
            self.len = len(view)
            while view:
                view = view[os.write(self.w, view) :]
        except (OSError, Unavailable) as e:
            self.close()
            raise Unavailable(str(e)) from None

    def step(self, fd: int, out: int | None) -> int:
        """Move what the job's pipe ``fd`` holds to ``out`` (dropped when None), keeping a
        copy here. Returns the bytes moved, 0 at the end of the stream.

        Raises Unavailable when zero-copy cannot go on (nothing is lost: what was
        duplicated here has gone out too), and the OSError of writing to ``out``
        (BrokenPipeError...) after dropping the rest of that piece, as a write would."""
        if self.len > self.keep:
            self.len -= os.splice(self.r, self.null, self.len - self.keep, flags=SPLICE_F_NONBLOCK)
        n: int = self._tee(fd, self.w, _CHUNK, SPLICE_F_NONBLOCK)  # a ctypes call: c_ssize_t
        if n < 0:
            import ctypes

            err = ctypes.get_errno()
            # The caller polled fd readable, so EAGAIN means this pipe ran out of slots
            # (a pipe holds one page slot per write however small).
            raise Unavailable(f"tee: {os.strerror(err)}")
        if n == 0:
            return 0
        self.len += n
        left = n
        dest = self.null if out is None else out
        while left:
            try:
                left -= os.splice(fd, dest, left)
            except BlockingIOError:
                import select

                select.select([], [dest], [])
            except OSError as e:
                if e.errno == errno.EINVAL and dest != self.null:
                    # our output refuses splice after all: this piece goes by read and
                    # write, and the caller reads from now on
                    self._copy(fd, dest, left)
                    raise Unavailable("output does not take splice") from None
                self._copy(fd, self.null, left)
                raise
        return n

    @staticmethod
    def _copy(fd: int, out: int, n: int) -> None:
        while n > 0:
            data = os.read(fd, n)
            if not data:
                return
            n -= len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]

    def take(self) -> bytes:
        """The kept bytes (the newest ``keep``, or fewer); closes the pipe."""
        os.close(self.w)
        self.w = -1
        chunks = []
        while True:
            try:
                data = os.read(self.r, _CHUNK)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        self.close()
        kept = b"".join(chunks)
        return kept[len(kept) - self.keep :] if self.keep else b""

    def close(self) -> None:
        for fd in (self.r, self.w, self.null):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.r = self.w = self.null = -1
