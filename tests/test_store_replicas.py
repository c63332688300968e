"""The store's claims for several processes on one database (the contract every backend
keeps, through ``store_factory``: two connections are two replicas), and the evaluation
that rolls back and decides again when it loses one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cronwatch.app import evaluate as checks
from cronwatch.core.errors import LostClaim, StoreError
from cronwatch.core.model import Job, Run, Status
from cronwatch.store.sqlite import migrations

pytestmark = pytest.mark.all_backends

NOW = 1_800_000_000.0


def test_one_of_two_claims_on_the_same_alert_state_wins(store_factory: Callable[..., Any]) -> None:
    a, b = store_factory(), store_factory()
    a.ensure_job("j", now=NOW)
    assert a.read_alert_state("j") == (None, 0) == b.read_alert_state("j")
    assert a.claim_alert_state("j", "", {"down": True}, version=0)
    assert not b.claim_alert_state("j", "", {"down": False}, version=0)  # read the same
    state, version = b.read_alert_state("j")
    assert state == {"down": True} and version > 0
    assert not a.claim_alert_state("j", "", {"x": 1}, version=version - 1)
    assert b.claim_alert_state("j", "", {"down": False}, version=version)
    assert not a.claim_alert_state("j", "", {"down": True}, version=version)
    a.set_alert_state("j", "", {"fixed": True})  # a repair moves the version on too
    after, newer = b.read_alert_state("j")
    assert after == {"fixed": True} and newer > version + 1
    assert a.read_alert_state("j", "other-env") == (None, 0)  # per environment


def test_an_open_run_is_closed_once(store_factory: Callable[..., Any]) -> None:
    a, b = store_factory(), store_factory()
    run, _ = a.start_run("j", now=NOW)
    b.finish_run("j", Status.SUCCESS, now=NOW + 5)  # a ping at another replica
    late = a.get_run(run.id)
    late.status, late.ended_at, late.duration = Status.TIMEOUT, NOW + 9, 9.0
    assert not a.close_open_run(late, now=NOW + 9)
    kept = b.get_run(run.id)
    assert kept.status is Status.SUCCESS and kept.ended_at == NOW + 5

    other, _ = a.start_run("j", now=NOW + 10)
    other.status, other.ended_at, other.duration = Status.TIMEOUT, NOW + 20, 10.0
    other.message = "still running"
    assert b.close_open_run(other, now=NOW + 20)
    assert not a.close_open_run(other, now=NOW + 21)
    closed = a.get_run(other.id)
    assert (closed.status, closed.ended_at, closed.message) == (
        Status.TIMEOUT, NOW + 20, "still running"
    )  # fmt: skip
    stats = a.job_stats("j")
    assert (stats["timeout"], stats["success"], stats["running"]) == (1, 1, 0)


def test_one_open_incident_per_job_and_environment(store_factory: Callable[..., Any]) -> None:
    a, b = store_factory(), store_factory()
    a.ensure_job("j", now=NOW)
    first = a.open_incident("j", "", at=NOW, cause="missed", run_id=None)
    with pytest.raises(StoreError):
        b.open_incident("j", "", at=NOW + 1, cause="missed", run_id=None)
    b.open_incident("j", "staging", at=NOW + 1, cause="failed", run_id=None)  # another env
    assert a.close_incident("j", "", at=NOW + 2, run_id=None) == first
    assert b.open_incident("j", "", at=NOW + 3, cause="failed", run_id=None) != first
    assert [i["cause"] for i in a.list_incidents(job="j", open_only=True)] == ["failed"] * 2


def test_the_leader_lease(store_factory: Callable[..., Any]) -> None:
    """What both backends keep: one holder per role, renewals, who holds it, a release
    that frees it at once (and only by its holder)."""
    a, b = store_factory(), store_factory()
    assert a.lead_holder("scheduler", now=NOW) is None
    assert a.acquire_lead("scheduler", "a#1", now=NOW, ttl=5)
    assert a.acquire_lead("scheduler", "a#1", now=NOW + 1, ttl=5)  # its own: kept
    assert not b.acquire_lead("scheduler", "b#2", now=NOW + 2, ttl=5)
    assert b.acquire_lead("other-role", "b#2", now=NOW + 2, ttl=5)  # roles are apart
    assert a.renew_lead("scheduler", "a#1", now=NOW + 3, ttl=5)
    assert not b.renew_lead("scheduler", "b#2", now=NOW + 3, ttl=5)  # never b's
    assert not b.acquire_lead("scheduler", "b#2", now=NOW + 4, ttl=5)
    assert b.lead_holder("scheduler", now=NOW + 4) == "a#1"
    assert a.lead_holder("other-role", now=NOW + 4) == "b#2"
    b.release_lead("scheduler", "b#2")  # not b's: nothing happens
    assert a.lead_holder("scheduler", now=NOW + 4) == "a#1"
    # a clean shutdown frees it at once, though a acquired it twice
    a.release_lead("scheduler", "a#1")
    assert a.lead_holder("scheduler", now=NOW + 5) is None
    assert not a.renew_lead("scheduler", "a#1", now=NOW + 5, ttl=5)
    assert b.acquire_lead("scheduler", "b#2", now=NOW + 5, ttl=5)
    assert not a.acquire_lead("scheduler", "a#1", now=NOW + 6, ttl=5)
    assert a.lead_holder("scheduler", now=NOW + 6) == "b#2"


@pytest.mark.sqlite_only
def test_the_leader_lease_expires_when_its_holder_stops_renewing(
    store_factory: Callable[..., Any],
) -> None:
    """SQLite's lease row runs out ``ttl`` after its last renewal (PostgreSQL's lock lasts
    as long as its holder's session: test_postgres_replicas.py)."""
    a, b = store_factory(), store_factory()
    assert a.acquire_lead("scheduler", "a#1", now=NOW, ttl=5)
    assert a.renew_lead("scheduler", "a#1", now=NOW + 4, ttl=5)  # now till NOW+9
    assert not b.acquire_lead("scheduler", "b#2", now=NOW + 8, ttl=5)
    assert b.lead_holder("scheduler", now=NOW + 8) == "a#1"
    # a stops renewing (killed): once the lease ran out, b takes it and a cannot renew
    assert b.lead_holder("scheduler", now=NOW + 9.5) is None
    assert b.acquire_lead("scheduler", "b#2", now=NOW + 9.5, ttl=5)
    assert not a.renew_lead("scheduler", "a#1", now=NOW + 10, ttl=5)
    assert not a.acquire_lead("scheduler", "a#1", now=NOW + 10, ttl=5)
    a.release_lead("scheduler", "a#1")  # not a's: nothing happens
    assert a.lead_holder("scheduler", now=NOW + 10) == "b#2"
    b.release_lead("scheduler", "b#2")  # a clean shutdown: free at once
    assert a.acquire_lead("scheduler", "a#1", now=NOW + 11, ttl=5)


class Interleaved:
    """A store whose alert state changes, by another process, right after it is read:
    the worst moment, made deterministic."""

    def __init__(self, store: Any, meanwhile: Callable[[], None]) -> None:
        self.store = store
        self.meanwhile: Callable[[], None] | None = meanwhile

    def read_alert_state(self, job: str, env: str = "") -> Any:
        found = self.store.read_alert_state(job, env)
        if self.meanwhile is not None:
            then, self.meanwhile = self.meanwhile, None
            then()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_an_evaluation_that_loses_its_claim_queues_nothing_and_decides_again(
    store_factory: Callable[..., Any],
) -> None:
    """Two processes record a failure of the same job at once (alert_after 1): the one
    whose claim loses raises LostClaim before acting; evaluated again, it sees the job
    down already. One incident, one alert."""
    a, b = store_factory(), store_factory()
    job = Job(name="j", created_at=NOW, alert_after=1, notify=["https://example.invalid/h"])
    a.save_job(job, now=NOW)
    run_a = Run(job="j", started_at=NOW, status=Status.FAILED, ended_at=NOW + 1, duration=1.0)
    run_b = Run(job="j", started_at=NOW, status=Status.FAILED, ended_at=NOW + 2, duration=2.0)
    a.record_run(run_a, now=NOW + 1)
    b.record_run(run_b, now=NOW + 2)

    def other_process() -> None:
        with b.transaction():
            events = checks.after_finish(b, job, run_b, now=NOW + 2)
        assert "incident.opened" in [e["type"] for e in events]

    with pytest.raises(LostClaim):
        checks.after_finish(Interleaved(a, other_process), job, run_a, now=NOW + 1)
    assert len(a.due_notifications(now=NOW + 10)) == 1  # b's alert only
    again = checks.after_finish(a, job, run_a, now=NOW + 1)
    assert [e["type"] for e in again] == ["run.error"]  # down already: nothing to open
    assert len(a.due_notifications(now=NOW + 10)) == 1
    assert len(a.list_incidents(job="j")) == 1
    state, _ = a.read_alert_state("j")
    assert state is not None and state["fail_streak"] == 2


@pytest.mark.sqlite_only
def test_migration_closes_duplicate_open_incidents(store_factory: Callable[..., Any]) -> None:
    """A database from before one-open-incident: older duplicates are closed so that the
    unique index can be made; the newest open one stays open."""
    s = store_factory()
    s.ensure_job("j", now=NOW)
    path = Path(s.path)
    s.close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX incidents_one_open")
    db.executemany(
        "INSERT INTO incidents(job_id, env, opened_at, cause) VALUES (1, '', ?, 'missed')",
        [(NOW,), (NOW + 1,)],
    )
    # the version just before the step that made the index (14 at the merge)
    before = next(i for i, step in enumerate(migrations.SQLITE) if "incidents_one_open" in step)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(before),))
    db.commit()
    db.close()
    again = store_factory()
    incidents = again.list_incidents(job="j")
    assert [i["closed_at"] is None for i in incidents] == [True, False]  # newest first
    with pytest.raises(StoreError):
        again.open_incident("j", "", at=NOW + 2, cause="x", run_id=None)


def test_a_ping_whose_evaluation_loses_its_claim_is_stored_once_and_evaluated_again(
    store_factory: Callable[..., Any],
) -> None:
    """The ping writer's batch with a failure ping whose alert claim loses (another
    replica decided first, made deterministic here): the batch is undone and replayed,
    that ping evaluated again; every ping is acknowledged, each run stored once, one
    incident and one notification."""
    from cronwatch.server.apply import Applier
    from cronwatch.server.ingest import Committer
    from cronwatch.server.ping import Ping

    store = store_factory()
    store.save_job(Job(name="w", created_at=NOW, alert_after=1,
                       notify=["https://example.invalid/h"]), now=NOW)  # fmt: skip
    key = store.ensure_ping_key("w", now=NOW)
    real = store.claim_alert_state
    lost: list[int] = []

    def first_two_lost(*args: Any, **kw: Any) -> bool:
        # the batch's first pass, then the replay's first try of that ping
        if len(lost) < 2:
            lost.append(1)
            return False
        return bool(real(*args, **kw))

    store.claim_alert_state = first_two_lost  # type: ignore[method-assign]
    applier = Applier(store.project_ping_key())
    committer = Committer(store, cache=applier)
    items: list[tuple[Ping, bytes | None]] = [
        (Ping("healthchecks", key=key, rid="one"), None),
        (Ping("healthchecks", key=key, action="fail", rid="two"), None),
        (Ping("healthchecks", key=key, rid="three"), None),
    ]
    results = committer.commit_each(applier.apply_item, items)
    assert len(lost) == 2 and [ok for ok, _v in results] == [True, True, True], results
    runs = store.list_runs(job="w", oldest_first=True)
    assert [(r.id, r.status) for r in runs] == [
        ("one", Status.SUCCESS), ("two", Status.FAILED), ("three", Status.SUCCESS)
    ]  # fmt: skip
    (incident,) = store.list_incidents(job="w")
    assert [n["kind"] for n in incident["notifications"]] == ["alert", "recovery"]


def test_a_check_that_loses_its_claim_records_the_missed_runs_once(
    store_factory: Callable[..., Any],
) -> None:
    """`check` (or the leader) finds a job missed, and its claim loses to another
    process: that job's savepoint is undone and it is checked again, so its missed runs
    are recorded once and one incident opens."""
    store = store_factory()
    store.save_job(Job(name="m", created_at=NOW - 3600, schedule="every 1m", grace=60,
                       alert_after=1, notify=["https://example.invalid/h"]), now=NOW)  # fmt: skip
    store.record_run(Run(job="m", started_at=NOW - 600, status=Status.SUCCESS,
                         ended_at=NOW - 599, duration=1.0), now=NOW)  # fmt: skip
    real = store.claim_alert_state
    lost: list[int] = []

    def first_lost(*args: Any, **kw: Any) -> bool:
        if not lost:
            lost.append(1)
            return False
        return bool(real(*args, **kw))

    store.claim_alert_state = first_lost
    events = checks.check_all(store, now=NOW)
    assert lost
    missed = [r for r in store.list_runs(job="m") if r.status is Status.MISSED]
    assert len(missed) == len([e for e in events if e["type"] == "job.missed"]) >= 7
    assert [e["type"] for e in events].count("incident.opened") == 1
    (incident,) = store.list_incidents(job="m")
    assert [n["kind"] for n in incident["notifications"]] == ["alert"]
    assert checks.check_all(store, now=NOW + 1) == []  # nothing left to find


def test_a_slow_outbox_round_keeps_its_claims_from_another_replicas_outbox(
    store_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica a's outbox spends 20 s on its first send (a slow channel); its second
    notification is claimed after that, for a lease that starts then, so replica b's
    outbox, looking meanwhile, leaves it alone: each is sent once."""
    import time

    import cronwatch.notify

    a, b = store_factory(), store_factory()
    a.ensure_job("j", now=NOW)
    for kind in ("alert", "reminder"):
        a.enqueue_notification(job="j", incident_id=None, kind=kind, channel="webhook:x",
                               payload={"kind": kind, "job": "j"}, at=NOW)  # fmt: skip
    sent: list[str] = []
    looked: list[int] = []
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cronwatch.notify.Message, "from_dict", staticmethod(lambda d: d))

    def send(channel: str, msg: Any, *, timeout: float, **_: Any) -> None:
        sent.append(msg["kind"])
        if len(sent) == 1:
            clock[0] += 20.0  # a's first send: the slow channel
        elif len(sent) == 2:  # a's second send: b's outbox looks now, 21 s into a's round
            looked.append(checks.deliver_outbox(b, now=NOW + 21))

    monkeypatch.setattr(cronwatch.notify, "send", send)
    assert checks.deliver_outbox(a, now=NOW) == 2
    assert sent == ["alert", "reminder"] and looked == [0]
    assert b.due_notifications(now=NOW + 3600) == []  # both sent, nothing left to retry


def test_a_job_that_cannot_be_checked_does_not_hold_up_the_others(
    store_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A schedule stored by an older version that this one cannot read: that job is
    logged and looked at again in a minute; the other due jobs are checked (the leader
    checks every due job in one transaction)."""
    store = store_factory()
    for name, schedule in (("broken", "every banana"), ("fine", "every 1m")):
        store.save_job(Job(name=name, created_at=NOW - 3600, schedule=schedule, grace=60),
                       now=NOW)  # fmt: skip
    with caplog.at_level("ERROR", logger="cronwatch"):
        events = checks.check_all(store, now=NOW)
    assert {e["job"] for e in events if e["type"] == "job.missed"} == {"fine"}
    assert "job broken: cannot check it" in caplog.text
    assert "broken" not in store.due_jobs(now=NOW + 59)
    assert "broken" in store.due_jobs(now=NOW + 60)


# --- the ping writer's caches: another replica's commit is seen before a batch is written --
def _writer(store: Any) -> Callable[..., list[tuple[bool, Any]]]:
    """The ping writer process's loop (server/pingproc.py) on ``store``: ``send(url, ...)``
    records one batch of pings in one transaction and returns each ping's result."""
    from cronwatch.server.apply import Applier
    from cronwatch.server.ingest import Committer
    from cronwatch.server.ping import parse_ping

    store.writer_maintenance()
    applier = Applier(store.project_ping_key())
    committer = Committer(store, cache=applier)

    def send(*urls: str) -> list[tuple[bool, Any]]:
        items = []
        for url in urls:
            path, _, query = url.partition("?")
            items.append((parse_ping(path, query), None))
        results = committer.commit_each(applier.apply_item, items)
        assert all(ok for ok, _ in results), results
        return results

    return send


def _events(result: Any) -> list[str]:
    """The event types of a ping's result (a quick ping's result is its answer: none)."""
    return [e["type"] for e in result["events"]] if isinstance(result, dict) else []


def test_a_steady_writer_sees_another_replicas_failure_at_its_next_batch(
    store_factory: Callable[..., Any],
) -> None:
    """A writer records steady successes from what it remembers (the quick path; on
    PostgreSQL its look for other commits is made by the batch's one statement). When
    another replica has meanwhile recorded a failure, the next success is a recovery, as
    if the writer had remembered nothing, and no ping is written twice."""
    import time

    a, b = store_factory(), store_factory()
    key = a.ensure_ping_key("j", now=time.time())
    at_a, at_b = _writer(a), _writer(b)
    at_a(f"/ping/{key}")  # the first ping of a job is evaluated: then steady
    for _ in range(3):
        assert [_events(r) for _ok, r in at_a(f"/ping/{key}", f"/ping/{key}")] == [[], []]
    assert b.job_stats("j")["runs"] == 7  # committed: another connection sees them
    fails = at_b(f"/ping/{key}/fail", f"/ping/{key}/fail")  # two failures open an incident
    assert "incident.opened" in _events(fails[1][1])
    assert "incident.closed" in _events(at_a(f"/ping/{key}")[0][1])
    assert "incident.opened" in _events(at_b(f"/ping/{key}/fail", f"/ping/{key}/fail")[1][1])
    # a batch whose first ping would be quick and whose others are not: the look is made
    # before the first statement, and the whole batch is decided on what is stored
    first, _, third = at_a(f"/ping/{key}", f"/ping/{key}/fail", f"/ping/{key}/fail")
    assert "incident.closed" in _events(first[1])
    assert "incident.opened" in _events(third[1])
    assert b.job_stats("j")["runs"] == 1 + 6 + 2 + 1 + 2 + 3
    assert len(b.list_incidents(job="j")) == 3


def test_a_steady_writer_sees_other_replicas_changes_to_a_job_and_its_runs(
    store_factory: Callable[..., Any],
) -> None:
    """Whatever the writer remembers of a job and changes elsewhere is seen at its next
    batch: a run another replica opened (the success closes it, as it would have without
    the writer's memory), and the job disabled through another connection (its pings
    are answered and dropped)."""
    import time

    a, b = store_factory(), store_factory()
    key = a.ensure_ping_key("j", now=time.time())
    at_a, at_b = _writer(a), _writer(b)
    for _ in range(3):
        at_a(f"/ping/{key}", f"/ping/{key}")
    at_b(f"/ping/{key}/start")  # another replica opens a run
    (opened,) = b.open_runs_of("j")
    at_a(f"/ping/{key}")  # closes it: no synthetic run beside it
    assert b.open_runs_of("j") == []
    assert b.get_run(opened.id).status is Status.SUCCESS
    assert b.job_stats("j")["runs"] == 6 + 1
    job = b.get_job("j")
    job.disabled = True
    b.save_job(job, now=time.time())  # the API or the CLI, elsewhere
    ((ok, dropped),) = at_a(f"/ping/{key}")
    assert ok and isinstance(dropped, dict) and dropped["run"] is None
    assert b.job_stats("j")["runs"] == 7


def test_replicas_starting_together_on_a_new_database_keep_one_key_and_one_secret(
    store_factory: Callable[..., Any],
) -> None:
    """Two replicas' first start on one new database: each reads the project's ping key,
    the console's secret and a job's ping key as unset and makes one at the same moment.
    Both end with the same values (no duplicate-key error, no replica left with a secret
    the other rejects). PostgreSQL's READ COMMITTED lets both reads through; several
    rounds, since a round need not interleave."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from cronwatch.server.app import _console_secret

    for i in range(8):
        a, b = store_factory(f"new{i}"), store_factory(f"new{i}")
        at_once = threading.Barrier(2, timeout=30)

        def first_start(s: Any, at_once: threading.Barrier = at_once) -> tuple[str, bytes, str]:
            try:
                at_once.wait()
                project = s.project_ping_key()
                at_once.wait()
                secret = _console_secret(s)
                at_once.wait()
                return project, secret, s.ensure_ping_key("j", now=NOW)
            except BaseException:
                at_once.abort()  # the other replica's thread must not wait for this one
                raise

        with ThreadPoolExecutor(2) as pool:
            at_a, at_b = pool.map(first_start, (a, b))
        assert at_a == at_b
        assert at_a == (a.project_ping_key(), _console_secret(b), b.ensure_ping_key("j", now=NOW))
