# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""SSE delivery and resume, /metrics, /healthz."""

from __future__ import annotations

import json
import threading
import time

import httpx

from test_server_harness import LiveServer, client, live  # noqa: F401


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
