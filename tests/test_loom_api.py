# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Loom's cron monitoring API against a real ``cronwatch serve``: every request and example
of Loom's document (../shared/seeds/loom-cron-monitoring.txt) as written there, with only
its host (and its ``<token>`` placeholder) replaced, and the documented answers, field
names and units asserted."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CRONWATCH
from test_server_harness import LiveServer, live_any  # noqa: F401


@pytest.fixture(scope="module")
def live(live_any: LiveServer) -> LiveServer:
    """Every test of this module runs on SQLite and on PostgreSQL (a replica's API must
    answer the same whichever store is behind it)."""
    return live_any


DOC = "https://loom.example.com"
KEY = "abc123-def456"  # the document's ping key: 13 characters, a key carried over

# --- the document's requests, verbatim ----------------------------------------------------

CREATE_CURL = """curl -X POST https://loom.example.com/api/crons/monitors \\
-H "Authorization: Bearer <token>" \\
-H "Content-Type: application/json" \\
-d '{
"slug": "daily-cleanup",
"name": "Daily Cleanup Job",
"schedule": {
"type": "cron",
"expression": "0 0 * * *"
},
"timezone": "America/New_York",
"checkin_margin_minutes": 5,
"max_runtime_minutes": 60,
"environments": ["production"]
}'"""

CREATE_INTERVAL = """{
"slug" : "daily-backup" ,
"name" : "Daily Database Backup" ,
"schedule" : {
"type" : "interval" ,
"minutes" : 1440
},
"timezone" : "UTC"
}"""

CHECKIN_CREATE = """{
"status" : "in_progress" ,
"started_at" : "2026-01-18T12:00:00Z"
}"""

CHECKIN_UPDATE = """{
"status" : "ok" ,
"finished_at" : "2026-01-18T12:05:00Z" ,
"duration_ms" : 300000 ,
"output" : "Processed 1000 records"
}"""

STATS_CURL = "curl https://loom.example.com/api/crons/monitors/daily-cleanup/stats?period=week"
STATS_FIELDS = ["total_checkins", "successful_checkins", "failed_checkins", "missed_checkins",
                "timeout_checkins", "avg_duration_ms", "p95_duration_ms", "uptime_percentage"]  # fmt: skip

PING_CURLS = [
    "curl https://loom.example.com/ping/abc123-def456",
    "curl https://loom.example.com/ping/abc123-def456/start",
    "curl https://loom.example.com/ping/abc123-def456/fail",
    'curl "https://loom.example.com/ping/abc123-def456?exit_code=1"',
    """curl -X POST https://loom.example.com/ping/abc123-def456 \\
-d "Job completed. Processed 1000 records." """,
]


def curl(text: str, live: LiveServer, token: str = "") -> httpx.Response:
    """Send a curl command of the document as curl would: method, URL, -H, -d."""
    words = shlex.split(text.replace("\\\n", " "))
    assert words[0] == "curl"
    method, url, headers, data = "GET", "", {}, None
    i = 1
    while i < len(words):
        w = words[i]
        if w == "-X":
            method, i = words[i + 1], i + 2
        elif w == "-H":
            name, _, value = words[i + 1].partition(": ")
            headers[name] = value.replace("<token>", token)
            i += 2
        elif w == "-d":
            data, i = words[i + 1], i + 2
            method = "POST" if method == "GET" else method
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif w == "-fsS":
            i += 1
        else:
            url, i = w, i + 1
    assert url.startswith(DOC), url
    return httpx.request(method, live.url + url[len(DOC) :], headers=headers,
                         content=None if data is None else data.encode(), timeout=10)  # fmt: skip


def bearer(live: LiveServer, name: str, *, read_only: bool = False) -> str:
    return live.token(name, read_only=read_only)["Authorization"].removeprefix("Bearer ")


def iso_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def api(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url + "/api/crons", headers=live.token("loom-admin"),
                      timeout=10) as c:  # fmt: skip
        yield c


@pytest.fixture(scope="module")
def cleanup(live: LiveServer, api: httpx.Client) -> dict[str, Any]:
    """The document's monitor, created with the document's request."""
    r = curl(CREATE_CURL, live, bearer(live, "loom-creator"))
    assert r.status_code == 201, r.text
    return dict(r.json()["monitor"])


# --- monitors --------------------------------------------------------------------------------


def test_create_answers_the_documented_monitor(live: LiveServer, cleanup: dict[str, Any]) -> None:
    m = cleanup
    assert m["id"].startswith("mon_") and m["slug"] == "daily-cleanup"
    assert m["ping_url"] == f"{live.url}/ping/{m['ping_key']}"
    assert (m["status"], m["health"]) == ("active", "unknown")
    assert m["name"] == "Daily Cleanup Job"
    assert m["schedule"] == {"type": "cron", "expression": "0 0 * * *"}
    assert m["timezone"] == "America/New_York"
    assert (m["checkin_margin_minutes"], m["max_runtime_minutes"]) == (5, 60)
    assert m["environments"] == ["production"]
    # the settings it became, through our own API: seconds, the zone, the display name
    job = httpx.get(f"{live.url}/api/v1/jobs/daily-cleanup", headers=live.token("v1")).json()
    assert (job["schedule"], job["tz"], job["grace"], job["max_runtime"], job["title"]) == (
        "0 0 * * *", "America/New_York", 300.0, 3600.0, "Daily Cleanup Job")  # fmt: skip
    # next expected: midnight in New York
    nxt = datetime.fromisoformat(m["next_expected_at"].replace("Z", "+00:00"))
    assert nxt.astimezone(UTC).hour in (4, 5) and nxt.minute == 0


def test_create_interval_monitor_defaults_its_margin(live: LiveServer, api: httpx.Client) -> None:
    r = api.post("/monitors", content=CREATE_INTERVAL, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    m = r.json()["monitor"]
    assert m["schedule"] == {"type": "interval", "minutes": 1440}
    assert m["checkin_margin_minutes"] == 5 and m["max_runtime_minutes"] is None
    assert m["timezone"] == "UTC" and m["name"] == "Daily Database Backup"
    assert api.post("/monitors", content=CREATE_INTERVAL,
                    headers={"Content-Type": "application/json"}).status_code == 409  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [({"slug": "Bad Slug"}, "slug"),
     ({"slug": "x1", "schedule": {"type": "cron", "expression": "61 * * * *"}}, "schedule"),
     ({"slug": "x2", "schedule": {"type": "interval", "minutes": 0}}, "minutes"),
     ({"slug": "x3", "schedule": {"type": "weekly"}}, "schedule"),
     ({"slug": "x4", "timezone": "Mars/Olympus"}, "tz"),
     ({"slug": "x5", "checkin_margin_minutes": -1}, "checkin_margin_minutes"),
     ({"slug": "x6", "environments": ["pro duction"]}, "environments"),
     ({"slug": "x7", "status": "sleeping"}, "status")],
)  # fmt: skip
def test_create_refuses_bad_monitors_naming_the_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    r = api.post("/monitors", json=body)
    assert r.status_code == 422 and field in r.json()["error"], r.text
    assert api.get(f"/monitors/{body['slug']}").status_code in (404, 422)


def test_list_filters_by_status_and_health(api: httpx.Client, cleanup: dict[str, Any]) -> None:
    for slug, status in (("f-active", None), ("f-paused", "paused"), ("f-off", "disabled")):
        body: dict[str, Any] = {"slug": slug, "schedule": {"type": "interval", "minutes": 60}}
        if status:
            body["status"] = status
        assert api.post("/monitors", json=body).status_code == 201
    monitors = api.get("/monitors").json()["monitors"]
    slugs = {m["slug"] for m in monitors}
    assert {"daily-cleanup", "f-active", "f-paused", "f-off"} <= slugs
    for status in ("active", "paused", "disabled"):
        got = api.get("/monitors", params={"status": status}).json()["monitors"]
        assert got and all(m["status"] == status for m in got), status
    assert {m["slug"] for m in api.get("/monitors?status=disabled").json()["monitors"]} == {"f-off"}
    unknown = api.get("/monitors", params={"health": "unknown"}).json()["monitors"]
    assert "f-active" in {m["slug"] for m in unknown}
    assert api.get("/monitors", params={"health": "healthy"}).json()["monitors"] == [] or all(
        m["health"] == "healthy" for m in api.get("/monitors?health=healthy").json()["monitors"]
    )
    for bad in ({"status": "sleeping"}, {"health": "late"}, {"health": "paused"}):
        r = api.get("/monitors", params=bad)
        assert r.status_code == 422 and "error" in r.json(), bad


def test_get_patch_pause_resume_delete(live: LiveServer, api: httpx.Client) -> None:
    assert api.post("/monitors", json={"slug": "lifecycle"}).status_code == 201
    m = api.get("/monitors/lifecycle").json()["monitor"]
    assert m["schedule"] is None and m["name"] == "lifecycle"
    r = api.patch("/monitors/lifecycle", json={"name": "Life Cycle", "checkin_margin_minutes": 15,
                                               "schedule": {"type": "cron", "expression": "*/15 * * * *"}})  # fmt: skip
    assert r.status_code == 200, r.text
    m = r.json()["monitor"]
    assert (m["name"], m["checkin_margin_minutes"]) == ("Life Cycle", 15)
    assert m["schedule"] == {"type": "cron", "expression": "*/15 * * * *"}
    assert m["timezone"] == "UTC"  # untouched fields keep their values
    assert api.post("/monitors/lifecycle/pause").json()["monitor"]["status"] == "paused"
    assert api.post("/monitors/lifecycle/resume").json()["monitor"]["status"] == "active"
    assert api.patch("/monitors/lifecycle", json={"status": "disabled"}).json()["monitor"][
        "status"] == "disabled"  # fmt: skip
    assert api.delete("/monitors/lifecycle").status_code == 204
    r = api.get("/monitors/lifecycle")
    assert r.status_code == 404 and "error" in r.json()
    assert api.post("/monitors/nothing-here/pause").status_code == 404


def test_read_only_tokens_read_but_never_write_nor_see_keys(
    live: LiveServer, cleanup: dict[str, Any]
) -> None:
    ro = live.token("loom-reader", read_only=True)
    c = httpx.Client(base_url=live.url + "/api/crons", headers=ro, timeout=10)
    m = c.get("/monitors/daily-cleanup").json()["monitor"]
    assert m["ping_url"] is None and m["ping_key"] is None
    assert all(x["ping_url"] is None for x in c.get("/monitors").json()["monitors"])
    for method, path in (("POST", "/monitors"), ("PATCH", "/monitors/daily-cleanup"),
                         ("DELETE", "/monitors/daily-cleanup"),
                         ("POST", "/monitors/daily-cleanup/pause"),
                         ("POST", "/monitors/daily-cleanup/checkins")):  # fmt: skip
        r = c.request(method, path, json={"slug": "nope", "status": "in_progress"})
        assert r.status_code == 403 and "read-only" in r.json()["error"], (method, path)
    assert httpx.get(live.url + "/api/crons/monitors").status_code == 401
    assert httpx.get(live.url + "/api/crons/monitors",
                     headers={"Authorization": "Bearer nope"}).status_code == 401  # fmt: skip


# --- check-ins ---------------------------------------------------------------------------------


def test_sdk_checkin_start_then_update_as_documented(
    api: httpx.Client, cleanup: dict[str, Any]
) -> None:
    json_headers = {"Content-Type": "application/json"}
    r = api.post("/monitors/daily-cleanup/checkins", content=CHECKIN_CREATE, headers=json_headers)
    assert r.status_code == 201, r.text
    checkin_id = r.json()["checkin_id"]
    c = r.json()["checkin"]
    assert (c["id"], c["status"], c["started_at"]) == (checkin_id, "in_progress",
                                                       "2026-01-18T12:00:00.000Z")  # fmt: skip
    assert c["finished_at"] is None and c["duration_ms"] is None
    r = api.patch(f"/checkins/{checkin_id}", content=CHECKIN_UPDATE, headers=json_headers)
    assert r.status_code == 200, r.text
    c = r.json()["checkin"]
    assert c["status"] == "ok" and c["output"] == "Processed 1000 records"
    assert (c["started_at"], c["finished_at"], c["duration_ms"]) == (
        "2026-01-18T12:00:00.000Z", "2026-01-18T12:05:00.000Z", 300000)  # fmt: skip
    # the times and the duration agree: finished_at - started_at == duration_ms
    assert (iso_s(c["finished_at"]) - iso_s(c["started_at"])) * 1000 == c["duration_ms"]
    listed = api.get("/monitors/daily-cleanup/checkins").json()["checkins"]
    assert checkin_id in {x["id"] for x in listed}
    # a finish that disagrees with the start is refused, and changes nothing
    r = api.post("/monitors/daily-cleanup/checkins", json={"status": "in_progress"})
    other = r.json()["checkin_id"]
    r = api.patch(
        f"/checkins/{other}", json={"status": "ok", "finished_at": "2000-01-01T00:00:00Z"}
    )
    assert r.status_code == 409 and "error" in r.json()
    assert api.patch(f"/checkins/{other}", json={"status": "error", "exit_code": 1}).json()[
        "checkin"]["status"] == "error"  # fmt: skip


def test_error_checkin_keeps_its_crash_event_and_caps_output(api: httpx.Client) -> None:
    assert api.post("/monitors", json={"slug": "crashy"}).status_code == 201
    start = api.post("/monitors/crashy/checkins", json={"status": "in_progress"}).json()
    big = "line of output\n" * 2000  # 30 KB: Loom keeps 10 KB
    r = api.patch(f"/checkins/{start['checkin_id']}",
                  json={"status": "error", "duration_ms": 1500, "exit_code": 1, "output": big,
                        "crash_event_id": "crash_7f3a"})  # fmt: skip
    assert r.status_code == 200, r.text
    c = r.json()["checkin"]
    assert (c["status"], c["exit_code"], c["duration_ms"], c["crash_event_id"]) == (
        "error", 1, 1500, "crash_7f3a")  # fmt: skip
    assert len(c["output"].encode()) <= 10 * 1024 and c["output"].startswith("line of output")
    assert iso_s(c["finished_at"]) - iso_s(c["started_at"]) == pytest.approx(1.5, abs=0.001)
    listed = api.get("/monitors/crashy/checkins", params={"status": "error"}).json()["checkins"]
    assert [x["crash_event_id"] for x in listed] == ["crash_7f3a"]
    # a finished check-in sent at once, with its crash
    r = api.post("/monitors/crashy/checkins", json={"status": "error", "duration_ms": 200,
                                                    "crash_event_id": "crash_b"})  # fmt: skip
    assert r.status_code == 201 and r.json()["checkin"]["crash_event_id"] == "crash_b"
    assert r.json()["checkin"]["duration_ms"] == 200


def test_checkin_list_limit_and_status_in_looms_words(live: LiveServer, api: httpx.Client) -> None:
    assert api.post("/monitors", json={"slug": "busy"}).status_code == 201
    with live.store() as s:
        key = s.ensure_ping_key("busy", now=time.time())
    with httpx.Client(base_url=live.url) as c:
        for i in range(105):
            assert c.get(f"/ping/{key}" + ("/fail" if i % 10 == 0 else "")).text == "OK"
        c.get(f"/ping/{key}/start")
    listed = api.get("/monitors/busy/checkins").json()["checkins"]
    assert len(listed) == 100  # Loom's default limit
    assert len(api.get("/monitors/busy/checkins?limit=7").json()["checkins"]) == 7
    by = {s: api.get(f"/monitors/busy/checkins?status={s}&limit=1000").json()["checkins"]
          for s in ("ok", "error", "in_progress", "missed", "timeout")}  # fmt: skip
    assert (len(by["ok"]), len(by["error"]), len(by["in_progress"])) == (94, 11, 1)
    assert by["missed"] == by["timeout"] == []
    assert all(x["status"] == s for s, xs in by.items() for x in xs)
    for bad in ("success", "running", "failed"):  # our words are not Loom's
        assert api.get(f"/monitors/busy/checkins?status={bad}").status_code == 422
    assert api.get("/monitors/busy/checkins?limit=0").status_code == 422


def test_stats_as_documented(live: LiveServer, api: httpx.Client) -> None:
    body = {"slug": "stat-job", "schedule": {"type": "interval", "minutes": 60}}
    assert api.post("/monitors", json=body).status_code == 201
    for ms, status in ((1000, "ok"), (2000, "ok"), (3000, "ok"), (6000, "error")):
        r = api.post("/monitors/stat-job/checkins", json={"status": status, "duration_ms": ms})
        assert r.status_code == 201, r.text
    api.post("/monitors/stat-job/checkins", json={"status": "in_progress"})  # not counted
    r = curl(STATS_CURL.replace("daily-cleanup", "stat-job"), live)
    assert r.status_code == 401  # the document's example omits the token; ours need one
    r = api.get("/monitors/stat-job/stats?period=week")
    assert r.status_code == 200 and list(r.json()) == STATS_FIELDS
    assert r.json() == {"total_checkins": 4, "successful_checkins": 3, "failed_checkins": 1,
                        "missed_checkins": 0, "timeout_checkins": 0, "avg_duration_ms": 3000,
                        "p95_duration_ms": 6000, "uptime_percentage": 75.0}  # fmt: skip
    for period in ("day", "month"):
        assert api.get(f"/monitors/stat-job/stats?period={period}").json()["total_checkins"] == 4
    assert api.get("/monitors/stat-job/stats?period=year").status_code == 422
    assert api.get("/monitors/no-such/stats").status_code == 404


# --- the ping endpoints ------------------------------------------------------------------------


def test_the_documents_pings_verbatim(live: LiveServer, api: httpx.Client) -> None:
    assert api.post("/monitors", json={"slug": "pinged"}).status_code == 201
    r = httpx.patch(f"{live.url}/api/v1/jobs/pinged", json={"ping_key": KEY},
                    headers=live.token("keysetter"))  # fmt: skip
    assert r.status_code == 200, r.text
    answers = [curl(c, live) for c in PING_CURLS]
    assert [(a.status_code, a.text) for a in answers] == [(200, "OK")] * 5
    got = api.get("/monitors/pinged/checkins").json()["checkins"][::-1]  # oldest first
    assert [c["status"] for c in got] == [
        "ok",
        "error",
        "error",
        "ok",
    ]  # /start then /fail closed it
    assert got[1]["duration_ms"] is not None and got[1]["started_at"] < got[1]["finished_at"]
    assert got[2]["exit_code"] == 1
    assert got[3]["output"] == "Job completed. Processed 1000 records."


def test_start_ping_answers_json_to_a_client_that_asks(live: LiveServer, api: httpx.Client) -> None:
    assert api.post("/monitors", json={"slug": "sdk-ping"}).status_code == 201
    key = api.get("/monitors/sdk-ping").json()["monitor"]["ping_key"]
    r = httpx.get(f"{live.url}/ping/{key}/start", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    checkin_id = r.json()["checkin_id"]
    r = httpx.get(f"{live.url}/ping/{key}/start", headers={"Accept": "*/*"})  # curl's
    assert r.text == "OK"
    # the id names the check-in in the API
    c = api.patch(f"/checkins/{checkin_id}", json={"status": "ok", "duration_ms": 42000})
    assert c.status_code == 200 and c.json()["checkin"]["duration_ms"] == 42000
    assert httpx.get(f"{live.url}/ping/{key}/start?format=json").json()["checkin_id"]


def test_disabled_monitor_records_nothing(live: LiveServer, api: httpx.Client) -> None:
    r = api.post("/monitors", json={"slug": "switched-off", "status": "disabled"})
    key = r.json()["monitor"]["ping_key"]
    assert httpx.get(f"{live.url}/ping/{key}/fail").text == "OK"  # the job is not failed by it
    assert api.get("/monitors/switched-off/checkins").json()["checkins"] == []
    r = api.post("/monitors/switched-off/checkins", json={"status": "in_progress"})
    assert r.status_code == 409 and "disabled" in r.json()["error"]
    assert api.get("/monitors/switched-off").json()["monitor"]["health"] == "unknown"
    api.patch("/monitors/switched-off", json={"status": "active"})
    assert httpx.get(f"{live.url}/ping/{key}/fail").text == "OK"
    assert [c["status"] for c in api.get("/monitors/switched-off/checkins").json()["checkins"]] == [
        "error"]  # fmt: skip


# --- the event stream -----------------------------------------------------------------------


class EventSource:
    """What the document's ``new EventSource(url, {headers})`` does: one request, then the
    text/event-stream read event by event (``event:``, ``data:`` lines, ``id:``), with
    ``addEventListener(type, fn)`` per event name."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.listeners: dict[str, list[Any]] = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.ready.wait(10), self.error

    def addEventListener(self, name: str, fn: Any) -> None:  # noqa: N802  (the JS name)
        self.listeners.setdefault(name, []).append(fn)

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers={**headers, "Accept": "text/event-stream"},
                              timeout=30) as r:  # fmt: skip
                assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
                event, data = "message", []
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if line.startswith(":"):
                        self.ready.set()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif line == "" and data:
                        for fn in self.listeners.get(event, []):
                            fn({"type": event, "data": "\n".join(data)})
                        event, data = "message", []
        except BaseException as e:  # noqa: BLE001  (reported by the waiting test)
            self.error = e
            self.ready.set()

    def close(self) -> None:
        self._stop = True


def test_event_source_reads_looms_named_events(live: LiveServer, tmp_path: Path) -> None:
    admin = live.token("stream-admin")
    c = httpx.Client(base_url=live.url, headers=admin, timeout=10)
    body = {"slug": "streamed-job", "name": "Streamed Job", "max_runtime_minutes": 60,
            "schedule": {"type": "interval", "minutes": 60}}  # fmt: skip
    assert c.post("/api/crons/monitors", json=body).status_code == 201
    key = c.get("/api/crons/monitors/streamed-job").json()["monitor"]["ping_key"]

    # the document's example, in Python
    seen: list[tuple[str, dict[str, Any]]] = []
    alerts: list[str] = []
    event_source = EventSource(f"{live.url}/api/crons/stream",
                               {"Authorization": f"Bearer {bearer(live, 'stream-reader', read_only=True)}"})  # fmt: skip

    def on_missed(event: dict[str, Any]) -> None:
        data = json.loads(event["data"])
        alerts.append(f"Monitor {data['monitor_name']} missed check-in!")

    event_source.addEventListener("monitor.missed", on_missed)
    for name in ("checkin.started", "checkin.ok", "checkin.error", "monitor.missed",
                 "monitor.timeout", "monitor.healthy"):  # fmt: skip
        event_source.addEventListener(
            name, lambda e: seen.append((e["type"], json.loads(e["data"])))
        )
    try:
        c.get(f"/ping/{key}/start")
        c.get(f"/ping/{key}")
        c.get(f"/ping/{key}/fail")
        c.get(f"/ping/{key}")  # back from failing: monitor.healthy
        c.get(f"/ping/{key}/start")  # left running: times out in the future below
        # time travel: `check` in another process writes to the same database
        later = datetime.fromtimestamp(time.time() + 3 * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        p = subprocess.run([CRONWATCH, "check", "--db", str(live.db), "--at", later],
                           capture_output=True, timeout=60)  # fmt: skip
        assert p.returncode == 0, p.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            alerts and any(n == "monitor.timeout" for n, _ in seen)
        ):
            time.sleep(0.1)
        # back from missed and timed out: healthy again with the next good check-in
        c.get(f"/ping/{key}")
        while time.monotonic() < deadline and [n for n, _ in seen].count("monitor.healthy") < 2:
            time.sleep(0.1)
    finally:
        event_source.close()
    assert event_source.error is None, event_source.error
    names = [n for n, d in seen if d["monitor_slug"] == "streamed-job"]
    assert names[:6] == ["checkin.started", "checkin.ok", "checkin.error", "checkin.ok",
                         "monitor.healthy", "checkin.started"], names  # fmt: skip
    assert "monitor.timeout" in names and "monitor.missed" in names
    assert names[-2:] == ["checkin.ok", "monitor.healthy"], names
    assert "Monitor Streamed Job missed check-in!" in alerts
    # (other monitors of this server missed too; a paused or disabled one never does)
    assert not any("f-paused" in a or "f-off" in a for a in alerts), alerts
    ok = next(d for n, d in seen if n == "checkin.ok")
    assert set(ok) >= {"monitor_id", "monitor_slug", "monitor_name", "checkin_id", "status",
                       "environment", "started_at", "finished_at", "duration_ms", "timestamp"}  # fmt: skip
    assert (ok["monitor_id"], ok["monitor_name"], ok["status"], ok["environment"]) == (
        "mon_streamed-job", "Streamed Job", "ok", "production")  # fmt: skip
    timeout = next(d for n, d in seen if n == "monitor.timeout")
    assert timeout["status"] == "timeout" and timeout["duration_ms"] >= 60 * 60 * 1000
    missed = next(d for n, d in seen if n == "monitor.missed")
    assert missed["status"] == "missed" and missed["expected_at"]
    # our own names never reach Loom's stream
    assert not any(n.startswith(("run.", "job.", "incident.")) for n, _ in seen)


def test_stream_needs_a_token(live: LiveServer) -> None:
    r = httpx.get(live.url + "/api/crons/stream")
    assert r.status_code == 401 and "error" in r.json()


def test_openapi_document_covers_the_routes(live: LiveServer) -> None:
    doc = httpx.get(live.url + "/api/crons/openapi.json", headers=live.token("doc")).json()
    assert doc["servers"] == [{"url": "/api/crons"}]
    assert {"/monitors", "/monitors/{slug}", "/monitors/{slug}/pause", "/monitors/{slug}/resume",
            "/monitors/{slug}/checkins", "/checkins/{checkin_id}",
            "/monitors/{slug}/stats"} <= set(doc["paths"])  # fmt: skip


def test_start_ping_json_through_the_fast_front(tmp_path: Path) -> None:
    """`serve --front fast` answers plain pings itself: one that asks for JSON is handed
    to the application, which answers it."""
    server = LiveServer(tmp_path / "front.db", "--front", "fast").start()
    try:
        key = server.job_key("fronted")
        assert httpx.get(f"{server.url}/ping/{key}/start").text == "OK"
        r = httpx.get(f"{server.url}/ping/{key}/start", headers={"Accept": "application/json"})
        assert r.status_code == 200 and r.json()["checkin_id"]
        with server.store() as s:
            assert r.json()["checkin_id"] in {run.id for run in s.list_runs(job="fronted")}
    finally:
        server.stop()


def test_looms_streams_share_the_broadcasters_caps(tmp_path: Path) -> None:
    """One fan-out: Loom's streams and ours count against the same caps."""
    server = LiveServer(tmp_path / "caps.db", "--max-streams-per-token", "2").start()
    try:
        token = server.token("capped-reader", read_only=True)
        opened = []
        try:
            for path in ("/api/crons/stream", "/api/v1/stream"):
                cm = httpx.stream("GET", server.url + path, headers=token, timeout=10)
                r = cm.__enter__()
                lines = r.iter_lines()  # kept: a finished iterator closes the response
                opened.append((cm, lines))
                assert r.status_code == 200 and next(lines) == ": connected"
            over = httpx.get(server.url + "/api/crons/stream", headers=token, timeout=10)
            assert over.status_code == 429 and "capped-reader" in over.json()["error"]
            assert over.headers["retry-after"]
        finally:
            for cm, _ in opened:
                cm.__exit__(None, None, None)
    finally:
        server.stop()


# The document's Kubernetes CronJob command, as written (its host, key and script
# replaced), run by a real shell with the real curl
K8S_COMMAND = """curl -fsS https://loom.example.com/ping/xxx/start
if /app/cleanup.sh; then
curl -fsS https://loom.example.com/ping/xxx
else
curl -fsS https://loom.example.com/ping/xxx/fail
fi"""


@pytest.mark.parametrize(("script", "want"), [("true", "ok"), ("exit 3", "error")])
def test_the_documents_cronjob_command_with_curl(
    live: LiveServer, api: httpx.Client, tmp_path: Path, script: str, want: str
) -> None:
    curl_bin = shutil.which("curl")
    if curl_bin is None:
        pytest.skip("curl is not installed")
    slug = f"k8s-cleanup-{want}"
    assert api.post("/monitors", json={"slug": slug}).status_code == 201
    key = api.get(f"/monitors/{slug}").json()["monitor"]["ping_key"]
    cleanup = tmp_path / "cleanup.sh"
    cleanup.write_text(f"#!/bin/sh\nsleep 0.2\n{script}\n")
    cleanup.chmod(0o755)
    command = (K8S_COMMAND.replace(DOC, live.url).replace("/ping/xxx", f"/ping/{key}")
               .replace("/app/cleanup.sh", str(cleanup)))  # fmt: skip
    p = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout == b"OKOK", p.stderr  # curl -fsS: no error
    (checkin,) = api.get(f"/monitors/{slug}/checkins").json()["checkins"]
    assert checkin["status"] == want and checkin["duration_ms"] >= 200
    # the times are shown to the millisecond (cut, each less than 1 ms early) and the
    # duration rounded to one (0.5 ms either way): they agree to within 1.5 ms
    assert (iso_s(checkin["finished_at"]) - iso_s(checkin["started_at"])) * 1000 == (
        pytest.approx(checkin["duration_ms"], abs=1.5))  # fmt: skip
    health = api.get(f"/monitors/{slug}").json()["monitor"]["health"]
    assert health == ("healthy" if want == "ok" else "failing")
