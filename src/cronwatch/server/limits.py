"""Limits applied before any work: deadlines, connection caps, sizes.

``cronwatch serve`` faces the internet and its ping URLs carry no other credential, so
every request is bounded before it is parsed into a scope, routed or authenticated:

- ``guarded_protocol(limits)``: uvicorn's httptools protocol with what uvicorn lacks. A
  connection must send a complete request head within ``head_timeout`` of its first
  byte (or of connecting), and a declared body within ``body_timeout`` of its head
  (slowloris and trickled bodies are closed, with a 408 when nothing else is being
  answered); a request target longer than ``max_target`` is answered 414 and a head
  larger than ``max_head`` 431, both before the app is called; connections over the
  total or per-address cap are answered 503 and closed at once, with a log line; once
  a ``Connection: close`` request is read, nothing more is read from that connection.
- ``BodyLimit``: a pure ASGI middleware, outermost, that answers 413 to a declared
  ``Content-Length`` over the limit without reading a byte of the body, and counts the
  bytes of a streamed (chunked) body as they come, cutting it off at the limit. Pings
  and the API have limits of their own.

A request line without a version (HTTP/0.9) or ending in a bare LF is answered 400 here
at once (llhttp would wait for more, or answer it as HTTP/1.1); other malformed heads
(bare LF in the headers, duplicate lengths, bad names) are llhttp's strict mode's to
refuse: uvicorn answers 400 and closes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cronwatch.server.ping import accepts_json

log = logging.getLogger("cronwatch.server")

_PING_PREFIXES = ("/ping/", "/p/", "/jobs/p/")
_PING_TARGETS = (b"/ping/", b"/p/", b"/jobs/p/")
_PING_METHODS = (b"GET", b"POST", b"HEAD")
# method SP target SP version CRLF, nothing else: no HTTP/0.9 line, no bare LF
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r\n")


@dataclass(slots=True)
class Limits:
    head_timeout: float = 10.0  # seconds to send a request head
    body_timeout: float = 30.0  # seconds to send a declared body after its head
    max_connections: int = 4096  # in total (kept below the descriptor limit, see serve)
    max_per_address: int = 256  # from one client address
    max_target: int = 8192  # bytes of the request target (path and query): 414
    max_head: int = 32768  # bytes of the header lines: 431
    max_ping_body: int = 1 << 20  # a ping body over this is 413 (under it, cut to body_limit)
    max_api_body: int = 1 << 20  # any other request body over this is 413


def client_network(address: str) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 client's /64.

    One IPv6 host commonly holds a whole /64 (SLAAC, privacy addresses) and can pick a
    new address per connection: counting addresses would not cap it."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1 on a dual-stack socket
        return str(ip.ipv4_mapped)
    if ip.is_loopback:
        return "::1"
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


def _answer(status: str, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status.encode(), len(text), text)
    )


class _Warnings:
    """One log line per reason per ``every`` seconds: a flood must not flood the log."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.dropped: Counter[str] = Counter()

    def warn(self, reason: str, message: str) -> None:
        if len(self.last) > 1024:  # reasons include client addresses: keep it bounded
            self.last.clear()
            self.dropped.clear()
        now = time.monotonic()
        if now - self.last.get(reason, -self.every) < self.every:
            self.dropped[reason] += 1
            return
        self.last[reason] = now
        more = self.dropped.pop(reason, 0)
        log.warning("%s%s", message, f" ({more} more since the last such line)" if more else "")


class Caps:
    """The connection caps of one server (``Limits.max_connections``, in total, and
    ``max_per_address``): shared by every protocol class that accepts its connections
    (the guarded protocol, and ``server.front`` in front of it)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.per_address: Counter[str] = Counter()
        self.warnings = _Warnings()

    def admit(self, address: str, total: int) -> bool:
        """Count a new connection from ``address`` (``total`` open, this one included)
        unless it is over a cap: then False, with a log line (at most one a reason every
        few seconds)."""
        limits = self.limits
        if total > limits.max_connections:
            self.warnings.warn("total", f"connection limit reached ({limits.max_connections} "
                               "in all): refusing new connections")  # fmt: skip
            return False
        if self.per_address[address] >= limits.max_per_address:
            self.warnings.warn(address, f"connection limit reached for {address} "
                               f"({limits.max_per_address} per address): refusing its new "
                               "connections")  # fmt: skip
            return False
        self.per_address[address] += 1
        return True

    def release(self, address: str) -> None:
        per_address = self.per_address
        per_address[address] -= 1
        if per_address[address] <= 0:
            del per_address[address]


def refuse(transport: Any) -> None:
    """Answer a connection over a cap and close it."""
    transport.write(_answer("503 Service Unavailable", b"too many connections\n"))
    transport.close()


class _Sweeper:
    """Closes the connections whose deadline passed; runs while there are connections."""

    def __init__(self, watched: set[Any], every: float) -> None:
        self.watched = watched
        self.every = every
        self.handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.handle is None:
            self.handle = loop.call_later(self.every, self.sweep, loop)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = None
        now = loop.time()
        for conn in [c for c in self.watched if c.deadline and c.deadline <= now]:
            conn.expired()
        if self.watched:
            self.start(loop)


class _OneSend:
    """The transport as uvicorn's response cycle sees it: a response's head and body go
    out in one send.

    uvicorn writes a head and its body apart, two sends on a socket with no delay, and
    when the ping writer's commit answers a burst of pings at once, a send is most of what
    answering one costs. So a write is held until the next write on the connection (which
    takes it along), and at the latest until the end of the loop's turn; it also goes out
    before anything else the connection reads or writes (``flush``) and before a close, so
    bytes are never reordered nor delayed past the turn."""

    __slots__ = ("transport", "held", "holding", "loop")

    def __init__(self, transport: Any, loop: Any, holding: list[_OneSend]) -> None:
        self.transport = transport
        self.loop = loop
        self.holding = holding  # the connections holding bytes, flushed at the turn's end
        self.held = b""

    def write(self, data: bytes) -> None:
        if self.held:
            data, self.held = self.held + data, b""
            self.transport.write(data)
            return
        if not data:
            return
        self.held = data
        if not self.holding:
            self.loop.call_soon(_flush_all, self.holding)
        self.holding.append(self)

    def flush(self) -> None:
        if self.held:
            data, self.held = self.held, b""
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _flush_all(holding: list[_OneSend]) -> None:
    for conn in holding:
        conn.flush()
    holding.clear()


class _NoEvent:
    """The message event of a ping answered from the protocol: nothing waits on it."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _FastPing:
    """A ping answered from the protocol, without uvicorn's ASGI cycle.

    It sits in the protocol's ``cycle`` slot while the ping writer commits, so a request
    pipelined behind it queues as uvicorn queues any other (reading paused), and the
    callbacks uvicorn runs on a cycle (a body, a disconnect, a shutdown) find what they
    touch. When the writer reports the commit, the whole answer is written at once and
    uvicorn's own ``on_response_complete`` resumes reading, starts the next pipelined
    request or arms the keep-alive timer, as after any response."""

    __slots__ = ("proto", "head", "post", "limit", "json", "body", "keep_alive",
                 "response_started", "response_complete", "disconnected", "more_body",
                 "message_event")  # fmt: skip

    def __init__(
        self, proto: Any, head: bool, post: bool, keep_alive: bool, limit: int, json: bool
    ) -> None:
        self.proto = proto
        self.json = json  # the client asks for a JSON answer (app.Server.ping)
        self.head = head
        self.post = post
        self.limit = limit  # bytes of a body kept (the rest is read and dropped)
        self.body = b""
        self.keep_alive = keep_alive
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.more_body = True
        self.message_event = _NO_EVENT

    def __call__(self, reply: Any) -> None:  # the ping writer committed (or failed)
        proto = self.proto
        # built (and counted, and the scheduler told) even if the client has gone: the
        # ping is on record all the same
        data = proto.ping_app.ping_bytes(
            proto.server_state.default_headers, self.head, not self.keep_alive, reply
        )
        self.response_started = self.response_complete = True
        transport = proto.transport
        if self.disconnected or transport is None or transport.is_closing():
            return
        proto.out.flush()  # bytes of an earlier response still held go first
        transport.write(data)
        if not self.keep_alive:
            transport.close()
        proto.on_response_complete()


class RateLimitFilter(logging.Filter):
    """For uvicorn's own log: its line for each malformed request, at most once every
    ``every`` seconds (a client sending garbage in a loop must not fill the disk)."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self.every = every
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key = str(record.msg)
        now = time.monotonic()
        if now - self.last.get(key, -self.every) < self.every:
            return False
        self.last[key] = now
        return True


def guarded_protocol(limits: Limits) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class for ``limits`` (one class per server: the
    per-address counts are shared by its connections)."""
    shared = Caps(limits)
    warnings = shared.warnings
    watched: set[Any] = set()  # the open connections, for the deadline sweep
    holding: list[_OneSend] = []  # connections with a write held until the turn's end
    # one sweep over the open connections a fraction of a deadline apart, instead of a
    # timer set and cancelled for every request
    sweeper = _Sweeper(watched, max(0.05, min(1.0, limits.head_timeout / 4,
                                             limits.body_timeout / 4)))  # fmt: skip

    class Guarded(HttpToolsProtocol):
        caps = shared  # server.front admits and releases its connections with the same counts

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.address = ""
            self.counted = False
            self.rejected = False
            self.last_read = False  # a "Connection: close" request was read
            self.closing = False  # the request being read says "Connection: close"
            self.between = True  # the next byte read starts a request
            self.line = b""  # the start of a request's line, until it is complete
            self.checking = False
            self.in_head = True  # between a request's first byte and the end of its head
            self.head_size = 0
            self.deadline = 0.0  # loop time by which the head or body must be in; 0: none
            self.out: _OneSend | None = None
            # the cronwatch Server under BodyLimit: plain pings are answered here, without
            # the ASGI cycle (``_FastPing``); anything else app, or a thread writer: ASGI
            app = getattr(self.config.app, "app", None)
            self.ping_app: Any = app if hasattr(app, "ping_bytes") else None

        # --- connections -------------------------------------------------------------------
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.out = _OneSend(transport, self.loop, holding)
            self.address = client_network(self.client[0]) if self.client else ""
            if not shared.admit(self.address, len(self.connections)):
                self.rejected = True
                refuse(self.transport)
                return
            self.counted = True
            watched.add(self)
            self.deadline = self.loop.time() + limits.head_timeout  # silence is a partial head
            sweeper.start(self.loop)

        def connection_lost(self, exc: Exception | None) -> None:
            watched.discard(self)
            if self.counted:
                self.counted = False
                shared.release(self.address)
            super().connection_lost(exc)

        # --- reading ---------------------------------------------------------------------
        def data_received(self, data: bytes) -> None:
            if self.rejected or self.last_read:
                return  # answered, or nothing more to read: never buffered
            if self.out is not None and self.out.held:
                self.out.flush()  # what uvicorn answers from here follows it
            if self.in_head:
                self.head_size += len(data)
                if not self.deadline:
                    self.deadline = self.loop.time() + limits.head_timeout
            if self.between:
                self.between, self.checking, self.line = False, True, b""
            if self.checking and not self._line_ok(data):
                self._reject("400 Bad Request", b"malformed request line\n")
                return
            super().data_received(data)
            # a head trickled in without a complete header line yet (httptools buffers it)
            if (
                self.in_head
                and not self.rejected
                and self.head_size > limits.max_target + limits.max_head
            ):
                self._reject("431 Request Header Fields Too Large", b"request head too large\n")

        def _line_ok(self, data: bytes) -> bool:
            """llhttp takes a line without a version (``GET /``) as HTTP/0.9 and waits for
            more, or answers it as HTTP/1.1: refuse it, and bare-LF lines, at once."""
            self.line = (self.line + data[: limits.max_target + 64]).lstrip(b"\r\n")
            end = self.line.find(b"\n")
            if end < 0:
                return len(self.line) <= limits.max_target + 64  # else on_url answers 414
            self.checking = False
            return _REQUEST_LINE.fullmatch(self.line[: end + 1]) is not None

        def send_400_response(self, msg: str) -> None:
            if not self.rejected:  # else _Rejected stopped the parser: already answered
                self.rejected = True
                self.deadline = 0.0
                super().send_400_response(msg)

        def _reject(self, status: str, text: bytes) -> None:
            self.rejected = True
            self.deadline = 0.0
            if self.out is not None:
                self.out.flush()
            cycle = self.cycle  # answer unless a response of the app's is on the wire
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_answer(status, text))
            self.transport.close()

        # --- httptools callbacks -----------------------------------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.between = False
            self.in_head = True
            self.head_size = 0
            if not self.deadline:
                self.deadline = self.loop.time() + limits.head_timeout

        def on_headers_complete(self) -> None:
            # sizes checked once the head is parsed (a head that keeps coming without an
            # end is cut in data_received): cheaper than a check per header line
            if len(self.url) > limits.max_target:
                self._reject("414 URI Too Long", b"request target too long\n")
                raise _Rejected
            headers = self.headers
            if sum(len(n) + len(v) for n, v in headers) + 4 * len(headers) > limits.max_head:
                self._reject("431 Request Header Fields Too Large", b"request head too large\n")
                raise _Rejected
            self.in_head = False
            body = chunked = json = False
            length = b"0"
            for name, value in headers:
                if name == b"content-length":
                    length = value.strip()
                    body = length != b"0"
                elif name == b"transfer-encoding":
                    body = chunked = True
                elif name == b"accept":
                    json = accepts_json(value)
            self.deadline = self.loop.time() + limits.body_timeout if body else 0.0
            self.closing = not self.parser.should_keep_alive()
            if not chunked and self._fast_ping(length, json):
                return
            super().on_headers_complete()
            if self.cycle is not None and self.out is not None:
                # the cycle only writes, closes and asks is_closing(): _OneSend does those
                self.cycle.transport = self.out  # type: ignore[assignment]

        def _fast_ping(self, length: bytes, json: bool) -> bool:
            """Take a plain ping (GET, POST or HEAD on a ping route, a body within the
            limit and not chunked, an ASCII path without percent-escapes, nothing in
            front of it on the connection) away from the ASGI cycle: True if taken."""
            app = self.ping_app
            url = self.url
            parser = self.parser
            method = parser.get_method()
            if (
                app is None
                or app.pings is None  # the thread writer: through ASGI
                or not url.startswith(_PING_TARGETS)
                or method not in _PING_METHODS
                or (self.cycle is not None and not self.cycle.response_complete)
                or self.flow.write_paused  # a client that does not read: ASGI waits
                or self.expect_100_continue
                or parser.should_upgrade()
                or not url.isascii()
                or b"#" in url
                or b"%" in url.partition(b"?")[0]  # decoded by ASGI: its 404 for %2F
                or not length.isdigit()
                or int(length) > limits.max_ping_body  # BodyLimit's 413
            ):
                return False
            keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
            self.cycle = _FastPing(self, method == b"HEAD", method == b"POST", keep_alive,  # type: ignore[assignment]
                                   app.config.body_limit, json)  # fmt: skip
            return True

        def on_body(self, body: bytes) -> None:
            cycle: Any = self.cycle
            if type(cycle) is _FastPing:
                room = cycle.limit - len(cycle.body)
                if cycle.post and room > 0:
                    cycle.body += body[:room]
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            self.deadline = 0.0
            self.between = True  # unless on_message_begin comes next in the same read
            if self.closing:  # the last request: whatever follows it is never read
                self.last_read = True
                self.transport.pause_reading()
            cycle: Any = self.cycle
            if type(cycle) is _FastPing:
                url = self.url
                q = url.find(b"?")
                path, query = (url, b"") if q < 0 else (url[:q], url[q + 1 :])
                if cycle.json:
                    query += b"&format=json" if query else b"format=json"
                app = self.ping_app
                app.counters["pings_received"] += 1
                body = cycle.body if cycle.post else None
                app.submit_ping(path.decode("ascii"), query, body, cycle, id(self))
                return
            super().on_message_complete()

        def expired(self) -> None:
            self.deadline = 0.0
            if self.transport is None or self.transport.is_closing():
                return
            what = "head" if self.in_head else "body"
            warnings.warn("timeout-" + what, f"closed a connection from {self.address}: "
                          f"request {what} not received in time")  # fmt: skip
            self._reject("408 Request Timeout", f"request {what} not received in time\n".encode())

    return Guarded


class BodyLimit:
    """ASGI middleware: request bodies over the limit are refused before anything reads them.

    A declared ``Content-Length`` over the limit is answered 413 at once, without
    calling the app (so before authentication and before any parsing); a body without
    a length (chunked) is counted as the app receives it, and past the limit the client
    gets 413 and the app a disconnect."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ping = scope["path"].startswith(_PING_PREFIXES)
        limit = self.limits.max_ping_body if ping else self.limits.max_api_body
        declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:  # no body at all (most pings)
            await self.app(scope, receive, send)
            return
        if declared is not None:
            if not declared.isdigit() or int(declared) > limit:
                await _too_large(send, ping, limit)
                return
            await self.app(scope, receive, send)  # the server stops at the declared length
            return
        size = 0
        answered = started = False

        async def counted() -> Any:
            nonlocal size, answered
            if size > limit:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    if not started:
                        answered = True
                        await _too_large(send, ping, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if answered:
                return  # the app goes on after its disconnect: the 413 was the answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, guarded_send)


async def _too_large(send: Any, ping: bool, limit: int) -> None:
    text = f"request body too large (limit {limit} bytes)"
    if ping:
        body, kind = (text + "\n").encode(), b"text/plain; charset=utf-8"
    else:
        body, kind = b'{"error": "%s"}' % text.encode(), b"application/json"
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", kind), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
