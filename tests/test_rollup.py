"""The per-day rollup behind `stats`: whatever happens to runs (late imports into sealed days,
runs finished after their day was sealed, retention deleting the longest run of a day, a
job deleted and recreated), stats read through the rollup equal a computation over every
stored run."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time

import pytest

from cronwatch.core.model import Job, Run, Status
from cronwatch.store.sqlite import migrations
from test_store import reference_stats, run_at

DAY = 86400.0
T0 = 1_700_006_400.0  # a UTC midnight
pytestmark = pytest.mark.all_backends
FAILS = (Status.FAILED, Status.TIMEOUT, Status.MISSED)


def stored_runs(store, job: str = "j") -> list[Run]:
    return list(store.iter_runs(job=job, output=False))


def check(store, rng: random.Random, now: float, job: str = "j") -> None:
    runs = stored_runs(store, job)
    sinces = [None, now - 7 * DAY, now - 0.5 * DAY, now + 1]
    sinces += [r.started_at for r in rng.sample(runs, min(3, len(runs)))]
    sinces += [T0 + rng.uniform(-DAY, 12 * DAY) for _ in range(3)]
    for since in sinces:
        got = store.job_stats(job, since=since)
        want = reference_stats(runs, since)
        avg = want.pop("duration_avg")
        if avg is None:
            assert got["duration_avg"] is None
        else:
            assert got["duration_avg"] == pytest.approx(avg, rel=1e-9, abs=1e-9)
        assert {k: got[k] for k in want} == want, f"since={since} now={now}"


def sealed(store) -> float:
    return store.rollup.sealed()


def day_rows(store) -> int:
    return store.rollup.state()["days"]


def random_run(rng: random.Random, t: float) -> Run:
    status = rng.choice([Status.SUCCESS] * 5 + list(FAILS) + [Status.RUNNING])
    duration = None if status in (Status.RUNNING, Status.MISSED) else rng.uniform(0.01, 900)
    return run_at(t, status, duration=duration, stdout=None)


def seal_as_old_stores_did(db: sqlite3.Connection, until: float) -> None:
    """What migration 4 and the seals of a schema 4 or 5 store wrote: the days before
    ``until`` folded into run_days (without their sorted durations)."""
    db.execute("UPDATE rollup SET sealed=?", (until,))
    db.execute(
        "INSERT INTO run_days(job_id, day, runs, running, success, failed, timeout, missed,"
        " n_dur, sum_dur, max_dur) SELECT job_id, CAST(started_at / 86400 AS INTEGER) AS d,"
        " count(*), sum(status='running'), sum(status='success'), sum(status='failed'),"
        " sum(status='timeout'), sum(status='missed'), count(duration),"
        " coalesce(sum(duration), 0), max(duration) FROM runs WHERE started_at < ?"
        " GROUP BY job_id, d",
        (until,),
    )


def old_database(path, version: int, runs: list[Run]) -> sqlite3.Connection:
    """A database at schema ``version`` (migrations up to it), job "j" with ``runs``."""
    from cronwatch.store.sqlite import migrations

    db = sqlite3.connect(path, isolation_level=None)
    for step in migrations.SQLITE[:version]:
        for stmt in migrations.statements(step):
            db.execute(stmt)
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    db.execute("INSERT INTO jobs(name, created_at) VALUES ('j', 0)")
    db.executemany(
        "INSERT INTO runs(uid, job_id, status, started_at, duration) VALUES (?,1,?,?,?)",
        [(r.id, r.status.value, r.started_at, r.duration) for r in runs],
    )
    return db


@pytest.mark.parametrize("seed", range(3))
def test_stats_through_the_rollup_match_every_stored_run(store, seed):
    rng = random.Random(seed)
    store.save_job(Job("j", keep_days=8), now=T0)
    # the database was made "today", long after T0: move its seal back to T0's day
    store.rollup.set_sealed(T0)
    now = T0
    for _ in range(40):
        now += rng.uniform(0.1, 0.4) * DAY
        kind = rng.random()
        if kind < 0.5:  # live runs around now
            batch = [random_run(rng, now - rng.uniform(0, 3600)) for _ in range(rng.randint(1, 6))]
        else:  # an import of older runs, much of it into days already sealed
            batch = [random_run(rng, now - rng.uniform(0, 9 * DAY)) for _ in range(25)]
        store.record_runs(batch, now=now)
        if rng.random() < 0.4:  # the server's path: start, then finish later
            store.start_run("j", now=now - rng.uniform(0, 2 * DAY))
            store.finish_run("j", rng.choice(list(FAILS) + [Status.SUCCESS]), now=now)
        check(store, rng, now)
    assert sealed(store) > T0 + 5 * DAY  # the seal moved with the writes
    assert day_rows(store) > 3  # and the rollup holds sealed days


def test_a_run_finished_after_its_day_was_sealed_moves_in_the_rollup(store):
    rng = random.Random(7)
    store.rollup.set_sealed(T0)
    run, _ = store.start_run("j", now=T0 + 3600)  # opened on day 1 ...
    store.record_runs([run_at(T0 + 2 * DAY + 10)], now=T0 + 2 * DAY + 20)  # ... seal: day 2
    assert sealed(store) == T0 + 2 * DAY
    assert store.job_stats("j")["running"] == 1
    store.finish_run("j", Status.FAILED, now=T0 + 2 * DAY + 30)  # ... finished on day 2
    s = store.job_stats("j")
    assert (s["running"], s["failed"], s["duration_max"]) == (0, 1, 2 * DAY + 30 - 3600)
    check(store, rng, T0 + 2 * DAY + 30)


def test_retention_deleting_a_days_longest_run_recomputes_that_days_max(store):
    store.save_job(Job("j", keep_days=1), now=T0)
    store.rollup.set_sealed(T0)
    day0 = [run_at(T0 + 50, duration=5.0), run_at(T0 + 100, duration=500.0),
            run_at(T0 + 5000, duration=3.0)]  # fmt: skip
    store.record_runs([*day0, run_at(T0 + DAY + 200, duration=2.0)], now=T0 + DAY + 10)
    assert sealed(store) == T0 + DAY  # day 0 is in the rollup now
    assert store.job_stats("j")["duration_max"] == 500.0
    # keep_days=1 at T0+1d+150: the runs of day 0 that started before T0+150 go
    store.record_runs([run_at(T0 + DAY + 140, duration=1.0)], now=T0 + DAY + 150)
    s = store.job_stats("j")
    assert (s["runs"], s["duration_max"]) == (3, 3.0)
    check(store, random.Random(1), T0 + DAY + 150)


def test_a_deleted_and_recreated_job_starts_from_nothing(store):
    store.rollup.set_sealed(T0 + 5 * DAY)
    store.record_runs([run_at(T0 + i * 3600) for i in range(50)], now=T0 + 5 * DAY)
    assert store.job_stats("j")["runs"] == 50
    store.delete_job("j")
    store.record_runs([run_at(T0 + 10)], now=T0 + 5 * DAY)
    s = store.job_stats("j")
    assert (s["runs"], s["success"]) == (1, 1)


@pytest.mark.sqlite_only
def test_an_old_database_gets_its_rollup_built_by_the_migration(tmp_path):
    """A database from before the rollup (schema 3) opens with run_days filled in."""
    from cronwatch.store import open_store

    path = tmp_path / "old.db"
    rng = random.Random(3)
    runs = [random_run(rng, T0 + i * 1800) for i in range(300)]
    old_database(path, 3, runs).close()
    store = open_store(str(path))
    try:
        assert day_rows(store) == len({int(r.started_at // DAY) for r in runs})
        check(store, rng, T0 + 300 * 1800)
    finally:
        store.close()


def durs_state(store) -> tuple[int, int]:
    """(days whose sorted durations are stored, days where they are not known)."""
    state = store.rollup.state()
    return state["durs_known"], state["durs_unknown"]


def test_percentiles_of_a_long_history_come_from_the_sealed_days(store):
    """Enough runs that p50/p95 are selected across sealed days' sorted durations (not
    just sorted in one piece), with ties; a sealed run that changes or goes leaves its
    day's durations unknown, the answer stays exact, and the next seal writes them."""
    rng = random.Random(11)
    store.save_job(Job("j", keep_days=30), now=T0)
    store.rollup.set_sealed(T0)
    runs = [
        run_at(T0 + d * DAY + i * 60 + rng.random(), duration=float(rng.randint(1, 40)),
               stdout=None)
        for d in range(12) for i in range(700)
    ]  # fmt: skip
    now = T0 + 12 * DAY + 3600
    store.record_runs(runs, now=now)
    assert sealed(store) == T0 + 12 * DAY
    assert durs_state(store) == (12, 0)
    if store.url.startswith("sqlite://"):  # migration 5 dropped the index this replaces
        assert store.db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name='runs_job_duration'"
        ).fetchone() == (0,)
    check(store, rng, now)
    # retention deletes some runs of day 0 (sealed): that day's durations become unknown
    store.save_job(Job("j", keep_days=12), now=now)
    store.record_runs([run_at(now + 10, duration=3.0, stdout=None)], now=now + 20)
    assert durs_state(store) == (11, 1)
    check(store, rng, now + 20)
    # a run of day 3 (sealed) changed late (now the longest of its day): the store
    # recomputes day 3 at once, its durations included (no trigger: migration 6)
    late = store.get_run(runs[3 * 700 + 5].id, output=False)
    late.duration = 99.5
    store.update_run(late, now=now + 20)
    assert durs_state(store) == (11, 1)
    check(store, rng, now + 20)
    # the next day's seal writes them again (retention set back, so that it deletes
    # nothing of the oldest day right after the seal)
    store.save_job(Job("j", keep_days=30), now=now)
    store.record_runs([run_at(now + DAY, duration=3.0, stdout=None)], now=now + DAY + 5)
    assert durs_state(store) == (13, 0)
    check(store, rng, now + DAY + 5)


def test_days_emptied_by_retention_leave_the_rollup_at_the_next_seal(store):
    store.save_job(Job("j", keep_days=1), now=T0)
    store.rollup.set_sealed(T0)
    store.record_runs([run_at(T0 + 100), run_at(T0 + 200), run_at(T0 + DAY + 100)],
                      now=T0 + DAY + 150)  # fmt: skip
    store.record_runs([run_at(T0 + 2 * DAY + 250)], now=T0 + 2 * DAY + 300)
    assert store.rollup.state()["emptied"] == 2  # days 0 and 1: all their runs went
    store.record_runs([run_at(T0 + 3 * DAY + 5)], now=T0 + 3 * DAY + 10)
    assert store.rollup.state()["emptied"] == 0
    assert store.job_stats("j")["runs"] == 2
    check(store, random.Random(2), T0 + 3 * DAY + 10)


@pytest.mark.sqlite_only
def test_a_schema_4_database_gets_its_days_durations_and_loses_the_index(tmp_path):
    from cronwatch.store import open_store

    path = tmp_path / "v4.db"
    rng = random.Random(4)
    runs = [random_run(rng, T0 + i * 600) for i in range(3000)]
    db = old_database(path, 4, runs)
    seal_as_old_stores_did(db, T0 + 15 * DAY)
    db.close()
    store = open_store(str(path))
    try:
        assert durs_state(store) == (15, 0)
        names = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
        assert "runs_job_duration" not in names and "run_days_stale" in names
        check(store, rng, T0 + 3000 * 600)
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_writers_beside_a_bulk_import_keep_the_rollup_right(cw, db_path, tmp_path):
    """Another connection writing into sealed days while an import recomputes them: both
    recompute the days they touched inside their own write transactions, so every run is
    counted once."""
    from cronwatch.app.importer import BATCH
    from cronwatch.store import open_store

    now = time.time()  # the import's retention keeps a year back from the clock
    lines = []
    for i in range(BATCH * 2 + 10):
        r = run_at(now - 200 * DAY + i * 600, Status.SUCCESS if i % 4 else Status.FAILED)
        lines.append(json.dumps(r.to_dict(exact=True)))
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    other = open_store(str(db_path))
    other.save_job(Job("j"), now=now)
    stop = threading.Event()
    written = []

    def write() -> None:
        rng = random.Random(2)
        while not stop.is_set():
            r = random_run(rng, now - rng.uniform(1, 150) * DAY)
            other.record_run(r, now=time.time())
            written.append(r)

    t = threading.Thread(target=write)
    t.start()
    try:
        rc, out, err = cw("import", path)
    finally:
        stop.set()
        t.join()
        other.close()
    assert rc == 0, err
    assert len(written) > 10
    with open_store(str(db_path), create=False) as s:
        check(s, random.Random(4), now)


def test_run_counts_by_job_and_status(store):
    """What /metrics reports: sealed days and today's runs together."""
    rng = random.Random(9)
    store.rollup.set_sealed(T0)
    runs = [random_run(rng, T0 - rng.uniform(0, 5 * DAY)) for _ in range(200)]
    runs += [random_run(rng, T0 + rng.uniform(0, DAY)) for _ in range(100)]
    runs += [run_at(T0 + 50, job="other", status=Status.TIMEOUT)]
    store.record_runs(runs, now=T0 + DAY / 2)
    want: dict[str, dict[str, int]] = {}
    for r in runs:
        per_job = want.setdefault(r.job, {})
        per_job[r.status.value] = per_job.get(r.status.value, 0) + 1
    assert store.job_stats("j")["runs"] == 300
    assert store.run_counts() == want


@pytest.mark.sqlite_only
def test_a_schema_5_database_loses_its_triggers_and_keeps_exact_stats(tmp_path):
    """Migration 6 drops the rollup triggers; the days they kept stay, and the store's own
    path (retention unfolding sealed runs, updates refolding their days) keeps stats
    equal to a computation over every stored run."""
    from cronwatch.store import open_store

    path = tmp_path / "v5.db"
    rng = random.Random(6)
    runs = [random_run(rng, T0 + i * 600) for i in range(3000)]  # ~21 days
    db = old_database(path, 5, runs)
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")} == {
        "run_days_delete",
        "run_days_update",
    }
    seal_as_old_stores_did(db, T0 + 15 * DAY)
    db.close()
    store = open_store(str(path))
    try:
        assert store.db.execute("SELECT count(*) FROM sqlite_master WHERE type='trigger'"
                                ).fetchone() == (0,)  # fmt: skip
        assert store.get_meta("schema_version") == str(len(migrations.SQLITE))  # the newest
        now = T0 + 3000 * 600
        check(store, rng, now)
        # retention deletes the sealed runs of the first days, the longest of day 0 among
        # them; an update moves a sealed run into another sealed day
        longest = max((r for r in runs if r.started_at < T0 + DAY and r.duration),
                      key=lambda r: r.duration or 0)  # fmt: skip
        store.save_job(Job("j", keep_days=(now - longest.started_at - 1) / DAY), now=now)
        store.record_runs([run_at(now + 5, duration=2.0, stdout=None)], now=now + 10)
        assert longest.id not in {r.id for r in stored_runs(store)}
        check(store, rng, now + 10)
        moved = store.get_run(runs[7 * 144].id, output=False)
        moved.started_at += 3 * DAY + 60
        moved.duration = 1234.5
        store.update_run(moved, now=now + 20)
        check(store, rng, now + 20)
    finally:
        store.close()
