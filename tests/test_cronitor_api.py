# ruff: noqa: F811  (pytest fixtures imported from other test modules, used as arguments)
"""Cronitor's Monitor API and telemetry against a real `cronwatch serve`: every request of
the seed document (../shared/seeds/cronitor-job-monitoring.txt) verbatim, the `cronitor`
package from PyPI pointed at the server, and the alerting it configures (schedule
tolerance, surge threshold, timed pause, notification lists and integrations) end to end
with a real webhook receiver and SMTP sink through `cronwatch check --at`."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import Result
from test_checks_e2e import Receiver, at, ok, receiver  # noqa: F401
from test_notify import Mailbox, smtp_server  # noqa: F401
from test_server_harness import LiveServer, client, live_any  # noqa: F401


@pytest.fixture(scope="module")
def live(live_any: LiveServer) -> LiveServer:
    """Every test of this module runs on SQLite and on PostgreSQL (a replica's API must
    answer the same whichever store is behind it)."""
    return live_any


CRONITOR_KEY = "9b4c2ffa3b6e4ac0b1d9a0e6c4f7d812"  # an API key in Cronitor's form


def basic(token: dict[str, str]) -> dict[str, str]:
    """`curl -u API_KEY:`: the token as the user name, an empty password."""
    secret = token["Authorization"].removeprefix("Bearer ")
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


@pytest.fixture(scope="module")
def rw(live: LiveServer) -> dict[str, str]:
    return basic(live.token("cronitor-rw"))


@pytest.fixture(scope="module")
def ro(live: LiveServer) -> dict[str, str]:
    return basic(live.token("cronitor-ro", read_only=True))


# --- the seed's Monitor API requests, verbatim ----------------------------------------------

SEED_CREATE = """{
"key": "daily-backup",
"type": "job",
"schedule": "7 0 * * *",
"timezone": "UTC" # defaults to account setting
}"""
SEED_TOLERANCES = """{
"key": "daily-backup",
"type": "job",
"failure_tolerance": 3,
"schedule_tolerance": 2,
"grace_seconds": 300,
"consecutive_alert_threshold": 10
}"""
SEED_ASSERTIONS = """{
"key": "daily-backup",
"type": "job",
"assertions": [
"metric.duration < 30 minutes",
"metric.duration > 5 seconds"
]
}"""
SEED_NOTIFY = """{
"key": "daily-backup",
"type": "job",
"schedule": "7 0 * * *",
"notify": ["on-call-team", "dev-alerts"]
}"""


def put_seed(client: httpx.Client, rw: dict[str, str], body: str) -> dict[str, Any]:
    r = client.put("/api/monitors", content=body,
                   headers={**rw, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200, r.text
    (monitor,) = r.json()["monitors"]
    return monitor  # type: ignore[no-any-return]


def test_the_seed_monitor_api_requests_verbatim(client: httpx.Client, rw: dict[str, str]) -> None:
    # The document's first body carries a shell-style comment inside the JSON: taken.
    m = put_seed(client, rw, SEED_CREATE)
    assert (m["key"], m["type"], m["schedule"], m["timezone"]) == (
        "daily-backup", "job", "7 0 * * *", "UTC")  # fmt: skip
    assert m["next_expected_at"] is not None and m["initialized"] is False
    # Each later request changes only the fields it gives (the schedule stays).
    m = put_seed(client, rw, SEED_TOLERANCES)
    assert (m["failure_tolerance"], m["schedule_tolerance"], m["grace_seconds"],
            m["consecutive_alert_threshold"]) == (3, 2, 300, 10)  # fmt: skip
    assert m["schedule"] == "7 0 * * *"
    m = put_seed(client, rw, SEED_ASSERTIONS)
    assert m["assertions"] == ["metric.duration < 30 minutes", "metric.duration > 5 seconds"]
    # the document's three schedule formats
    for schedule in ("0 2 * * *", "every 2 hours", "at 13:37"):
        one = client.put("/api/monitors", json={"key": "formats", "schedule": schedule},
                         headers=rw)  # fmt: skip
        assert one.status_code == 200 and one.json()["monitors"][0]["schedule"] == schedule
    m = put_seed(client, rw, SEED_NOTIFY)
    assert m["notify"] == ["on-call-team", "dev-alerts"]
    assert m["failure_tolerance"] == 3  # still
    # The same job through /api/v1, in cronwatch's words.
    job = client.get("/api/v1/jobs/daily-backup", headers={"Authorization": f"Bearer {_v1(rw)}"})
    assert job.status_code == 200, job.text
    got = job.json()
    assert (got["alert_after"], got["schedule_tolerance"], got["surge_threshold"],
            got["grace"], got["schedule"]) == (4, 2, 10, 300.0, "7 0 * * *")  # fmt: skip
    assert got["notify"] == ["on-call-team", "dev-alerts"]
    got = client.get("/api/monitors/daily-backup", headers=rw).json()
    for field in ("passing", "disabled", "initialized", "latest_event", "next_expected_at",
                  "created", "paused", "tags", "note", "name"):  # fmt: skip
        assert field in got, field


def test_the_seed_telemetry_requests_keep_their_urls(
    live: LiveServer, client: httpx.Client, rw: dict[str, str], live_token: dict[str, str]
) -> None:
    # The project key set to the user's existing Cronitor key: the URLs stay as they were.
    r = client.put("/api/v1/project-key", json={"key": CRONITOR_KEY}, headers=live_token)
    assert r.status_code == 200, r.text
    base = f"/p/{CRONITOR_KEY}/example-cron-job"
    for query, event in (("state=run", "run"), ("state=complete", "complete"),
                         ("state=fail", "fail")):  # fmt: skip
        r = client.get(f"{base}?{query}")
        assert r.status_code == 200, r.text
        latest = client.get("/api/monitors/example-cron-job", headers=rw).json()["latest_event"]
        assert latest["event"] == event
    for env in ("staging", "production", "us-west-2"):  # the document's environment pings
        assert client.get(f"/p/{CRONITOR_KEY}/job-name?state=complete&env={env}").status_code == 200
    m = client.get("/api/monitors/example-cron-job", headers=rw).json()
    assert m["initialized"] is True and m["passing"] is False
    # A key that is not the project's still finds nothing.
    assert client.get("/p/not-the-key-0000000/example-cron-job?state=run").status_code == 404


@pytest.fixture(scope="module")
def live_token(live: LiveServer) -> dict[str, str]:
    return live.token("cronitor-v1")


# --- the rest of the Monitor API -------------------------------------------------------------


def test_bare_array_rollback_and_an_invalid_monitor_saves_nothing(
    client: httpx.Client, rw: dict[str, str]
) -> None:
    r = client.put("/api/monitors", json=[{"key": "bare-one", "schedule": "every 2 hours"}],
                   headers=rw)  # fmt: skip
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), list) and r.json()[0]["key"] == "bare-one"
    # rollback: validated, answered, not saved
    r = client.put("/api/monitors", json={"monitors": [{"key": "dry-run", "schedule": "at 13:37"}],
                                          "rollback": True}, headers=rw)  # fmt: skip
    assert r.status_code == 200 and r.json()["monitors"][0]["schedule"] == "at 13:37"
    assert r.json()["monitors"][0]["created"] > "2026"  # (would be created now)
    assert client.get("/api/monitors/dry-run", headers=rw).status_code == 404
    # one bad monitor among good ones: a 400 naming it and the field, nothing saved
    body = {"monitors": [{"key": "good-one", "schedule": "@daily"},
                         {"key": "bad-one", "schedule": "61 * * * *"}]}  # fmt: skip
    r = client.put("/api/monitors", json=body, headers=rw)
    assert r.status_code == 400
    assert "bad-one" in r.json()["error"] and "schedule" in r.json()["error"]
    assert client.get("/api/monitors/good-one", headers=rw).status_code == 404
    for bad, field in (({"key": "x", "type": "check"}, "type"),
                       ({"key": "x", "failure_tolerance": 1.5}, "failure_tolerance"),
                       ({"key": "x", "assertions": ["metric.speed > 3"]}, "asserts"),
                       ({"key": "x", "notify": ["email:nobody"]}, "notify"),
                       ({"key": "x y"}, "key"), ({"key": "x", "realert_interval": "often"},
                                                 "realert_interval")):  # fmt: skip
        r = client.put("/api/monitors", json={"monitors": [bad]}, headers=rw)
        assert r.status_code == 400 and field in r.json()["error"], (bad, r.text)
    r = client.put("/api/monitors", content=b'{"monitors": [', headers=rw)
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]


def test_list_get_delete_pause_and_read_only(
    client: httpx.Client, rw: dict[str, str], ro: dict[str, str]
) -> None:
    hook = "https://user:s3cret@hooks.example.com/cron"
    monitors = [{"key": f"page-{i:03d}", "notify": [hook, "pagerduty:R0UT1NG"]}
                for i in range(60)]  # fmt: skip
    assert client.put("/api/monitors", json={"monitors": monitors}, headers=rw).status_code == 200
    first = client.get("/api/monitors", headers=rw).json()
    second = client.get("/api/monitors?page=2", headers=rw).json()
    assert first["page_size"] == 50 and len(first["monitors"]) == 50
    assert first["total_monitor_count"] == second["total_monitor_count"] >= 60
    keys = [m["key"] for m in first["monitors"] + second["monitors"]]
    assert len(keys) == len(set(keys)) and {f"page-{i:03d}" for i in range(60)} <= set(keys)
    # read-only: reads, redacted; never writes
    seen = client.get("/api/monitors/page-001", headers=ro).json()["notify"]
    assert "s3cret" not in json.dumps(seen) and "R0UT1NG" not in json.dumps(seen)
    assert (
        client.get("/api/monitors/page-001", headers=rw).json()["notify"][1] == "pagerduty:R0UT1NG"
    )
    assert client.delete("/api/monitors/page-001", headers=ro).status_code == 403
    assert client.put("/api/monitors", json=[{"key": "ro"}], headers=ro).status_code == 403
    assert client.get("/api/monitors/page-001/pause/2", headers=ro).status_code == 403
    assert client.get("/api/monitors", auth=("wrong-key", "")).status_code == 401
    # timed pause, then 0 resumes
    m = client.get("/api/monitors/page-001/pause/2", headers=rw).json()
    assert m["paused"] is True and m["paused_until"] is not None
    m = client.get("/api/monitors/page-001/pause/0", headers=rw).json()
    assert m["paused"] is False and m["paused_until"] is None
    # delete, then 404
    assert client.delete("/api/monitors/page-001", headers=rw).status_code == 204
    r = client.get("/api/monitors/page-001", headers=rw)
    assert r.status_code == 404 and "error" in r.json()
    assert client.delete("/api/monitors/page-001", headers=rw).status_code == 404


def test_cronitor_keys_map_to_jobs_without_loss_or_collision(
    client: httpx.Client, rw: dict[str, str], live_token: dict[str, str]
) -> None:
    keys = ["Nightly_DB-Backup.v2", "nightly_db-backup.v2", "A" * 150]
    r = client.put(
        "/api/monitors", json=[{"key": k, "type": "heartbeat"} for k in keys], headers=rw
    )
    assert r.status_code == 200, r.text
    assert [m["key"] for m in r.json()] == keys
    jobs = {j["name"] for j in client.get("/api/v1/jobs", headers=live_token).json()}
    assert "nightly_db-backup.v2" in jobs
    assert len(jobs & {j for j in jobs if j.startswith(("nightly", "a"))}) >= 3
    # telemetry to the mixed-case key reaches its monitor, not the lower-case one
    client.put("/api/v1/project-key", json={"key": CRONITOR_KEY}, headers=live_token)
    assert (
        client.get(f"/p/{CRONITOR_KEY}/Nightly_DB-Backup.v2?state=fail&msg=disk").status_code == 200
    )
    upper = client.get("/api/monitors/Nightly_DB-Backup.v2", headers=rw).json()
    lower = client.get("/api/monitors/nightly_db-backup.v2", headers=rw).json()
    assert upper["latest_event"]["event"] == "fail" and upper["latest_event"]["msg"] == "disk"
    assert lower["latest_event"] is None and upper["type"] == "heartbeat"
    # a key first seen in a ping is kept too
    assert client.get(f"/p/{CRONITOR_KEY}/FreshKeyFromPing?state=complete").status_code == 200
    assert (
        client.get("/api/monitors/FreshKeyFromPing", headers=rw).json()["key"] == "FreshKeyFromPing"
    )


def test_count_and_error_count_assertions(client: httpx.Client, rw: dict[str, str]) -> None:
    r = client.put("/api/monitors", json=[{"key": "counted", "failure_tolerance": 0,
                                           "assertions": ["metric.error_count < 1"]}],
                   headers=rw)  # fmt: skip
    assert r.status_code == 200, r.text
    key = CRONITOR_KEY
    client.put("/api/v1/project-key", json={"key": key},
               headers={"Authorization": "Bearer " + _v1(rw)})  # fmt: skip
    base = f"/p/{key}/counted?state=complete"
    assert client.get(base + "&metric=count:10&metric=error_count:0").status_code == 200
    assert (
        client.get("/api/monitors/counted", headers=rw).json()["latest_event"]["event"]
        == "complete"
    )
    assert client.get(base + "&metric=count:10&metric=error_count:2").status_code == 200
    latest = client.get("/api/monitors/counted", headers=rw).json()["latest_event"]
    assert latest["event"] == "fail" and "error_count was 2" in latest["msg"]


def _v1(rw: dict[str, str]) -> str:
    """The read-write token itself (Basic's user name), as a bearer for /api/v1."""
    return base64.b64decode(rw["Authorization"][6:]).decode().rstrip(":")


def test_cronitor_yaml_round_trip(client: httpx.Client, rw: dict[str, str]) -> None:
    body = "jobs:\n  yaml-job:\n    schedule: '0 3 * * *'\n    failure_tolerance: 1\n"
    r = client.put("/api/monitors.yaml", content=body,
                   headers={**rw, "Content-Type": "application/yaml"})  # fmt: skip
    assert r.status_code == 200, r.text
    saved = yaml.safe_load(r.text)["jobs"]["yaml-job"]
    assert (saved["schedule"], saved["failure_tolerance"], saved["type"]) == ("0 3 * * *", 1, "job")
    r = client.get("/api/monitors.yaml", headers=rw)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(r.text)["jobs"]["yaml-job"]["schedule"] == "0 3 * * *"
    # a name a YAML reader could take for a number stays text
    client.put("/api/monitors", json=[{"key": "0e5", "name": "1_000"}], headers=rw)
    assert "'0e5':" in client.get("/api/monitors.yaml", headers=rw).text
    bad = client.put("/api/monitors.yaml", content="jobs: [unclosed", headers=rw)
    assert bad.status_code == 400 and "YAML" in bad.json()["error"]
    objects = client.put("/api/monitors.yaml", content="!!python/object:os.system {}", headers=rw)
    assert objects.status_code == 400  # safe_load only
    # aliases that would name 10^9 strings if anything walked them: answered at once (a
    # walk would take hours; the bound is far from both)
    levels = ["l0: &l0 [" + ", ".join(['"x"'] * 10) + "]"]
    levels += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = "\n".join(f"      {line}" for line in levels)
    doc = f"jobs:\n  bomb:\n    metadata:\n{bomb}\n    assertions: *l8\n"
    r = client.put("/api/monitors.yaml", content=doc, headers=rw, timeout=60)
    assert r.status_code == 400 and "assertions" in r.json()["error"]


# --- the cronitor package from PyPI ------------------------------------------------------------


def test_the_cronitor_package_puts_and_applies_config(
    live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cw: Callable[..., Result]
) -> None:
    """One Cronitor API key for everything, as in Cronitor: imported as a token and set as
    the project ping key; the package's base URLs pointed at the server."""
    cronitor = pytest.importorskip("cronitor")
    from cronitor.monitor import Monitor

    key = "f" * 8 + CRONITOR_KEY[8:]  # this test's own key
    ok(cw("token", "create", "cronitor-sdk", "--secret-from-stdin", "--db", live.db,
          input=key.encode() + b"\n"))  # fmt: skip
    ok(cw("ping-key", "--set", key, "--db", live.db))
    # The package hardcodes https://cronitor.io/api/monitors in Monitor._monitor_api_url
    # and https://cronitor.link/p/KEY/MONITOR in Monitor._ping_api_url: they are its base
    # URL settings, so they are what is patched (docs/switching-cronitor.md says how).
    base = live.url

    def api_url(cls: Any, monitor: str | None = None) -> str:
        return f"{base}/api/monitors" + (f"/{monitor}" if monitor else "")

    monkeypatch.setattr(Monitor, "_monitor_api_url", classmethod(api_url))
    monkeypatch.setattr(
        Monitor, "_ping_api_url", lambda self: f"{base}/p/{self.api_key}/{self.key}"
    )
    monkeypatch.setattr(cronitor, "api_key", key)
    m = Monitor.put(key="sdk-backup", type="job", schedule="7 0 * * *", failure_tolerance=2)
    assert m.data.key == "sdk-backup" and m.data.failure_tolerance == 2
    assert Monitor("sdk-backup").data.schedule == "7 0 * * *"
    both = Monitor.put([{"key": "sdk-a", "schedule": "@hourly"}, {"key": "sdk-b"}])
    assert [x.data.key for x in both] == ["sdk-a", "sdk-b"]
    with pytest.raises(cronitor.APIValidationError):
        Monitor.put(key="sdk-bad", schedule="not a schedule")
    config = tmp_path / "cronitor.yaml"
    config.write_text("jobs:\n  sdk-yaml-job:\n    schedule: 'every 6 hours'\n"
                      "    assertions:\n      - metric.duration < 30 minutes\n")  # fmt: skip
    monkeypatch.setattr(cronitor, "config", str(config))
    assert cronitor.validate_config() is True  # rollback: nothing saved
    with pytest.raises(cronitor.MonitorNotFound):
        Monitor("sdk-yaml-job").data  # noqa: B018
    assert cronitor.apply_config() is True
    assert Monitor("sdk-yaml-job").data.assertions == ["metric.duration < 30 minutes"]
    Monitor("sdk-yaml-job").pause(3)
    assert Monitor("sdk-yaml-job").data.paused is True
    Monitor("sdk-yaml-job").unpause()
    assert Monitor("sdk-yaml-job").data.paused is False
    assert Monitor("sdk-b").delete() is True
    # every page, as the package walks them
    everything = Monitor.list(auto_paginate=True, pageSize=7)
    total = httpx.get(f"{base}/api/monitors", auth=(key, "")).json()["total_monitor_count"]
    assert len({m.key for m in everything}) == len(everything) == total

    # telemetry: the package's job decorator sends run and complete with the same series
    @cronitor.job("SdkDecorated")
    def nightly() -> str:
        return "42 rows"

    assert nightly() == "42 rows"
    latest = Monitor("SdkDecorated").data.latest_event
    assert (
        latest.event == "complete"
        and latest.msg == "42 rows"
        and "duration" in latest.metrics.__dict__
    )


# --- alerting end to end: time travel with `cronwatch check --at` -----------------------------


def _json(r: Result) -> Any:
    return json.loads(ok(r).out)


@pytest.fixture
def team(cw: Callable[..., Result], receiver: Receiver, smtp_server: Mailbox) -> Iterator[str]:
    """A notification list with a webhook and an email address through the email integration."""
    ok(cw("integration", "set", "email", "host=127.0.0.1", f"port={smtp_server.port}",
          "sender=cron@example.com"))  # fmt: skip
    ok(cw("notify-list", "set", "on-call-team", f"webhook:{receiver.url}", "email:ops@example.com"))
    yield "on-call-team"


def test_schedule_tolerance_counts_misses_apart(
    cw: Callable[..., Result], receiver: Receiver, smtp_server: Mailbox, team: str
) -> None:
    now = time.time()
    ok(cw("job", "set", "nightly", "--schedule", "every 1h", "--grace", "5m", "--notify", team,
          "--schedule-tolerance", "2", "--alert-after", "1"))  # fmt: skip
    for hour in (1, 2):  # two misses tolerated
        out = _json(cw("check", "--at", at(now + hour * 3600 + 600), "--json"))
        assert [e["type"] for e in out["events"]] == ["job.missed"]
    assert receiver.events() == [] and smtp_server.mails == []
    out = _json(cw("check", "--at", at(now + 3 * 3600 + 600), "--json"))
    assert [e["type"] for e in out["events"]] == ["job.missed", "incident.opened"]
    assert receiver.events() == [("alert", "nightly", "missed")]
    (mail,) = smtp_server.mails
    assert mail["rcpt"] == ["TO:<ops@example.com>"] and mail["from"] == "FROM:<cron@example.com>"
    assert "nightly" in mail["message"]["Subject"]
    # one failure alerts at once (alert_after 1): failures are counted apart
    ok(cw("job", "set", "flaky", "--notify", team, "--schedule-tolerance", "2",
          "--alert-after", "1"))  # fmt: skip
    assert cw("run", "flaky", "--", "false").rc == 1
    assert ("alert", "flaky", "failed") in receiver.events()


def test_surge_threshold_pauses_alerts(
    cw: Callable[..., Result], receiver: Receiver, team: str
) -> None:
    ok(cw("job", "set", "storm", "--notify", team, "--alert-after", "1", "--realert", "1m",
          "--surge-threshold", "2"))  # fmt: skip
    assert cw("run", "storm", "--", "false").rc == 1
    now = time.time()
    for minute in range(1, 8):  # reminders due every minute; the hour allows two in all
        ok(cw("check", "--at", at(now + minute * 60 + 5)))
    assert receiver.events() == [("alert", "storm", "failed"), ("reminder", "storm", "failed")]
    ok(cw("check", "--at", at(now + 3600 + 120)))  # the hour has room again
    assert len(receiver.events()) == 3 and receiver.events()[-1][0] == "reminder"


def test_timed_pause_ends_by_itself(
    cw: Callable[..., Result], receiver: Receiver, team: str
) -> None:
    now = time.time()
    ok(cw("job", "set", "hourly", "--schedule", "every 1h", "--grace", "5m", "--notify", team,
          "--alert-after", "1", "--schedule-tolerance", "0"))  # fmt: skip
    shown = _json(cw("job", "pause", "hourly", "--until", at(now + 5 * 3600), "--json"))
    assert shown["paused"] is True and shown["paused_until"] is not None
    for hour in (1, 2, 3, 4):  # paused: nothing is missed
        out = _json(cw("check", "--at", at(now + hour * 3600 + 600), "--json"))
        assert out["events"] == []
    # the pause ended at +5h: the schedule counts from there, so +6h10m is the first miss
    out = _json(cw("check", "--at", at(now + 5 * 3600 + 60), "--json"))
    assert out["events"] == []
    assert _json(cw("job", "show", "hourly", "--json"))["paused"] is False
    out = _json(cw("check", "--at", at(now + 6 * 3600 + 600), "--json"))
    assert [e["type"] for e in out["events"]] == ["job.missed", "incident.opened"]
    assert receiver.events() == [("alert", "hourly", "missed")]
    # `job pause --for` and `job resume`
    shown = _json(cw("job", "pause", "hourly", "--for", "2h", "--json"))
    assert abs(shown["paused_until"] - (time.time() + 7200)) < 60
    assert _json(cw("job", "resume", "hourly", "--json"))["paused_until"] is None
    bad = cw("job", "pause", "hourly", "--for", "400d")
    assert bad.rc == 2 and b"--for" in bad.err and bad.err.count(b"\n") == 1


def test_notification_lists_and_integrations_cli(cw: Callable[..., Result], tmp_path: Path) -> None:
    ok(cw("integration", "set", "pagerduty", "routing_key=R0UT1NGKEY"))
    shown = _json(cw("integration", "show", "--json"))
    assert shown["pagerduty"]["routing_key"] == "***"
    assert (
        _json(cw("integration", "show", "--secrets", "--json"))["pagerduty"]["routing_key"]
        == "R0UT1NGKEY"
    )
    bad = cw("integration", "set", "email", "port=99999")
    assert bad.rc == 2 and b"host" in bad.err and b"Traceback" not in bad.err
    bad = cw("notify-list", "set", "nested", "on-call-team")
    assert bad.rc == 2 and b"not other lists" in bad.err
    ok(cw("notify-list", "set", "ops", "pagerduty:", "sms:+15551234567"))
    assert _json(cw("notify-list", "show", "--json")) == {"ops": ["pagerduty:", "sms:+15551234567"]}
    ok(cw("notify-list", "rm", "ops"))
    assert cw("notify-list", "rm", "ops").rc != 0
    # the TOML file: [lists] and [integrations.NAME]
    config = tmp_path / "cronwatch.toml"
    config.write_text(
        '[lists]\noncall = ["email:ops@example.com", "slack:#alerts"]\n'
        '[integrations.slack]\n"#alerts" = "https://hooks.slack.com/services/T0/B0/XYZ"\n'
        '[jobs.tomljob]\nnotify = ["oncall"]\nschedule_tolerance = 1\nsurge_threshold = 4\n'
        "paused_until = 2030-01-01T00:00:00Z\n"
    )
    ok(cw("apply", "--config", str(config)))
    assert _json(cw("notify-list", "show", "oncall", "--json")) == {
        "oncall": ["email:ops@example.com", "slack:#alerts"]}  # fmt: skip
    job = _json(cw("job", "show", "tomljob", "--json"))
    assert (job["schedule_tolerance"], job["surge_threshold"], job["paused"]) == (1, 4, True)
    assert "nothing to change" in ok(cw("apply", "--config", str(config))).out.decode()
    # one rule, one message, whichever way a list comes in (core/settings.notification_list)
    for body, says in (('[lists]\nnested = ["oncall"]\n', "not other lists"),
                       ('[lists]\nnone = []\n', "give at least one channel"),
                       ('[lists]\n"Bad Name" = ["email:a@b.c"]\n', "a list name is")):  # fmt: skip
        config.write_text(body)
        bad = cw("apply", "--config", str(config))
        assert bad.rc == 2 and says.encode() in bad.err, bad.err


def test_every_shorthand_delivers_through_its_integration(
    cw: Callable[..., Result], receiver: Receiver, smtp_server: Mailbox
) -> None:
    hook = receiver.url
    ok(cw("integration", "set", "email", "host=127.0.0.1", f"port={smtp_server.port}",
          "username=cron", "password=pa:ss", "sender=cron@example.com"))  # fmt: skip
    ok(cw("integration", "set", "slack", "#alerts=https://hooks.slack.com/services/T0/B0/XYZ"))
    ok(cw("integration", "set", "pagerduty", f"endpoint={hook}"))
    ok(cw("integration", "set", "sms", f"url={hook}?to={{to}}"))  # Apprise's URL in real use
    slack_env = {"CRONWATCH_SLACK_API": hook.removesuffix("/hook") + "/slack"}
    for channel in ("email:team@company.com", "slack:#alerts", "pagerduty:service-key",
                    "sms:+15551234567", f"webhook:{hook}"):  # fmt: skip
        ok(cw("notify", "test", channel, env=slack_env))
    (mail,) = smtp_server.mails
    assert mail["rcpt"] == ["TO:<team@company.com>"] and smtp_server.logins == ["\0cron\0pa:ss"]
    slack, pagerduty, sms, webhook = receiver.received
    assert "cronwatch-test" in slack["text"]
    assert pagerduty["routing_key"] == "service-key" and pagerduty["event_action"] == "trigger"
    assert sms["event"] == webhook["event"] == "test"
    # an integration that is not configured: one clear line
    ok(cw("integration", "rm", "sms"))
    r = cw("notify", "test", "sms:+15551234567")
    assert r.rc != 0 and b"sms integration" in r.err and r.err.count(b"\n") == 1


def test_the_v1_api_for_timed_pause_lists_integrations_and_the_project_key(
    live: LiveServer, client: httpx.Client, live_token: dict[str, str]
) -> None:
    ro = live.token("v1-ro", read_only=True)
    w = live_token
    assert client.put("/api/v1/jobs/v1-paused", json={}, headers=w).status_code == 200
    before = time.time()
    job = client.post("/api/v1/jobs/v1-paused/pause", json={"seconds": 7200}, headers=w).json()
    assert job["paused"] is True and before + 7200 <= job["paused_until"] <= time.time() + 7200
    job = client.post("/api/v1/jobs/v1-paused/resume", headers=w).json()
    assert job["paused"] is False and job["paused_until"] is None
    job = client.post("/api/v1/jobs/v1-paused/pause", headers=w).json()  # until resumed
    assert job["paused"] is True and job["paused_until"] is None
    # notification lists
    hook = "webhook:https://u:pw@hooks.example.com/x"
    r = client.put("/api/v1/notification-lists/ops", json={"channels": [hook, "pagerduty:K1"]},
                   headers=w)  # fmt: skip
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/notification-lists", headers=ro).json()["ops"] == [
        "webhook:https://u:***@hooks.example.com/x", "pagerduty:***"]  # fmt: skip
    assert client.get("/api/v1/notification-lists?secrets=true", headers=ro).status_code == 403
    assert (
        client.get("/api/v1/notification-lists?secrets=true", headers=w).json()["ops"][1]
        == "pagerduty:K1"
    )
    nested = client.put("/api/v1/notification-lists/all", json={"channels": ["ops"]}, headers=w)
    assert nested.status_code == 422 and "not other lists" in nested.json()["error"]
    assert (
        client.put("/api/v1/notification-lists/x", json={"channels": ["a"]}, headers=ro).status_code
        == 403
    )
    assert client.delete("/api/v1/notification-lists/ops", headers=w).status_code == 204
    assert client.delete("/api/v1/notification-lists/ops", headers=w).status_code == 404
    # integrations
    r = client.put("/api/v1/integrations/email", headers=w,
                   json={"host": "smtp.example.com", "password": "hunter2", "sender": "c@example.com"})  # fmt: skip
    assert r.status_code == 200 and r.json()["password"] == "***"
    assert client.get("/api/v1/integrations", headers=ro).json()["email"]["password"] == "***"
    assert (
        client.get("/api/v1/integrations?secrets=true", headers=w).json()["email"]["password"]
        == "hunter2"
    )
    bad = client.put("/api/v1/integrations/email", json={"port": "0"}, headers=w)
    assert bad.status_code == 422 and bad.json()["error"].startswith("integration email:")
    assert client.put("/api/v1/integrations/teams", json={}, headers=w).status_code == 422
    # the project key: a secret, written by a write token only
    assert client.get("/api/v1/project-key", headers=ro).status_code == 403
    assert client.put("/api/v1/project-key", json={"key": "short"}, headers=w).status_code == 422
    key = client.get("/api/v1/project-key", headers=w).json()["key"]
    assert client.get(f"/p/{key}/v1-ping?state=complete").status_code == 200
