"""Hostile clients against a real ``cronwatch serve``, over raw sockets: slow, large,
malformed. Each is answered 4xx (or closed after a deadline) without holding memory or
other clients; acknowledged pings are recorded all the same.

The server runs with short deadlines (1.5 s) so that the cases take seconds; "another
client" connects from 127.0.0.2 (any 127/8 address reaches the loopback) so that the
per-address cap on 127.0.0.1 does not apply to it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cronwatch.server.limits import BodyLimit, Limits
from cronwatch.store import open_store

DEADLINE = 1.5  # --head-timeout and --body-timeout of the server under test
PER_ADDRESS = 150  # above what one test opens from 127.0.0.1
RSS_BOUND_MB = 200


class Server:
    def __init__(self, db: Path, log: Path, *extra: str) -> None:
        self.db, self.log = db, log
        cmd = [sys.executable, "-m", "cronwatch.main", "serve", "--port", "0", "--db", str(db),
               "--head-timeout", str(DEADLINE), "--body-timeout", str(DEADLINE),
               "--max-connections-per-address", str(PER_ADDRESS), *extra]  # fmt: skip
        self.err = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stderr=self.err, stdout=subprocess.DEVNULL)
        deadline = time.time() + 20
        while b"serving on" not in log.read_bytes():
            assert time.time() < deadline and self.proc.poll() is None, log.read_text()
            time.sleep(0.05)
        line = next(x for x in log.read_text().splitlines() if "serving on" in x)
        self.port = int(line.rsplit(":", 1)[1])
        with httpx.Client(base_url=self.url(), timeout=2) as c:
            while True:
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.time() < deadline, "the server did not come up"
                time.sleep(0.05)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(15)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def rss_mb(self) -> float:
        """VmRSS of the server and its child processes (the ping writer)."""
        total = 0
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return total / 1024

    def job_key(self, name: str) -> str:
        with open_store(str(self.db)) as s:
            return s.ensure_ping_key(name, now=time.time())

    def stored(self, name: str) -> set[str]:
        with open_store(str(self.db)) as s:
            return {r.id for r in s.list_runs(job=name, limit=100_000)}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:  # the test holds a few hundred sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    os.environ.pop("CRONWATCH_DB", None)
    tmp = tmp_path_factory.mktemp("limits")
    srv = Server(tmp / "h.db", tmp / "serve.log")
    yield srv
    srv.stop()


def ping_from_elsewhere(server: Server, key: str, rid: str) -> float:
    """A ping from another client address, on a new connection; seconds until it was
    acknowledged (a raw socket: the client's own start-up is not what is measured)."""
    t = time.monotonic()
    with server.connect("127.0.0.2") as sock:
        sock.sendall(f"GET /ping/{key}?rid={rid} HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode())  # fmt: skip
        data, closed = answer(sock)
    took = time.monotonic() - t
    assert closed and data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nOK"), data
    return took


def answer(sock: socket.socket) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (15 s at most), and whether
    it closed it."""
    out = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return out, True
            out += data
    except TimeoutError:
        return out, False
    except ConnectionResetError:
        return out, True


def status(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split()[1])


def wait_closed(socks: list[socket.socket], within: float) -> list[bytes]:
    """Each socket's answer; every one must be closed by the server within ``within``."""
    deadline = time.monotonic() + within
    out = []
    for s in socks:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        data, closed = answer(s)
        assert closed, "a connection was held past its deadline"
        out.append(data)
        s.close()
    return out


# --- malformed and oversized requests: 4xx at once, then closed ----------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400),  # bare LF
        (b"GET /\r\n", 400),  # HTTP/0.9, the line alone
        (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9 with an empty line after it
        (b"GET /ping/x?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-Many: 0123456789abcdef\r\n" * 3000 + b"\r\n", 431),
        # the same on a ping route, small enough to arrive in one read (the front's case)
        (b"GET /ping/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n", 431),
        (b"GET /ping/x?" + b"a" * 8_300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        # before authentication, before reading a byte of the body (none is sent)
        (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n", 413),
        (b"POST /ping/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n", 413),
        (b"POST /ping/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ],
    ids=[
        "bare-lf",
        "http09-line",
        "http09",
        "huge-query",
        "huge-header",
        "many-headers",
        "ping-huge-header",
        "ping-long-query",
        "api-413-no-token",
        "ping-413",
        "negative-length",
    ],  # fmt: skip
)
def test_malformed_or_oversized_is_answered_at_once(
    server: Server, raw: bytes, expected: int
) -> None:
    with server.connect() as sock:
        sock.sendall(raw)
        data, closed = answer(sock)
    assert status(data) == expected  # not 408: answered at once, not at the deadline
    assert closed


def test_malformed_requests_in_a_loop_do_not_fill_the_log(server: Server) -> None:
    before = server.log.read_text().count("Invalid HTTP request")
    for _ in range(20):
        with server.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")
            assert status(answer(sock)[0]) == 400
    assert server.log.read_text().count("Invalid HTTP request") - before <= 2


def test_body_limit_counts_a_chunked_body() -> None:
    """Without Content-Length the middleware counts the body as the app reads it: past the
    limit the client gets 413 and the app a disconnect."""
    limits = Limits(max_api_body=10)
    seen: list[dict[str, object]] = []
    sent: list[dict[str, object]] = []

    async def app(scope: object, receive: object, send: object) -> None:
        while True:
            message = await receive()  # type: ignore[operator]
            seen.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"read it all"})  # type: ignore[operator]

    chunks = iter([b"12345", b"67890", b"X", b"never read"])

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/api/v1/jobs",
        "headers": [(b"transfer-encoding", b"chunked")],
    }
    asyncio.run(BodyLimit(app, limits)(scope, receive, send))
    assert [m["type"] for m in seen] == ["http.request", "http.request", "http.disconnect"]
    assert sent[0]["status"] == 413 and len(sent) == 2  # the app's own answer is dropped
    assert b"limit 10 bytes" in sent[1]["body"]  # type: ignore[operator]


# --- slow clients: closed after the deadline, others served meanwhile -----------------------


def test_slowloris_heads_are_closed_and_others_served(server: Server) -> None:
    key = server.job_key("loris")
    socks = []
    for i in range(100):
        s = server.connect()
        s.sendall(b"GET /ping/" + key.encode() + b" HTTP/1.1\r\nHost: x\r\nX-" + b"%d" % i)
        socks.append(s)
    assert ping_from_elsewhere(server, key, "loris-1") < 2.0
    answers = wait_closed(socks, within=DEADLINE + 10)
    assert {status(a) for a in answers} == {408}
    assert ping_from_elsewhere(server, key, "loris-2") < 2.0
    assert {"loris-1", "loris-2"} <= server.stored("loris")


def test_a_trickled_body_is_closed_at_the_deadline(server: Server) -> None:
    key = server.job_key("trickle")
    with server.connect() as sock:
        sock.sendall(
            f"POST /ping/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        sent = 0
        start = time.monotonic()
        try:
            while sent < 1000 and time.monotonic() - start < DEADLINE + 15:
                sock.sendall(b"x")
                sent += 1
                time.sleep(0.02)
                sock.settimeout(0.001)
                try:
                    if sock.recv(1 << 16, socket.MSG_PEEK) == b"":
                        break  # closed
                except (TimeoutError, BlockingIOError):
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 1000, "a body sent a byte at a time was read to its end"
    assert not server.stored("trickle")  # the ping never completed: nothing recorded


def test_close_then_flood_reads_nothing_more(server: Server) -> None:
    key = server.job_key("flood")
    before = server.rss_mb()
    with server.connect() as sock:
        sock.sendall(f"GET /ping/{key}?rid=flood-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     .encode())  # fmt: skip
        junk = b"z" * 65536
        flooded = 0
        sock.settimeout(5)
        try:
            for _ in range(64 * 16):  # 64 MiB, unless the server closes first
                sock.sendall(junk)
                flooded += len(junk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    assert flooded < 64 << 20, "the server kept reading after Connection: close"
    assert server.rss_mb() < before + 32
    assert "flood-1" in server.stored("flood")


def test_held_bodies_do_not_hold_the_server(server: Server) -> None:
    """Connections that declare 1 MiB ping bodies, send half and stop: another client's
    pings are answered within a second and the server's memory stays bounded."""
    key = server.job_key("held")
    socks = []
    half = b"y" * (1 << 19)
    for _ in range(100):
        s = server.connect()
        s.sendall(f"POST /ping/{key}/log HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 20}\r\n\r\n"
                  .encode())  # fmt: skip
        s.settimeout(0.05)
        try:
            s.sendall(half)
        except TimeoutError:
            pass  # the server stopped reading: what matters is that it does not buffer
        socks.append(s)
    assert ping_from_elsewhere(server, key, "held-1") < 2.0
    assert server.rss_mb() < RSS_BOUND_MB
    wait_closed(socks, within=DEADLINE + 10)
    assert ping_from_elsewhere(server, key, "held-2") < 2.0
    assert {"held-1", "held-2"} <= server.stored("held")


# --- connection caps -------------------------------------------------------------------------


@pytest.mark.parametrize("front", ["fast", "uvicorn"])  # each admits connections itself
def test_per_address_cap_refuses_with_a_log_line_and_others_are_served(
    tmp_path: Path, front: str
) -> None:
    # a long head deadline: the held connections stay until this test closes them
    srv = Server(tmp_path / "c.db", tmp_path / "c.log", "--max-connections-per-address", "20",
                 "--max-connections", "31", "--head-timeout", "60", "--front", front)  # fmt: skip
    try:
        key = srv.job_key("capped")
        held = [srv.connect() for _ in range(20)]
        others = [srv.connect("127.0.0.3") for _ in range(10)]  # 30 in all: the total cap
        time.sleep(0.2)  # let the server take them in (accept order is not connect order)
        over = [srv.connect() for _ in range(5)]
        assert {status(a) for a in wait_closed(over, within=10)} == {503}
        # the 31st connection is welcome (from another address), the 32nd is not
        assert ping_from_elsewhere(srv, key, "capped-1") < 2.0
        extra = srv.connect("127.0.0.3")
        time.sleep(0.2)
        assert {status(a) for a in wait_closed([srv.connect("127.0.0.4")], within=10)} == {503}
        log = srv.log.read_text()
        assert "connection limit reached for 127.0.0.1 (20 per address)" in log
        assert "connection limit reached (31 in all)" in log
        assert "Traceback" not in log
        for s in [*held, *others, extra]:
            s.close()
        deadline = time.monotonic() + 10
        while True:  # once they are gone, 127.0.0.1 is welcome again
            with srv.connect() as sock:
                sock.sendall(f"GET /ping/{key}?rid=capped-2 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                sock.settimeout(10)
                if status(sock.recv(65536)) == 200:
                    break
            assert time.monotonic() < deadline, "the closed connections were not forgotten"
            time.sleep(0.1)
        assert {"capped-1", "capped-2"} <= srv.stored("capped")
    finally:
        srv.stop()


def test_connections_handed_over_by_the_front_are_counted_once(tmp_path: Path) -> None:
    """The front admits a connection, and hands it to the guarded protocol for anything
    but a plain ping: the count moves with it, and goes when it closes, however often."""
    srv = Server(tmp_path / "h.db", tmp_path / "h.log", "--max-connections-per-address", "4",
                 "--head-timeout", "60")  # fmt: skip
    try:
        key = srv.job_key("handed")
        for i in range(12):  # three times the cap, one after the other, each handed over
            with srv.connect() as sock:
                sock.sendall(f"GET /ping/{key}?rid=p{i} HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                             .encode())  # fmt: skip
                data, closed = answer(sock)
            assert closed and data.count(b"HTTP/1.1 200 ") == 2, (i, data)
        deadline = time.monotonic() + 10
        while True:  # the server sees the last close a moment after the client
            held = [srv.connect() for _ in range(4)]
            time.sleep(0.2)
            over = srv.connect()
            over.settimeout(1)
            try:
                refused = over.recv(65536)
            except TimeoutError:
                refused = b""
            finally:
                over.close()
            for s in held:
                s.close()
            if status(refused) == 503:
                break
            assert not refused and time.monotonic() < deadline, refused
            time.sleep(0.1)
        # four were welcome and the fifth was not: what was handed over was released
        assert {f"p{i}" for i in range(12)} <= srv.stored("handed")
        assert "Traceback" not in srv.log.read_text()
    finally:
        srv.stop()


def test_the_parse_cache_is_bounded() -> None:
    """The ping writer caches parsed URLs: a flood of distinct or long URLs (no key
    needed) must not grow it without bound."""
    from cronwatch.server import pingproc

    cache = pingproc._parsed
    cache.clear()
    for i in range(pingproc._CACHE_SIZE + 500):
        pingproc._parse(f"/ping/key-{i}", b"")
    assert len(cache) == pingproc._CACHE_SIZE
    assert ("/ping/key-0", b"") not in cache and (f"/ping/key-{i}", b"") in cache
    long_query = b"msg=" + b"a" * 60_000
    assert pingproc._parse("/ping/key-1", long_query) is not None
    assert ("/ping/key-1", long_query) not in cache
    cache.clear()


def test_pipelined_pings_and_keep_alive_still_work(server: Server) -> None:
    """The limits must not cut legitimate traffic: pipelined pings on one connection,
    a POST body in several writes, then a request on the same connection."""
    key = server.job_key("legit")
    with server.connect() as sock:
        sock.sendall(b"".join(f"GET /ping/{key}?rid=p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                              for i in range(5)))  # fmt: skip
        body = b"line\n" * 1000
        head = f"POST /ping/{key}/log?rid=p5 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode())
        for i in range(0, len(body), 1000):
            sock.sendall(body[i : i + 1000])
        got = b""
        sock.settimeout(10)
        while got.count(b"HTTP/1.1 200") < 6:
            data = sock.recv(65536)
            assert data, got
            got += data
    assert {f"p{i}" for i in range(5)} <= server.stored("legit")


def test_ping_writer_thread_runs_under_the_same_limits(tmp_path: Path) -> None:
    srv = Server(tmp_path / "t.db", tmp_path / "t.log", "--ping-writer", "thread")
    try:
        with srv.connect() as sock:
            sock.sendall(b"GET /\r\n")
            assert status(answer(sock)[0]) == 400
        key = srv.job_key("t")
        assert ping_from_elsewhere(srv, key, "t-1") < 5
    finally:
        srv.stop()


def test_fast_front_hands_slow_requests_to_the_guard(tmp_path: Path) -> None:
    """``--front fast`` takes only whole requests; a partial head goes to the guarded
    protocol and meets the same deadline."""
    # a head deadline far above the bound on the other client's ping: "served at once"
    # and "served once the partial heads were closed" stay apart on a loaded machine
    head_timeout = 8.0
    srv = Server(tmp_path / "f.db", tmp_path / "f.log", "--front", "fast",
                 "--head-timeout", str(head_timeout))  # fmt: skip
    try:
        key = srv.job_key("f")
        socks = []
        for _ in range(20):
            s = srv.connect()
            s.sendall(f"GET /ping/{key} HTTP/1.1\r\nHost".encode())
            socks.append(s)
        assert ping_from_elsewhere(srv, key, "f-1") < head_timeout - 3
        assert {status(a) for a in wait_closed(socks, within=head_timeout + 10)} == {408}
        with srv.connect() as sock:  # close then flood: the front drops what follows
            sock.sendall(f"GET /ping/{key}?rid=f-2 HTTP/1.1\r\nConnection: close\r\n\r\n"
                         .encode() + b"z" * (1 << 20))  # fmt: skip
            assert status(answer(sock)[0]) == 200
        assert {"f-1", "f-2"} <= srv.stored("f")
    finally:
        srv.stop()


# --- answers: a head and its body in one send, nothing held past the loop's turn ----------


def test_a_ping_answer_arrives_in_one_piece(server: Server) -> None:
    """uvicorn writes a head and its body apart; the guard sends them together (one send
    each answer, the cost that counts when a commit answers a burst of pings). A single
    send of a short answer is one segment on the loopback, so each first read holds the
    whole answer (with two sends a read often gets the head alone)."""
    key = server.job_key("whole")
    with server.connect() as sock:
        for i in range(30):
            sock.sendall(f"GET /ping/{key}?rid=w{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"\r\n\r\nOK"), (i, first)
    assert {f"w{i}" for i in range(30)} <= server.stored("whole")


def test_a_head_without_a_body_is_not_held(server: Server) -> None:
    """A HEAD answer and a 100 Continue are writes with nothing after them in the same
    turn: they must go out at once, not wait for a next write."""
    key = server.job_key("heads")
    with server.connect() as sock:
        sock.sendall(f"HEAD /ping/{key}?rid=h1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            assert data, head
            head += data
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), head
        body = b"some output\n"
        sock.sendall(f"POST /ping/{key}?rid=h2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())  # fmt: skip
        got = sock.recv(65536)  # the client waits for it before sending the body
        assert got.startswith(b"HTTP/1.1 100 "), got
        sock.sendall(body)
        got = got.split(b"\r\n\r\n", 1)[1]
        while not got.endswith(b"\r\n\r\nOK"):
            data = sock.recv(65536)
            assert data, got
            got += data
        assert got.startswith(b"HTTP/1.1 200 "), got
    assert {"h1", "h2"} <= server.stored("heads")


def test_the_per_address_cap_counts_an_ipv6_client_by_its_64() -> None:
    """An IPv6 host holds a whole /64 and may take a new address per connection."""
    from cronwatch.server.limits import client_network

    a = client_network("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
    assert a == client_network("2001:db8:1:2::7") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::7") != a
    assert client_network("::ffff:192.0.2.1") == "192.0.2.1"  # dual-stack: the IPv4 client
    assert client_network("192.0.2.1") == "192.0.2.1"
    assert client_network("::1") == "::1"
