from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronwatch.core.alerting import (
    AlertState,
    CloseIncident,
    Notify,
    OpenIncident,
    Policy,
    cause_of,
    next_tick,
    on_outcome,
    on_tick,
)
from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Job, Run, Status

T = 10_000.0
DOWN = dict(down=True, fail_streak=2, incident_open=True, alerted=True, cause="exit 1")


def step(state: AlertState, policy: Policy, event: str, *, paused: bool = False, at: float = T):
    if event == "tick":
        return on_tick(state, policy, paused=paused, at=at)
    failed = event == "fail"
    return on_outcome(
        state, policy, failed=failed, paused=paused, cause="exit 1" if failed else "ok", at=at
    )


CASES: list[tuple[str, dict, dict, str, dict, list, dict]] = [
    # name, policy, start state, event, kwargs, actions, expected state fields
    ("first failure", {}, {}, "fail", {}, [], dict(fail_streak=1, down=False)),
    (
        "second failure alerts",
        {},
        dict(fail_streak=1),
        "fail",
        {},
        [OpenIncident("exit 1"), Notify("alert", "exit 1")],
        dict(down=True, incident_open=True, alerted=True, sent=[T], last_alert_at=T),
    ),
    ("more failures are quiet", {}, DOWN, "fail", {}, [], dict(fail_streak=3, down=True)),
    (
        "success recovers",
        {},
        DOWN,
        "ok",
        {},
        [CloseIncident(), Notify("recovery", "ok")],
        dict(down=False, incident_open=False, alerted=False, ok_streak=1, fail_streak=0),
    ),
    ("success when up", {}, dict(ok_streak=4), "ok", {}, [], dict(ok_streak=5)),
    ("failure resets ok streak", {}, dict(ok_streak=4), "fail", {}, [], dict(ok_streak=0)),
    ("recover_after=2 waits", dict(recover_after=2), DOWN, "ok", {}, [], dict(down=True)),
    (
        "recover_after=2 second success",
        dict(recover_after=2),
        {**DOWN, "ok_streak": 1, "fail_streak": 0},
        "ok",
        {},
        [CloseIncident(), Notify("recovery", "ok")],
        dict(down=False),
    ),
    (
        "alert_after=1",
        dict(alert_after=1),
        {},
        "fail",
        {},
        [OpenIncident("exit 1"), Notify("alert", "exit 1")],
        dict(down=True),
    ),
    (
        "paused: down but silent",
        {},
        dict(fail_streak=1),
        "fail",
        dict(paused=True),
        [],
        dict(down=True, incident_open=False, fail_streak=2),
    ),
    (
        "unpaused while down: tick opens",
        {},
        dict(down=True, fail_streak=5, cause="exit 1"),
        "tick",
        {},
        [OpenIncident("exit 1"), Notify("alert", "exit 1")],
        dict(incident_open=True, alerted=True),
    ),
    (
        "paused success closes and recovers",
        {},
        DOWN,
        "ok",
        dict(paused=True),
        [CloseIncident(), Notify("recovery", "ok")],
        dict(down=False),
    ),
    (
        "paused down success: nothing to close",
        {},
        dict(down=True, fail_streak=3),
        "ok",
        dict(paused=True),
        [],
        dict(down=False),
    ),
    (
        "surge: incident opens, alert held",
        {},
        dict(fail_streak=1, sent=[T - 60 * k for k in range(6)]),
        "fail",
        {},
        [OpenIncident("exit 1")],
        dict(incident_open=True, alerted=False, suppressed=1),
    ),
    (
        "surge: old sends leave the hour",
        {},
        dict(fail_streak=1, sent=[T - 3600 - k for k in range(6)]),
        "fail",
        {},
        [OpenIncident("exit 1"), Notify("alert", "exit 1")],
        dict(sent=[T]),
    ),
    (
        "held alert goes when the hour has room",
        {},
        {**DOWN, "alerted": False, "suppressed": 3, "sent": [T - 3600]},
        "tick",
        {},
        [Notify("alert", "exit 1", suppressed=3)],
        dict(alerted=True, suppressed=0),
    ),
    (
        "held alert stays held while full",
        {},
        {**DOWN, "alerted": False, "suppressed": 1, "sent": [T - k for k in range(6)]},
        "tick",
        {},
        [],
        dict(alerted=False, suppressed=1),
    ),
    (
        "recovery of an unsent alert is silent",
        {},
        {**DOWN, "alerted": False},
        "ok",
        {},
        [CloseIncident()],
        dict(down=False),
    ),
    (
        "reminder due",
        dict(realert=600),
        {**DOWN, "next_reminder_at": T},
        "tick",
        {},
        [Notify("reminder", "exit 1")],
        dict(next_reminder_at=T + 600, last_alert_at=T),
    ),
    (
        "reminder not yet",
        dict(realert=600),
        {**DOWN, "next_reminder_at": T + 1},
        "tick",
        {},
        [],
        {},
    ),
    (
        "no reminders while paused",
        dict(realert=600),
        {**DOWN, "next_reminder_at": T},
        "tick",
        dict(paused=True),
        [],
        {},
    ),
    (
        "reminder over the cap is skipped once",
        dict(realert=600),
        {**DOWN, "next_reminder_at": T - 5, "sent": [T - k for k in range(6)]},
        "tick",
        {},
        [],
        dict(suppressed=1, next_reminder_at=T + 600),
    ),
    ("tick when up", dict(realert=600), {}, "tick", {}, [], dict(down=False)),
]


@pytest.mark.parametrize(
    ("policy", "start", "event", "kw", "actions", "expect"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_transition(
    policy: dict, start: dict, event: str, kw: dict, actions: list, expect: dict
) -> None:
    before = AlertState(**start)
    snapshot = asdict(before)
    state, got = step(before, Policy(**policy), event, **kw)
    assert got == actions
    for key, value in expect.items():
        assert getattr(state, key) == value, key
    assert asdict(before) == snapshot  # the input is never mutated


def test_policy_from_job_and_validation() -> None:
    p = Policy.from_job(Job(name="x", alert_after=3, recover_after=2, realert=3600))
    assert p == Policy(alert_after=3, recover_after=2, realert=3600, max_alerts_per_hour=6)
    for bad in (
        dict(alert_after=0),
        dict(recover_after=0),
        dict(realert=0),
        dict(max_alerts_per_hour=0),
    ):
        with pytest.raises(ValidationError):
            Policy(**bad)


def test_state_json_round_trip_and_tolerance() -> None:
    s = AlertState(down=True, fail_streak=2, sent=[1.5], last_alert_at=1.5, cause="x")
    assert AlertState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.to_dict() == asdict(s)  # every field, written by hand
    assert s.to_dict()["sent"] is not s.sent  # a copy, as asdict made
    assert AlertState.from_dict({"down": True, "future_field": 1}) == AlertState(down=True)
    assert AlertState.from_dict(None) == AlertState()
    with pytest.raises(ValidationError):
        AlertState.from_dict({"fail_streak": "many"})


def test_next_tick() -> None:
    p = Policy(realert=600)
    assert next_tick(AlertState(), p) is None
    assert next_tick(AlertState(down=True), p) == 0.0  # unpaused while down: now
    assert next_tick(AlertState(down=True), p, paused=True) is None
    assert next_tick(AlertState(**DOWN, next_reminder_at=T), p) == T
    full = [T - 100 * k for k in range(6)]
    assert next_tick(AlertState(**{**DOWN, "alerted": False}, sent=full), p) == T - 500 + 3600
    assert next_tick(AlertState(**DOWN, next_reminder_at=T, sent=full), p) == T - 500 + 3600
    assert next_tick(AlertState(**DOWN), Policy()) is None


EVENT = st.tuples(
    st.sampled_from(["fail", "fail", "ok", "tick"]),
    st.booleans() | st.just(False),  # paused, mostly not
    st.floats(0, 1800),  # seconds since the previous event
)


@settings(max_examples=150, deadline=None)
@given(
    alert_after=st.integers(1, 3),
    recover_after=st.integers(1, 2),
    realert=st.none() | st.sampled_from([60.0, 300.0, 3600.0]),
    cap=st.none() | st.integers(1, 6),
    events=st.lists(EVENT, max_size=80),
)
def test_any_sequence_alternates_and_respects_the_cap(
    alert_after: int, recover_after: int, realert: float | None, cap: int | None, events: list
) -> None:
    policy = Policy(alert_after, recover_after, realert, cap)
    state, at = AlertState(), 0.0
    notes: list[tuple[float, str]] = []
    incident_open = False
    for event, paused, dt in events:
        at += dt
        state, actions = step(state, policy, event, paused=paused, at=at)
        state = AlertState.from_dict(json.loads(json.dumps(state.to_dict())))
        for a in actions:
            if isinstance(a, OpenIncident):
                assert not incident_open
                incident_open = True
            elif isinstance(a, CloseIncident):
                assert incident_open
                incident_open = False
            else:
                assert incident_open or a.kind == "recovery"
                if a.kind != "recovery":
                    assert not paused
                notes.append((at, a.kind))
        assert state.incident_open == incident_open
        assert state.down or not incident_open

    kinds = [k for _, k in notes if k != "reminder"]
    assert all(k == ("alert" if i % 2 == 0 else "recovery") for i, k in enumerate(kinds))
    opened = [t for t, k in notes if k != "recovery"]
    if cap is not None:
        for i, t in enumerate(opened):
            assert sum(1 for u in opened[: i + 1] if u > t - 3600) <= cap
    if realert is None:
        assert "reminder" not in (k for _, k in notes)


def test_a_flapping_job_is_capped() -> None:
    policy, state, sent = Policy(alert_after=1), AlertState(), []
    for i in range(40):  # fail, ok, fail, ok ... one minute apart
        state, actions = step(state, policy, "fail" if i % 2 == 0 else "ok", at=60.0 * i)
        sent += [a for a in actions if isinstance(a, Notify)]
    alerts = [a for a in sent if a.kind == "alert"]
    assert len(alerts) == 6 and state.suppressed == 14
    assert len([a for a in sent if a.kind == "recovery"]) == 6


@pytest.mark.parametrize(
    ("fields", "cause"),
    [({"status": Status.FAILED}, "failed"),  # a fail ping: no exit code, no message
     ({"status": Status.FAILED, "exit_code": 3}, "exit code 3"),
     ({"status": Status.FAILED, "signal": 9}, "killed by signal 9"),
     ({"status": Status.FAILED, "message": "assertion failed: x"}, "assertion failed: x"),
     ({"status": Status.TIMEOUT}, "timed out"),
     ({"status": Status.MISSED}, "missed: no run started in time"),
     ({"status": Status.SUCCESS}, "succeeded"),
     ({"status": Status.SUCCESS, "exit_code": 0}, "succeeded (exit code 0)")],
)  # fmt: skip
def test_a_cause_reads_well_whatever_the_run_carries(fields: dict, cause: str) -> None:
    assert cause_of(Run(job="j", started_at=1.0, **fields)) == cause


# --- schedule tolerance: missed runs counted apart from failures --------------------------


def miss(state: AlertState, policy: Policy, *, at: float = T, paused: bool = False):
    return on_outcome(state, policy, failed=True, missed=True, paused=paused,
                      cause="missed: expected 09:00", at=at)  # fmt: skip


def test_schedule_tolerance_counts_misses_apart_from_failures() -> None:
    p = Policy(alert_after=3, miss_after=2)  # schedule_tolerance 1
    s, out = miss(AlertState(), p)
    assert out == [] and (s.miss_streak, s.fail_streak) == (1, 0)
    s, out = step(s, p, "fail")  # a failed run happened: the schedule was kept
    assert out == [] and (s.miss_streak, s.fail_streak) == (0, 1)
    s, out = miss(s, p)
    s, out = miss(s, p)  # the second consecutive miss: down, with the miss's cause
    assert s.down and out == [OpenIncident("missed: expected 09:00"),
                              Notify("alert", "missed: expected 09:00")]  # fmt: skip
    assert s.fail_streak == 1  # misses left the failure streak as it was
    s, out = step(s, p, "ok")
    assert not s.down and s.miss_streak == 0 and Notify("recovery", "ok") in out


def test_without_schedule_tolerance_a_miss_is_a_failure() -> None:
    p = Policy(alert_after=2)
    s, _ = miss(AlertState(), p)
    s, out = step(s, p, "fail")
    assert s.down and s.miss_streak == 0 and len(out) == 2


def test_policy_from_job_maps_the_new_settings() -> None:
    job = Job(name="x", schedule_tolerance=2, surge_threshold=None)
    p = Policy.from_job(job)
    assert (p.miss_after, p.max_alerts_per_hour) == (3, None)
    assert Policy.from_job(Job(name="x")).miss_after is None
    with pytest.raises(ValidationError):
        Policy(miss_after=0)


def test_miss_streak_survives_a_round_trip_and_old_states_load() -> None:
    s, _ = miss(AlertState(), Policy(miss_after=5))
    assert AlertState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    old = s.to_dict()
    del old["miss_streak"]  # stored by a version without it
    assert AlertState.from_dict(old).miss_streak == 0


def test_surge_threshold_holds_reminders_past_n_an_hour() -> None:
    p = Policy(alert_after=1, realert=60, max_alerts_per_hour=2)
    s, out = step(AlertState(), p, "fail", at=T)
    sent = [a for a in out if isinstance(a, Notify)]
    for minute in range(1, 10):
        s, out = on_tick(s, p, paused=False, at=T + minute * 60)
        sent += [a for a in out if isinstance(a, Notify)]
    assert [n.kind for n in sent] == ["alert", "reminder"]
    s, out = on_tick(s, p, paused=False, at=T + 3600 + 61)
    assert [a.kind for a in out if isinstance(a, Notify)] == ["reminder"]
    assert out[-1].suppressed > 0  # the held-back ones are reported
