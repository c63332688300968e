"""End to end: real wrapped jobs and ``cronwatch check --at`` against a real local webhook
receiver that goes down and comes back. Asserts exactly which alerts and recoveries arrive."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import Result
from cronwatch.core.model import Run, Status
from cronwatch.store import open_store


class Receiver:
    """A webhook endpoint that records what it accepts; ``down`` makes it answer 503."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.down = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.down:
                    receiver.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"maintenance")
                    return
                receiver.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, str, str]]:
        return [(m["event"], m["job"], m["status"]) for m in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ok(r: Result) -> Result:
    assert r.rc == 0, r.err.decode()
    return r


def test_failures_alert_once_and_success_recovers(
    cw: Callable[..., Result], receiver: Receiver
) -> None:
    ok(cw("job", "set", "backup", "--notify", receiver.url))
    assert cw("run", "backup", "--", "sh", "-c", "echo disk full >&2; exit 3").rc == 3
    assert receiver.events() == []  # one failure is tolerated
    assert cw("run", "backup", "--", "sh", "-c", "exit 3").rc == 3
    assert receiver.events() == [("alert", "backup", "failed")]
    assert receiver.received[0]["cause"] == "exit code 3"
    assert cw("run", "backup", "--", "false").rc == 1  # still down: no second alert
    assert cw("run", "backup", "--", "true").rc == 0
    assert receiver.events() == [("alert", "backup", "failed"), ("recovery", "backup", "success")]
    incidents = json.loads(ok(cw("incidents", "backup", "--json")).out)
    assert len(incidents) == 1 and incidents[0]["closed_at"] is not None
    assert [n["status"] for n in incidents[0]["notifications"]] == ["sent", "sent"]


def test_assertion_turns_success_into_failure_and_is_named(
    cw: Callable[..., Result], receiver: Receiver
) -> None:
    ok(cw("job", "set", "report", "--notify", receiver.url, "--alert-after", "1",
          "--assert", "output contains rows written"))  # fmt: skip
    assert cw("run", "report", "--", "echo", "0 rows").rc == 0  # the job's own exit is kept
    assert receiver.events() == [("alert", "report", "failed")]
    assert "output contains rows written" in receiver.received[0]["cause"]
    last = json.loads(ok(cw("last-failure", "report", "--json")).out)
    assert last["status"] == "failed" and last["exit_code"] == 0
    assert "assertion failed" in last["message"]


def test_missed_runs_alert_and_a_down_channel_loses_nothing(
    cw: Callable[..., Result], receiver: Receiver
) -> None:
    now = time.time()
    ok(cw("job", "set", "nightly", "--schedule", "every 1h", "--grace", "5m",
          "--notify", receiver.url))  # fmt: skip
    # An hour and ten minutes on: one run is missed (past its 5-minute grace). One miss is tolerated.
    out = json.loads(ok(cw("check", "--at", at(now + 3600 + 600), "--json")).out)
    assert [e["type"] for e in out["events"]] == ["job.missed"]
    assert receiver.events() == []
    # The channel goes down; the second miss opens the incident, the alert cannot be delivered.
    receiver.down = True
    out = json.loads(ok(cw("check", "--at", at(now + 2 * 3600 + 600), "--json")).out)
    assert [e["type"] for e in out["events"]] == ["job.missed", "incident.opened"]
    assert receiver.refused == 1 and receiver.events() == []
    incident = json.loads(ok(cw("incidents", "nightly", "--json")).out)[0]
    assert incident["closed_at"] is None
    (note,) = incident["notifications"]
    assert note["status"] == "pending" and "503" in note["last_error"]
    # Still down at the first retry (30 s later): retried, still pending.
    ok(cw("check", "--at", at(now + 2 * 3600 + 640)))
    assert receiver.refused == 2
    # The channel recovers; the next check delivers the alert it kept.
    receiver.down = False
    ok(cw("check", "--at", at(now + 2 * 3600 + 900)))
    assert receiver.events() == [("alert", "nightly", "missed")]
    assert "missed" in receiver.received[0]["cause"]
    # A real run recovers the job.
    assert cw("run", "nightly", "--", "echo", "done").rc == 0
    assert receiver.events() == [("alert", "nightly", "missed"), ("recovery", "nightly", "success")]
    history = json.loads(ok(cw("history", "nightly", "--json")).out)
    # (the missed runs sit at their expected times, in this test's travelled-to future)
    assert sorted(h["status"] for h in history) == ["missed", "missed", "success"]
    note = json.loads(ok(cw("incidents", "nightly", "--json")).out)[0]["notifications"][0]
    assert note["status"] == "sent" and note["attempts"] == 3


def test_paused_jobs_never_alert(cw: Callable[..., Result], receiver: Receiver) -> None:
    ok(cw("job", "set", "paused-job", "--notify", receiver.url, "--pause"))
    for _ in range(3):
        assert cw("run", "paused-job", "--", "false").rc == 1
    ok(cw("check"))
    assert receiver.events() == []
    show = json.loads(ok(cw("job", "show", "paused-job", "--json")).out)
    assert show["health"] == "paused"


def test_a_resumed_job_is_not_missed_for_its_paused_window(
    cw: Callable[..., Result], db_path: Path, receiver: Receiver
) -> None:
    now = time.time()
    ok(cw("job", "set", "holiday", "--schedule", "every 1h", "--grace", "5m",
          "--alert-after", "1", "--notify", receiver.url))  # fmt: skip
    with open_store(str(db_path)) as s:  # its last run five hours ago, then a pause
        s.record_run(Run(job="holiday", started_at=now - 5 * 3600, status=Status.SUCCESS,
                         ended_at=now - 5 * 3600 + 1, duration=1.0), now=now)  # fmt: skip
    ok(cw("job", "set", "holiday", "--pause"))
    ok(cw("job", "set", "holiday", "--resume"))
    out = json.loads(ok(cw("check", "--json")).out)
    assert out["events"] == []  # the five slots passed while it was paused
    assert [h["status"] for h in json.loads(ok(cw("history", "holiday", "--json")).out)] == [
        "success"
    ]
    assert receiver.events() == []
    # from the resume on, the schedule holds again
    out = json.loads(ok(cw("check", "--at", at(now + 3600 + 600), "--json")).out)
    assert [e["type"] for e in out["events"]].count("job.missed") == 1
    assert receiver.events() == [("alert", "holiday", "missed")]


def test_check_rejects_a_bad_timestamp(cw: Callable[..., Result]) -> None:
    r = cw("check", "--at", "yesterday-ish")
    assert r.rc == 2 and b"invalid timestamp" in r.err


def test_a_job_check_cannot_read_is_an_error_and_the_others_are_checked(
    cw: Callable[..., Result], cw_env: dict[str, str]
) -> None:
    """A schedule stored by an older version that this one cannot read: `check` still
    checks every other job, then says which job it could not check and why, on stderr,
    and exits 1 (cron mails it; a script sees it), never with a traceback."""
    import sqlite3

    now = time.time()
    ok(cw("job", "set", "fine", "--schedule", "every 1h", "--grace", "5m"))
    with sqlite3.connect(cw_env["CRONWATCH_DB"]) as db:
        db.execute("INSERT INTO jobs(name, created_at, settings) VALUES ('broken', ?, ?)",
                   (now - 7200, json.dumps({"schedule": "every banana"})))  # fmt: skip
    r = cw("check", "--at", at(now + 3600 + 600))
    assert r.rc == 1
    assert "job.missed" in r.out.decode() and "fine" in r.out.decode()
    (line,) = r.err.decode().splitlines()
    assert line.startswith("cronwatch: job broken: cannot check it (ValidationError: ")
    assert "cronwatch job set" in line
    out = json.loads(cw("check", "--at", at(now + 3600 + 700), "--json").out)
    assert len(out["unchecked"]) == 1 and out["unchecked"][0].startswith("job broken: ")
