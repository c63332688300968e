"""Server-Sent Events from the event log.

Every state change (run.started, run.ok, run.error, job.missed, job.timeout,
job.recovered, incident.opened, incident.closed) is a row in ``events`` written in the
same transaction as the change, so a stream can resume exactly with ``Last-Event-ID``.

One ``Broadcaster`` task reads what is new and encodes each frame once; every open stream
is handed the same bytes through its own bounded queue, so the cost of a commit does not
grow with the number of streams. The writers wake it after their commits; a store that
hears other processes' commits (``EventWaker``: PostgreSQL's notifications) wakes it
too, while streams are open (and ``LINGER`` seconds after the last one closed); it also
looks once a second, because the wrapper, ``cronwatch check`` or another
replica write to the same database without telling this process (SQLite), and as the
fallback of a listener that lost its connection. A stream that falls too far behind (its
client does not read) is dropped rather than buffered: its EventSource reconnects with
``Last-Event-ID`` and catches up from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from cronwatch.core.errors import CronwatchError
from cronwatch.server.auth import authorize
from cronwatch.server.gzipstream import HEADER, Member, Packed, accepts_gzip
from cronwatch.store.interface import Closable, EventStore, EventWaker

log = logging.getLogger("cronwatch.server")

# Set in the task of a stream the server dropped on purpose; the ASGI server's log line
# about the incomplete response comes from the same task, right after the return.
ABANDONED: ContextVar[bool] = ContextVar("cronwatch_abandoned_stream", default=False)
_INCOMPLETE = "ASGI callable returned without completing response."


class AbandonedStreamFilter(logging.Filter):
    """For uvicorn's error log: hides its "returned without completing response" line for
    an event stream dropped on purpose (a client that does not read), which is logged
    once as a warning of ours; the same line from anything else still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == _INCOMPLETE and ABANDONED.get())


_KEEPALIVE = b": keep-alive\n\n"
_KEEPALIVE_GZ = Packed(_KEEPALIVE)
# Ids are SQLite integers: more digits than this cannot name an event.
_MAX_ID_DIGITS = 19


class TooManyStreams(CronwatchError):
    """The per-token cap: this client holds enough streams already."""

    http_status = 429


class ServerBusy(CronwatchError):
    """The total cap: the server holds as many streams as it is configured to."""

    http_status = 503


@dataclass(slots=True)
class StreamLimits:
    per_token: int = 10
    total: int = 1000
    # Bytes a stream may fall behind before it is dropped. Queued chunks are shared by
    # every stream, so this bounds how long a chunk can be held, not a copy per stream.
    backlog: int = 1 << 20


Row = tuple[int, float, str, str]  # (id, at, type, data): an event as the store gives it
# Another API's event stream (Loom's /api/crons/stream): its frame for each row, "" for an
# event it has no word for. Called once per batch, whatever the number of its streams.
Dialect = Callable[[list[Row]], list[str]]


class _Batch:
    """Frames of consecutive events, encoded once (and gzipped once, when a stream asks)
    and shared by every stream; in another dialect, encoded once more on its first use."""

    __slots__ = ("data", "ids", "offsets", "_packed", "rows", "alt")

    def __init__(
        self, ids: list[int], offsets: list[int], data: bytes, rows: list[Row] | None = None
    ) -> None:
        self.ids = ids  # ascending
        self.offsets = offsets  # where each id's frame starts in data
        self.data = data
        self._packed: Packed | None = None
        self.rows = rows or []
        self.alt: dict[str, _Batch] = {}

    def in_dialect(self, name: str, dialect: Dialect) -> _Batch:
        """The same events in ``dialect``'s frames (the same ids: a skipped event's frame
        is empty), encoded by the first stream that asks and shared with the others."""
        batch = self.alt.get(name)
        if batch is None:
            batch = self.alt[name] = _encode(self.rows, dialect(self.rows))
        return batch

    def packed(self) -> Packed:
        if self._packed is None:
            self._packed = Packed(self.data)
        return self._packed

    def after(self, last: int) -> bytes:
        """The frames of the events after ``last``."""
        ids = self.ids
        if ids[0] > last:
            return self.data
        for i, eid in enumerate(ids):
            if eid > last:
                return self.data[self.offsets[i] :]
        return b""


class Subscriber:
    """One open stream: its queue of batches and whether it must stop."""

    __slots__ = ("ready", "queue", "pending", "token", "last_push", "stopped", "on_stop",
                 "dialect")  # fmt: skip

    def __init__(self, token: str, dialect: str = "") -> None:
        self.token = token
        self.dialect = dialect  # "" for our own event names and fields
        self.queue: deque[_Batch | bytes] = deque()  # bytes: a comment line
        self.pending = 0  # bytes queued
        self.ready = asyncio.Event()
        self.last_push = time.monotonic()
        self.stopped = ""  # why it must stop: "dropped", "closed"
        self.on_stop: Any = None  # called once when stopped (cancels a blocked send)

    def stop(self, why: str) -> None:
        if not self.stopped:
            self.stopped = why
            self.ready.set()
            if self.on_stop is not None:
                self.on_stop()


class Broadcaster:
    """Reads new events once per wake and fans the encoded frames out to every stream."""

    def __init__(
        self,
        store: EventStore,
        limits: StreamLimits | None = None,
        *,
        keepalive: float = 15.0,
        poll: float = 1.0,
        coalesce: float = 0.2,
        page: int = 2000,
    ) -> None:
        self.store = store
        self.limits = limits or StreamLimits()
        self.keepalive = keepalive
        self.poll = poll  # seconds between looks for other processes' events
        self.coalesce = coalesce  # seconds a wake waits, so close commits are read at once
        self.page = page  # events read at once
        self.last = 0  # the id of the newest event published
        self.subscribers: set[Subscriber] = set()
        self.per_token: Counter[str] = Counter()
        self.dropped = 0
        self.closed = False
        self.dialects: dict[str, Dialect] = {}  # other APIs' streams, by name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # other processes' commits (EventWaker), heard only while streams are open: each
        # notification wakes a thread here and a backend in PostgreSQL, a batch of pings
        # at every replica, which nobody needs while nobody streams
        self._listener: Closable | None = None
        self._listen_warned = False
        self._quiet_since = 0.0  # monotonic: when the last stream closed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read_at = 0.0  # monotonic: the last look at the database

    # --- the writers' side -----------------------------------------------------------------
    def wake(self) -> None:
        """Something was committed: read it soon (cheap; called after every commit)."""
        self._wake.set()

    LINGER = 10.0  # seconds the listener stays after the last stream closed (reconnects)

    def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())

    def _listen(self) -> None:
        """Hear other replicas' events at once while streams are open (the poll stays the
        fallback): start the listener (a thread of its own; this does not wait)."""
        loop = self._loop
        if self._listener is not None or loop is None or not isinstance(self.store, EventWaker):
            return

        def wake() -> None:  # called in the listener's thread
            loop.call_soon_threadsafe(self._wake.set)

        try:
            self._listener = self.store.listen_events(wake)
        except Exception as e:
            if not self._listen_warned:
                self._listen_warned = True
                log.warning("event stream: cannot listen for other processes' events "
                            "(%s); polling every %gs", e, self.poll)  # fmt: skip

    def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and self._loop is not None:
            self._loop.run_in_executor(None, listener.close)  # it may take a second to stop

    async def close(self) -> None:
        self.closed = True
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await asyncio.to_thread(listener.close)
        for sub in list(self.subscribers):
            sub.stop("closed")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- streams ---------------------------------------------------------------------------
    def subscribe(self, token: str, dialect: str = "") -> Subscriber:
        """A new stream for ``token``; events after ``self.last`` reach its queue."""
        limits = self.limits
        if self.closed:
            raise ServerBusy("the server is shutting down")
        if len(self.subscribers) >= limits.total:
            raise ServerBusy(f"too many event streams open on this server (limit {limits.total})")
        if self.per_token[token] >= limits.per_token:
            raise TooManyStreams(
                f"token {token!r} has {limits.per_token} event streams open already (the limit)"
            )
        if not self.subscribers:
            # Nothing is read while nobody listens: start from the newest event.
            self.last = self.store.last_event_id()
        sub = Subscriber(token, dialect)
        self.subscribers.add(sub)
        self.per_token[token] += 1
        self._listen()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            self.per_token[sub.token] -= 1
            if self.per_token[sub.token] <= 0:
                del self.per_token[sub.token]
            if not self.subscribers:
                self._quiet_since = time.monotonic()

    def _push(self, item: _Batch | bytes, size: int, now: float) -> None:
        backlog = self.limits.backlog
        for sub in list(self.subscribers):
            if sub.pending + size > backlog and sub.queue:
                # Its client reads slower than events arrive: holding more would slow
                # everyone; it resumes from the database when it reconnects.
                self.unsubscribe(sub)
                self.dropped += 1
                log.warning("dropped a slow event stream (token %r, %d bytes behind)",
                            sub.token, sub.pending)  # fmt: skip
                sub.stop("dropped")
                continue
            sub.queue.append(item)
            sub.pending += size
            sub.last_push = now
            sub.ready.set()

    # --- the task --------------------------------------------------------------------------
    async def _run(self) -> None:
        wake = self._wake
        full = False
        while not self.closed:
            woke = full
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(self.poll, self.keepalive))
                    woke = True
                wake.clear()
            full = False
            if self.subscribers:
                # a keep-alive turn reads only when the poll is due as well
                if woke or time.monotonic() - self._read_at >= self.poll:
                    self._read_at = time.monotonic()
                    try:
                        full = self.publish() == self.page
                    except Exception as e:  # a locked or lost database: try again next time
                        log.warning("event stream: cannot read new events: %s", e)
                self._keep_alive()
            elif self._listener is not None and time.monotonic() - self._quiet_since >= self.LINGER:
                self._unlisten()
            # The commits of the next moment are read together: a stream gets one send for
            # many commits. A full page means more is waiting (a burst): read on soon, so
            # that the stream keeps up with ingestion; a client that cannot is dropped and
            # catches up from the database at its own pace.
            await asyncio.sleep(0.01 if full else self.coalesce)

    def publish(self) -> int:
        """Read a page of the events after ``self.last`` and hand it to every stream; the
        number of events read."""
        rows = self.store.events_since(self.last, limit=self.page)
        if not rows:
            return 0
        batch = _encode(rows, [_frame(eid, type_, data) for eid, _at, type_, data in rows])
        self.last = batch.ids[-1]
        if self.dialects:
            batch.rows = rows  # kept for the other dialects' streams (in_dialect)
        self._push(batch, len(batch.data), time.monotonic())
        return len(rows)

    def _keep_alive(self) -> None:
        now = time.monotonic()
        quiet = now - self.keepalive
        for sub in list(self.subscribers):
            if sub.last_push <= quiet:
                sub.queue.append(_KEEPALIVE)
                sub.pending += len(_KEEPALIVE)
                sub.last_push = now
                sub.ready.set()


def _encode(rows: list[Row], frames: list[str]) -> _Batch:
    ids: list[int] = []
    offsets: list[int] = []
    at = 0
    for row, frame in zip(rows, frames, strict=True):
        ids.append(row[0])
        offsets.append(at)
        at += len(frame)
    data = "".join(frames).encode()
    if len(data) != at:  # not all ASCII: the offsets must count bytes
        offsets = _byte_offsets(frames)
    return _Batch(ids, offsets, data)


def _frame(eid: int, type_: str, data: str) -> str:
    if "\n" in data or "\r" in data:  # one data: line per line, as the format wants
        data = "\ndata: ".join(data.splitlines())
    return f"id: {eid}\nevent: {type_}\ndata: {data}\n\n"


def _byte_offsets(parts: list[str]) -> list[int]:
    offsets: list[int] = []
    at = 0
    for p in parts:
        offsets.append(at)
        at += len(p.encode())
    return offsets


def resume_point(value: str | None, newest: int) -> int | None:
    """The event id a stream resumes after, or None for "from now".

    An id that does not name an event of this database (not a decimal number, negative,
    or beyond the newest event, as a client of another database would send) resumes from
    now: answering 400 would make an EventSource give up for good, and the client cannot
    fix its stored id.
    """
    if value is None:
        return None
    v = value.strip()
    if not v or len(v) > _MAX_ID_DIGITS or not (v.isascii() and v.isdigit()):
        return None
    n = int(v)
    return n if n <= newest else None


async def stream(
    server: Any,
    scope: dict[str, Any],
    receive: Any,
    send: Any,
    *,
    dialect: str = "",
    who: str | None = None,
) -> None:
    """An event stream for a token (``Authorization``), or for ``who`` when the caller has
    authenticated the request itself (the console's signed-in user); ``dialect``: another
    API's names and fields, as registered in ``Broadcaster.dialects``."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    hub: Broadcaster = server.hub
    query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    raw = headers.get("last-event-id") or query.get("last_event_id")
    try:
        if who is None:
            who = str(authorize(server, headers.get("authorization"), write=False)["name"])
        # read before subscribing: an id the client had from us is never newer than this
        newest = server.reader.last_event_id() if raw is not None else 0
        sub = hub.subscribe(who, dialect)
    except CronwatchError as e:
        body = json.dumps({"error": str(e)}).encode()
        extra = [(b"retry-after", b"5")] if e.http_status in (429, 503) else []
        await send({"type": "http.response.start", "status": e.http_status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), *extra]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
        return
    try:
        live_from = hub.last  # events after this reach the queue
        after = resume_point(raw, newest)
        gz = Member() if accepts_gzip(headers.get("accept-encoding")) else None
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"), (b"vary", b"accept-encoding"),
            *([(b"content-encoding", b"gzip")] if gz else [])]})  # fmt: skip
        encode = hub.dialects.get(dialect) if dialect else None
        pump = asyncio.ensure_future(_pump(server.reader, sub, send, after, live_from, gz, encode))
        sub.on_stop = pump.cancel
        if sub.stopped:  # closed or dropped before the pump could be told
            pump.cancel()
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            pump.cancel()
            await asyncio.wait({pump})
    finally:
        hub.unsubscribe(sub)
    if not pump.cancelled() and (error := pump.exception()) is not None:
        if not isinstance(error, OSError):  # OSError: the client went away
            log.warning("event stream ended by an error: %s", error)
    elif sub.stopped == "closed":
        # The server is stopping: end the response so that the connection can close.
        with contextlib.suppress(Exception):
            end = b"" if gz is None else gz.end()
            await asyncio.wait_for(send({"type": "http.response.body", "body": end}), 1.0)
    else:
        # Dropped: return without ending the response; the ASGI server closes the
        # connection, where a send could wait forever on a client that does not read.
        # uvicorn reports such a return as an error of the app: ours was deliberate, and
        # logged once above (AbandonedStreamFilter).
        ABANDONED.set(True)


async def _pump(
    reader: EventStore,
    sub: Subscriber,
    send: Any,
    after: int | None,
    live_from: int,
    gz: Member | None,
    encode: Dialect | None = None,
) -> None:
    """Send what the stream missed (from the database), then what the broadcaster hands
    it, until it is stopped."""

    async def out(body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})

    hello = b": connected\n\n"
    await out(hello if gz is None else HEADER + gz.piece(hello))
    last = live_from if after is None else after
    while last < live_from and not sub.stopped:  # resuming: the database, page by page
        rows = [r for r in reader.events_since(last, limit=500) if r[0] <= live_from]
        if not rows:
            break
        last = rows[-1][0]
        frames = (encode(rows) if encode is not None
                  else [_frame(eid, t, d) for eid, _at, t, d in rows])  # fmt: skip
        body = "".join(frames).encode()
        await out(body if gz is None else gz.piece(body))
    queue = sub.queue
    while not sub.stopped:
        if not queue:
            sub.ready.clear()
            await sub.ready.wait()
            continue
        parts: list[bytes] = []
        while queue:
            item = queue.popleft()
            if isinstance(item, bytes):  # a keep-alive comment
                parts.append(item if gz is None else gz.packed(_KEEPALIVE_GZ))
                continue
            if encode is not None:
                item = item.in_dialect(sub.dialect, encode)
                if not item.data:  # none of these events has a name in that dialect
                    last = max(last, item.ids[-1]) if item.ids else last
                    continue
            if item.ids and item.ids[-1] > last:
                if item.ids[0] > last:  # the usual case: the whole batch, as encoded once
                    parts.append(item.data if gz is None else gz.packed(item.packed()))
                else:  # resumed past part of it
                    rest = item.after(last)
                    parts.append(rest if gz is None else gz.piece(rest))
                last = item.ids[-1]
        sub.pending = 0
        if parts:
            await out(parts[0] if len(parts) == 1 else b"".join(parts))


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
