"""Timeout -> alert -> recovery through the running server's scheduler and outbox.

(A missed run needs at least the 60 s minimum grace to pass, too slow for the suite; the
scheduler path is the same: a deadline in the heap, check_job, the outbox.)"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from test_server_harness import LiveServer

pytest.importorskip("cronwatch.checks")


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


def test_missed_alert_and_recovery_via_webhook(tmp_path: Path) -> None:
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
