from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronwatch.core.health import MIN_GRACE, Health, effective_grace, evaluate, next_deadline
from cronwatch.core.model import Job, Run, Status

HOUR = 3600.0


def job(**kw) -> Job:
    kw.setdefault("grace", 300.0)
    return Job(name="backup", **kw)


def run(started: float, status: Status = Status.SUCCESS, **kw) -> Run:
    ended = None if status is Status.RUNNING else started + 5
    return Run(job="backup", started_at=started, status=status, ended_at=ended, **kw)


def test_no_runs_no_schedule_is_unknown() -> None:
    r = evaluate(job(), last_finished=None, open_runs=[], anchor=None, now=100)
    assert r.health is Health.UNKNOWN and r.reason == "no runs yet"
    assert r.next_expected is None and r.deadline is None and r.overdue_runs == []


def test_first_run_in_progress_is_unknown() -> None:
    r = evaluate(job(), last_finished=None, open_runs=[run(0, Status.RUNNING)], anchor=0, now=9)
    assert r.health is Health.UNKNOWN and "running" in r.reason


@pytest.mark.parametrize(
    ("status", "health", "word"),
    [
        (Status.SUCCESS, Health.HEALTHY, "succeeded"),
        (Status.FAILED, Health.FAILING, "exit code 3"),
        (Status.TIMEOUT, Health.TIMEOUT, "timed out"),
        (Status.MISSED, Health.MISSED, "missed"),
    ],
)
def test_health_follows_the_newest_outcome(status: Status, health: Health, word: str) -> None:
    last = run(0, status, exit_code=3 if status is Status.FAILED else None)
    r = evaluate(job(), last_finished=last, open_runs=[], anchor=0, now=100)
    assert r.health is health and word in r.reason


def test_failure_message_is_the_reason() -> None:
    last = run(0, Status.FAILED, message="disk full")
    r = evaluate(job(), last_finished=last, open_runs=[], anchor=0, now=100)
    assert r.reason.endswith("disk full")


@pytest.mark.parametrize(
    ("now", "health"),
    [
        (HOUR - 1, Health.HEALTHY),
        (HOUR, Health.LATE),  # the expected instant itself: late, not yet missed
        (HOUR + 299, Health.LATE),
        (HOUR + 300, Health.MISSED),  # deadline = expected + grace, inclusive
        (5 * HOUR, Health.MISSED),
    ],
)
def test_late_then_missed(now: float, health: Health) -> None:
    r = evaluate(job(schedule="every 1h"), last_finished=run(0), open_runs=[], anchor=0, now=now)
    assert r.health is health
    assert (r.next_expected, r.deadline) == (HOUR, HOUR + 300)


def test_grace_has_a_floor() -> None:
    j = job(schedule="every 1h", grace=0)
    assert effective_grace(j) == MIN_GRACE
    r = evaluate(j, last_finished=run(0), open_runs=[], anchor=0, now=HOUR + 1)
    assert r.health is Health.LATE and r.deadline == HOUR + MIN_GRACE


def test_schedule_is_read_in_the_jobs_zone() -> None:
    j = job(schedule="0 9 * * *", tz="Europe/Berlin")
    anchor = datetime.fromisoformat("2024-03-30T09:00:05+01:00").timestamp()
    r = evaluate(j, last_finished=run(anchor), open_runs=[], anchor=anchor, now=anchor + 60)
    assert r.next_expected == datetime.fromisoformat("2024-03-31T09:00:00+02:00").timestamp()


def test_a_schedule_that_never_fires_again_has_no_deadline() -> None:
    j = job(schedule="2020-01-01 00:00")
    r = evaluate(j, last_finished=run(2e9), open_runs=[], anchor=2e9, now=2e9 + 10)
    assert r.health is Health.HEALTHY and r.next_expected is None and r.deadline is None
    assert next_deadline(j, 2e9, []) is None


def test_an_open_run_past_max_runtime_is_a_timeout() -> None:
    j = job(max_runtime=60.0)
    stuck, fresh = run(0, Status.RUNNING, id="a"), run(50, Status.RUNNING, id="b")
    before = evaluate(j, last_finished=run(-100), open_runs=[stuck, fresh], anchor=50, now=59)
    assert before.health is Health.HEALTHY and before.overdue_runs == []
    at = evaluate(j, last_finished=run(-100), open_runs=[fresh, stuck], anchor=50, now=60)
    assert at.health is Health.TIMEOUT and at.overdue_runs == [stuck]
    assert "run a" in at.reason and "1m00s" in at.reason


def test_an_open_run_does_not_hide_a_missed_one() -> None:
    # A run that is still going when the next was due means the next did not happen.
    j = job(schedule="every 1h")
    r = evaluate(j, last_finished=None, open_runs=[run(0, Status.RUNNING)], anchor=0, now=2 * HOUR)
    assert r.health is Health.MISSED


PRECEDENCE = [
    # paused? an open run past max_runtime? the clock; the newest finished outcome
    (dict(paused=True, stuck=True, past=2 * HOUR, last=Status.FAILED), Health.PAUSED),
    (dict(paused=False, stuck=True, past=2 * HOUR, last=Status.FAILED), Health.TIMEOUT),
    (dict(paused=False, stuck=False, past=2 * HOUR, last=Status.FAILED), Health.MISSED),
    (dict(paused=False, stuck=False, past=HOUR + 1, last=Status.FAILED), Health.FAILING),
    (dict(paused=False, stuck=False, past=HOUR + 1, last=Status.SUCCESS), Health.LATE),
    (dict(paused=False, stuck=False, past=10, last=Status.SUCCESS), Health.HEALTHY),
    (dict(paused=False, stuck=False, past=10, last=None), Health.UNKNOWN),
]


@pytest.mark.parametrize(("case", "health"), PRECEDENCE)
def test_precedence(case: dict, health: Health) -> None:
    j = job(schedule="every 1h", max_runtime=600.0, paused=case["paused"])
    open_runs = [run(0, Status.RUNNING)] if case["stuck"] else []
    last = None if case["last"] is None else run(-10, case["last"])
    r = evaluate(j, last_finished=last, open_runs=open_runs, anchor=0, now=case["past"])
    assert r.health is health


def test_next_deadline_is_the_earliest_clock_change() -> None:
    j = job(schedule="every 1h", max_runtime=600.0)
    assert next_deadline(j, 0, []) == HOUR + 300
    assert next_deadline(j, 0, [run(100, Status.RUNNING)]) == 700
    assert next_deadline(job(max_runtime=600.0), None, [run(100, Status.RUNNING)]) == 700
    assert next_deadline(job(), 0, [run(100, Status.RUNNING)]) is None  # no max_runtime
    assert next_deadline(job(schedule="every 1h", paused=True), 0, []) is None


def test_report_to_dict() -> None:
    j = job(schedule="every 1h", max_runtime=10.0)
    r = evaluate(
        j, last_finished=None, open_runs=[run(0, Status.RUNNING, id="r1")], anchor=0, now=20
    )
    assert r.to_dict() == {
        "health": "timeout",
        "reason": r.reason,
        "next_expected": HOUR,
        "deadline": HOUR + 300,
        "overdue_runs": ["r1"],
    }


@settings(max_examples=200, deadline=None)
@given(
    schedule=st.sampled_from(["", "every 10m", "*/5 * * * *", "0 9 * * *", "at 13:37"]),
    tz=st.sampled_from(["UTC", "Europe/London", "Australia/Lord_Howe"]),
    grace=st.floats(0, 3 * HOUR),
    max_runtime=st.none() | st.floats(1, 2 * HOUR),
    anchor=st.floats(1.6e9, 1.8e9),
    run_starts=st.lists(st.floats(0, 3 * HOUR), max_size=3),
    last_ok=st.none() | st.just(True),
    dt=st.floats(0, 2 * 86400.0),
)
def test_health_turns_bad_exactly_at_next_deadline(
    schedule, tz, grace, max_runtime, anchor, run_starts, last_ok, dt
) -> None:
    j = job(schedule=schedule, tz=tz, grace=grace, max_runtime=max_runtime)
    open_runs = [run(anchor + s, Status.RUNNING) for s in run_starts]
    newest = max([anchor] + [r.started_at for r in open_runs])
    last = None if last_ok is None else run(anchor - 10)
    deadline = next_deadline(j, newest, open_runs)
    now = newest + dt
    h = evaluate(j, last_finished=last, open_runs=open_runs, anchor=newest, now=now).health
    if deadline is not None and now >= deadline:
        assert h in (Health.MISSED, Health.TIMEOUT)
    else:
        assert h in (Health.UNKNOWN, Health.HEALTHY, Health.LATE)
