# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Client run ids are scoped to their job and environment and may be reused: every
acknowledged start and finish is stored (core/runs.py, store.start_run/finish_run)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import httpx
import pytest

from cronwatch.core.model import Status, new_run_id
from cronwatch.core.runs import REPEAT_WINDOW, unique_rid
from cronwatch.store import open_store
from test_server_harness import LiveServer, client, live  # noqa: F401

T0 = 1_700_000_000.0
_names = itertools.count()


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = open_store(str(tmp_path / "runs.db"))
    yield s
    s.close()


def fresh(live: LiveServer) -> tuple[str, str]:
    name = f"rid-{next(_names)}"
    return name, live.job_key(name)


def runs(live: LiveServer, name: str) -> list:
    with live.store() as s:
        return s.list_runs(job=name, output=True, oldest_first=True)


# --- the store -------------------------------------------------------------------------------


def test_unique_rids_are_ulids() -> None:
    assert unique_rid(new_run_id(T0)) and unique_rid(new_run_id(T0).upper())
    for rid in ("nightly", "2026-12-01", "a" * 26, "8" + "0" * 25, new_run_id(T0)[:-1]):
        assert not unique_rid(rid), rid


def test_two_jobs_may_use_the_same_rid(store) -> None:
    a, _ = store.start_run("a", now=T0, run_id="nightly")
    b, _ = store.start_run("b", now=T0 + 1, run_id="nightly")
    assert (a.job, b.job) == ("a", "b") and a.id != b.id
    done = store.finish_run("b", Status.FAILED, now=T0 + 5, run_id="nightly", exit_code=2)
    assert (done.id, done.job, done.status, done.duration) == (b.id, "b", Status.FAILED, 4.0)
    assert store.get_run(a.id).status is Status.RUNNING
    assert [r.status for r in store.list_runs(job="b")] == [Status.FAILED]


def test_two_envs_may_use_the_same_rid(store) -> None:
    prod, _ = store.start_run("j", now=T0, run_id="r", env="prod")
    staging, _ = store.start_run("j", now=T0 + 1, run_id="r", env="staging")
    assert prod.id != staging.id
    done = store.finish_run("j", Status.SUCCESS, now=T0 + 3, run_id="r", env="staging")
    assert (done.id, done.env) == (staging.id, "staging")
    assert store.get_run(prod.id).status is Status.RUNNING


def test_a_reused_rid_opens_a_new_run_once_its_run_finished(store) -> None:
    first, _ = store.start_run("j", now=T0, run_id="nightly")
    store.finish_run("j", Status.SUCCESS, now=T0 + 10, run_id="nightly")
    second, timed_out = store.start_run("j", now=T0 + 86400, run_id="nightly")
    assert timed_out == [] and second.id != first.id
    assert store.get_run(second.id).status is Status.RUNNING
    again, _ = store.start_run("j", now=T0 + 86401, run_id="nightly")  # a repeated start
    assert again.id == second.id
    done = store.finish_run("j", Status.FAILED, now=T0 + 86420, run_id="nightly", exit_code=1)
    assert (done.id, done.status, done.duration) == (second.id, Status.FAILED, 20.0)
    assert [(r.id, r.status) for r in store.list_runs(job="j", oldest_first=True)] == [
        (first.id, Status.SUCCESS),
        (second.id, Status.FAILED),
    ]


def test_a_finish_of_a_finished_rid_records_a_run_unless_it_repeats_the_same(store) -> None:
    store.finish_run("j", Status.SUCCESS, now=T0, run_id="r", exit_code=0)
    same = store.finish_run("j", Status.SUCCESS, now=T0 + 5, run_id="r", exit_code=0)
    assert len(store.list_runs(job="j")) == 1  # a retried delivery
    other = store.finish_run("j", Status.FAILED, now=T0 + 9, run_id="r", exit_code=1)
    assert other.id != same.id and other.status is Status.FAILED
    later = store.finish_run("j", Status.FAILED, now=T0 + 9 + REPEAT_WINDOW, run_id="r")
    assert later.id not in (same.id, other.id)  # the same outcome a day later: a new run
    assert [r.status for r in store.list_runs(job="j", oldest_first=True)] == [
        Status.SUCCESS, Status.FAILED, Status.FAILED,
    ]  # fmt: skip


def test_a_ulid_names_one_run_forever(store) -> None:
    rid = new_run_id(T0)
    store.start_run("j", now=T0, run_id=rid)
    store.finish_run("j", Status.FAILED, now=T0 + 5, run_id=rid, exit_code=3)
    replayed, _ = store.start_run("j", now=T0 + 7200, run_id=rid)  # an outbox replay
    again = store.finish_run("j", Status.FAILED, now=T0 + 7200, run_id=rid, exit_code=3)
    assert replayed.id == again.id == rid
    assert [(r.id, r.status) for r in store.list_runs(job="j")] == [(rid, Status.FAILED)]


def test_output_goes_to_the_run_the_rid_names_in_its_job(store) -> None:
    store.start_run("a", now=T0, run_id="r")
    b, _ = store.start_run("b", now=T0, run_id="r")
    assert store.append_output("b", b"hello", now=T0 + 1, run_id="r") == b.id
    assert store.get_run(b.id).stdout == b"hello"


def test_an_old_database_keeps_its_client_run_ids(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    s = open_store(str(path))
    s.close()
    db = sqlite3.connect(path)  # as migration 5 left it: the client rid was the run's uid
    db.execute("DROP INDEX runs_rid")
    db.execute("ALTER TABLE runs DROP COLUMN rid")
    db.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    db.execute("INSERT INTO jobs(id, name, created_at) VALUES (1, 'j', ?)", (T0,))
    db.execute(
        "INSERT INTO runs(uid, job_id, status, started_at, client_rid) "
        "VALUES ('nightly', 1, 'running', ?, 1)",
        (T0,),
    )
    db.commit()
    db.close()
    s = open_store(str(path))
    try:
        done = s.finish_run("j", Status.SUCCESS, now=T0 + 4, run_id="nightly")
        assert (done.id, done.duration) == ("nightly", 4.0)
        assert len(s.list_runs(job="j")) == 1
    finally:
        s.close()


# --- over HTTP: pings and the API --------------------------------------------------------------


def test_pings_of_two_jobs_with_one_rid_are_all_stored(
    live: LiveServer, client: httpx.Client
) -> None:
    a, ka = fresh(live)
    b, kb = fresh(live)
    assert client.get(f"/ping/{ka}/start?rid=nightly").text == "OK"
    assert client.get(f"/ping/{kb}/start?rid=nightly").text == "OK"
    assert client.get(f"/ping/{kb}/fail?rid=nightly").text == "OK"
    assert [r.status for r in runs(live, a)] == [Status.RUNNING]
    assert [r.status for r in runs(live, b)] == [Status.FAILED]


def test_a_job_reusing_a_finished_rid_by_ping(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    for code in (0, 3, 0):
        assert client.get(f"/ping/{key}/start?rid=nightly").text == "OK"
        assert client.get(f"/ping/{key}/{code}?rid=nightly").text == "OK"
    got = runs(live, name)
    assert [(r.status, r.exit_code) for r in got] == [
        (Status.SUCCESS, 0), (Status.FAILED, 3), (Status.SUCCESS, 0),
    ]  # fmt: skip
    assert len({r.id for r in got}) == 3


def test_api_checkins_with_a_reused_rid(live: LiveServer, client: httpx.Client) -> None:
    rw = live.token("rid-api")
    name, _ = fresh(live)
    client.post(f"/api/v1/jobs/{name}-a/runs", json={"status": "in_progress", "run_id": "n"},
                headers=rw)  # fmt: skip
    ids = []
    for outcome in ("ok", "error"):
        r = client.post(f"/api/v1/jobs/{name}/runs",
                        json={"status": "in_progress", "run_id": "n"}, headers=rw)  # fmt: skip
        assert r.status_code == 201 and r.json()["status"] == "running", r.text
        ids.append(r.json()["id"])
        r = client.patch(f"/api/v1/runs/{ids[-1]}", json={"status": outcome}, headers=rw)
        assert r.status_code == 200 and r.json()["id"] == ids[-1], r.text
    assert len(set(ids)) == 2
    assert [r.status for r in runs(live, name)] == [Status.SUCCESS, Status.FAILED]
    for rid in ids:
        assert client.get(f"/api/v1/runs/{rid}", headers=rw).json()["job"] == name
    r = client.post(f"/api/v1/jobs/{name}/runs", json={"status": "error", "run_id": "n"},
                    headers=rw)  # fmt: skip
    assert r.status_code == 201 and r.json()["id"] == ids[1]  # the same finish: a repeat
    assert [r.status for r in runs(live, f"{name}-a")] == [Status.RUNNING]


def test_a_repeated_start_or_finish_counts_once(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    with live.store() as s:
        last = s.last_event_id()
    for rid in (new_run_id(), "plain"):  # alert_after is 2: two failures would open one
        for _ in range(2):  # the start, then delivered again
            assert client.get(f"/ping/{key}/start?rid={rid}").text == "OK"
        for _ in range(3):  # the finish, then delivered twice again
            assert client.get(f"/ping/{key}/fail?rid={rid}").text == "OK"
        with live.store() as s:
            assert s.current_incident(name) is None
        assert client.get(f"/ping/{key}/0?rid={rid}x").text == "OK"  # a success between
    with live.store() as s:
        types = [t for _i, _at, t, d in s.events_since(last) if f'"{name}"' in d]
    # (job.healthy: the success right after a failure, the health back; see core/events.py)
    assert types == ["run.started", "run.error", "run.ok", "job.healthy"] * 2
    assert [r.status for r in runs(live, name)] == [Status.FAILED, Status.SUCCESS] * 2
