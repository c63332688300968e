"""PostgreSQL from the user's side: the wrapper, the CLI and migrate-db with a
``postgresql://`` URL, against the session's throwaway cluster (tests/pg.py; skipped with
a message when PostgreSQL's binaries are missing). The store contract and the server's
ping tests run on it too (test_store_contract.py, test_server_ping.py)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cronwatch.core.model import Job, Status
from cronwatch.store import open_store
from test_wrapper_imports import imported


def wait_for_runs(url: str, job: str, n: int, timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        with open_store(url) as s:
            runs = s.list_runs(job=job, output=True) if s.find_job(job) else []
        if len(runs) >= n or time.monotonic() > deadline:
            return runs
        time.sleep(0.1)


def test_the_wrapper_records_into_postgresql_and_never_imports_the_driver(
    cw, pg_database: Callable[[], str]
) -> None:
    url = pg_database()
    env = {"CRONWATCH_DB": url, "CRONWATCH_POSTRUN": "detached", "PYTHONPROFILEIMPORTTIME": "1"}
    rc, out, err = cw("run", "pgjob", "--", "sh", "-c", "echo hello; exit 3", env=env)
    assert (rc, out) == (3, b"hello\n")
    modules = imported(err)
    assert "cronwatch.wrapper.record" in modules
    assert not {m for m in modules if m.startswith(("psycopg", "cronwatch.store.postgres"))}
    assert not [line for line in err.splitlines() if not line.startswith(b"import time:")]
    # the detached post-run step delivers it
    (run,) = wait_for_runs(url, "pgjob", 1)
    assert (run.status, run.exit_code, run.stdout, run.source) == (
        Status.FAILED, 3, b"hello\n", "wrapper"
    )  # fmt: skip
    # ... and evaluates it (just after, in its own transaction): the job's alert state
    # counts the failure
    deadline = time.monotonic() + 30
    while True:
        with open_store(url) as s:
            streak = (s.alert_summary("pgjob") or {}).get("fail_streak")
            pending = s.pending_runs()
        if (streak, pending) == (1, []) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (streak, pending) == (1, [])


def test_a_wrapped_run_is_on_record_while_it_runs(
    cw_env: dict[str, str], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """With PostgreSQL, as with SQLite, a wrapped run is on record as running while its
    job runs (so a hung one times out and the history shows it), through the spool and a
    detached step: the wrapper still never imports the driver. Its end closes that run."""
    import subprocess

    from conftest import CRONWATCH

    url = pg_database()
    gate = tmp_path / "go"
    env = {**cw_env, "CRONWATCH_DB": url, "CRONWATCH_POSTRUN": "detached",
           "PYTHONPROFILEIMPORTTIME": "1"}  # fmt: skip
    job = f"while [ ! -e {gate} ]; do sleep 0.05; done; echo finished"
    proc = subprocess.Popen([CRONWATCH, "run", "slow", "--", "sh", "-c", job], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        running: list[Any] = []
        while not running and time.monotonic() < deadline:
            with open_store(url) as s:
                running = s.open_runs_of("slow") if s.find_job("slow") else []
            time.sleep(0.1)
        assert [r.status for r in running] == [Status.RUNNING]
        assert proc.poll() is None  # the job is still running
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, b"finished\n")
    modules = imported(err)
    assert not {m for m in modules if m.startswith(("psycopg", "cronwatch.store.postgres"))}
    (run,) = wait_for_runs(url, "slow", 1)
    deadline = time.monotonic() + 30
    while run.status is Status.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
        (run,) = wait_for_runs(url, "slow", 1)
    assert (run.id, run.status, run.stdout) == (running[0].id, Status.SUCCESS, b"finished\n")
    with open_store(url) as s:
        assert s.open_runs_of("slow") == []


class Proxy:
    """A TCP port that refuses connections until ``start`` forwards it to PostgreSQL."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.server: socket.socket | None = None

    def start(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def proxy(pg_cluster: Any) -> Iterator[Proxy]:
    p = Proxy(pg_cluster.port)
    yield p
    p.stop()


def test_a_run_is_spooled_while_postgresql_is_down_and_delivered_later(
    cw, pg_database: Callable[[], str], proxy: Proxy
) -> None:
    url = pg_database().replace(f":{proxy.target}/", f":{proxy.port}/")
    env = {"CRONWATCH_DB": url, "CRONWATCH_POSTRUN_BUDGET": "1"}
    t0 = time.monotonic()
    rc, out, err = cw("run", "offline", "--", "sh", "-c", "echo kept", env=env)
    elapsed = time.monotonic() - t0
    assert (rc, out) == (0, b"kept\n")
    assert b"cannot connect" in err and b"Traceback" not in err
    assert elapsed < 30  # the post-run budget, not the 60 s a detached step may wait
    proxy.start()  # PostgreSQL is back: the next run's post-run step merges the spool
    assert cw("run", "online", "--", "true", env=env).rc == 0
    (run,) = wait_for_runs(url, "offline", 1)
    assert (run.status, run.stdout) == (Status.SUCCESS, b"kept\n")
    assert len(wait_for_runs(url, "online", 1)) == 1


def test_the_cli_reads_and_writes_postgresql_by_flag_environment_and_config_file(
    cw, pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_database()
    assert cw("job", "set", "nightly", "--schedule", "0 3 * * *", "--db", url).rc == 0
    rc, out, _ = cw("jobs", "--json", env={"CRONWATCH_DB": url})
    assert rc == 0 and b'"nightly"' in out
    with open_store(url) as s:
        assert s.get_job("nightly").schedule == "0 3 * * *"
    config = tmp_path / "monitors.toml"
    config.write_text('[jobs.weekly]\nschedule = "0 4 * * 1"\ngrace = "1h"\n')
    assert cw("apply", "--config", config, env={"CRONWATCH_DB": url}).rc == 0
    with open_store(url) as s:
        assert (s.get_job("weekly").schedule, s.get_job("weekly").grace) == ("0 4 * * 1", 3600)
    # the default config file's [database] names it when neither --db nor $CRONWATCH_DB do
    xdg = tmp_path / "xdg-config" / "cronwatch"
    xdg.mkdir(parents=True, exist_ok=True)
    (xdg / "config.toml").write_text(f'[database]\nurl = "{url}"\n')
    unset = {"CRONWATCH_DB": None, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    assert cw("job", "set", "hourly", "--schedule", "0 * * * *", env=unset).rc == 0
    rc, out, _ = cw("jobs", "--json", env=unset)
    assert rc == 0 and b'"nightly"' in out and b'"hourly"' in out
    with open_store(url) as s:
        assert s.get_job("hourly").schedule == "0 * * * *"


def test_a_bad_postgresql_url_is_one_line_without_the_password(cw, proxy: Proxy) -> None:
    url = f"postgresql://cw:s3cret@127.0.0.1:{proxy.port}/nowhere"  # nothing listens
    rc, _out, err = cw("jobs", "--db", url)
    assert rc != 0
    assert err.startswith(b"cronwatch: ") and err.count(b"\n") == 1, err
    assert b"cannot connect" in err and b"s3cret" not in err


# --- migrate-db -------------------------------------------------------------------------


def sqlite_history(cw, db: Path) -> dict[str, int]:
    """A small history through the real CLI: runs with output, an alert, a token."""
    env = {"CRONWATCH_DB": str(db)}
    assert cw("job", "set", "flaky", "--alert-after", "1", env=env).rc == 0
    for cmd in ("echo one", "echo two >&2; exit 1", "echo three"):
        assert cw("run", "flaky", "--", "sh", "-c", cmd, env=env).rc in (0, 1)
    assert cw("run", "steady", "--", "true", env=env).rc == 0
    assert cw("token", "create", "ci", env=env).rc == 0
    con = sqlite3.connect(db)
    try:
        tables = ("jobs", "runs", "outputs", "incidents", "tokens", "alert_state", "events")
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        con.close()


def test_migrate_db_copies_a_history_resumes_and_verifies(
    cw, tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    db = tmp_path / "old.db"
    expected = sqlite_history(cw, db)
    assert expected["runs"] == 4 and expected["incidents"] == 1 and expected["tokens"] == 1
    with open_store(str(db)) as s:
        before = {r.id: r for r in s.list_runs(output=True)}
        stats = s.job_stats("flaky")
        key = s.ensure_ping_key("flaky", now=time.time())
        state = s.get_alert_state("flaky")
    assert state is not None and state["fail_streak"] == 0  # it failed, then recovered
    url = pg_database()
    rc, out, err = cw("migrate-db", "--db", db, "--to", url, "--json")
    assert rc == 0, err
    import json

    tables = json.loads(out)["tables"]
    for table, n in expected.items():
        assert tables[table] == {"sqlite": n, "postgresql": n}, table
    import psycopg

    with psycopg.connect(url) as pg:  # analyzed: the planner knows what was copied
        row = pg.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'runs'").fetchone()
        assert row is not None and row[0] > 0  # column statistics: only ANALYZE makes them
    with open_store(url) as s:
        after = {r.id: r for r in s.list_runs(output=True)}
        assert after.keys() == before.keys()
        for rid, run in before.items():
            got = after[rid]
            assert (got.job, got.status, got.stdout, got.stderr, got.started_at) == (
                run.job, run.status, run.stdout, run.stderr, run.started_at
            )  # fmt: skip
        assert s.job_stats("flaky") == stats
        assert s.job_by_key(key).name == "flaky"
        assert [i["job"] for i in s.list_incidents()] == ["flaky"]
        assert s.get_alert_state("flaky") == state
    # again: nothing more is copied, and the counts still agree
    rc, out, _ = cw("migrate-db", "--db", db, "--to", url, "--json")
    assert rc == 0 and json.loads(out)["tables"]["runs"] == {"sqlite": 4, "postgresql": 4}
    with open_store(url) as s:  # new rows get new ids: the sequences moved past the copies
        run, _ = s.start_run("flaky", now=time.time())
        s.open_incident("flaky", "", at=time.time(), cause="test", run_id=run.id)
        assert len(s.list_runs(job="flaky")) == 4


def test_migrate_db_copies_the_file_given_before_the_command(
    cw, tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    # migrate-db's own --db default once overwrote `cronwatch --db FILE migrate-db`'s: it
    # copied the default (empty) database, said so successfully, and tied the PostgreSQL
    # database to the wrong file
    db = tmp_path / "old.db"
    expected = sqlite_history(cw, db)
    url = pg_database()
    rc, out, err = cw("--db", db, "migrate-db", "--to", url, "--json")
    assert rc == 0, err
    import json

    assert json.loads(out)["tables"]["runs"] == {"sqlite": expected["runs"],
                                                 "postgresql": expected["runs"]}  # fmt: skip


def test_an_interrupted_migrate_db_resumes_where_it_stopped(
    cw, tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    from cronwatch.store.postgres.transfer import migrate

    db = tmp_path / "old.db"
    expected = sqlite_history(cw, db)
    url = pg_database()
    seen: list[tuple[str, int]] = []

    def stop_midway(table: str, done: int, total: int) -> None:
        seen.append((table, done))
        if table == "runs" and done == 2:
            raise KeyboardInterrupt

    with open_store(url) as target, pytest.raises(KeyboardInterrupt):
        migrate(str(db), target, progress=stop_midway, chunk=1)
    with open_store(url) as target:
        assert len(target.list_runs()) == 2  # two chunks committed
        counts = migrate(str(db), target, chunk=1)
    assert counts["runs"] == (expected["runs"], expected["runs"])
    assert all(a == b for a, b in counts.values())
    # the indexes the copy dropped for speed are back, though it was interrupted
    import psycopg

    with psycopg.connect(url) as c:
        names = {r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE tablename='runs'")}
    assert {"runs_job_started", "runs_started", "runs_open", "runs_rid", "runs_pending"} <= names


def test_migrate_db_refuses_a_database_with_another_history(
    cw, tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    db = tmp_path / "old.db"
    sqlite_history(cw, db)
    url = pg_database()
    with open_store(url) as s:
        s.ensure_job("already-here", now=time.time())
    rc, _out, err = cw("migrate-db", "--db", db, "--to", url)
    assert rc != 0 and b"already has a history" in err
    with open_store(url) as s:
        assert [j.name for j in s.list_jobs()] == ["already-here"]


def test_the_server_outlives_postgresql_dropping_its_connections(
    pg_database: Callable[[], str],
) -> None:
    """A restart, a failover or an idle timeout closes the server's connections: the
    pings after it are recorded again (a ping in the blip may get 503, never a 500)."""
    import httpx
    import psycopg

    from test_server_harness import LiveServer

    url = pg_database()
    server = LiveServer(url).start()
    try:
        key = server.job_key("survivor")
        assert httpx.get(f"{server.url}/ping/{key}").text == "OK"
        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect(url, autocommit=True) as c:
            killed = c.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()[0]
        assert killed >= 2  # the server's connections: the ping writer's, the API's...
        statuses = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = httpx.get(f"{server.url}/ping/{key}", timeout=30)
            statuses.append(r.status_code)
            if statuses[-3:] == [200, 200, 200]:
                break
            time.sleep(0.2)
        assert statuses[-3:] == [200, 200, 200], statuses
        assert set(statuses) <= {200, 503}, statuses
        with open_store(url) as s:
            assert len(s.list_runs(job="survivor")) == statuses.count(200) + 1
    finally:
        server.stop()


def test_concurrent_pings_over_http_share_transactions(pg_database: Callable[[], str]) -> None:
    """Group commit, seen from outside: pings sent at once by many clients are written in
    fewer transactions than pings (each write transaction takes one transaction id), and
    every ping answered OK is stored."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import psycopg

    from test_server_harness import LiveServer

    url = pg_database()
    server = LiveServer(url).start()
    try:
        key = server.job_key("grouped")
        with httpx.Client(base_url=server.url, timeout=30) as warm:
            assert warm.get(f"/ping/{key}").text == "OK"

        def txid() -> int:
            with psycopg.connect(url, autocommit=True) as c:
                row = c.execute("SELECT txid_current()").fetchone()
                assert row is not None
                return int(row[0])

        def client(_: int) -> list[int]:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                return [c.get(f"/ping/{key}").status_code for _ in range(20)]

        before = txid()
        with ThreadPoolExecutor(32) as pool:
            statuses = [s for batch in pool.map(client, range(32)) for s in batch]
        used = txid() - before - 1  # the second txid_current() takes one itself
        assert statuses.count(200) == len(statuses) == 640, sorted(set(statuses))
        # One transaction a ping would use 640 ids (or more), and so would a writer that
        # committed each ping as it came. How many share one depends on the machine's
        # load: ~9 on a quiet one, ~2 in the suite beside another worker (336 ids).
        assert used < len(statuses) * 0.8, used
        with open_store(url) as s:
            assert len(s.list_runs(job="grouped")) == 641
    finally:
        server.stop()


def test_a_steady_batch_of_pings_is_one_statement(pg_database: Callable[[], str]) -> None:
    """The ping writer's steady batches (quick pings, nothing it remembers changed since
    its last batch) cost one statement each: the rows and the look for changes together,
    no BEGIN, no separate look, no COMMIT. Each statement is a round trip and a fixed
    cost on both sides (benchmarks/README.md). Another replica's steady pings change
    nothing a writer remembers: two writers taking turns stay at one statement a batch.
    What the batches record, and that other changes are still seen: test_store_replicas.py."""
    import psycopg

    from cronwatch.store.postgres import backend
    from test_store_replicas import _writer

    url = pg_database()
    with open_store(url) as a, open_store(url) as b:
        key = a.ensure_ping_key("steady", now=time.time())
        sends = [_writer(a), _writer(b)]
        for send in sends:
            send(f"/ping/{key}")  # the first ping of a job is evaluated, and swept
            send(f"/ping/{key}")  # the next reads what the quick path needs to know
        raws = {id(s.conn._pg): i for i, s in enumerate((a, b))}  # type: ignore[attr-defined]
        sent: list[list[str]] = [[], []]
        real = psycopg.Connection.execute
        real_direct = backend._Prepared.run  # the steady batch's own way to the server

        def counted(self: Any, query: Any, *args: Any, **kw: Any) -> Any:
            if id(self) in raws:
                sent[raws[id(self)]].append(str(query)[:40])
            return real(self, query, *args, **kw)

        def counted_direct(self: Any, pg: Any, params: Any) -> None:
            sent[raws[id(pg)]].append("direct: " + self.sql[:32])
            real_direct(self, pg, params)

        psycopg.Connection.execute = counted  # type: ignore[method-assign]
        backend._Prepared.run = counted_direct  # type: ignore[method-assign]
        try:
            for _ in range(5):  # well within a second: no retention sweep is due
                for send in sends:
                    send(f"/ping/{key}", f"/ping/{key}", f"/ping/{key}")
        finally:
            psycopg.Connection.execute = real  # type: ignore[method-assign]
            backend._Prepared.run = real_direct  # type: ignore[method-assign]
        assert [len(s) for s in sent] == [5, 5], sent
        assert all(q.startswith("direct: ") for s in sent for q in s), sent
    with open_store(url) as s:
        assert s.job_stats("steady")["runs"] == 2 * (2 + 15)


def test_the_retention_sweep_walks_the_index_even_with_stale_statistics(
    pg_database: Callable[[], str],
) -> None:
    """The sweep (once a second a job, on the ping writer's path) finds where the output
    it keeps begins with a walk down the job's index from its newest run, reading about as
    many entries as the runs whose output is kept, however long the history and whatever
    the planner's statistics say. Before, a database that grew faster than autoanalyze
    (a new one under load, or one just migrated) got a scan of the whole history and a
    sort, every sweep: tens of ms growing with the history (benchmarks/README.md)."""
    import psycopg

    url = pg_database()
    with open_store(url) as s:
        s.ensure_ping_key("busy", now=time.time())
    with psycopg.connect(url, autocommit=True) as pg:
        (jid,) = pg.execute("SELECT id FROM jobs WHERE name='busy'").fetchone()  # type: ignore[misc]
        pg.execute("ANALYZE runs")  # statistics of an empty table: what autoanalyze lags
        pg.execute(
            "INSERT INTO runs (uid, job_id, env, status, started_at, ended_at, duration, "
            "exit_code, host, message, source) SELECT 'r' || g, %s, '', 'success', "
            "1.7e9 + g, 1.7e9 + g, 0, 0, '', '', 'test' FROM generate_series(1, 50000) g",
            (jid,),
        )
    with open_store(url) as s, s.transaction():
        cutoff = s._nth_newest_start(jid, 1000)  # type: ignore[attr-defined]
        row = s.conn.pg.execute(  # type: ignore[attr-defined]
            "SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index "
            "WHERE indrelid = 'runs'::regclass"  # index entries read in this transaction
        ).fetchone()
        seq = s.conn.pg.execute(  # type: ignore[attr-defined]
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'runs'"
        ).fetchone()
    assert cutoff == 1.7e9 + 50000 - 1000
    assert row is not None and 1000 <= row[0] <= 1100, row  # not the 50,000 of a bitmap scan
    assert seq is not None and seq[0] == 0


def test_two_replicas_moving_the_seal_at_once_count_a_day_once(
    pg_database: Callable[[], str],
) -> None:
    """At UTC midnight each replica's writer moves the rollup's seal and folds the day
    into ``run_days``. Both read the old seal; without the row's lock both folded it, and
    the day's runs counted twice in every stat (seen in bench_postgres.py at midnight:
    713,289 runs stored for 517,171 acknowledged)."""
    from test_store import run_at

    day = 86400.0
    t0 = float(int(time.time() // day) * day) - 2 * day  # two whole days ago
    url = pg_database()
    with open_store(url) as a, open_store(url) as b:
        a.save_job(Job("sealed"), now=t0)
        a.rollup.set_sealed(t0)
        runs = [run_at(t0 + day + 60 * i, job="sealed") for i in range(50)]
        a.record_runs(runs, now=t0 + day + 3600)  # yesterday's runs, not yet sealed
        now = t0 + 2 * day + 10
        second = threading.Event()

        def b_seals() -> None:
            with b._write():
                b.rollup.seal(now)
            second.set()

        with a._write():
            a.rollup.seal(now)
            thread = threading.Thread(target=b_seals)
            thread.start()
            assert not second.wait(1.0), "b moved the seal while a's transaction held it"
        thread.join(10)
        assert second.is_set()
        assert a.job_stats("sealed")["runs"] == 50
        assert b.job_stats("sealed")["runs"] == 50
