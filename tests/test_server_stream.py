# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""SSE delivery and resume, /metrics, /healthz."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import signal
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CRONWATCH
from cronwatch.server.events import Broadcaster, resume_point
from cronwatch.server.gzipstream import HEADER, Member, Packed, accepts_gzip, crc32_combine
from test_server_harness import LiveServer, client, live_any  # noqa: F401


@pytest.fixture(scope="module")
def live(live_any: LiveServer) -> LiveServer:
    """Every test of this module runs on SQLite and on PostgreSQL (a replica's API must
    answer the same whichever store is behind it)."""
    return live_any


def read_events(
    live: LiveServer, headers: dict[str, str], n: int, timeout: float = 10
) -> tuple[list[dict], list[str]]:
    """Read ``n`` events from /api/v1/stream; also return the comment lines seen."""
    events: list[dict] = []
    comments: list[str] = []
    current: dict = {}
    with httpx.stream("GET", live.url + "/api/v1/stream", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                events.append(current)
                current = {}
                if len(events) >= n:
                    break
    return events, comments


def test_stream_delivers_live_events_and_keepalives(live: LiveServer, client: httpx.Client) -> None:
    headers = live.token("sse-reader", read_only=True)
    key = live.job_key("streamed")
    out: list = []
    reader = threading.Thread(target=lambda: out.append(read_events(live, headers, 2)))
    reader.start()
    time.sleep(1.0)  # connected, with keep-alives (0.3 s in tests) meanwhile
    client.get(f"/ping/{key}/start")
    client.get(f"/ping/{key}/fail")
    reader.join(10)
    events, comments = out[0]
    assert [e["event"] for e in events] == ["run.started", "run.error"]
    assert events[0]["data"]["job"] == "streamed" and events[0]["id"] < events[1]["id"]
    assert ": keep-alive" in comments


def test_stream_resumes_from_last_event_id(live: LiveServer, client: httpx.Client) -> None:
    headers = live.token("sse-resume", read_only=True)
    key = live.job_key("resumed")
    client.get(f"/ping/{key}/start")
    with live.store() as s:
        last = s.last_event_id()
    client.get(f"/ping/{key}")  # happens while "disconnected"
    events, _ = read_events(live, {**headers, "Last-Event-ID": str(last)}, 1)
    assert events[0]["event"] == "run.ok" and events[0]["id"] == last + 1


def test_stream_needs_a_token(client: httpx.Client) -> None:
    assert client.get("/api/v1/stream").status_code == 401


def test_metrics_and_healthz(live: LiveServer, client: httpx.Client) -> None:
    key = live.job_key("metered")
    client.get(f"/ping/{key}/1")
    client.get("/ping/not-a-key")
    text = client.get("/metrics", headers=live.token("prometheus", read_only=True)).text
    assert 'cronwatch_job_up{job="metered"} 0' in text
    assert 'cronwatch_job_runs_total{job="metered",status="failed"} 1' in text
    assert 'cronwatch_pings_total{dialect="healthchecks"}' in text
    assert "cronwatch_ping_errors_total" in text
    assert client.get("/healthz").json()["status"] == "ok"


# --- the broadcaster: many streams, caps, slow clients, resume, other processes -----------


class Stream:
    """An open /api/v1/stream read line by line; subscribed once ``: connected`` arrived."""

    def __init__(
        self, url: str, headers: dict[str, str], timeout: float = 15, encoding: str = "gzip"
    ) -> None:
        headers = {"Accept-Encoding": encoding, **headers}
        self._cm = httpx.stream("GET", url + "/api/v1/stream", headers=headers, timeout=timeout)
        self.response = self._cm.__enter__()
        assert self.response.status_code == 200, self.response.read()
        assert self.response.headers.get("content-encoding", "identity") == encoding
        self._lines = self.response.iter_lines()
        assert next(self._lines) == ": connected"

    def events(self, n: int, within: float = 20) -> list[dict]:
        """The next ``n`` events; keep-alive comments arrive meanwhile, so a missing event
        fails at the deadline rather than at the read timeout."""
        end = time.monotonic() + within
        events: list[dict] = []
        current: dict = {}
        for line in self._lines:
            assert time.monotonic() < end, f"{n} events did not arrive: {events}"
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                events.append(current)
                current = {}
                if len(events) >= n:
                    return events
        raise AssertionError(f"the stream ended after {events}")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def metric(client: httpx.Client, name: str) -> int:
    """A value from /metrics (the client sends a token: /metrics may require one)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def wait_metric(client: httpx.Client, name: str, value: int, deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while (seen := metric(client, name)) != value:
        assert time.monotonic() < end, f"{name} stayed {seen}, not {value}"
        time.sleep(0.05)


def test_every_stream_gets_every_event_once(live: LiveServer, client: httpx.Client) -> None:
    tokens = [live.token(f"fan-{i}", read_only=True) for i in range(3)]
    watcher = httpx.Client(base_url=live.url, headers=tokens[0], timeout=10)
    # 9 + 8 + 8 a token; gzip (as browsers ask) and plain: the same events either way
    streams = [Stream(live.url, tokens[i % 3], encoding=("gzip", "identity")[i % 2])
               for i in range(25)]  # fmt: skip
    try:
        assert metric(watcher, "cronwatch_event_streams") == 25
        key = live.job_key("fanned")
        assert client.get(f"/ping/{key}/start").status_code == 200
        assert client.get(f"/ping/{key}").status_code == 200
        seen = [[(e["id"], e["event"], e["data"]["job"]) for e in s.events(2)] for s in streams]
    finally:
        for s in streams:
            s.close()
    assert seen[0][0][1:] == ("run.started", "fanned") and seen[0][1][1:] == ("run.ok", "fanned")
    assert seen[0][0][0] < seen[0][1][0]
    assert all(s == seen[0] for s in seen)  # the same ids, in the same order, on every stream
    wait_metric(watcher, "cronwatch_event_streams", 0)
    watcher.close()


@pytest.mark.parametrize(
    "value",
    ["99999999999999999999", "9" * 400, "abc", "-1", "1.5", "1e3", "12abc", "1 2", "0x10"],
)
def test_a_garbage_last_event_id_streams_from_now(
    live: LiveServer, client: httpx.Client, value: str
) -> None:
    headers = live.token(f"garbage-{abs(hash(value))}", read_only=True)
    key = live.job_key("garbage")
    client.get(f"/ping/{key}/start")  # an older event the stream must not replay
    with live.store() as s:
        newest = s.last_event_id()
    stream = Stream(live.url, {**headers, "Last-Event-ID": value})
    try:
        client.get(f"/ping/{key}/fail")
        (event,) = stream.events(1)
    finally:
        stream.close()
    assert event["id"] > newest and event["event"] == "run.error"


def test_a_last_event_id_beyond_the_newest_event_streams_from_now(
    live: LiveServer, client: httpx.Client
) -> None:
    headers = live.token("from-another-db", read_only=True)
    key = live.job_key("beyond")
    with live.store() as s:
        newest = s.last_event_id()
    stream = Stream(live.url, {**headers, "Last-Event-ID": str(newest + 1000)})
    try:
        client.get(f"/ping/{key}")
        (event,) = stream.events(1)
    finally:
        stream.close()
    assert event["id"] == newest + 1 and event["data"]["job"] == "beyond"


@pytest.mark.parametrize(
    ("value", "newest", "expected"),
    [("7", 10, 7), ("0", 10, 0), (" 10 ", 10, 10), ("11", 10, None), ("٣", 10, None),
     ("+3", 10, None), ("", 10, None), ("1" * 20, 10**25, None)],
)  # fmt: skip
def test_resume_point(value: str, newest: int, expected: int | None) -> None:
    assert resume_point(value, newest) == expected


def test_a_wrapped_run_and_check_on_the_same_database_reach_the_stream(
    live: LiveServer, cw_env: dict[str, str]
) -> None:
    """The wrapper and ``cronwatch check`` write to the database without telling the
    server: the broadcaster looks once a second."""
    headers = live.token("local-writers", read_only=True)
    env = {**cw_env, "CRONWATCH_DB": str(live.db)}
    stream = Stream(live.url, headers)
    try:
        done = subprocess.run([CRONWATCH, "run", "wrapped", "--", "sh", "-c", "exit 3"], env=env,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
        assert done.returncode == 3, done.stderr
        (ran,) = stream.events(1)
        assert ran["event"] == "run.error"
        assert ran["data"]["job"] == "wrapped" and ran["data"]["exit_code"] == 3
        subprocess.run([CRONWATCH, "job", "set", "wrapped", "--schedule", "every 1h"], env=env,
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        checked = subprocess.run([CRONWATCH, "check", "--at", "2099-01-01T00:00:00Z"], env=env,
                                 check=True, capture_output=True, timeout=120)  # fmt: skip
        assert b"job.missed" in checked.stdout
        missed = stream.events(2)
    finally:
        stream.close()
    assert {e["event"] for e in missed} <= {"job.missed", "incident.opened"}
    assert all(e["data"]["job"] == "wrapped" and e["id"] > ran["id"] for e in missed)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("capped") / "history.db",
                        "--max-streams", "3", "--max-streams-per-token", "2",
                        "--stream-backlog", "65536").start()  # fmt: skip
    yield server
    server.stop()
    assert server.proc is not None and server.proc.stderr is not None
    log = server.proc.stderr.read().decode()
    # a stream dropped on purpose is one warning of ours, not an error of the app's
    assert "dropped a slow event stream" in log
    assert "ASGI callable returned without completing response" not in log


def test_streams_are_capped_per_token_and_in_all(capped: LiveServer) -> None:
    a, b = capped.token("cap-a", read_only=True), capped.token("cap-b", read_only=True)
    first = [Stream(capped.url, a), Stream(capped.url, a)]
    try:
        over = httpx.get(capped.url + "/api/v1/stream", headers=a, timeout=10)
        assert over.status_code == 429 and "cap-a" in over.json()["error"]
        assert over.headers["retry-after"]
        third = Stream(capped.url, b)  # another token still gets one: 3 in all
        try:
            full = httpx.get(capped.url + "/api/v1/stream", headers=b, timeout=10)
            assert full.status_code == 503 and "limit 3" in full.json()["error"]
        finally:
            third.close()
        first.pop().close()
        with httpx.Client(base_url=capped.url, headers=b, timeout=10) as c:
            wait_metric(c, "cronwatch_event_streams", 1)
        first.append(Stream(capped.url, a))  # a closed stream gives its place back
    finally:
        for s in first:
            s.close()


def _chunk_ids(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"id: (\d+)\nevent: [^\n]+\ndata: [^\n]*\n\n", raw)]


def test_a_client_that_does_not_read_is_dropped_while_pings_go_on(capped: LiveServer) -> None:
    headers = capped.token("never-reads", read_only=True)
    host, port = capped.url.rsplit("/", 1)[-1].split(":")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    slow.sendall(f"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: "
                 f"{headers['Authorization']}\r\n\r\n".encode())  # fmt: skip
    raw = b""
    while b": connected" not in raw:
        raw += slow.recv(4096)
    assert raw.startswith(b"HTTP/1.1 200")
    key = capped.job_key("busy")
    burst = json.dumps({"type": "run.log", "job": "busy", "env": "", "run": None, "bytes": 1})
    with httpx.Client(base_url=capped.url, headers=capped.token("watcher"), timeout=10) as c:
        assert metric(c, "cronwatch_event_streams") == 1
        end = time.monotonic() + 120
        # Other writers' events pile up faster than the client takes them (it takes none);
        # the kernel's buffers hold a few MiB before the server's queue fills.
        while metric(c, "cronwatch_event_streams_dropped_total") == 0:
            assert time.monotonic() < end, "the stream that does not read was never dropped"
            with capped.store() as s:
                s.add_events([(time.time(), "run.log", burst)] * 5000)
            assert c.get(f"/ping/{key}").status_code == 200  # ingestion goes on
        assert metric(c, "cronwatch_event_streams") == 0
        # Its client, reading at last, gets what was sent and then the end of the stream.
        slow.settimeout(30)
        while chunk := slow.recv(1 << 20):
            raw += chunk
        slow.close()
        last = max(_chunk_ids(raw))
        # EventSource reconnects with the last id it saw and resumes from the database.
        again = Stream(capped.url, {**headers, "Last-Event-ID": str(last)})
        try:
            assert again.events(1)[0]["id"] == last + 1
        finally:
            again.close()
        assert c.get(f"/ping/{key}").status_code == 200


def test_sigterm_ends_open_streams(tmp_path: Path) -> None:
    """uvicorn waits for open responses before it stops: the streams must end, each a
    complete body (a gzip stream with its trailer)."""
    server = LiveServer(tmp_path / "history.db").start()
    try:
        headers = server.token("open-at-stop", read_only=True)
        plain = Stream(server.url, headers, encoding="identity")
        url = server.url + "/api/v1/stream"
        with httpx.stream("GET", url, headers={**headers, "Accept-Encoding": "gzip"},
                          timeout=20) as zipped:  # fmt: skip
            assert zipped.headers["content-encoding"] == "gzip"
            raw = zipped.iter_raw()
            body, seen, inflate = b"", b"", zlib.decompressobj(16 + zlib.MAX_WBITS)
            httpx.get(f"{server.url}/ping/{server.job_key('stopping')}", timeout=10)
            while b"event: run.ok" not in seen:
                body += (chunk := next(raw))
                seen += inflate.decompress(chunk)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            body += b"".join(raw)  # until the server ends the response
            assert server.proc.wait(timeout=15) in (0, -signal.SIGTERM)
        text = gzip.decompress(body)  # a whole gzip member: the trailer's CRC checked
        assert text.startswith(b": connected\n\n") and b"event: run.ok" in text
        assert plain.events(1)[0]["event"] == "run.ok"
        with pytest.raises(AssertionError, match="the stream ended"):
            plain.events(1)
        plain.close()
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize(
    ("header", "gzip_it"),
    [("gzip, deflate, br", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False),
     ("identity", False), (None, False), ("*", True), ("br;q=1, *;q=0", False),
     ("gzip;q=oops", False)],
)  # fmt: skip
def test_accepts_gzip(header: str | None, gzip_it: bool) -> None:
    assert accepts_gzip(header) is gzip_it


def test_gzip_members_from_shared_and_own_pieces() -> None:
    """A batch compressed once, in streams that carried different things before it: each
    stream's body is one valid gzip member (the CRC combined, not recomputed)."""
    shared = [Packed(b"id: %d\nevent: run.ok\ndata: {}\n\n" % i * 40) for i in range(5)]
    for own in (b"", b": connected\n\n", bytes(range(256)) * 30):
        m = Member()
        body = HEADER + m.piece(own) + b"".join(m.packed(p) for p in shared) + m.end()
        expected = own + b"".join(b"id: %d\nevent: run.ok\ndata: {}\n\n" % i * 40
                                  for i in range(5))  # fmt: skip
        assert gzip.decompress(body) == expected
        assert crc32_combine(zlib.crc32(own), zlib.crc32(expected[len(own):]),
                             len(expected) - len(own)) == zlib.crc32(expected)  # fmt: skip


def test_other_processes_events_are_heard_only_while_streams_are_open() -> None:
    """A replica listens for the others' notifications (PostgreSQL) only while it has
    streams: each notification wakes a thread and a database backend, at every batch of
    pings of every replica. A stream that comes back within ``LINGER`` finds the same
    listener; after it, the listener is closed, and the next stream starts another."""

    class Listener:
        def __init__(self) -> None:
            self.closed = threading.Event()

        def close(self) -> None:
            self.closed.set()

    class Store:
        def __init__(self) -> None:
            self.listeners: list[Listener] = []

        def listen_events(self, wake: Any) -> Listener:
            self.listeners.append(Listener())
            return self.listeners[-1]

        def events_since(self, last_id: int, *, limit: int = 500) -> list[Any]:
            return []

        def last_event_id(self) -> int:
            return 0

    async def scenario() -> None:
        store = Store()
        hub = Broadcaster(store, poll=0.05, coalesce=0.01)  # type: ignore[arg-type]
        hub.LINGER = 0.3
        hub.start()
        await asyncio.sleep(0.2)
        assert store.listeners == []  # nobody streams: nobody listens
        a, b = hub.subscribe("t"), hub.subscribe("t")
        assert len(store.listeners) == 1
        hub.unsubscribe(a)
        await asyncio.sleep(0.6)
        assert not store.listeners[0].closed.is_set()  # b still streams
        hub.unsubscribe(b)
        await asyncio.sleep(0.1)
        c = hub.subscribe("t")  # back within the linger: the same listener
        assert len(store.listeners) == 1 and not store.listeners[0].closed.is_set()
        hub.unsubscribe(c)
        deadline = time.monotonic() + 5
        while not store.listeners[0].closed.is_set():
            assert time.monotonic() < deadline, "the listener outlived its streams"
            await asyncio.sleep(0.05)
        hub.subscribe("t")
        assert len(store.listeners) == 2 and not store.listeners[1].closed.is_set()
        await hub.close()
        assert store.listeners[1].closed.is_set()

    asyncio.run(scenario())
