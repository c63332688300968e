"""The store as an interface: what any backend must do beyond runs and stats (those are in
test_store.py and test_rollup.py), and that nothing outside store/ speaks SQL.

Run against another backend with ``--store NAME`` or CRONWATCH_TEST_STORE=NAME."""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Any

import pytest

from cronwatch.core.errors import NotFound, StoreBusy, StoreError
from cronwatch.core.model import Job, Run, Status, new_run_id
from test_store import run_at

T0 = 1_700_000_000.0
SRC = Path(__file__).resolve().parent.parent / "src" / "cronwatch"
pytestmark = pytest.mark.all_backends


def test_a_reopened_store_sees_what_was_committed(store_factory):
    first = store_factory()
    first.save_job(Job("j", keep_days=30), now=T0)
    first.record_runs([run_at(T0 + i, duration=float(i)) for i in range(5)], now=T0 + 10)
    again = store_factory()
    assert again.get_job("j").keep_days == 30
    assert again.job_stats("j")["runs"] == 5
    assert [r.duration for r in again.list_runs(job="j", oldest_first=True)] == [0, 1, 2, 3, 4]


def test_a_rolled_back_transaction_leaves_nothing(store_factory):
    s = store_factory()
    with pytest.raises(RuntimeError), s.transaction():
        s.save_job(Job("gone"), now=T0)
        s.record_run(run_at(T0, job="gone"), now=T0)
        raise RuntimeError("the caller failed")
    assert s.find_job("gone") is None
    assert store_factory().find_job("gone") is None


def test_jobs_last_finished_skips_open_runs(store):
    store.ensure_job("idle", now=T0)
    store.record_runs(
        [run_at(T0, job="busy", duration=2.5), run_at(T0 + 60, Status.FAILED, job="busy")],
        now=T0 + 100,
    )
    store.start_run("busy", now=T0 + 200)  # open: not the last finished
    assert store.jobs_last_finished() == [
        ("busy", ("failed", T0 + 60, 1.0)),
        ("idle", None),
    ]


def test_savepoints_undo_one_op_inside_a_batch(store):
    """The server's group commit (server/ingest.py): a failed op is rolled back to its
    savepoint, the rest of the transaction commits."""
    with store.transaction():
        before = store.changes()
        store.ensure_job("kept", now=T0)
        assert store.changes() > before and store.in_transaction()
        store.savepoint()
        store.ensure_job("undone", now=T0)
        store.rollback_to_savepoint()
        store.forget_job_ids()
        store.savepoint()
        store.ensure_job("also-kept", now=T0)
        store.release_savepoint()
    assert not store.in_transaction()
    assert [j.name for j in store.list_jobs()] == ["also-kept", "kept"]


def test_another_connections_commit_changes_the_data_version(store_factory):
    a, b = store_factory(), store_factory()
    version = a.data_version()
    a.ensure_job("mine", now=T0)  # its own commit
    assert a.data_version() == version
    b.ensure_job("theirs", now=T0)
    assert a.data_version() != version


def test_the_data_version_read_inside_the_writers_transactions(store_factory):
    """The group commit's pattern (server/ingest.py): the version is read first in each
    batch's transaction; the batches' own writes do not change it, another's commit does."""
    a, b = store_factory(), store_factory()
    versions = []
    for i in range(3):
        with a.transaction():
            versions.append(a.data_version())
            a.ensure_job(f"mine-{i}", now=T0)
    assert versions[0] == versions[1] == versions[2]
    b.ensure_job("theirs", now=T0)
    with a.transaction():
        assert a.data_version() != versions[0]


def test_unknown_names_raise_not_found(store):
    for call in (
        lambda: store.get_job("nope"),
        lambda: store.get_run("nope"),
        lambda: store.delete_job("nope"),
        lambda: store.delete_token("nope"),
        lambda: store.get_incident(12345),
        lambda: store.job_stats("nope"),
    ):
        with pytest.raises(NotFound):
            call()


@pytest.mark.sqlite_only
def test_a_locked_database_is_store_busy_and_loses_nothing(store_factory):
    """Another process holding the write lock past the busy timeout: StoreBusy (a
    StoreError, HTTP 503: try again), and the same write succeeds once it is free."""
    holder = store_factory()
    waiter = store_factory(timeout=0.1)
    holder.ensure_job("j", now=T0)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with holder.transaction():
            holder.ensure_job("held", now=T0)
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(StoreBusy) as e:
            waiter.record_run(run_at(T0, job="j"), now=T0)
        assert isinstance(e.value, StoreError) and e.value.http_status == 503
        assert "locked" in str(e.value)
    finally:
        release.set()
        t.join()
    assert waiter.record_run(run_at(T0, job="j"), now=T0)
    assert waiter.job_stats("j")["runs"] == 1


# --- a wrapped run: open from its start, closed in place, evaluated once -------------------

OWNER = "host boot 123 456 -"


def open_run(job: str = "w", at: float = T0) -> Run:
    return Run(job=job, started_at=at, status=Status.RUNNING, id=new_run_id(at), source="wrapper")


def finished(run: Run, status: Status = Status.SUCCESS, **kw: Any) -> Run:
    return Run(job=run.job, started_at=run.started_at, status=status, id=run.id,
               ended_at=run.started_at + 5, duration=5.0, exit_code=0, stdout=b"done",
               source="wrapper", **kw)  # fmt: skip


def test_a_wrapped_run_is_opened_then_closed_in_place(store):
    run = open_run()
    assert store.record_run(run, now=T0, owner=OWNER)
    assert [(r.id, r.status, o) for r, o in store.owned_open_runs()] == [
        (run.id, Status.RUNNING, OWNER)
    ]
    assert store.pending_runs() == []  # open: nothing to evaluate yet

    assert store.record_run(finished(run), now=T0 + 5, pending=True)
    (only,) = store.list_runs(job="w", output=True)
    assert (only.id, only.status, only.duration, only.stdout) == (run.id, Status.SUCCESS, 5.0,
                                                                 b"done")  # fmt: skip
    assert store.owned_open_runs() == []
    assert store.job_stats("w")["runs"] == 1
    # the same end again (a replayed spool file) changes nothing
    assert not store.record_run(finished(run, Status.FAILED), now=T0 + 9, pending=True)
    assert store.get_run(run.id).status is Status.SUCCESS


def test_pings_without_a_run_id_leave_a_wrapped_run_alone(store):
    """`cronwatch ping JOB start|complete` beside a wrapped run of the same job: the ping
    neither times the wrapped run out nor closes it (the wrapper closes its own)."""
    run = open_run()
    store.record_run(run, now=T0, owner=OWNER)
    _started, timed_out = store.start_run("w", now=T0 + 1)
    assert timed_out == []
    store.finish_run("w", Status.FAILED, now=T0 + 2)
    assert store.get_run(run.id).status is Status.RUNNING
    assert [r.id for r, _ in store.owned_open_runs()] == [run.id]


def test_a_pending_run_is_claimed_exactly_once(store_factory):
    first, second = store_factory(), store_factory()
    run = open_run()
    first.record_run(finished(run), now=T0, pending=True)
    (pending,) = second.pending_runs()
    assert (pending.id, pending.stdout) == (run.id, b"done")  # with its output (assertions)
    # a claimant that fails rolls its claim back: the run is still pending
    with pytest.raises(RuntimeError), second.transaction():
        assert second.claim_pending(run.id)
        raise RuntimeError("evaluation failed")
    assert [r.id for r in first.pending_runs()] == [run.id]
    assert first.claim_pending(run.id)
    assert not second.claim_pending(run.id)
    assert first.pending_runs() == second.pending_runs() == []


def test_the_real_end_wins_over_a_run_closed_as_abandoned(store):
    """`check` closed the open run (its wrapper seemed gone); the wrapper's end, spooled
    meanwhile, still closes it with the real outcome."""
    run = open_run()
    store.record_run(run, now=T0, owner=OWNER)
    run.status, run.ended_at, run.message = Status.FAILED, T0 + 60, "the wrapper was killed"
    store.update_run(run, now=T0 + 60)
    assert store.owned_open_runs() == []
    assert store.record_run(finished(run), now=T0 + 90, pending=True)
    got = store.get_run(run.id)
    assert (got.status, got.message) == (Status.SUCCESS, "")
    assert [r.id for r in store.pending_runs()] == [run.id]
    # a run recorded without an owner is never overwritten
    plain = finished(open_run(at=T0 + 100))
    assert store.record_run(plain, now=T0 + 100)
    assert not store.record_run(finished(plain, Status.FAILED), now=T0 + 101)


@pytest.mark.sqlite_only
def test_a_database_from_before_the_open_record_is_migrated(tmp_path):
    import sqlite3

    from cronwatch.store import open_store

    path = tmp_path / "v7.db"
    open_store(str(path)).close()
    db = sqlite3.connect(path)  # as migration 7 left it
    db.execute("DROP INDEX runs_pending")
    db.execute("ALTER TABLE runs DROP COLUMN pending")
    db.execute("ALTER TABLE runs DROP COLUMN owner")
    db.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    db.execute("INSERT INTO jobs(id, name, created_at) VALUES (1, 'old', ?)", (T0,))
    db.execute("INSERT INTO runs(uid, job_id, status, started_at) VALUES ('r1', 1, 'running', ?)",
               (T0,))  # fmt: skip
    db.commit()
    db.close()
    with open_store(str(path)) as s:
        assert s.owned_open_runs() == [] and s.pending_runs() == []  # an old open run: no owner
        assert [r.id for r in s.open_runs()] == ["r1"]
        run = open_run("old", T0 + 10)
        assert s.record_run(run, now=T0 + 10, owner=OWNER)
        assert [r.id for r, _ in s.owned_open_runs()] == [run.id]


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_outside_the_store_speaks_sql():
    """The database driver and SQL stay in store/: a second backend is a second
    store/<backend>/, not edits all over the server."""
    # the wrapper loads SQLite's C module early, without its statement cache, to save
    # milliseconds a run (wrapper/record.py, _load_sqlite): an import, no SQL
    allowed = {"wrapper/record.py": {"_sqlite3"}}
    drivers = {"sqlite3", "_sqlite3", "psycopg", "psycopg2"}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("store/"):
            continue
        text = path.read_text()
        found = (_imports(ast.parse(text)) & drivers) - allowed.get(rel, set())
        found |= {w for w in ("PRAGMA", "SAVEPOINT", ".db.execute") if w in text}
        if found:
            offenders.append((rel, sorted(found)))
    assert offenders == []


def test_output_captured_as_one_stream_says_so_on_every_path(store):
    """``Run.merged`` (stdout and stderr went to one place, captured as one stream) is kept
    by each way a run's output is written and read back with it."""
    from cronwatch.store.interface import run_row

    both = b"1\n2 (stderr)\n3\n"
    store.record_run(run_at(T0, job="m", id="rec", stdout=both, merged=True), now=T0)
    store.record_run(run_at(T0 + 1, job="m", id="apart", stderr=b"e"), now=T0)
    store.import_rows([run_row(run_at(T0 + 2, job="m", id="imp", stdout=both, merged=True))],
                      now=T0, days=None)  # fmt: skip
    store.start_run("m", now=T0 + 3, env="e")
    store.finish_run("m", Status.SUCCESS, now=T0 + 4, env="e", stdout=both, merged=True)
    synthetic = store.finish_run("m", Status.FAILED, now=T0 + 5, env="x", stdout=both,
                                 merged=True)  # fmt: skip
    upd = store.get_run("apart")
    upd.stdout, upd.stderr, upd.merged = both, None, True
    store.record_run(run_at(T0 + 6, job="m", id="upd"), now=T0)
    upd.id, upd.started_at = "upd", T0 + 6
    store.update_run(upd, now=T0 + 7)
    # a wrapped run: on record (open, owned) from its start, closed in place at the end
    wrapped = run_at(T0 + 8, job="m", id="wrapped", status=Status.RUNNING)
    store.record_run(wrapped, now=T0 + 8, owner=OWNER)
    store.record_run(run_at(T0 + 8, job="m", id="wrapped", stdout=both, merged=True),
                     now=T0 + 9, owner=None)  # fmt: skip

    want = {"rec": True, "apart": False, "imp": True, "upd": True, synthetic.id: True,
            "wrapped": True}  # fmt: skip
    got = {r.id: (r.merged, r.stdout, r.stderr) for r in store.list_runs(job="m", output=True)}
    assert len(got) == 7
    for run_id, merged in want.items():
        assert got[run_id] == ((True, both, None) if merged else (False, b"out 1700000001", b"e"))
    (closed,) = [v for k, v in got.items() if k not in want]
    assert closed == (True, both, None)
    assert {r.id: r.merged for r in store.iter_runs(job="m")} == {r: got[r][0] for r in got}
    assert store.get_run("rec").to_dict()["merged"] is True
    assert store.get_run("apart").to_dict()["merged"] is False


def test_alerting_configured_once_and_foreign_keys(store):
    store.set_notification_list("on-call-team", ["email:ops@example.com", "slack:#alerts"])
    store.set_notification_list("on-call-team", ["pagerduty:KEY"])  # replaced
    assert store.notification_lists() == {"on-call-team": ["pagerduty:KEY"]}
    store.delete_notification_list("on-call-team")
    with pytest.raises(NotFound):
        store.delete_notification_list("on-call-team")
    store.set_integration("email", {"host": "smtp.example.com", "password": "s"})
    assert store.integrations() == {"email": {"host": "smtp.example.com", "password": "s"}}
    store.delete_integration("email")
    with pytest.raises(NotFound):
        store.delete_integration("email")
    # a job's key in another system's spelling, moved with the key, gone with the job
    store.save_job(Job(name="a"), now=1.0)
    store.save_job(Job(name="b"), now=1.0)
    store.set_job_key("a", "MyKey", {"name": "A job"})
    store.set_job_key("b", "MyKey", {})  # the key now names b: a loses it
    assert store.job_keys() == {"b": ("MyKey", {})}
    store.delete_job("b")
    assert store.job_keys() == {}
    key = "k" * 16
    store.set_project_ping_key(key)
    assert store.project_ping_key() == key
    with pytest.raises(Exception, match="ping key"):
        store.set_project_ping_key("short")
