"""The store (any backend: --store / CRONWATCH_TEST_STORE): retention, stats against a reference computation, run semantics, and
many wrappers writing to one database at the same moment."""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import time

import pytest

from conftest import CRONWATCH
from cronwatch.core.errors import NotFound
from cronwatch.core.model import Job, Run, Status, new_run_id

T0 = 1_700_000_000.0
DAY = 86400.0
pytestmark = pytest.mark.all_backends


def run_at(t: float, status: Status = Status.SUCCESS, job: str = "j", **kw) -> Run:
    kw.setdefault("duration", 1.0)
    kw.setdefault("stdout", b"out %d" % int(t))
    return Run(job=job, started_at=t, status=status, ended_at=t + (kw["duration"] or 0), **kw)


def has_output(store, run: Run) -> bool:
    return store.get_run(run.id, output=True).stdout is not None


# --- writing and reading ---------------------------------------------------------------------


def test_record_run_is_idempotent_by_id(store):
    run = run_at(T0, stdout=bytes(range(256)), stderr=b"")
    assert store.record_run(run, now=T0) is True
    assert store.record_run(run, now=T0) is False
    assert store.record_runs([run, run_at(T0 + 1)], now=T0) == (1, 1)
    got = store.get_run(run.id)
    assert got == run
    assert (got.stdout, got.stderr) == (bytes(range(256)), b"")


def test_runs_without_output_stay_without(store):
    run = run_at(T0, stdout=None)
    store.record_run(run, now=T0)
    assert store.get_run(run.id).stdout is None


def test_unknown_job_and_run(store):
    with pytest.raises(NotFound, match="unknown job 'nope'"):
        store.get_job("nope")
    with pytest.raises(NotFound, match="unknown run"):
        store.get_run("nope")
    with pytest.raises(NotFound):
        store.job_stats("nope")


# --- retention -------------------------------------------------------------------------------


def test_runs_older_than_keep_days_are_deleted_on_write(store):
    store.save_job(Job("j", keep_days=2), now=T0)
    old, older, recent = run_at(T0 - 3 * DAY), run_at(T0 - 2.5 * DAY), run_at(T0 - DAY)
    store.record_runs([old, older, recent], now=T0)
    assert [r.id for r in store.list_runs(job="j")] == [recent.id]
    with pytest.raises(NotFound):
        store.get_run(old.id)
    # Time passes: the next write drops the run that is now too old.
    later = run_at(T0 + 1.5 * DAY)
    store.record_run(later, now=T0 + 1.5 * DAY)
    assert [r.id for r in store.list_runs(job="j")] == [later.id]


def test_keep_days_is_per_job(store):
    store.save_job(Job("short", keep_days=1), now=T0)
    runs = [run_at(T0 - 5 * DAY, job="short"), run_at(T0 - 5 * DAY, job="long")]
    store.record_runs(runs, now=T0)
    assert len(store.list_runs(job="short")) == 0
    assert len(store.list_runs(job="long")) == 1


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_output_kept_for_newest_runs_and_newest_failures(store, one_at_a_time):
    store.save_job(Job("j", keep_output=3, keep_failed_output=2), now=T0)
    runs = [run_at(T0 + i, Status.FAILED if i % 3 == 0 else Status.SUCCESS) for i in range(10)]
    if one_at_a_time:
        for r in runs:
            store.record_run(r, now=r.started_at)
    else:
        store.record_runs(runs, now=T0 + 10)
    kept = [i for i, r in enumerate(runs) if has_output(store, r)]
    # newest 3 runs: 7, 8, 9; newest 2 failures: 6, 9
    assert kept == [6, 7, 8, 9]
    assert len(store.list_runs(job="j")) == 10  # the records themselves stay


def test_a_failure_among_the_newest_runs_keeps_its_output(store):
    """Output is kept for the newest keep_output runs *and* the newest failures."""
    store.save_job(Job("j", keep_output=4, keep_failed_output=1), now=T0)
    runs = [run_at(T0 + i, Status.FAILED) for i in range(6)]
    store.record_runs(runs, now=T0 + 10)
    assert [i for i, r in enumerate(runs) if has_output(store, r)] == [2, 3, 4, 5]


# --- stats against a reference ------------------------------------------------------------------


def reference_stats(runs: list[Run], since: float | None) -> dict:
    window = [r for r in runs if since is None or r.started_at >= since]
    finished = [r for r in window if r.status is not Status.RUNNING]
    durations = sorted(r.duration for r in finished if r.duration is not None)

    def pct(q: float) -> float | None:
        return durations[round(q * (len(durations) - 1))] if durations else None

    def newest(statuses) -> float | None:
        times = [r.started_at for r in runs if r.status in statuses]
        return max(times) if times else None

    ok = sum(r.status is Status.SUCCESS for r in window)
    failures = {Status.FAILED, Status.TIMEOUT, Status.MISSED}
    streak = {"status": None, "count": 0}
    done = sorted((r for r in runs if r.status is not Status.RUNNING), key=lambda r: r.started_at)
    if done:
        kind = done[-1].status is Status.SUCCESS
        count = 0
        for r in reversed(done):
            if (r.status is Status.SUCCESS) != kind:
                break
            count += 1
        streak = {"status": "success" if kind else "failure", "count": count}
    return {
        "runs": len(window),
        "finished": len(finished),
        "running": len(window) - len(finished),
        **{s.value: sum(r.status is s for r in window) for s in failures | {Status.SUCCESS}},
        "success_rate": ok / len(finished) if finished else None,
        "duration_p50": pct(0.5),
        "duration_p95": pct(0.95),
        "duration_max": durations[-1] if durations else None,
        "duration_avg": sum(durations) / len(durations) if durations else None,
        "last_success": newest({Status.SUCCESS}),
        "last_failure": newest(failures),
        "streak": streak,
    }


def random_runs(rng: random.Random, n: int) -> list[Run]:
    weights = {Status.SUCCESS: 6, Status.FAILED: 2, Status.TIMEOUT: 1, Status.MISSED: 1,
               Status.RUNNING: 1}  # fmt: skip
    runs = []
    for i in range(n):
        status = rng.choices(list(weights), list(weights.values()))[0]
        duration = None if status in (Status.RUNNING, Status.MISSED) else rng.uniform(0.01, 500)
        runs.append(run_at(T0 + i * 60 + rng.random(), status, duration=duration, stdout=None))
    return runs


@pytest.mark.parametrize("n", [1, 2, 3, 4, 21, 200])
@pytest.mark.parametrize("seed", range(4))
def test_stats_match_a_reference(store, n, seed):
    rng = random.Random(seed * 1000 + n)
    runs = random_runs(rng, n)
    store.record_runs(runs, now=T0)
    for since in (None, T0 + rng.randrange(n) * 60, T0 + n * 60 + 1):
        got = store.job_stats("j", since=since)
        want = reference_stats(runs, since)
        avg = want.pop("duration_avg")
        assert got["duration_avg"] == pytest.approx(avg)
        assert {k: got[k] for k in want} == want, f"since={since}"


def test_stats_of_a_job_without_runs(store):
    store.save_job(Job("j"), now=T0)
    s = store.job_stats("j")
    assert (s["runs"], s["success_rate"], s["duration_p50"], s["duration_p95"]) == (
        0,
        None,
        None,
        None,
    )
    assert (s["last_success"], s["last_failure"]) == (None, None)
    assert s["streak"] == {"status": None, "count": 0}


# --- run semantics -----------------------------------------------------------------------------


def test_start_without_run_id_times_out_the_open_run(store):
    first, timed_out = store.start_run("j", now=T0)
    assert timed_out == []
    second, timed_out = store.start_run("j", now=T0 + 30)
    assert [r.id for r in timed_out] == [first.id]
    old = store.get_run(first.id)
    assert old.status is Status.TIMEOUT
    assert (old.ended_at, old.duration) == (T0 + 30, 30.0)
    assert store.get_run(second.id).status is Status.RUNNING
    done = store.finish_run("j", Status.SUCCESS, now=T0 + 40, exit_code=0)
    assert done.id == second.id
    assert (done.status, done.duration, done.exit_code) == (Status.SUCCESS, 10.0, 0)


def test_run_ids_pair_concurrent_runs(store):
    a, _ = store.start_run("j", now=T0, run_id="a")
    b, timed_out = store.start_run("j", now=T0 + 1, run_id="b")
    assert timed_out == []
    _, timed_out = store.start_run("j", now=T0 + 2)  # no id: leaves the id'd runs alone
    assert timed_out == []
    done = store.finish_run("j", Status.FAILED, now=T0 + 5, run_id="a", exit_code=3)
    assert (done.id, done.status, done.duration) == ("a", Status.FAILED, 5.0)
    assert store.get_run("b").status is Status.RUNNING
    done = store.finish_run("j", Status.SUCCESS, now=T0 + 9, run_id="b")
    assert (done.id, done.status, done.duration) == ("b", Status.SUCCESS, 8.0)


def test_repeated_start_with_the_same_run_id_is_idempotent(store):
    a, _ = store.start_run("j", now=T0, run_id="a")
    again, timed_out = store.start_run("j", now=T0 + 5, run_id="a")
    assert (again.id, again.started_at, timed_out) == ("a", T0, [])
    assert len(store.list_runs(job="j")) == 1


@pytest.mark.parametrize("run_id", [None, "given"])
def test_finish_with_no_open_run_creates_a_synthetic_run(store, run_id):
    run = store.finish_run("j", Status.FAILED, now=T0 + 100, run_id=run_id, exit_code=1,
                           duration=20.0, stdout=b"out", stderr=b"err")  # fmt: skip
    stored = store.get_run(run.id)
    assert run_id is None or stored.id == run_id
    assert (stored.status, stored.started_at, stored.ended_at, stored.duration) == (
        Status.FAILED, T0 + 80, T0 + 100, 20.0,
    )  # fmt: skip
    assert (stored.stdout, stored.stderr, stored.exit_code) == (b"out", b"err", 1)
    assert len(store.list_runs(job="j")) == 1


def test_finishing_a_finished_run_id_is_a_no_op(store):
    # A ULID names one run forever (core/runs.py): a finish for its finished run is a
    # repeated delivery, whatever it says. (Other rids: tests/test_ingest_runs.py.)
    a = new_run_id(T0)
    store.start_run("j", now=T0, run_id=a)
    store.finish_run("j", Status.SUCCESS, now=T0 + 5, run_id=a, exit_code=0, stdout=b"first")
    again = store.finish_run("j", Status.FAILED, now=T0 + 9, run_id=a, exit_code=1,
                             stdout=b"second")  # fmt: skip
    stored = store.get_run(a)
    assert (stored.status, stored.exit_code, stored.duration, stored.stdout) == (
        Status.SUCCESS, 0, 5.0, b"first",
    )  # fmt: skip
    assert again.status is Status.SUCCESS
    assert len(store.list_runs(job="j")) == 1


def test_finish_without_run_id_does_not_close_an_id_run(store):
    store.start_run("j", now=T0, run_id="a")
    run = store.finish_run("j", Status.SUCCESS, now=T0 + 5)
    assert run.id != "a"
    assert store.get_run("a").status is Status.RUNNING
    assert len(store.list_runs(job="j")) == 2


def test_environments_keep_runs_apart(store):
    prod, _ = store.start_run("j", now=T0, env="prod")
    _, timed_out = store.start_run("j", now=T0 + 1, env="staging")
    assert timed_out == []
    done = store.finish_run("j", Status.SUCCESS, now=T0 + 4, env="prod")
    assert (done.id, done.env, done.duration) == (prod.id, "prod", 4.0)


# --- many wrappers at once -------------------------------------------------------------------


@pytest.mark.sqlite_only  # many processes, one database file
def test_200_wrappers_finishing_at_once_lose_no_run(cw, cw_env, db_path, tmp_path):
    """200 `cronwatch run` processes whose jobs all end at the same moment, on a database
    that does not exist yet: every run ends up in history (directly or via the spool)."""
    n = 200
    gate = tmp_path / "gate"
    gate.touch()
    started = tmp_path / "started"
    started.mkdir()
    env = {**cw_env, "CRONWATCH_DB_TIMEOUT": "60"}
    # Each job says it has started, then waits on a lock we hold: releasing it ends all 200.
    job = f"touch {started}/$$; exec flock -s {gate} true"
    with open(gate) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [CRONWATCH, "run", "herd", "--no-dashboard", "--", "sh", "-c", job],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for _ in range(n)
        ]
        deadline = time.monotonic() + 120
        while len(os.listdir(started)) < n:
            assert time.monotonic() < deadline, f"only {len(os.listdir(started))} jobs started"
            time.sleep(0.05)
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0
        assert b"Traceback" not in err, err.decode()
        errors.append(err)
    # One more run merges whatever had to be spooled.
    assert cw("run", "after", "--", "true").rc == 0
    from cronwatch.store import open_store

    with open_store(str(db_path), create=False) as s:
        runs = s.list_runs(job="herd")
    assert len(runs) == n
    assert len({r.id for r in runs}) == n
    assert all(r.status is Status.SUCCESS for r in runs)


@pytest.mark.sqlite_only  # PostgreSQL's identities never give an id out twice
def test_a_deleted_job_leaves_nothing_for_the_next_job_to_inherit(store):
    """SQLite hands the next new job the id of the deleted one when it was the newest: its
    runs, alert state and incidents must not reappear under the new job's name."""
    store.record_runs([run_at(T0 + i, Status.FAILED) for i in range(3)], now=T0 + 10)
    store.set_alert_state("j", "", {"down": True, "fail_streak": 3})
    store.open_incident("j", "", at=T0 + 2, cause="3 failures", run_id=None)
    old_id = store._job_id("j")
    store.delete_job("j")
    store.ensure_job("other", now=T0 + 20)
    assert store._job_id("other") == old_id  # the case this guards against
    assert store.job_stats("other")["runs"] == 0
    assert store.get_alert_state("other") is None
    assert store.current_incident("other") is None
    assert store.list_incidents(job="other") == []


def test_generated_ping_keys_never_start_with_a_dash(store, monkeypatch):
    """`cronwatch ping KEY complete` would read such a key as an option (a CI run met one)."""
    import secrets

    made = iter(["-leading-dash-key-aaaa", "_underscore-key-bbbbbb", "-again-cccccccccccccc",
                 "fine-key-ddddddddddddd"])  # fmt: skip
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(made))
    assert store.ensure_ping_key("j", now=T0) == "_underscore-key-bbbbbb"
    assert store.project_ping_key() == "fine-key-ddddddddddddd"
