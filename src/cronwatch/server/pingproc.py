"""The ping writer process: pings are recorded by a child process with its own GIL.

Why a process: recording a ping (parse, run semantics, alert check, event row, commit)
is Python work. In a thread it competes with the event loop for the one GIL, so every
microsecond spent writing is a microsecond the loop cannot serve HTTP; the ping rate was
bounded by the sum of both. A child process runs on the other core: the HTTP process
only forwards (path, query, body) and sends back the reply it gets. SQLite is made for
this (one writer connection in the child; the server's own connection for the API and
the scheduler waits on the same lock), and a PostgreSQL deployment has the same shape.

The link is a socketpair carrying length-prefixed ``marshal`` frames:
  requests (final, [(seq, path, query bytes, body bytes or None), ...])
  replies  [(seq, status, body bytes, is_json, job, dialect, deliver_now), ...]
The child records the requests of one turn of the server's event loop (streamed to it as
the server reads them, ``_Inbox``) in ONE transaction (group commit,
``ingest.Committer``), and only then writes the replies: an acknowledged ping is
committed. If the HTTP process dies, the child sees EOF and exits; if the child dies,
waiting pings get 503 and the server starts a new one. No ping can make it die: a bad
one fails alone (``ingest.Committer``), and whatever would still escape a batch answers
that batch with 500s (logged) while the child goes on with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from cronwatch.core.errors import CronwatchError, NotFound, StoreError
from cronwatch.server.apply import Applier
from cronwatch.server.ingest import Committer
from cronwatch.server.ping import BadPing, Ping, parse_ping
from cronwatch.store import open_store

log = logging.getLogger("cronwatch.server")
_LEN = struct.Struct("<I")
Reply = tuple[int, int, bytes, bool, str, str, bool]
# At most this many pings a transaction: the replies for one group go back while the
# next group is written, so the server answers HTTP while the child writes (a pipeline).
_CHUNK = 64
# The server sends the pings of a turn of its event loop in frames of this many (see _Inbox).
_STREAM = 8


def reply_for(p: Ping, ok: bool, value: Any) -> tuple[int, bytes, bool, str, bool]:
    """(status, body, is_json, job, deliver_now) for an applied ping: the HTTP answer."""
    if not ok:
        if isinstance(value, NotFound):
            return 404, b"not found", False, "", False
        if isinstance(value, StoreError):
            return 503, str(value).encode(), False, "", False
        if isinstance(value, CronwatchError):
            return 400, str(value).encode(), False, "", False
        return 500, b"internal error", False, "", False
    events = value["events"]
    deliver = bool(events) and any(
        e["type"].startswith(("incident.", "job.recovered")) for e in events
    )
    if p.want_execution:
        body = json.dumps({"execution": value["run"]}).encode()
        return 200, body, True, value["job"], deliver
    if p.want_checkin:
        body = json.dumps({"checkin_id": value["run"]}).encode()
        return 200, body, True, value["job"], deliver
    return 200, b"OK", False, value["job"], deliver


# --- the child ------------------------------------------------------------------------------


def _serve(sock: socket.socket, db: str) -> None:
    store = open_store(db)
    checkpoints = store.writer_maintenance()
    applier = Applier(store.project_ping_key())
    committer = Committer(store, cache=applier)
    link = _Inbox(sock)
    try:
        while link.wait():
            batch = link.take(_CHUNK)
            more = partial(link.more, batch, partial(_flush_some, applier, store))
            try:
                replies = _record(applier, committer, batch, more)
            except Exception:  # never the writer's end: this batch fails, the next may not
                log.exception("a batch of %d pings failed", len(batch))
                applier.discard()
                applier.invalidate()
                replies = [(r[0], 500, b"internal error", False, "", "", False) for r in batch]
            sock.sendall(_frame(replies))  # a frame a commit
            checkpoints.committed()
    finally:
        checkpoints.stop()


class _Inbox:
    """The requests from the server, taken by batches of at most ``_CHUNK``.

    The server sends the pings it reads in one turn of its event loop as they come, a
    frame every ``_STREAM`` pings, the last frame of the turn marked final. ``more(batch,
    flush)`` is called by the writer once it has applied a batch, inside its transaction:
    requests that arrived meanwhile join the batch (up to ``_CHUNK``), and while the turn
    is not over it writes what it has (``flush``) and waits for the rest. So the writer
    applies and inserts a turn's pings while the server is still reading them (it used to
    start when the server had read them all, while the server then waited for it), and
    commits once a turn, when the final frame is in.
    """

    WAIT = 0.05  # seconds to wait for the rest of a turn before committing what is there

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.inbox = bytearray(1 << 18)  # recv into one buffer (a fresh one each time costs)
        self.view = memoryview(self.inbox)
        self.pending: list[tuple[Any, ...]] = []
        self.open = False  # a turn's frames came in, its final frame has not
        self.eof = False

    def _read(self, block: bool) -> bool:
        try:
            n = self.sock.recv_into(self.inbox, 0, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        if not n:
            self.eof = True  # the server closed the link or died
            self.open = False
            return False
        self.buf += self.view[:n]
        for final, requests in _frames(self.buf):
            self.pending.extend(requests)
            self.open = not final
        return True

    def wait(self) -> bool:
        """Block until requests are waiting; False at the end of the link."""
        while not self.pending:
            if self.eof or not self._read(True):
                return bool(self.pending)
        return True

    def take(self, n: int) -> list[tuple[Any, ...]]:
        batch, self.pending = self.pending[:n], self.pending[n:]
        return batch

    def more(
        self, batch: list[tuple[Any, ...]], flush: Callable[[int], None]
    ) -> list[tuple[Any, ...]]:
        """Requests that arrived since, appended to ``batch`` (which stays within ``_CHUNK``),
        waiting for the rest of the server's turn if it is not over."""
        room = _CHUNK - len(batch)
        if room <= 0:
            return []
        if not self.pending and not self.eof:
            self._read(False)
        if self.open:  # the server is still reading this turn's requests: insert the rows
            # applied so far meanwhile, a few frames' worth at a time (each INSERT has a
            # cost of its own), or all of them if there is nothing else to do
            flush(_STREAM * 2 if self.pending else 1)
        while not self.pending and self.open and not self.eof:
            if not select.select([self.sock], [], [], self.WAIT)[0]:
                break  # the server is slow to finish its turn: commit now
            self._read(True)
        new = self.take(room)
        batch.extend(new)
        return new


# (path, query) -> what parse_ping made of it: monitored jobs ping the same URL each time.
# Parsing is pure and a Ping is never changed after it, so one object serves them all.
# Bounded: only short URLs are kept (a job's ping URL is short; a long one is usually a
# client's one-off, or someone filling memory), at most _CACHE_SIZE of them, the oldest
# dropped first.
_parsed: dict[tuple[str, bytes], Ping | Exception | None] = {}
_CACHE_SIZE = 4096
_CACHE_KEY = 512  # bytes of path and query: at most ~2 MB of keys in all
_UNSEEN: Any = object()


def _parse(path: str, query: bytes) -> Ping | Exception | None:
    key = (path, query)
    try:
        return _parsed[key]
    except KeyError:
        pass
    p: Ping | Exception | None
    try:
        p = parse_ping(path, query.decode("latin-1"))
    except (BadPing, ValueError) as e:  # ValueError: parse_qsl's limit on fields
        p = e
    if len(path) + len(query) <= _CACHE_KEY:
        if len(_parsed) >= _CACHE_SIZE:
            del _parsed[next(iter(_parsed))]  # dicts keep insertion order: the oldest
        _parsed[key] = p
    return p


def _record(
    applier: Any,
    committer: Any,
    requests: list[tuple[Any, ...]],
    more: Callable[[], list[tuple[Any, ...]]] | None = None,
) -> list[Reply]:
    """The answers to ``requests``, recorded in one transaction; ``more()`` gives requests
    that arrived meanwhile, to record in the same transaction (their answers follow)."""
    replies: list[Any] = []
    where: list[int] = []  # the index in replies of each ping in items
    items: list[tuple[Ping, bytes | None]] = []
    parsed = _parsed

    def add(requests: list[tuple[Any, ...]]) -> bool:
        n = len(items)
        for request in requests:
            seq, path, query, body = request
            p = parsed.get((path, query), _UNSEEN)
            if p is _UNSEEN:
                p = _parse(path, query)
            if p.__class__ is Ping:
                where.append(len(replies))
                replies.append(request)  # replaced by the answer below
                items.append((p, body))
            elif p is None:
                replies.append((seq, 404, b"not found", False, "", "", False))
            else:
                replies.append((seq, 400, str(p).encode(), False, "", "", False))
        return len(items) > n

    add(requests)
    if items:
        extend = None if more is None else (lambda: add(more()))
        results = committer.commit_each(applier.apply_item, items, extend)
        for i, (p, _body), (ok, value) in zip(where, items, results, strict=True):
            if ok and value.__class__ is tuple:  # a quick ping: its answer
                replies[i] = (replies[i][0], *value)
            else:
                status, out, is_json, job, deliver = reply_for(p, ok, value)
                replies[i] = (replies[i][0], status, out, is_json, job, p.dialect, deliver)
    return replies


def _flush_some(applier: Any, store: Any, rows: int) -> None:
    """Write the writer's buffered rows if there are at least ``rows`` of them (and the
    store gains by writing them before the commit: ``Store.flush_early``)."""
    if store.flush_early and len(applier.rows) >= rows:
        applier.flush(store)


def _frame(items: Any) -> bytes:
    data = marshal.dumps(items)
    return _LEN.pack(len(data)) + data


def _frames(buf: bytearray) -> list[Any]:
    """Take the complete frames off the front of ``buf``."""
    out, pos, size = [], 0, len(buf)
    while size - pos >= 4:
        (n,) = _LEN.unpack_from(buf, pos)
        if size - pos - 4 < n:
            break
        out.append(marshal.loads(bytes(buf[pos + 4 : pos + 4 + n])))
        pos += 4 + n
    del buf[:pos]
    return out


def main(argv: list[str]) -> int:
    """``python -m cronwatch.server.pingproc FD DB``: run until the link closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the
    # server shuts down and closes the link, and then this finishes its batch and exits
    logging.basicConfig(level=logging.WARNING, format="cronwatch ping writer: %(message)s")
    sock = socket.socket(fileno=int(argv[0]))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        _serve(sock, argv[1])  # a broken pipe: the server is gone; commits stay committed
    return 0


# --- the server side ------------------------------------------------------------------------


class Link(asyncio.Protocol):
    """The server's end: ``link.submit(path, query, body, done)`` calls ``done(reply)``
    with the child's reply (a 503 reply if the child goes away first)."""

    def __init__(self, on_replies: Callable[[int], None], on_lost: Callable[[], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.on_replies = on_replies
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, Callable[[Reply], None]] = {}
        self.out: list[tuple[int, str, bytes, bytes | None]] = []
        self.flushing = False  # the end-of-turn flush is scheduled
        self.streamed = False  # frames of this turn went out before its end
        self.buf = bytearray()
        self.seq = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def submit(
        self, path: str, query: bytes, body: bytes | None, done: Callable[[Reply], None]
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            raise StoreError("the ping writer is restarting; try again")
        self.seq = seq = (self.seq + 1) & 0x7FFFFFFF
        self.pending[seq] = done
        self.out.append((seq, path, query, body))
        if not self.flushing:  # the turn's last frame goes when the loop is done with it
            self.flushing = True
            self.loop.call_soon(self._flush)
        elif len(self.out) >= _STREAM:  # the writer can start on these meanwhile
            self._send(False)

    def _flush(self) -> None:
        self.flushing = False
        if self.out or self.streamed:
            self._send(True)

    def _send(self, final: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame((final, self.out)))
        self.out = []
        self.streamed = not final

    def data_received(self, data: bytes) -> None:
        self.buf += data
        pending = self.pending
        for replies in _frames(self.buf):  # one frame: one commit
            for reply in replies:
                done = pending.pop(reply[0], None)
                if done is not None:
                    done(reply)
            self.on_replies(len(replies))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        pending, self.pending = self.pending, {}
        for seq, done in pending.items():
            done((seq, 503, b"the ping writer exited; try again", False, "", "", False))
        self.on_lost()


class PingProcess:
    """Starts the child, restarts it if it dies, stops it with the server."""

    def __init__(self, db: str, on_replies: Callable[[int], None]) -> None:
        self.db = db
        self.on_replies = on_replies
        self.proc: subprocess.Popen[bytes] | None = None
        self.link: Link | None = None
        self.stopping = False
        self.restarts = 0
        self.delay = 0.2  # before a restart; doubles while the child keeps dying (max 5 s)

    async def start(self) -> None:
        parent, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cronwatch.server.pingproc", str(child.fileno()), self.db],
                pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            child.close()
        loop = asyncio.get_running_loop()
        _, link = await loop.create_unix_connection(
            lambda: Link(self._replied, self._lost), sock=parent
        )
        self.link = link

    def submit(
        self, path: str, query: bytes, body: bytes | None, done: Callable[[Reply], None]
    ) -> None:
        if self.link is None:
            raise StoreError("the ping writer is restarting; try again")
        self.link.submit(path, query, body, done)

    def alive(self) -> bool:
        """The child runs and its link is up (else pings are answered 503 meanwhile)."""
        return self.link is not None and self.proc is not None and self.proc.poll() is None

    def _replied(self, n: int) -> None:
        self.delay = 0.2  # it works
        self.on_replies(n)

    def _lost(self) -> None:
        self.link = None
        if not self.stopping:
            log.error("the ping writer exited (code %s); restarting it", self._reap())
            self.restarts += 1
            asyncio.get_running_loop().call_later(self.delay, self._restart)
            self.delay = min(self.delay * 2, 5.0)

    def _restart(self) -> None:
        if not self.stopping:
            asyncio.ensure_future(self._start_again())

    async def _start_again(self) -> None:
        try:
            await self.start()
        except Exception as e:  # cannot spawn (resources): keep trying, pings get 503
            log.error("cannot start the ping writer: %s", e)
            self._lost()

    def _reap(self) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:  # it closed the link but lives on: it must not write on its own
            self.proc.kill()
            code = self.proc.wait()
        return code

    async def stop(self) -> None:
        self.stopping = True
        if self.link is not None and self.link.transport is not None:
            self.link.transport.close()  # EOF: the child finishes its batch and exits
        if self.proc is not None:
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PingWriters:
    """The server's ping writer processes: one (SQLite has one writer at a time), or a
    few on PostgreSQL, where their statements overlap: with one, the database works on
    one batch while the server waits for it, and the machine's cores sat partly idle.

    The first writer takes the pings until ``FULL`` of them are unanswered, then the
    next: a statement has a fixed cost, so a light load (or a replica sharing a small
    host with others) keeps whole batches at one writer, and a second one writes only
    what the first could not take in. While a connection has pings unanswered (by its
    ``affinity``), its next ones go to the same writer, so that pipelined pings are
    committed in the order they were sent (a start, then its end); pings of different
    connections were never ordered. While a writer restarts, its connections' pings go
    to another one rather than being answered 503."""

    FULL = 32  # unanswered pings at a writer before the next one takes new connections'

    def __init__(self, db: str, on_replies: Callable[[int], None], n: int = 1) -> None:
        self.procs = [PingProcess(db, on_replies) for _ in range(max(1, n))]
        self.held: dict[int, list[Any]] = {}  # affinity -> [its writer, pings unanswered]

    async def start(self) -> None:
        for proc in self.procs:
            await proc.start()

    def submit(
        self,
        path: str,
        query: bytes,
        body: bytes | None,
        done: Callable[[Reply], None],
        affinity: int = 0,
    ) -> None:
        procs = self.procs
        if len(procs) == 1:
            procs[0].submit(path, query, body, done)
            return
        held = self.held.get(affinity)
        if held is None or held[0].link is None:  # free to go anywhere (or must: restarting)
            proc = next((p for p in procs if p.link is not None
                         and len(p.link.pending) < self.FULL), None)  # fmt: skip
            if proc is None:  # all full: the least behind (a restarting one last)
                proc = min(procs, key=lambda p: len(p.link.pending) if p.link else 1 << 30)
            held = self.held[affinity] = [proc, 0]
        held[1] += 1

        def answered(reply: Reply) -> None:
            self._release(affinity, held)
            done(reply)

        try:
            held[0].submit(path, query, body, answered)
        except BaseException:
            self._release(affinity, held)
            raise

    def _release(self, affinity: int, held: list[Any]) -> None:
        held[1] -= 1
        if held[1] <= 0 and self.held.get(affinity) is held:
            del self.held[affinity]

    def alive(self) -> bool:
        """Pings can be recorded: a writer runs (the others' pings go to it meanwhile)."""
        return any(proc.alive() for proc in self.procs)

    async def stop(self) -> None:
        await asyncio.gather(*(proc.stop() for proc in self.procs))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
