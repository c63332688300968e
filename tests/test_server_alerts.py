"""Timeout / missed -> alert -> recovery through the running server's scheduler and outbox,
with a real local webhook receiver. (The missed case starts from a job whose last run lies
ten minutes back, so the 60 s minimum grace has already passed when the server starts.)"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from test_server_harness import LiveServer

pytest.importorskip("cronwatch.app.evaluate")


class Receiver(BaseHTTPRequestHandler):
    got: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.got.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def wait_for(pred, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_timeout_alert_and_recovery_via_webhook(tmp_path: Path) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    server = LiveServer(tmp_path / "h.db").start()
    try:
        headers = server.token("admin")
        c = httpx.Client(base_url=server.url, headers=headers, timeout=10)
        r = c.put("/api/v1/jobs/tick", json={"max_runtime": 1, "alert_after": 1, "notify": [url]})
        assert r.status_code == 200, r.text
        key = r.json()["ping_key"]
        assert c.get(f"/ping/{key}/start").text == "OK"  # then silence past max_runtime
        assert wait_for(lambda: any("tick" in json.dumps(m) for m in Receiver.got)), "no alert"
        statuses = {x["status"] for x in c.get("/api/v1/jobs/tick/runs").json()}
        assert "timeout" in statuses
        assert c.get("/api/v1/incidents", params={"job": "tick"}).json()
        n = len(Receiver.got)
        assert c.get(f"/ping/{key}").text == "OK"  # a success: recovery
        assert wait_for(lambda: len(Receiver.got) > n), "no recovery notice"
        (inc, *_) = c.get("/api/v1/incidents", params={"job": "tick"}).json()
        assert inc["closed_at"] is not None
    finally:
        server.stop()
        hook.shutdown()


def test_missed_run_alert_and_recovery_through_the_running_scheduler(tmp_path: Path) -> None:
    """A job whose last run was ten minutes ago on a one-minute schedule: the scheduler,
    started fresh, finds it missed, records the missed runs, alerts; a ping recovers it."""
    from cronwatch.core.model import Job, Run, Status
    from cronwatch.store import open_store

    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    now = time.time()
    store = open_store(str(tmp_path / "h.db"))
    store.save_job(Job(name="minutely", created_at=now - 3600, schedule="every 1m",
                       grace=60, alert_after=1, notify=[url]), now=now)  # fmt: skip
    store.record_run(Run(job="minutely", started_at=now - 600, status=Status.SUCCESS,
                         ended_at=now - 599, duration=1.0), now=now)  # fmt: skip
    key = store.ensure_ping_key("minutely", now=now)
    store.close()
    server = LiveServer(tmp_path / "h.db").start()
    try:
        assert wait_for(lambda: any(m["event"] == "alert" for m in got)), "no alert"
        alert = next(m for m in got if m["event"] == "alert")
        assert alert["job"] == "minutely" and alert["status"] == "missed"
        c = httpx.Client(base_url=server.url, headers=server.token("admin"), timeout=10)
        runs = c.get("/api/v1/jobs/minutely/runs", params={"limit": 50}).json()
        assert sum(r["status"] == "missed" for r in runs) >= 7  # one per expected minute
        assert c.get(f"/ping/{key}").text == "OK"
        assert wait_for(lambda: any(m["event"] == "recovery" for m in got)), "no recovery"
        assert [m["event"] for m in got] == ["alert", "recovery"]
        (inc, *_) = c.get("/api/v1/incidents", params={"job": "minutely"}).json()
        assert inc["closed_at"] is not None and "missed" in inc["cause"]
    finally:
        server.stop()
        hook.shutdown()


def test_resuming_through_the_api_records_no_miss_for_the_paused_window(tmp_path: Path) -> None:
    """Two jobs whose last runs lie ten minutes back on a one-minute schedule. "holiday" is
    paused and resumed through the API; "canary" is touched after that resume, so once
    the scheduler has recorded the canary's misses it has already looked at holiday."""
    from cronwatch.core.model import Job, Run, Status
    from cronwatch.store import open_store

    now = time.time()
    store = open_store(str(tmp_path / "h.db"))
    for name in ("holiday", "canary"):
        store.save_job(Job(name=name, created_at=now - 3600, schedule="every 1m", grace=60,
                           paused=name == "holiday"), now=now)  # fmt: skip
        store.record_run(Run(job=name, started_at=now - 600, status=Status.SUCCESS,
                             ended_at=now - 599, duration=1.0), now=now)  # fmt: skip
    store.save_job(Job(name="canary", created_at=now - 3600, schedule="", paused=False), now=now)
    store.close()
    server = LiveServer(tmp_path / "h.db").start()
    try:
        c = httpx.Client(base_url=server.url, headers=server.token("admin"), timeout=10)
        r = c.post("/api/v1/jobs/holiday/resume")
        assert r.status_code == 200 and r.json()["paused"] is False
        assert c.patch("/api/v1/jobs/canary", json={"schedule": "every 1m"}).status_code == 200

        def canary_missed() -> bool:
            runs = c.get("/api/v1/jobs/canary/runs", params={"limit": 50}).json()
            return any(r["status"] == "missed" for r in runs)

        assert wait_for(canary_missed), "the scheduler recorded no miss at all"
        runs = c.get("/api/v1/jobs/holiday/runs", params={"limit": 50}).json()
        assert [r["status"] for r in runs] == ["success"]
        assert c.get("/api/v1/jobs/holiday").json()["health"] != "missed"
    finally:
        server.stop()
