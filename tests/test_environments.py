# ruff: noqa: F811  (fixtures imported from other test modules, used as arguments)
"""Environments as Loom and Cronitor mean them, end to end: one job's schedule and
channels, its history, stats, health and missed runs per environment, alerts switched off
for one environment; time travel with ``cronwatch check --at``, a real webhook receiver,
and the same through ``/api/v1`` of a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import Result
from test_checks_e2e import Receiver, at, ok, receiver  # noqa: F401
from test_server_harness import LiveServer, live  # noqa: F401

HOUR = 3600.0


def jsonl(*runs: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in runs)


def test_missed_runs_and_alerts_per_environment(
    cw: Callable[..., Result], receiver: Receiver, tmp_path: Path
) -> None:
    t0 = time.time() - 600
    # production (no environment) ran at t0, staging 50 minutes later: each has its own
    # schedule position, from the one schedule the job has
    runs = tmp_path / "runs.jsonl"
    runs.write_bytes(jsonl(
        {"job": "envjob", "started_at": t0, "ended_at": t0 + 5, "duration": 5, "status": "success"},
        {"job": "envjob", "started_at": t0 + 3000, "ended_at": t0 + 3004, "duration": 4,
         "status": "success", "env": "staging"},
    ))  # fmt: skip
    ok(cw("import", str(runs)))
    ok(cw("job", "set", "envjob", "--schedule", "every 1h", "--grace", "5m", "--alert-after", "1",
          "--environment", "production", "--environment", "staging", "--mute-env", "staging",
          "--notify", receiver.url))  # fmt: skip

    # t0 + 1h10m: production's run (due t0 + 1h) is missed; staging's is not due before
    # t0 + 1h50m
    out = json.loads(ok(cw("check", "--at", at(t0 + HOUR + 600), "--json")).out)
    missed = [(e["type"], e["env"]) for e in out["events"] if e["type"] == "job.missed"]
    assert missed == [("job.missed", "")]
    assert receiver.events() == [("alert", "envjob", "missed")]
    assert receiver.received[0]["env"] == ""
    # the job is as healthy as its worst environment, and says which
    shown = json.loads(ok(cw("job", "show", "envjob", "--json")).out)
    assert shown["health"] == "missed" and shown["health_reason"].startswith("production: ")
    staging = json.loads(ok(cw("stats", "envjob", "--env", "staging", "--json")).out)
    assert staging["health"] == "healthy"

    # t0 + 2h: staging has missed too, and its alert is switched off: recorded, not sent
    out = json.loads(ok(cw("check", "--at", at(t0 + 2 * HOUR), "--json")).out)
    assert ("job.missed", "staging") in [(e["type"], e["env"]) for e in out["events"]]
    assert [e["env"] for e in out["events"] if e["type"] == "incident.opened"] == ["staging"]
    assert receiver.events() == [("alert", "envjob", "missed")]  # still the one
    incidents = json.loads(ok(cw("incidents", "envjob", "--json")).out)
    assert sorted(i["env"] for i in incidents) == ["", "staging"]
    staging = next(i for i in incidents if i["env"] == "staging")
    assert staging["notifications"] == []

    # history, stats and health per environment ('production' names the default one)
    hist = json.loads(ok(cw("history", "envjob", "--env", "staging", "--json")).out)
    assert sorted(r["status"] for r in hist) == ["missed", "success"]
    assert all(r["env"] == "staging" for r in hist)
    prod = json.loads(ok(cw("history", "envjob", "--env", "production", "--json")).out)
    assert {r["env"] for r in prod} == {""} and "missed" in {r["status"] for r in prod}
    both = json.loads(ok(cw("history", "envjob", "--json")).out)
    assert len(both) == len(hist) + len(prod)
    s = json.loads(ok(cw("stats", "envjob", "--env", "staging", "--json")).out)
    assert (s["runs"], s["success"], s["missed"], s["env"]) == (2, 1, 1, "staging")
    assert s["health"] == "missed"
    jobs = json.loads(ok(cw("jobs", "--env", "staging", "--since", "30d", "--json")).out)
    assert [(j["name"], j["runs"]) for j in jobs] == [("envjob", 2)]
    assert ok(cw("last-failure", "envjob", "--env", "staging", "--json")).out.count(b"staging")
    # a bad environment is a one-line error, not a traceback
    r = cw("history", "envjob", "--env", "no spaces")
    assert r.rc == 2 and b"environment" in r.err


def test_a_job_without_listed_environments_keeps_one_schedule_position(
    cw: Callable[..., Result], tmp_path: Path
) -> None:
    """Without ``environments``, runs of any environment count for the schedule (as before
    environments could be listed): a job whose runs all name one is not missed."""
    t0 = time.time() - 600
    runs = tmp_path / "runs.jsonl"
    runs.write_bytes(jsonl({"job": "tagged", "started_at": t0 + 3000, "status": "success",
                            "ended_at": t0 + 3001, "env": "prod-eu"}))  # fmt: skip
    ok(cw("import", str(runs)))
    ok(cw("job", "set", "tagged", "--schedule", "every 1h", "--grace", "5m"))
    out = json.loads(ok(cw("check", "--at", at(t0 + HOUR + 600), "--json")).out)
    assert [e for e in out["events"] if e["type"] == "job.missed"] == []


def test_environments_through_the_api(live: LiveServer) -> None:
    c = httpx.Client(base_url=live.url, headers=live.token("env-admin"), timeout=10)
    r = c.put("/api/v1/jobs/deploy", json={"environments": ["production", "staging"]})
    assert r.status_code == 200, r.text
    key = r.json()["ping_key"]
    for env, path in (("", "/fail"), ("staging", ""), ("production", ""), ("staging", "")):
        q = f"?env={env}" if env else ""
        assert c.get(f"/ping/{key}{path}{q}").text == "OK"
    runs = c.get("/api/v1/jobs/deploy/runs").json()
    assert sorted(r["env"] for r in runs) == ["", "", "staging", "staging"]  # production is ""
    staging = c.get("/api/v1/jobs/deploy/runs?env=staging").json()
    assert [r["env"] for r in staging] == ["staging", "staging"]
    prod = c.get("/api/v1/jobs/deploy/runs", params={"env": "production"}).json()
    assert [r["status"] for r in prod] == ["success", "failed"]
    st = c.get("/api/v1/jobs/deploy/stats?env=staging").json()
    assert (st["total"], st["successful"], st["failed"]) == (2, 2, 0)
    st = c.get("/api/v1/jobs/deploy/stats?env=production").json()
    assert (st["total"], st["successful"], st["failed"]) == (2, 1, 1)
    assert c.get("/api/v1/jobs/deploy?env=staging").json()["health"] == "healthy"
    assert c.get("/api/v1/jobs?env=staging").status_code == 200
    assert c.get("/api/v1/jobs/deploy/runs?env=no%20spaces").status_code == 422
    # Loom's API: the same environments, its words
    loom = c.get("/api/crons/monitors/deploy").json()["monitor"]
    assert loom["environments"] == ["production", "staging"]
    checkins = c.get("/api/crons/monitors/deploy/checkins?env=staging").json()["checkins"]
    assert [x["environment"] for x in checkins] == ["staging", "staging"]
    stats = c.get("/api/crons/monitors/deploy/stats?env=production").json()
    assert (stats["total_checkins"], stats["uptime_percentage"]) == (2, 50.0)
