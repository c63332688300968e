"""The HTTP front (``cronwatch serve``, the default; ``--front uvicorn`` opts out): pings
without the ASGI machinery or uvicorn's parser callbacks.

It is a parser of our own in front of uvicorn's (two parsers that must agree on message
boundaries); tests/test_server_front_fuzz.py holds it to h11 (whatever it takes, h11 reads
as the same requests; the rest it hands over). uvicorn runs this as its HTTP protocol
class. Each connection starts here, admitted under the guarded protocol's connection caps
(``server.limits.Caps``: the same counts, handed over with the connection). A request
that is a plain ping (GET, POST or HEAD on /ping/, /p/ or /jobs/p/, HTTP/1.1, a
well-formed head within the size limits, no chunked body, no Expect or Upgrade) that
arrived whole is parsed in a few string operations, forwarded to the ping writer
process, and answered with bytes built once, when the writer reports the commit. Per
ping that is one read, one write and no task, coroutine, scope dict, ASGI message or
parser callback.

The first request that is anything else (the API, the event stream, metrics, a
malformed or oversized request, a percent-encoded path, a head or body that did not
arrive whole in one read) hands the connection over to the guarded uvicorn protocol
(``fallback``, from ``server.limits``: deadlines and size limits), with the bytes not yet
consumed, once every ping answer owed on it has been written; the ASGI app then serves
it, and everything after it on that connection. Nothing after a ``Connection: close``
request is read, from the socket or from what was already read.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import Any

from cronwatch.server.limits import client_network, refuse
from cronwatch.server.pingproc import Reply

_METHODS = (b"GET", b"POST", b"HEAD")
# origin-form targets of the ping routes: no percent-encoding in the path (the ASGI path
# would be decoded), no fragment; the query is passed on raw, as ASGI's query_string
_TARGET = re.compile(
    rb"/(?:ping|p|jobs/p)/[A-Za-z0-9._~!$&'()*+,;=:@/-]{0,600}(?:\?[!\"$-~]{0,8192})?"
)
# the header lines after the request line, lower-cased: names are tokens, values are
# visible ASCII, spaces and tabs; anything else goes to uvicorn (which rejects or copes)
_HEADERS = re.compile(rb"(?:\r\n[!#$%&'*+.^_`|~0-9a-z-]+:[ \t\x21-\x7e]*)*")
_MAX_BODY = 1 << 20  # larger ping bodies stream through uvicorn (and are cut to the limit)
_MAX_OWED = 32  # answers owed on one connection (pipelining) before it stops being read


class _Owed:
    """One answer owed on a connection, in request order."""

    __slots__ = ("front", "head", "close", "data")

    def __init__(self, front: PingFront, head: bool, close: bool) -> None:
        self.front = front
        self.head = head
        self.close = close
        self.data: bytes | None = None

    def __call__(self, reply: Reply) -> None:  # the ping writer committed (or failed)
        front = self.front
        self.data = front.render(self.head, self.close, reply)
        front.answered()


class PingFront(asyncio.Protocol):
    """uvicorn's ``http`` protocol class: pings here, everything else to ``fallback`` (a
    subclass sets it: ``server.limits.guarded_protocol``)."""

    fallback: Any = None

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        app = config.app  # the cronwatch Server, under server.limits.BodyLimit
        self.app = getattr(app, "app", app)
        self.transport: Any = None
        self.buf = b""
        self.owed: deque[_Owed] = deque()
        self.leaving = False  # a request for uvicorn is waiting in buf
        self.closing = False
        self.paused = False
        self.blocked = False  # the transport's write buffer is full
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        # the guarded protocol's connection caps and size limits (server.limits)
        self.caps = self.fallback.caps
        limits = self.caps.limits
        self.max_target, self.max_head = limits.max_target, limits.max_head
        self.address: str | None = None  # counted against the caps while set

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        address = client_network(peer[0]) if isinstance(peer, tuple) and peer else ""
        connections = self.server_state.connections
        if not self.caps.admit(address, len(connections) + 1):
            self.closing = True
            refuse(transport)
            return
        self.address = address
        connections.add(self)
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._release()
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading
        self.blocked = True
        self._pause()

    def resume_writing(self) -> None:
        self.blocked = False
        self._resume()

    def data_received(self, data: bytes) -> None:
        self.idle_since = 0.0
        if self.closing:
            return  # nothing after "Connection: close" is read, and nothing is kept
        buf = self.buf + data if self.buf else data
        if self.leaving:  # reading is paused: at most one read waits for the hand-over
            self.buf = buf
            return
        pos, size = 0, len(buf)
        while pos < size:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                # a head that did not come in one read: the guarded protocol, which has
                # the deadlines and size limits, takes the connection (a client sending
                # whole requests never gets here)
                self.leaving = True
                break
            nl = buf.find(b"\r\n", pos, end + 2)
            method, _, rest = buf[pos:nl].partition(b" ")
            target, _, version = rest.partition(b" ")
            headers = buf[nl:end].lower()
            if (
                len(target) > self.max_target  # the guarded protocol answers 414 or 431
                or end - nl > self.max_head
                or method not in _METHODS
                or version != b"HTTP/1.1"
                or _TARGET.fullmatch(target) is None
                or _HEADERS.fullmatch(headers) is None
                or b"transfer-encoding" in headers
                or headers.count(b"\r\nhost:") != 1  # RFC 9112: else 400, uvicorn's to say
                or b"\r\nexpect:" in headers
                or b"\r\nupgrade:" in headers
                or b"application/json" in headers  # may ask for a JSON answer (app.ping)
            ):
                self.leaving = True
                break
            start = end + 4
            body = None
            i = headers.find(b"\r\ncontent-length:")
            if i >= 0:
                j = headers.find(b"\r\n", i + 17)
                value = headers[i + 17 : j if j >= 0 else len(headers)].strip()
                if (
                    not value.isdigit()
                    or len(value) > 7
                    or headers.find(b"\r\ncontent-length:", i + 17) >= 0
                ):
                    self.leaving = True  # odd or repeated: uvicorn answers it
                    break
                length = int(value)
                if length > _MAX_BODY:
                    self.leaving = True
                    break
                if size < start + length:
                    self.leaving = True  # the body is still coming: the same
                    break
                if method == b"POST":
                    body = buf[start : start + length]
                start += length
            elif method == b"POST":
                body = b""
            close = False
            i = headers.find(b"\r\nconnection:")
            if i >= 0:
                j = headers.find(b"\r\n", i + 2)
                close = b"close" in headers[i : j if j >= 0 else len(headers)]
            pos = start
            self._ping(method, target, body, close)
            if close:
                self.closing = True
                pos = size  # nothing after "Connection: close" is read: not even from
                self._pause()  # the socket (a client flooding after it is not our load)
                break
        self.buf = buf[pos:] if pos < size else b""
        if self.leaving:
            self._pause()
            if not self.owed:
                self._hand_over()
        elif len(self.owed) >= _MAX_OWED:
            self._pause()

    # --- pings -----------------------------------------------------------------------------
    def _ping(self, method: bytes, target: bytes, body: bytes | None, close: bool) -> None:
        app = self.app
        q = target.find(b"?")
        path, query = (target, b"") if q < 0 else (target[:q], target[q + 1 :])
        owed = _Owed(self, method == b"HEAD", close)
        self.owed.append(owed)
        if body is not None and len(body) > app.config.body_limit:
            body = body[: app.config.body_limit]
        app.counters["pings_received"] += 1
        app.submit_ping(path.decode("ascii"), query, body, owed, id(self))

    def render(self, head: bool, close: bool, reply: Reply) -> bytes:
        """The HTTP answer to a ping, as the ASGI path would send it."""
        return bytes(self.app.ping_bytes(self.server_state.default_headers, head, close, reply))

    def answered(self) -> None:
        """Write the answers that are ready, in request order."""
        owed = self.owed
        if self.transport is None or self.transport.is_closing():
            owed.clear()  # the client went away: its pings are committed all the same
            return
        out: list[Any] = []
        close = False
        while owed and owed[0].data is not None:
            done = owed.popleft()
            out.append(done.data)
            close = close or done.close
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if owed:
            return
        if close or self.closing:
            self.transport.close()
        elif self.leaving:
            self._hand_over()
        else:
            if self.paused:
                self._resume()
            self._idle()

    # --- everything else: the guarded uvicorn protocol (server.limits) ---------------------
    def _hand_over(self) -> None:
        proto = self.fallback(
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        transport, buf = self.transport, self.buf
        self.buf = b""
        self.closing = True  # this object is done with the connection
        self.server_state.connections.discard(self)
        self._release()  # the guarded protocol counts it again (it was under the caps)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self.paused:
            transport.resume_reading()
        if buf:
            proto.data_received(buf)

    def _release(self) -> None:
        if self.address is not None:
            self.caps.release(self.address)
            self.address = None

    def shutdown(self) -> None:
        """uvicorn is stopping: close once the answers owed are written."""
        self.closing = True
        if not self.owed and self.transport is not None:
            self.transport.close()

    # --- flow control and the keep-alive timeout ------------------------------------------
    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused and not self.leaving and not self.blocked and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _idle(self) -> None:
        # One timer at a time, re-armed only when it fires: an answer costs no timer call.
        self.idle_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.config.timeout_keep_alive, self._check_idle)

    def _check_idle(self) -> None:
        self.timer = None
        if self.closing or self.transport is None:
            return
        if self.idle_since and not self.owed and not self.buf:
            left = self.idle_since + self.config.timeout_keep_alive - self.loop.time()
            if left <= 0:
                self.transport.close()
                return
            self.timer = self.loop.call_later(left, self._check_idle)
        else:
            self.timer = self.loop.call_later(self.config.timeout_keep_alive, self._check_idle)
