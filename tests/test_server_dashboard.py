"""The live dashboard served by `cronwatch serve`: token required, job text escaped."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from test_server_harness import LiveServer

HOSTILE = "<script>document.title='pwned'</script>"


def test_live_dashboard_needs_a_token_and_escapes_job_text(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "h.db").start()
    try:
        key = server.job_key("nightly")
        assert httpx.post(f"{server.url}/ping/{key}/1", content=HOSTILE.encode()).text == "OK"
        anonymous = httpx.get(f"{server.url}/dashboard")
        assert anonymous.status_code == 401 and "token" in anonymous.text
        assert httpx.get(f"{server.url}/dashboard", params={"token": "nope"}).status_code == 401
        secret = server.token("viewer", read_only=True)["Authorization"].split()[1]
        r = httpx.get(f"{server.url}/dashboard", params={"token": secret})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
        assert "script-src 'sha256-" in csp and "style-src 'sha256-" in csp
        assert r.headers["referrer-policy"] == "no-referrer"
        assert 'id="job-nightly"' in r.text
        assert HOSTILE not in r.text and "&lt;script&gt;document.title" in r.text
        # The page follows new runs (it re-fetches itself in place).
        assert httpx.get(f"{server.url}/ping/{server.job_key('weekly')}").text == "OK"
        deadline = time.time() + 10
        while 'id="job-weekly"' not in httpx.get(f"{server.url}/", params={"token": secret}).text:
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        server.stop()
