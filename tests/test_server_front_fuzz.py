"""The opt-in front (``--front fast``, server.front) against h11: whatever bytes it takes as
pings, h11 must read as the same requests; everything else it hands over untouched.

Random request streams (plain pings, mutated heads, odd lengths, bad line endings,
pipelining, ``Connection: close``) cut at random points are fed to a ``PingFront`` with a
recording app and a recording hand-over. Then: the bytes it consumed plus the bytes it
handed over are the stream (nothing lost or duplicated; after a ``Connection: close``
request nothing more is read); and h11, parsing the consumed bytes, finds exactly the
pings the front took (method, target, body), in order, with nothing left over.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronwatch.server.app import Server
from cronwatch.server.front import PingFront
from cronwatch.server.limits import Caps, Limits


class _App:
    """What the front needs of the cronwatch Server: takes every ping, answers OK."""

    def __init__(self) -> None:
        self.config = type("C", (), {"body_limit": 1 << 30})()
        self.counters: Counter[str] = Counter()
        self.ok_headers = [(b"content-length", b"2")]

    def submit_ping(
        self, path: str, query: bytes, body: bytes | None, done: Any, affinity: int = 0
    ) -> None:
        done((0, 200, b"OK", False, "", "", False))

    def ping_answer(self, head: bool, reply: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        return 200, b"" if head else b"OK", self.ok_headers

    # the real Server's answer bytes, from this app's ping_answer
    ping_bytes = Server.ping_bytes
    _plain: tuple[object, bytes] = (None, b"")


class _Config:
    loaded = True
    timeout_keep_alive = 5.0

    def __init__(self) -> None:
        self.app = _App()


class _State:
    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.default_headers: list[tuple[bytes, bytes]] = []


class _Transport:
    def __init__(self) -> None:
        self.protocol: Any = None
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class _HandedOver:
    """The hand-over target: records the bytes it is given."""

    caps = Caps(Limits())

    def __init__(self, **_: Any) -> None:
        self.data = b""

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.data += data


class _Front(PingFront):
    fallback = _HandedOver

    def _ping(self, method: bytes, target: bytes, body: bytes | None, close: bool) -> None:
        self.taken.append((method, target, body or b""))  # a GET's body is not passed on
        super()._ping(method, target, body, close)


def feed(stream: bytes, cuts: list[int]) -> tuple[list[tuple[bytes, bytes, bytes]], bytes, bool]:
    """(pings taken, bytes handed over, whether the front stopped reading after a close)."""
    loop = asyncio.new_event_loop()
    try:
        front = _Front(_Config(), _State(), {}, _loop=loop)
        front.taken = []  # type: ignore[attr-defined]
        transport = _Transport()
        front.connection_made(transport)
        pos = 0
        for cut in [*sorted(set(cuts)), len(stream)]:
            if cut <= pos:
                continue
            chunk = stream[pos:cut]
            pos = cut
            if transport.protocol is not None:
                transport.protocol.data_received(chunk)
            else:
                front.data_received(chunk)
        handed = transport.protocol.data if transport.protocol is not None else front.buf
        if front.timer is not None:
            front.timer.cancel()
        return front.taken, handed, front.closing and transport.protocol is None  # type: ignore[attr-defined]
    finally:
        loop.close()


def h11_requests(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """The requests h11 reads in ``data``, which must hold whole requests only."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")  # the end: a partial request left over is an error
    out: list[tuple[bytes, bytes, bytes]] = []
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            current = [event.method, event.target, b""]
        elif isinstance(event, h11.Data):
            current[2] += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((current[0], current[1], _posted(current)))
            conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return out
            conn.start_next_cycle()
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return out
        else:
            raise AssertionError(f"unexpected {event!r}")


def _posted(request: list[bytes]) -> bytes:
    """The body as the front passes it on: only a POST's (a GET's is read and dropped)."""
    return request[2] if request[0] == b"POST" else b""


_KEY = "abcdefghijklmnopqrstuv"
_targets = st.one_of(
    st.sampled_from([f"/ping/{_KEY}", f"/ping/{_KEY}/start", f"/jobs/p/{_KEY}?state=run",
                     f"/p/{_KEY}/job?state=complete&msg=a+b", "/healthz", "/api/v1/jobs"]),
    st.builds(lambda p, junk: p + junk, st.sampled_from(["/ping/", "/p/", "/jobs/p/", "/"]),
              st.text(alphabet="aZ09-._~%/?#&= \t\x00\x7fé", max_size=12)),
)  # fmt: skip
_header_lines = st.sampled_from([
    "Host: x", "Connection: close", "Connection: keep-alive", "Content-Length: 0",
    "Content-Length: 3", "Content-Length: 5", "Content-Length: +3", "Content-Length: 3 ",
    "Content-Length:3", "Content-Length: 99999999", "Content-Length: -1",
    "Content-Length: 0x3", "Transfer-Encoding: chunked", "Expect: 100-continue",
    "Upgrade: websocket", "X-A: b", "X-A:  spaced  ", " folded: x", "No colon",
    "Bad Name: x", "X-\u00e9: x", "X-Ctl: a\x01b", ":empty", "X-Tab:\tv",
])  # fmt: skip


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET"] * 4 + ["POST"] * 4 + ["HEAD", "PUT", "get", "GET ",
                                                                "G\x00T"]))  # fmt: skip
    version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/1.2", "http/1.1", ""]))
    line = f"{method} {draw(_targets)} {version}".rstrip(" ") if version else f"{method} /"
    host = draw(st.sampled_from([["Host: x"]] * 6 + [[], ["Host: x", "host: y"]]))
    headers = [*host, *draw(st.lists(_header_lines, max_size=3))]
    eol = draw(st.sampled_from(["\r\n"] * 8 + ["\n", "\r"]))
    body = draw(
        st.sampled_from([b"", b"", b"abc", b"abcde", b"0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n"])
    )
    head = eol.join([line, *headers]) + eol + eol
    return head.encode("utf-8", "surrogatepass") + body


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(_request(), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=3),
)
def test_the_front_agrees_with_h11_or_hands_over(requests: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(requests)
    taken, handed, stopped = feed(stream, cuts)
    if stopped:  # a "Connection: close" ping: what followed it is never read
        consumed_end = None
    else:
        assert stream.endswith(handed), "the front changed the bytes it handed over"
        consumed_end = len(stream) - len(handed)
    if consumed_end is None:
        # the front stopped after its last ping: h11 must read the same pings first
        got = h11_requests_prefix(stream, len(taken))
    else:
        got = h11_requests(stream[:consumed_end])
    assert got == taken


def h11_requests_prefix(data: bytes, n: int) -> list[tuple[bytes, bytes, bytes]]:
    """The first ``n`` requests h11 reads in ``data`` (more may follow)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    out: list[tuple[bytes, bytes, bytes]] = []
    current: list[bytes] = []
    while len(out) < n:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            current = [event.method, event.target, b""]
        elif isinstance(event, h11.Data):
            current[2] += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((current[0], current[1], _posted(current)))
            if len(out) == n:
                break
            conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
        else:
            raise AssertionError(f"h11 stopped before the front's {n} pings: {event!r}")
    return out


def test_the_fuzz_sees_pings_taken_and_handed_over() -> None:
    """The property above is not vacuous: whole pings are taken, the rest handed over."""
    ping = f"GET /ping/{_KEY} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    taken, handed, stopped = feed(ping * 2 + b"GET /healthz HTTP/1.1\r\n\r\n", [])
    assert [t[1] for t in taken] == [f"/ping/{_KEY}".encode()] * 2
    assert handed == b"GET /healthz HTTP/1.1\r\n\r\n" and not stopped
    taken, handed, _ = feed(ping, [10])  # a head cut in two: handed over whole
    assert taken == [] and handed == ping
