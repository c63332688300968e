# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Bad input gets a clear error and loses nothing: bounded numbers at the edge, a writer
that outlives any one operation, pings of a job whose stored settings are bad, and the
writer's quick path writing exactly what the full path writes."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cronwatch.core import events as ev
from cronwatch.core.model import Status
from cronwatch.server.apply import Applier
from cronwatch.server.ingest import Committer
from cronwatch.server.ping import Ping, parse_ping
from cronwatch.store import open_store
from test_server_harness import LiveServer, client, live  # noqa: F401

T0 = float(int(time.time()))  # the quick path's flush sweeps by the clock (retention)


def runs(live: LiveServer, name: str) -> list:
    with live.store() as s:
        return s.list_runs(job=name, output=True, oldest_first=True)


# --- numbers at the edge -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/p/{project}/huge?state=complete&status_code=9223372036854775808", "status_code"),
        ("/ping/{project}/huge?state=fail&status_code=-99999999999999999999", "status_code"),
        ("/p/{project}/huge?status_code=1e3", "status_code"),
        ("/ping/{key}?exit_code=%C2%B2", "exit status"),
        ("/ping/{key}?metric=duration:NaN", "duration"),
        ("/ping/{key}?metric=duration:1e400", "duration"),
        ("/p/{project}/huge?metric=count:-Infinity", "count"),
        ("/jobs/p/{key}?state=complete&exit_code=99999999999999999999", "exit status"),
    ],
)
def test_a_number_out_of_bounds_is_a_400_naming_it_and_the_writer_lives(
    live: LiveServer, client: httpx.Client, url: str, field: str
) -> None:
    key = live.job_key("edge")
    r = client.get(url.format(project=live.project_key(), key=key))
    assert r.status_code == 400 and field in r.text, (r.status_code, r.text)
    before = len(runs(live, "edge"))
    assert client.get(f"/ping/{key}").text == "OK"  # the writer is alive, and records
    assert len(runs(live, "edge")) == before + 1


def test_numbers_in_bounds_are_stored(live: LiveServer, client: httpx.Client) -> None:
    project = live.project_key()
    assert client.get(f"/p/{project}/bounds?state=fail&status_code=-1000").text == "OK"
    assert client.get(f"/p/{project}/bounds?state=complete&status_code=1000").text == "OK"
    assert [r.exit_code for r in runs(live, "bounds")] == [-1000, 1000]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"status": "ok", "exit_code": 9223372036854775808}', "exit_code"),
        ('{"status": "ok", "duration_ms": NaN}', "duration_ms"),
        ('{"status": "ok", "duration_ms": 1e400}', "duration_ms"),
        ('{"status": "ok", "duration_ms": -Infinity}', "duration_ms"),
        # past Python's int-from-text limit: not a JSON document it can read
        ('{"status": "error", "exit_code": ' + "9" * 5000 + "}", "invalid JSON body"),
    ],
)
def test_api_numbers_out_of_bounds_are_a_4xx_naming_them(
    live: LiveServer, client: httpx.Client, body: str, field: str
) -> None:
    rw = live.token(f"edge-{len(body)}-{field}")
    headers = {**rw, "content-type": "application/json"}
    r = client.post("/api/v1/jobs/edge-api/runs", content=body, headers=headers)
    assert r.status_code == 422 and field in r.text, (r.status_code, r.text)


# --- the writer outlives any one operation --------------------------------------------------


def _ping(key: str, **fields: Any) -> Ping:
    return Ping("healthchecks", key=key, **fields)


def test_an_op_that_fails_on_write_fails_alone(tmp_path: Path) -> None:
    """A value the store cannot take (here an exit code past 64 bits, which the parser
    refuses, made directly) fails its own ping; the batch's others commit."""
    store = open_store(str(tmp_path / "w.db"))
    try:
        key = store.ensure_ping_key("w", now=T0)
        applier = Applier(store.project_ping_key())
        committer = Committer(store, cache=applier)
        items: list[tuple[Ping, bytes | None]] = [
            (_ping(key), None),  # the quick path: a buffered row
            (_ping(key, exit_code=2**64), None),  # the quick path too: fails when written
            (_ping(key, action="fail", exit_code=2**70), None),  # the full path
            (_ping(key, exit_code=3), None),
        ]
        results = committer.commit_each(applier.apply_item, items)
        assert [ok for ok, _v in results] == [True, False, False, True]
        for ok, v in results:  # the store's own error, as is or as the cause
            assert ok or isinstance(v, OverflowError) or isinstance(v.__cause__, OverflowError)
        assert [r.exit_code for r in store.list_runs(job="w", oldest_first=True)] == [None, 3]
        # and the next batch is fine
        assert committer.commit_each(applier.apply_item, [(_ping(key), None)])[0][0]
        assert len(store.list_runs(job="w")) == 3
    finally:
        store.close()


def test_the_writer_process_survives_a_failing_batch(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Whatever escapes a batch (here: a bug, simulated) answers that batch with 500s; the
    writer goes on with the next."""
    from cronwatch.server import pingproc

    store = open_store(str(tmp_path / "p.db"))
    key = store.ensure_ping_key("p", now=T0)
    store.close()
    calls = []
    real = pingproc._record

    def flaky(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(*args)

    monkeypatch.setattr(pingproc, "_record", flaky)
    import socket
    import threading

    server, child = socket.socketpair()
    t = threading.Thread(target=pingproc._serve, args=(child, str(tmp_path / "p.db")))
    t.start()
    try:
        answers = []
        for seq in (1, 2):
            server.sendall(pingproc._frame((True, [(seq, f"/ping/{key}", b"", None)])))
            buf = bytearray()
            while not (frames := pingproc._frames(buf)):
                buf += server.recv(65536)
            answers += frames[0]
        assert [(a[0], a[1]) for a in answers] == [(1, 500), (2, 200)]
    finally:
        server.close()
        t.join(10)
        child.close()
    with open_store(str(tmp_path / "p.db")) as s:
        assert len(s.list_runs(job="p")) == 1


# --- bad stored settings -------------------------------------------------------------------


def test_pings_of_a_job_with_bad_stored_settings_are_stored(
    live: LiveServer, client: httpx.Client
) -> None:
    key = live.job_key("bad-settings")
    db = sqlite3.connect(live.db)  # as an older version may have stored them
    settings = {"asserts": ["no such rule", 7], "alert_after": "two"}
    db.execute("UPDATE jobs SET settings=? WHERE name='bad-settings'", (json.dumps(settings),))
    db.commit()
    db.close()
    project = live.project_key()
    for url in (f"/ping/{key}", f"/ping/{key}/start", f"/ping/{key}/fail",
                f"/ping/{project}/bad-settings/2", f"/jobs/p/{key}?state=complete"):  # fmt: skip
        r = client.get(url)
        assert (r.status_code, r.text) == (200, "OK"), url
    rw = live.token("bad-settings")
    r = client.post("/api/v1/jobs/bad-settings/runs", json={"status": "ok"}, headers=rw)
    assert r.status_code == 201, r.text
    got = runs(live, "bad-settings")
    assert [(r.status, r.exit_code) for r in got] == [
        (Status.SUCCESS, None), (Status.FAILED, None), (Status.FAILED, 2),
        (Status.SUCCESS, None), (Status.SUCCESS, None),
    ]  # fmt: skip


# --- the quick path writes what the full path writes ----------------------------------------

_RUN_COLUMNS = (
    "env, status, started_at, ended_at, duration, exit_code, signal, client_rid, rid, host, "
    "user, command, message, source"
)


def _record(tmp_path: Path, name: str, quick: bool) -> tuple[list[Any], list[Any]]:
    store = open_store(str(tmp_path / f"{name}.db"))
    try:
        key = store.ensure_ping_key("q", now=T0)
        project = store.project_ping_key()
        applier = Applier(project)
        if not quick:
            applier._quick = lambda *a: None  # type: ignore[method-assign]
        committer = Committer(store, cache=applier)
        urls = [
            f"/ping/{key}", f"/ping/{key}", f"/ping/{key}/0",
            f"/ping/{key}?metric=duration:2.5&env=prod", f"/jobs/p/{key}?state=complete",
            f"/p/{project}/q?state=complete&status_code=0&host=h1&message=fine",
            f"/ping/{project}/q?state=ok&metric=count:4", f"/ping/{key}?msg=hello",
        ]  # fmt: skip
        for i, url in enumerate(urls):
            path, _, query = url.partition("?")
            p = parse_ping(path, query)
            assert p is not None
            now = T0 + 10 * i
            results = committer.commit_each(
                lambda s, item, now=now: applier.apply(s, item, None, now=now), [p]
            )
            assert results[0][0], results
        # all but the first of the job and of env prod (no alert state yet: evaluated)
        assert applier.quick == (len(urls) - 2 if quick else 0)
        db = store.db  # type: ignore[attr-defined]
        rows = db.execute(f"SELECT uid, {_RUN_COLUMNS} FROM runs ORDER BY id").fetchall()
        ids = {r[0]: i for i, r in enumerate(rows)}
        stored = [d for (d,) in db.execute("SELECT data FROM events ORDER BY id")]
        # the quick path's rows are compact arrays, the full path's objects
        assert [d[:1] for d in stored] == (
            ["{", "[", "[", "{", "[", "[", "[", "["] if quick else ["{"] * 8
        )
        events = []
        for _id, _at, type_, data in store.events_since(0):  # expanded by the store
            e = json.loads(data)
            e["run"] = ids[e["run"]]  # run ids differ (random): compare which run
            events.append((type_, e))
        return [r[1:] for r in rows], events
    finally:
        store.close()


def test_the_quick_path_writes_the_same_rows_and_events_as_the_full_path(
    tmp_path: Path,
) -> None:
    quick_rows, quick_events = _record(tmp_path, "quick", True)
    full_rows, full_events = _record(tmp_path, "full", False)
    assert quick_rows == full_rows
    assert quick_events == full_events
    assert len(quick_rows) == 8 and {t for t, _e in quick_events} == {"run.ok"}
    with open_store(str(tmp_path / "full.db")) as s:  # and the shape is the one builder's
        run = s.list_runs(job="q", oldest_first=True)[3]
    assert quick_events[3][1] == {**ev.run_finished(run), "run": 3}


def test_every_ingest_path_logs_run_events_of_one_shape(
    live: LiveServer, client: httpx.Client
) -> None:
    rw = live.token("shapes")
    key = live.job_key("shape-ping")
    with live.store() as s:
        last = s.last_event_id()
    assert client.get(f"/ping/{key}/start").text == "OK"
    assert client.get(f"/ping/{key}/fail").text == "OK"
    assert client.get(f"/ping/{key}").text == "OK"  # no open run: synthetic
    r = client.post("/api/v1/jobs/shape-api/runs", json={"status": "in_progress"}, headers=rw)
    client.patch(f"/api/v1/runs/{r.json()['id']}", json={"status": "error"}, headers=rw)
    client.post("/api/v1/jobs/shape-api/runs", json={"status": "ok"}, headers=rw)
    with live.store() as s:
        logged = [json.loads(d) for _i, _at, _t, d in s.events_since(last)]
        by_id = {r.id: r for job in ("shape-ping", "shape-api") for r in s.list_runs(job=job)}
    runs_events = [e for e in logged if e["type"].startswith("run.")]
    assert [(e["job"], e["type"]) for e in runs_events] == [
        ("shape-ping", "run.started"), ("shape-ping", "run.error"), ("shape-ping", "run.ok"),
        ("shape-api", "run.started"), ("shape-api", "run.error"), ("shape-api", "run.ok"),
    ]  # fmt: skip
    for e in runs_events:
        if e["type"] != "run.started":  # a started run's event is of the open run
            assert e == ev.run_finished(by_id[e["run"]])


@pytest.mark.all_backends
def test_a_quick_ping_whose_run_id_is_taken_is_stored_or_fails_never_acknowledged_unstored(
    store_factory: Any,
) -> None:
    """A run id the writer draws that is already taken fails its batch, which is replayed a
    ping at a time: every ping acknowledged is a run stored, and the run that held the id
    is untouched (an insert that ignored the conflict acknowledged the ping and dropped it)."""
    store = store_factory()
    store.writer_maintenance()  # as the ping writer's store (PostgreSQL: the one statement)
    key = store.ensure_ping_key("q", now=T0)
    applier = Applier(store.project_ping_key())
    committer = Committer(store, cache=applier)
    p = parse_ping(f"/ping/{key}", "")
    assert p is not None

    def record(n: int, now: float) -> list[tuple[bool, Any]]:
        return committer.commit_each(lambda s, item: applier.apply(s, item, None, now=now), [p] * n)

    assert all(ok for ok, _v in record(1, T0))  # the first is evaluated: the alert state
    taken = store.list_runs(job="q")[0]
    drawn = applier.run_id
    calls = {"n": 0}

    def run_id(now: float) -> str:
        calls["n"] += 1
        return taken.id if calls["n"] == 2 else drawn(now)

    applier.run_id = run_id  # type: ignore[assignment]
    results = record(3, T0 + 10)
    acknowledged = sum(ok for ok, _v in results)
    stored = store.list_runs(job="q", oldest_first=True)
    assert acknowledged == len(stored) - 1 and acknowledged >= 2, (results, stored)
    assert calls["n"] > 3  # the taken id was drawn, and the batch was replayed
    assert stored[0] == taken and len({r.id for r in stored}) == len(stored)
    assert applier.quick >= 3  # the quick path's rows, not the full path's
