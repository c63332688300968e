# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Pings and everything else on one connection, over raw sockets so that the exact bytes
are seen: on the default stack (uvicorn with server.limits) and on the opt-in front
(``--front fast``: plain pings answered by server.front, everything else handed to the
guarded uvicorn protocol on the same connection). Both must answer the same."""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from cronwatch.core.model import new_run_id
from cronwatch.server.apply import RunIds
from test_server_harness import LiveServer, client  # noqa: F401

_names = itertools.count()


@pytest.fixture(scope="module", params=["uvicorn", "fast"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    os.environ.pop("CRONWATCH_DB", None)
    db = tmp_path_factory.mktemp("srv") / "history.db"
    server = LiveServer(db, "--front", request.param).start()
    yield server
    server.stop()


def fresh(live: LiveServer) -> tuple[str, str]:
    name = f"front-{next(_names)}"
    return name, live.job_key(name)


def runs(live: LiveServer, name: str) -> list:
    with live.store() as s:
        return s.list_runs(job=name, output=True, oldest_first=True)


def connect(live: LiveServer) -> socket.socket:
    host, port = live.url.split("//")[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``n`` HTTP responses (Content-Length framed) off the socket, in order."""
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    head_only = False
    while len(out) < n:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            lines = buf[:end].decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
            length = 0 if head_only else int(headers.get("content-length", "0"))
            if len(buf) >= end + 4 + length:
                out.append((status, headers, buf[end + 4 : end + 4 + length]))
                buf = buf[end + 4 + length :]
                continue
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return out


def request(path: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_pipelined_pings_then_other_routes_answered_in_order(live: LiveServer) -> None:
    name, key = fresh(live)
    with connect(live) as sock:
        sock.sendall(
            request(f"/ping/{key}/start")
            + request(f"/ping/{key}")
            + request("/ping/no-such-key")
            + request("/healthz")  # not a ping: the connection goes on in uvicorn
            + request(f"/jobs/p/{key}?state=complete")  # answered by the ASGI app
            + request(f"/ping/{key}/fail", "Connection: close")
        )
        got = read_responses(sock, 6)
        assert sock.recv(10) == b""  # closed after the "Connection: close" request
    assert [(s, b) for s, _h, b in got[:3]] == [(200, b"OK"), (200, b"OK"), (404, b"not found")]
    assert got[3][0] == 200 and json.loads(got[3][2])["status"] == "ok"
    assert [(s, b) for s, _h, b in got[4:]] == [(200, b"OK"), (200, b"OK")]
    for _status, headers, _body in got[:3] + got[4:]:
        assert headers["ping-body-limit"] == "100000"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert "date" in headers
    assert got[5][1]["connection"] == "close"
    # start, then a success closes it; then a synthetic success, then a synthetic failure
    statuses = [r.status.value for r in runs(live, name)]
    assert statuses == ["success", "success", "failed"]


def test_front_and_asgi_give_the_same_answer(live: LiveServer) -> None:
    """A percent-encoded path goes through uvicorn and the ASGI app; the bytes match."""
    _name, key = fresh(live)
    answers = []
    for path in (f"/ping/{key}", "/ping/" + "".join(f"%{ord(c):02X}" for c in key)):
        with connect(live) as sock:
            sock.sendall(request(path, "Connection: close"))
            answers.append(read_responses(sock, 1)[0])
    for status, headers, body in answers:
        headers.pop("date")
        assert (status, body) == (200, b"OK")
    assert answers[0][1] == answers[1][1]
    bad = []
    for path in (f"/jobs/p/{key}?state=nope", f"/jobs/p/{key}?state=%6Eope"):
        with connect(live) as sock:
            sock.sendall(request(path, "Connection: close"))
            bad.append(read_responses(sock, 1)[0])
    assert bad[0][0] == bad[1][0] == 400 and bad[0][2] == bad[1][2]


def test_head_post_bodies_and_the_body_limit(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    with connect(live) as sock:
        sock.sendall(request(f"/ping/{key}", method="HEAD"))
        ((status, headers, _),) = read_responses_head(sock)
        assert (status, headers["content-length"]) == (200, "2")
        sock.sendall(request(f"/ping/{key}/start", method="POST", body=b"starting\n"))
        sock.sendall(request(f"/ping/{key}/log", "Content-Type: application/json",
                             method="POST", body=b"step 2\n"))  # fmt: skip
        sock.sendall(request(f"/ping/{key}/0", method="POST", body=b"x" * 150_000))
        assert [s for s, _h, _b in read_responses(sock, 3)] == [200, 200, 200]
    got = runs(live, name)
    assert [r.status.value for r in got] == ["success", "success"]
    assert got[1].stdout is not None and len(got[1].stdout) <= 100_000  # cut to the limit
    # chunked bodies are uvicorn's to parse: same result
    name2, key2 = fresh(live)
    r = client.post(f"/ping/{key2}/fail", content=iter([b"exit ", b"code 1\n"]))
    assert r.text == "OK"
    (run,) = runs(live, name2)
    assert (run.status.value, run.stdout) == ("failed", b"exit code 1\n")


def read_responses_head(sock: socket.socket) -> list[tuple[int, dict[str, str], bytes]]:
    """One response to HEAD: headers only (Content-Length describes a body not sent)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert rest == b""
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    return [(int(lines[0].split()[1]), headers, b"")]


def test_malformed_and_unusual_requests_go_to_uvicorn(live: LiveServer) -> None:
    name, key = fresh(live)
    cases = [
        request(f"/ping/{key}", "Bad Header Line"),  # no colon: uvicorn answers 400
        request(f"/ping/{key}", "Content-Length: 1", "Content-Length: 2"),
        f"GET /ping/{key} HTTP/1.0\r\n\r\n".encode(),  # HTTP/1.0: uvicorn answers it
        request(f"/ping/{key}", method="PUT"),
    ]
    statuses = []
    for raw in cases:
        with connect(live) as sock:
            sock.sendall(raw)
            got = read_responses(sock, 1)
            statuses.append(got[0][0] if got else None)
    assert statuses[0] == 400 and statuses[1] == 400
    assert statuses[2] == 200  # a valid HTTP/1.0 ping, recorded through the ASGI path
    assert statuses[3] == 405
    assert [r.status.value for r in runs(live, name)] == ["success"]


def test_quick_path_keeps_run_semantics_and_events(live: LiveServer, client: httpx.Client) -> None:
    """Successes of a steady job are recorded as buffered rows; a start in between still
    opens a run that the next success closes, and the events match the full path's."""
    name, key = fresh(live)
    with live.store() as s:
        last = s.last_event_id()
    for _ in range(5):
        assert client.get(f"/ping/{key}").text == "OK"
    assert client.get(f"/ping/{key}/start").text == "OK"
    time.sleep(0.05)
    assert client.get(f"/ping/{key}", params={"msg": "done", "metric": "duration:2.5"}).text == "OK"
    assert client.get(f"/ping/{key}").text == "OK"
    assert client.get(f"/ping/{key}/fail").text == "OK"
    got = runs(live, name)
    assert [r.status.value for r in got] == ["success"] * 7 + ["failed"]
    closed = got[5]  # the started run, closed by the success after it
    assert closed.duration == 2.5 and closed.message == "done"
    ids = [r.id for r in got]
    assert len(set(ids)) == 8 and all(re.fullmatch(r"[0-9a-hjkmnp-tv-z]{26}", i) for i in ids)
    with live.store() as s:
        events = [(t, json.loads(d)) for _i, _at, t, d in s.events_since(last)]
    mine = [(t, d) for t, d in events if d.get("job") == name]
    types = [t for t, _d in mine]
    assert types == ["run.ok"] * 5 + ["run.started", "run.ok", "run.ok", "run.error"]
    keys = {"type", "job", "env", "run", "status", "started_at", "ended_at", "duration",
            "exit_code"}  # fmt: skip
    for t, d in mine:
        assert set(d) == keys and d["type"] == t
    assert [d["run"] for t, d in mine if t != "run.started"] == ids
    quick = mine[0][1]
    assert quick["started_at"] == quick["ended_at"] and quick["duration"] is None


def test_quick_path_answers_and_records_like_the_full_path(
    live: LiveServer, client: httpx.Client
) -> None:
    """The writer's quick path builds its answer itself (no result dict): the execution id
    of simob's v=1, an exit status and a duration must come out as the full path's."""
    name, key = fresh(live)
    with live.store() as s:
        last = s.last_event_id()
    r = client.get(f"/jobs/p/{key}?state=complete&v=1")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    first = r.json()["execution"]
    r = client.get(f"/ping/{key}/0", params={"metric": "duration:1.5"})  # exit status 0
    assert r.text == "OK"
    assert client.get(f"/jobs/p/{key}?state=complete").text == "OK"
    got = sorted(runs(live, name), key=lambda r: r.ended_at)  # the second started earlier
    assert got[0].id == first
    assert [(r.status.value, r.exit_code, r.duration) for r in got] == [
        ("success", None, None), ("success", 0, 1.5), ("success", None, None)
    ]  # fmt: skip
    assert got[1].ended_at - got[1].started_at == 1.5
    assert [r.source for r in got] == ["ping:simob", "ping:healthchecks", "ping:simob"]
    with live.store() as s:
        events = [json.loads(d) for _i, _at, _t, d in s.events_since(last)]
    mine = [d for d in events if d.get("job") == name]
    assert [(d["run"], d["exit_code"], d["duration"]) for d in mine] == [
        (got[0].id, None, None), (got[1].id, 0, 1.5), (got[2].id, None, None)
    ]  # fmt: skip
    assert mine[1]["started_at"] == got[1].started_at and mine[1]["ended_at"] == got[1].ended_at


def test_run_ids_match_the_models_format() -> None:
    make = RunIds()
    now = time.time()
    ids = [make(now) for _ in range(600)]  # past one pool of random bytes
    assert len(set(ids)) == len(ids)
    reference = new_run_id(now)
    for i in ids:
        assert len(i) == 26 and i[:10] == reference[:10]
        assert re.fullmatch(r"[0-9a-hjkmnp-tv-z]{26}", i)
    assert make(now + 1) > ids[0]  # time-ordered


def test_thread_writer_mode_answers_the_same(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``--ping-writer thread``: no front, no writer process; pings go through ASGI."""
    server = LiveServer(tmp_path / "history.db", "--ping-writer", "thread").start()
    try:
        key = server.job_key("threaded")
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.get(f"/ping/{key}/start").text == "OK"
            r = c.get(f"/ping/{key}")
            assert (r.status_code, r.text, r.headers["ping-body-limit"]) == (200, "OK", "100000")
            assert c.head(f"/ping/{key}").headers["content-length"] == "2"
            assert c.get("/ping/nope").status_code == 404
            assert c.get(f"/ping/{key}/300").status_code == 400
            assert c.get(f"/jobs/p/{key}?state=run&v=1").json()["execution"]
        with server.store() as s:
            got = s.list_runs(job="threaded", oldest_first=True)
        assert [r.status.value for r in got] == ["success", "success", "running"]
    finally:
        server.stop()
