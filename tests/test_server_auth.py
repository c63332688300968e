# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Least privilege over HTTP: what a read-only token sees (no ping keys, no channel
secrets), that reads never write, and who may read /metrics."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cronwatch.core.model import Run, Status
from test_server_harness import LiveServer, client, live_any  # noqa: F401


@pytest.fixture(scope="module")
def live(live_any: LiveServer) -> LiveServer:
    """Every test of this module runs on SQLite and on PostgreSQL (a replica's API must
    answer the same whichever store is behind it)."""
    return live_any


HOOK = "https://alice:s3cret-pw@hooks.example.com/hooks/abc123def456?key=tok3n"
BOT = "tgram://123456789:AAHsecretBotToken_abcdefghijklmnopqrstu/-1001234567890"
SECRETS = ("s3cret-pw", "abc123def456", "tok3n", "AAHsecretBotToken")


@pytest.fixture(scope="module")
def rw(live: LiveServer) -> dict[str, str]:
    return live.token("admin")


@pytest.fixture(scope="module")
def ro(live: LiveServer) -> dict[str, str]:
    return live.token("viewer", read_only=True)


@pytest.fixture(scope="module")
def alerted(client: httpx.Client, rw: dict) -> str:
    """A job with two secret-bearing channels and an incident that queued notifications."""
    r = client.put("/api/v1/jobs/alerted", json={"notify": [HOOK, BOT], "alert_after": 1},
                   headers=rw)  # fmt: skip
    assert r.status_code == 200, r.text
    assert client.post("/api/v1/jobs/alerted/runs", json={"status": "error", "exit_code": 2},
                       headers=rw).status_code == 201  # fmt: skip
    return "alerted"


def no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_a_read_only_token_sees_no_ping_key_and_no_channel_secret(
    client: httpx.Client, ro: dict, alerted: str
) -> None:
    one = client.get(f"/api/v1/jobs/{alerted}", headers=ro)
    assert one.status_code == 200
    assert one.json()["ping_key"] is None
    assert one.json()["notify"] == [
        "https://alice:***@hooks.example.com/hooks/***?key=***",
        "tgram://***/-1001234567890",
    ]
    listed = client.get("/api/v1/jobs", headers=ro)
    assert [j["ping_key"] for j in listed.json()] == [None] * len(listed.json())
    incidents = client.get("/api/v1/incidents", params={"job": alerted}, headers=ro)
    (incident,) = incidents.json()
    assert len(incident["notifications"]) == 2
    one_incident = client.get(f"/api/v1/incidents/{incident['id']}", headers=ro)
    for text in (one.text, listed.text, incidents.text, one_incident.text):
        no_secret_in(text)
    # asking for the secrets is refused, not silently ignored
    r = client.get(f"/api/v1/jobs/{alerted}", params={"secrets": "true"}, headers=ro)
    assert r.status_code == 403 and "read-only" in r.json()["error"]


def test_a_write_token_sees_the_key_and_the_channels_only_when_it_asks(
    live: LiveServer, client: httpx.Client, rw: dict, alerted: str
) -> None:
    shown = client.get(f"/api/v1/jobs/{alerted}", headers=rw).json()
    assert shown["ping_key"] == live.job_key(alerted)
    no_secret_in(str(shown["notify"]))
    asked = client.get(f"/api/v1/jobs/{alerted}", params={"secrets": "true"}, headers=rw)
    assert asked.json()["notify"] == [HOOK, BOT]
    incidents = client.get("/api/v1/incidents", params={"job": alerted}, headers=rw)
    no_secret_in(incidents.text)


def test_writing_back_what_was_read_keeps_the_real_channel_urls(
    client: httpx.Client, rw: dict
) -> None:
    assert client.put("/api/v1/jobs/roundtrip", json={"notify": [HOOK]}, headers=rw).is_success
    read = client.get("/api/v1/jobs/roundtrip", headers=rw).json()
    assert read["notify"] != [HOOK]  # shown redacted...
    r = client.patch("/api/v1/jobs/roundtrip", json={"notify": read["notify"], "grace": 30},
                     headers=rw)  # fmt: skip
    assert r.status_code == 200, r.text
    stored = client.get("/api/v1/jobs/roundtrip", params={"secrets": "true"}, headers=rw).json()
    assert stored["notify"] == [HOOK] and stored["grace"] == 30  # ...and written back intact
    # a redacted URL that is none of the job's channels would deliver nowhere: refused
    r = client.patch("/api/v1/jobs/roundtrip",
                     json={"notify": ["https://bob:***@elsewhere.example.com/x"]}, headers=rw)  # fmt: skip
    assert r.status_code == 422 and "redacted" in r.json()["error"]
    stored = client.get("/api/v1/jobs/roundtrip", params={"secrets": "true"}, headers=rw).json()
    assert stored["notify"] == [HOOK]
    r = client.post("/api/v1/jobs", json={"name": "copied", "notify": read["notify"]}, headers=rw)
    assert r.status_code == 422 and "redacted" in r.json()["error"]  # a new job has none
    assert client.get("/api/v1/jobs/copied", headers=rw).status_code == 404


def test_reads_never_write_a_ping_key(
    live: LiveServer, client: httpx.Client, ro: dict, rw: dict
) -> None:
    with live.store() as s:  # a job the wrapper made: it has no ping key yet
        s.record_run(Run(job="wrapped", started_at=time.time(), status=Status.SUCCESS,
                         ended_at=time.time(), duration=0.1), now=time.time())  # fmt: skip
    for headers in (ro, rw):
        assert client.get("/api/v1/jobs/wrapped", headers=headers).json()["ping_key"] is None
        assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    with live.store() as s:
        assert s.get_job("wrapped").ping_key == ""
    # a write makes it
    key = client.patch("/api/v1/jobs/wrapped", json={}, headers=rw).json()["ping_key"]
    assert key and client.get(f"/ping/{key}").text == "OK"


def test_metrics_take_a_token_by_default(client: httpx.Client, ro: dict, rw: dict) -> None:
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401 and "error" in anonymous.json()
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "cronwatch_job" not in anonymous.text
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for headers in (ro, rw):  # what Prometheus sends with bearer_token / authorization
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 200 and "cronwatch_pings_received_total" in r.text


def test_public_metrics_is_a_switch(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "h.db", "--public-metrics").start()
    try:
        key = server.job_key("open-book")
        assert httpx.get(f"{server.url}/ping/{key}").text == "OK"
        r = httpx.get(f"{server.url}/metrics")
        assert r.status_code == 200 and 'cronwatch_job_up{job="open-book"} 1' in r.text
        assert httpx.get(f"{server.url}/api/v1/jobs").status_code == 401  # only metrics
    finally:
        server.stop()
