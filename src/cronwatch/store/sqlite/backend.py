"""SQLite store: stdlib sqlite3, WAL, busy timeout, short write transactions.

The wrapper opens this store after every run, so the module imports no more than that
needs (``json`` only where settings or state are not the defaults).
"""

from __future__ import annotations

import os
from itertools import chain

from cronwatch.core.errors import NotFound, StoreBusy, StoreError
from cronwatch.core.model import Job, Run, Status, new_run_id
from cronwatch.core.runs import CLOSE, REUSE, on_finish, on_start
from cronwatch.core.values import compress, decompress
from cronwatch.store.base import StoreBase, run_row, stats_of_runs
from cronwatch.store.rollup import FAILED as _FAILED
from cronwatch.store.rollup import Rollup
from cronwatch.store.sqlite import migrations
from cronwatch.store.sqlite.dialect import SQL
from cronwatch.system import create_private_file, private_dirs

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from cronwatch.store.interface import Maintenance, Store
else:
    # The C module that `sqlite3` re-exports (the same connect, Connection and errors),
    # without the `datetime`, `collections` and `functools` imports of `sqlite3.dbapi2`
    # and its date adapters, which this store never uses: ~3 ms of every wrapped run.
    import _sqlite3 as sqlite3

_RUN_COLS = (
    "r.id, r.uid, j.name, r.env, r.status, r.started_at, r.ended_at, r.duration, r.exit_code, "
    "r.signal, r.host, r.user, r.command, r.message, r.source"
)


def _run_from_row(row: tuple[Any, ...], out: tuple[Any, ...] | None = None) -> Run:
    run = Run(
        job=row[2],
        started_at=row[5],
        status=Status(row[4]),
        id=row[1],
        env=row[3],
        ended_at=row[6],
        duration=row[7],
        exit_code=row[8],
        signal=row[9],
        host=row[10],
        user=row[11],
        command=row[12],
        message=row[13],
        source=row[14],
    )
    if out is not None:
        run.stdout = decompress(out[0])
        run.stderr = decompress(out[1])
        run.merged = bool(out[2])
    return run


def _settings(text: str | None) -> dict[str, Any]:
    """A job's stored settings; most jobs have none (``{}``), and then no ``json`` import."""
    if not text or text == "{}":
        return {}
    import json

    settings: dict[str, Any] = json.loads(text)  # written by json.dumps of such a dict
    return settings


_KEEP = {"keep_days": 365.0, "keep_output": 1000.0, "keep_failed_output": 5000.0}


def _keep(text: str | None) -> tuple[float, int, int]:
    """keep_days, keep_output and keep_failed_output of a job's stored settings.

    Retention runs on every wrapped run and needs only these three numbers: they are
    read out of the text ``json.dumps`` wrote (``"key": number``; a quote inside a string
    value is escaped, so the pattern cannot match there), so that a configured job does
    not cost the wrapper a `json` (and `re`) import. Anything unexpected: json."""
    found = dict(_KEEP)
    if text and "keep_" in text:
        try:
            for key in found:
                i = text.find(f'"{key}": ')
                if i >= 0:
                    start = i + len(key) + 4
                    ends = [e for e in (text.find(",", start), text.find("}", start)) if e >= 0]
                    found[key] = float(text[start : min(ends)])
        except ValueError:
            s = _settings(text)
            found = {k: float(s.get(k, v)) for k, v in _KEEP.items()}
    return found["keep_days"], int(found["keep_output"]), int(found["keep_failed_output"])


def _job_from_row(row: tuple[Any, ...]) -> Job:
    settings = _settings(row[4])
    job = Job(name=row[1], created_at=row[2], ping_key=row[3] or "")
    for key, value in settings.items():
        if hasattr(job, key) and key not in ("name", "created_at", "ping_key"):
            setattr(job, key, value)
    job.paused = bool(row[5])
    job.resumed_at = row[6]
    return job


def _new_ping_key() -> str:
    """128 random bits, URL-safe, never starting with "-": keys go on command lines
    (`cronwatch ping KEY complete`), where a leading dash reads as an option."""
    import secrets

    while (key := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return key


class SQLiteStore(StoreBase):
    def __init__(self, path: str, *, timeout: float = 10.0, create: bool = True) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = "sqlite://" + self.path
        if not create and not os.path.exists(self.path):
            raise StoreError(f"no database at {self.path} (nothing has been recorded yet)")
        try:
            private_dirs(os.path.dirname(self.path))
            # Created 0600 before SQLite sees it: SQLite then gives its -wal and -shm files
            # the database file's mode, and the database holds job output and secrets.
            create_private_file(self.path)
            self.db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.rollup = Rollup(self.db, SQL)
            self._migrate()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from None
        self._job_ids: dict[str, int] = {}
        self._swept: dict[int, float] = {}
        self._bulk = False  # import_rows has set up this connection

    def _migrate(self) -> None:
        db = self.db
        version = 0
        try:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
        if version >= len(migrations.SQLITE):
            return
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            for step in migrations.SQLITE[version:]:
                for stmt in migrations.statements(step):
                    try:
                        db.execute(stmt)
                    except sqlite3.OperationalError as e:
                        # re-adding a column that a development build already added
                        if "ADD COLUMN" not in stmt or "duplicate column" not in str(e):
                            raise
            if version < 5:  # the sealed days' durations (migration 5) start out unknown
                self._fill_durs()
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(len(migrations.SQLITE)),),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def set_timeout(self, seconds: float) -> None:
        self.db.execute(f"PRAGMA busy_timeout={max(0, int(seconds * 1000))}")

    # --- helpers -------------------------------------------------------------------
    def _write(self) -> _Tx:
        return _Tx(self.db, self._forget)

    def _forget(self) -> None:
        # ids cached inside a rolled-back transaction may name rows that never existed
        self._job_ids.clear()
        self.rollup.seal_due = float("-inf")

    def transaction(self) -> _Tx:
        """One write transaction around several store calls (group commit): nested store
        writes join it, and everything commits or rolls back together."""
        return _Tx(self.db, self._forget)

    def _job_id(self, name: str) -> int:
        # Only a transaction's ids are remembered: a writer's (group commit) forgets them
        # when another connection committed (ingest.Committer, data_version). Outside one
        # (the server's reads) nothing would tell it that another replica deleted the job
        # and made it again under a new id, so the name is looked up each time.
        remember = self.in_transaction()
        jid = self._job_ids.get(name) if remember else None
        if jid is None:
            row = self.db.execute("SELECT id FROM jobs WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"unknown job {name!r}")
            jid = row[0]
            if remember:
                self._job_ids[name] = jid
        return jid

    def _ensure_job_id(self, name: str, now: float) -> int:
        try:
            return self._job_id(name)
        except NotFound:
            self.db.execute(
                "INSERT OR IGNORE INTO jobs(name, created_at) VALUES (?, ?)", (name, now)
            )
            return self._job_id(name)

    # --- jobs -----------------------------------------------------------------------
    _JOB_SELECT = "SELECT id, name, created_at, ping_key, settings, paused, resumed_at FROM jobs"

    def find_job(self, name: str) -> Job | None:
        row = self.db.execute(self._JOB_SELECT + " WHERE name=?", (name,)).fetchone()
        return None if row is None else _job_from_row(row)

    def get_job(self, name: str) -> Job:
        job = self.find_job(name)
        if job is None:
            raise NotFound(f"unknown job {name!r}: it has no runs and no settings yet")
        return job

    def job_by_key(self, ping_key: str) -> Job | None:
        row = self.db.execute(self._JOB_SELECT + " WHERE ping_key=?", (ping_key,)).fetchone()
        return None if row is None else _job_from_row(row)

    def ensure_job(self, name: str, *, now: float) -> Job:
        with self._write():
            self._ensure_job_id(name, now)
        return self.get_job(name)

    def save_job(self, job: Job, *, now: float) -> Job:
        import json

        settings = {k: v for k, v in job.settings().items() if k != "paused"}
        with self._write():
            self._ensure_job_id(job.name, job.created_at or now)
            # Unpausing stamps resumed_at (the old ``paused`` on the right-hand side): every
            # path that saves a job (API, `job set`, `apply`) passes here.
            self.db.execute(
                "UPDATE jobs SET settings=?, paused=?, ping_key=?, next_check=NULL, "
                "resumed_at=CASE WHEN paused=1 AND ?=0 THEN ? ELSE resumed_at END WHERE name=?",
                (json.dumps(settings), int(job.paused), job.ping_key or None, int(job.paused),
                 now, job.name),
            )  # fmt: skip
        return self.get_job(job.name)

    def delete_job(self, name: str) -> None:
        with self._write():
            jid = self._job_id(name)
            # Everything keyed by the id goes: SQLite may give the next new job the same id.
            for table in (
                "run_days",
                "outputs",
                "runs",
                "alert_state",
                "incidents",
                "run_links",
                "job_keys",
            ):
                self.db.execute(f"DELETE FROM {table} WHERE job_id=?", (jid,))
            self.db.execute("DELETE FROM jobs WHERE id=?", (jid,))
        self._job_ids.pop(name, None)

    def list_jobs(self) -> list[Job]:
        return [_job_from_row(r) for r in self.db.execute(self._JOB_SELECT + " ORDER BY name")]

    # --- writing runs -----------------------------------------------------------------
    RETENTION_EVERY = 1.0  # seconds between sweeps of one job by one connection

    def _retention(self, jid: int, now: float) -> None:
        """Cheap retention as runs are written: index range scans bounded by the kept window.

        A long-lived connection (the server) sweeps a job at most once a second; a wrapper
        process writes once, so it always sweeps. The bound on what is kept is the same.
        Also moves the day rollup's seal forward, once a day (see _seal).
        """
        self.rollup.maybe_seal(now)
        last = self._swept.get(jid)
        if last is not None and 0 <= now - last < self.RETENTION_EVERY:
            return
        self._swept[jid] = now
        row = self.db.execute("SELECT settings FROM jobs WHERE id=?", (jid,)).fetchone()
        keep_days, keep_output, keep_failed = _keep(row[0] if row else None)
        db = self.db
        if keep_days > 0:
            cutoff = now - keep_days * 86400
            self.rollup.unfold_before(jid, cutoff)
            db.execute("DELETE FROM runs WHERE job_id=? AND started_at<?", (jid, cutoff))
            self.rollup.after_delete()
            db.execute("DELETE FROM outputs WHERE job_id=? AND started_at<?", (jid, cutoff))
        # Output of the newest keep_output runs is kept whatever their outcome; older
        # output goes, except for the newest keep_failed_output failures.
        kept_after = self._nth_newest_start(jid, keep_output)
        if kept_after is None:
            return
        db.execute(
            "DELETE FROM outputs WHERE job_id=? AND failed=0 AND started_at<=?", (jid, kept_after)
        )
        row = db.execute(
            "SELECT started_at FROM outputs WHERE job_id=? AND failed=1 "
            "ORDER BY started_at DESC LIMIT 1 OFFSET ?",
            (jid, keep_failed),
        ).fetchone()
        if row is not None:
            db.execute(
                "DELETE FROM outputs WHERE job_id=? AND failed=1 AND started_at<=?",
                (jid, min(kept_after, row[0])),
            )

    def _nth_newest_start(self, jid: int, n: int) -> float | None:
        """When the job's run after its ``n`` newest started (None: it has no more runs)."""
        row = self.db.execute(
            "SELECT started_at FROM runs INDEXED BY runs_job_started WHERE job_id=? "
            "ORDER BY started_at DESC LIMIT 1 OFFSET ?",
            (jid, n),
        ).fetchone()
        return None if row is None else float(row[0])

    def _insert(
        self, jid: int, run: Run, rid: str | None = None, owner: str | None = None,
        pending: bool = False,
    ) -> int | None:  # fmt: skip
        cur = self.db.execute(
            "INSERT OR IGNORE INTO runs(uid, job_id, env, status, started_at, ended_at, duration, "
            "exit_code, signal, client_rid, rid, host, user, command, message, source, owner, "
            "pending) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run.id, jid, run.env, run.status.value, run.started_at, run.ended_at,
                run.duration, run.exit_code, run.signal, int(rid is not None), rid, run.host,
                run.user, run.command, run.message, run.source, owner, int(pending),
            ),
        )  # fmt: skip
        if cur.rowcount == 0:
            return None
        rowid = cur.lastrowid
        assert rowid is not None  # a row was inserted
        self._fold_late([(jid, run.started_at)])
        self.db.execute(
            "UPDATE jobs SET next_check=NULL WHERE id=? AND next_check IS NOT NULL", (jid,)
        )
        self._put_output(rowid, jid, run)
        return rowid

    def _put_output(self, rowid: int, jid: int, run: Run) -> None:
        """Store (or replace) a run's captured output, if any: every path that writes a
        run's output goes through here, so none forgets a column (``merged`` once did)."""
        if run.stdout is not None or run.stderr is not None:
            self.db.execute(
                "INSERT OR REPLACE INTO outputs(run_id, job_id, started_at, failed, stdout, "
                "stderr, merged) VALUES (?,?,?,?,?,?,?)",
                (rowid, jid, run.started_at, int(run.status.is_failure),
                 compress(run.stdout), compress(run.stderr), int(run.merged)),
            )  # fmt: skip

    def record_run(
        self, run: Run, *, now: float, owner: str | None = None, pending: bool = False
    ) -> bool:
        """Store a run as given (see the interface). A run its wrapper opened and never
        closed (its ``owner`` is still set) is overwritten: that is the wrapper's end, or
        its spooled end replayed after `check` had closed the run as abandoned."""
        # An open wrapped run carries its id as a client run id too: a ping without one
        # (`cronwatch ping JOB complete`) neither closes it nor times it out.
        rid = run.id if owner is not None else None
        with self._write():
            jid = self._ensure_job_id(run.job, now)
            if self._insert(jid, run, rid, owner=owner, pending=pending) is None:
                row = self.db.execute(
                    "SELECT id, started_at FROM runs WHERE uid=? AND job_id=? "
                    "AND owner IS NOT NULL",
                    (run.id, jid),
                ).fetchone()
                if row is None:
                    return False
                self.db.execute(
                    "UPDATE runs SET status=?, started_at=?, ended_at=?, duration=?, "
                    "exit_code=?, signal=?, message=?, owner=?, pending=? WHERE id=?",
                    (run.status.value, run.started_at, run.ended_at, run.duration,
                     run.exit_code, run.signal, run.message, owner, int(pending), row[0]),
                )  # fmt: skip
                self._fold_late([(jid, row[1]), (jid, run.started_at)])
                self.db.execute("UPDATE jobs SET next_check=NULL WHERE id=?", (jid,))
                self._put_output(row[0], jid, run)
            if run.status is not Status.RUNNING:  # the start leaves the sweep to the end
                self._retention(jid, now)
        return True

    def owned_open_runs(self) -> list[tuple[Run, str]]:
        rows = self.db.execute(
            f"SELECT {_RUN_COLS}, r.owner FROM runs r JOIN jobs j ON j.id=r.job_id "
            "WHERE r.status='running' AND r.owner IS NOT NULL"
        ).fetchall()
        return [(_run_from_row(r), r[15]) for r in rows]

    def pending_runs(self, *, limit: int = 100) -> list[Run]:
        rows = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs r INDEXED BY runs_pending "
            "JOIN jobs j ON j.id=r.job_id WHERE r.pending=1 ORDER BY r.started_at LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._with_output(r, True) for r in rows]

    def claim_pending(self, run_id: str) -> bool:
        """Take a pending run's evaluation (conditional update: exactly one claimant wins)."""
        with self._write():
            cur = self.db.execute("UPDATE runs SET pending=0 WHERE uid=? AND pending=1", (run_id,))
        return cur.rowcount == 1

    def forget_run(self, run_id: str) -> None:
        """Delete a run, its output and its links; its day's rollup is recomputed."""
        with self._write():
            row = self.db.execute(
                "SELECT id, job_id, started_at FROM runs WHERE uid=?", (run_id,)
            ).fetchone()
            if row is None:
                return
            rowid, jid, started = row
            self.db.execute("DELETE FROM runs WHERE id=?", (rowid,))
            self.db.execute("DELETE FROM outputs WHERE run_id=?", (rowid,))
            self.db.execute("DELETE FROM run_links WHERE uid=?", (run_id,))
            self.rollup.fold([(jid, started)])

    def record_runs(self, runs: Iterable[Run], *, now: float) -> tuple[int, int]:
        """Bulk insert (import, spool replay): the path of import_rows for many runs, a
        plain insert for one."""
        runs = list(runs)
        if len(runs) == 1:  # the wrapper's and the spool's case: keep it simple
            with self._write():
                jid = self._ensure_job_id(runs[0].job, now)
                if self._insert(jid, runs[0]) is None:
                    return 0, 1
                self._retention(jid, now)
            return 1, 0
        inserted = self._add_rows([run_row(r) for r in runs], now, None)
        return inserted, len(runs) - inserted

    BULK_CACHE_KIB = 64 * 1024  # page cache of a connection that imports

    def import_rows(
        self,
        rows: list[tuple[Any, ...]],
        *,
        now: float,
        days: dict[str, set[int]] | None = None,
    ) -> int:
        """Bulk insert of import rows (see base.run_row) in one transaction; returns how
        many were new (the rest were present already, by run id). ``days``: the UTC days
        (started_at / 86400) the rows start on, by job, if the caller knows them."""
        db = self.db
        if not self._bulk:
            # The indexes of a large history do not fit SQLite's default 2 MB page cache
            # (raw inserts into a 1M-run database: 15.4k rows/s with it, 24.4k with more).
            self._bulk = True
            db.execute(f"PRAGMA cache_size=-{self.BULK_CACHE_KIB}")
            # Checkpoint less often: each one copies the WAL back and syncs twice, and with
            # the default (every 1,000 pages) it happened at every batch's commit.
            db.execute("PRAGMA wal_autocheckpoint=20000")
        return self._add_rows(rows, now, days)

    def _add_rows(
        self, rows: list[tuple[Any, ...]], now: float, days: dict[str, set[int]] | None
    ) -> int:
        """Insert rows (see base.run_row) in one transaction: multi-row INSERTs for the runs,
        the rollup days of late runs recomputed, their output, then once per job the
        next-check reset and the retention sweep. Returns how many runs were new."""
        db = self.db
        with self._write():
            ids = {name: self._ensure_job_id(name, now) for name in {r[1] for r in rows}}
            inserted = self._insert_rows(
                "INSERT OR IGNORE INTO runs(uid, job_id, env, status, started_at, ended_at, "
                "duration, exit_code, signal, client_rid, host, user, command, message, source) "
                "VALUES ",
                "(?,?,?,?,?,?,?,?,?,0,?,?,?,?,?)",
                [(r[0], ids[r[1]], *r[2:14]) for r in rows],
            )
            if inserted and days is None:
                self._fold_late([(ids[r[1]], r[4]) for r in rows])
            elif inserted and days is not None:  # the caller worked the days out
                limit = self._sealed()
                self._refold(
                    ((ids[job], d) for job, ds in days.items() for d in ds if d * self.DAY < limit),
                    limit,
                )
            outputs = [
                (r[14], r[15], r[16], int(r[17]), r[0])
                for r in rows
                if r[15] is not None or r[16] is not None
            ]
            if outputs:
                # OR IGNORE: a run that was already present keeps the output it has.
                db.executemany(
                    "INSERT OR IGNORE INTO outputs(run_id, job_id, started_at, failed, stdout, "
                    "stderr, merged) SELECT id, job_id, started_at, ?, ?, ?, ? FROM runs "
                    "WHERE uid=?",
                    outputs,
                )
            if inserted:
                for jid in ids.values():
                    db.execute("UPDATE jobs SET next_check=NULL WHERE id=?", (jid,))
                    self._retention(jid, now)
        return inserted

    def _open_rows(self, jid: int, env: str) -> list[tuple[Any, ...]]:
        return self.db.execute(
            # INDEXED BY: without it the planner walks every run of the job to skip a sort
            "SELECT id, uid, started_at, client_rid FROM runs INDEXED BY runs_open "
            "WHERE job_id=? AND env=? AND status='running' ORDER BY started_at DESC",
            (jid, env),
        ).fetchall()

    def _by_rid(self, jid: int, env: str, rid: str) -> tuple[Any, ...] | None:
        """(row id, uid, status, started_at, ended_at) of the run a client's run id names in
        (job, env): the open one with that rid, else the newest with it, else the run whose
        own id it is (the id the API answered with names its run too)."""
        db = self.db
        row: tuple[Any, ...] | None = db.execute(
            "SELECT id, uid, status, started_at, ended_at FROM runs INDEXED BY runs_rid "
            "WHERE rid=? AND job_id=? AND env=? "
            "ORDER BY status='running' DESC, started_at DESC LIMIT 1",
            (rid, jid, env),
        ).fetchone()
        if row is None:
            row = db.execute(
                "SELECT id, uid, status, started_at, ended_at FROM runs "
                "WHERE uid=? AND job_id=? AND env=?",
                (rid, jid, env),
            ).fetchone()
        return row

    def _insert_rid(self, jid: int, run: Run, rid: str, now: float) -> None:
        """Insert a run with a client's run id: its id is the rid when no run has that id
        yet (so a ULID from the wrapper or an SDK stays the run's id on the server too),
        else a new one."""
        if self._insert(jid, run, rid) is None:
            run.id = new_run_id(now)
            self._insert(jid, run, rid)

    def start_run(
        self,
        job: str,
        *,
        now: float,
        run_id: str | None = None,
        env: str = "",
        host: str = "",
        user: str = "",
        command: str = "",
        source: str = "ping",
    ) -> tuple[Run, list[Run]]:
        timed_out: list[Run] = []
        with self._write():
            jid = self._ensure_job_id(job, now)
            if run_id is not None:
                row = self._by_rid(jid, env, run_id)
                if on_start(run_id, None if row is None else row[2]) == REUSE:
                    assert row is not None
                    return self._run_by_rowid(row[0]), []
            else:
                for rowid, _uid, started, client_rid in self._open_rows(jid, env):
                    if client_rid:
                        continue
                    self.db.execute(
                        "UPDATE runs SET status='timeout', ended_at=?, duration=?, "
                        "message='a new run started while this one was still open' "
                        "WHERE id=? AND status='running'",
                        (now, max(0.0, now - started), rowid),
                    )
                    self._fold_late([(jid, started)])
                    timed_out.append(self._run_by_rowid(rowid))
            run = Run(job=job, started_at=now, id=run_id or "", env=env, host=host, user=user,
                      command=command, source=source)  # fmt: skip
            if run_id is None:
                self._insert(jid, run)
            else:
                self._insert_rid(jid, run, run_id, now)
            self._retention(jid, now)
        return run, timed_out

    def finish_run(
        self,
        job: str,
        status: Status,
        *,
        now: float,
        run_id: str | None = None,
        env: str = "",
        exit_code: int | None = None,
        duration: float | None = None,
        stdout: bytes | None = None,
        stderr: bytes | None = None,
        message: str = "",
        host: str = "",
        source: str = "ping",
        merged: bool = False,
    ) -> Run:
        with self._write():
            jid = self._ensure_job_id(job, now)
            target: int | None = None
            if run_id is not None:
                row = self._by_rid(jid, env, run_id)
                since = 0.0 if row is None or row[4] is None else now - row[4]
                what = on_finish(run_id, None if row is None else row[2], status.value, since)
                if what == REUSE:  # the same finish again: at-least-once delivery
                    assert row is not None
                    return self._run_by_rowid(row[0], output=True)
                if what == CLOSE:
                    assert row is not None
                    target = row[0]
            else:
                for rowid, _uid, _started, client_rid in self._open_rows(jid, env):
                    if not client_rid:
                        target = rowid
                        break
            if target is None:  # synthetic, already-finished run
                run = Run(job=job, started_at=now - (duration or 0.0), status=status,
                          id=run_id or "", env=env, ended_at=now, duration=duration,
                          exit_code=exit_code, stdout=stdout, stderr=stderr, message=message,
                          host=host, source=source, merged=merged)  # fmt: skip
                if run_id is None:
                    self._insert(jid, run)
                else:
                    self._insert_rid(jid, run, run_id, now)
            else:
                started = self.db.execute(
                    "SELECT started_at FROM runs WHERE id=?", (target,)
                ).fetchone()[0]
                dur = duration if duration is not None else max(0.0, now - started)
                self.db.execute(
                    "UPDATE runs SET status=?, ended_at=?, duration=?, exit_code=?, message=?, "
                    "host=CASE WHEN ?='' THEN host ELSE ? END WHERE id=?",
                    (status.value, now, dur, exit_code, message, host, host, target),
                )
                self._fold_late([(jid, started)])
                self.db.execute("UPDATE jobs SET next_check=NULL WHERE id=?", (jid,))
                if stdout is not None or stderr is not None:
                    self.db.execute(
                        "INSERT OR REPLACE INTO outputs(run_id, job_id, started_at, failed, "
                        "stdout, stderr, merged) VALUES (?,?,?,?,?,?,?)",
                        (target, jid, started, int(status.is_failure), compress(stdout),
                         compress(stderr), int(merged)),
                    )  # fmt: skip
                else:
                    self.db.execute(
                        "UPDATE outputs SET failed=? WHERE run_id=?",
                        (int(status.is_failure), target),
                    )
                run = self._run_by_rowid(target, output=True)
            self._retention(jid, now)
        return run

    def update_run(self, run: Run, *, now: float) -> None:
        with self._write():
            jid = self._ensure_job_id(run.job, now)
            row = self.db.execute(
                "SELECT id, started_at, job_id FROM runs WHERE uid=?", (run.id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"unknown run {run.id!r}")
            self.db.execute(
                "UPDATE runs SET status=?, started_at=?, ended_at=?, duration=?, exit_code=?, "
                "signal=?, message=? WHERE id=?",
                (run.status.value, run.started_at, run.ended_at, run.duration, run.exit_code,
                 run.signal, run.message, row[0]),
            )  # fmt: skip
            self._fold_late([(row[2], row[1]), (row[2], run.started_at)])
            self._put_output(row[0], jid, run)

    def close_open_run(self, run: Run, *, now: float) -> bool:
        """Store the end of a run that is still open (see the interface): one conditional
        UPDATE, so a run that something else closed meanwhile is left as it is."""
        with self._write():
            row = self.db.execute(
                "SELECT id, started_at, job_id FROM runs WHERE uid=? AND status='running'",
                (run.id,),
            ).fetchone()
            if row is None:
                return False
            cur = self.db.execute(
                "UPDATE runs SET status=?, ended_at=?, duration=?, exit_code=?, signal=?, "
                "message=? WHERE id=? AND status='running'",
                (run.status.value, run.ended_at, run.duration, run.exit_code, run.signal,
                 run.message, row[0]),
            )  # fmt: skip
            if cur.rowcount != 1:
                return False
            self._fold_late([(row[2], row[1])])
            self.db.execute(
                "UPDATE outputs SET failed=? WHERE run_id=?", (int(run.status.is_failure), row[0])
            )
        return True

    # --- reading runs -------------------------------------------------------------------
    def _run_by_rowid(self, rowid: int, output: bool = False) -> Run:
        row = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id WHERE r.id=?", (rowid,)
        ).fetchone()
        return self._with_output(row, output)

    def _with_output(self, row: tuple[Any, ...], output: bool) -> Run:
        out = None
        if output:
            out = self.db.execute(
                "SELECT stdout, stderr, merged FROM outputs WHERE run_id=?", (row[0],)
            ).fetchone()
        return _run_from_row(row, out)

    def get_run(self, run_id: str, *, output: bool = True) -> Run:
        row = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id WHERE r.uid=?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"unknown run {run_id!r}")
        return self._with_output(row, output)

    def _where(
        self,
        job: str | None,
        since: float | None,
        until: float | None = None,
        status: Status | None = None,
        env: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if job is not None:
            clauses.append("r.job_id=?")
            params.append(self._job_id(job))
        if since is not None:
            clauses.append("r.started_at>=?")
            params.append(since)
        if until is not None:
            clauses.append("r.started_at<?")
            params.append(until)
        if status is not None:
            clauses.append("r.status=?")
            params.append(status.value)
        if env is not None:
            clauses.append("r.env=?")
            params.append(env)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_runs(
        self,
        *,
        job: str | None = None,
        since: float | None = None,
        until: float | None = None,
        status: Status | None = None,
        env: str | None = None,
        limit: int | None = None,
        output: bool = False,
        oldest_first: bool = False,
    ) -> list[Run]:
        where, params = self._where(job, since, until, status, env)
        order = "ASC" if oldest_first else "DESC"
        sql = f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id{where} ORDER BY r.started_at {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self.db.execute(sql, params).fetchall()
        if not output:
            return [_run_from_row(r) for r in rows]
        return [self._with_output(r, True) for r in rows]

    def newest_runs(self) -> dict[str, Run]:
        """Every job's newest run (any status), by job name; jobs without runs left out.
        One statement: an index lookup a job (runs_job_started), however long the history."""
        rows = self.db.execute(
            f"SELECT {_RUN_COLS} FROM jobs j JOIN runs r ON r.id = (SELECT id FROM runs "
            "WHERE job_id = j.id ORDER BY started_at DESC LIMIT 1)"
        ).fetchall()
        return {r[2]: _run_from_row(r) for r in rows}

    def iter_runs(
        self, *, job: str | None = None, since: float | None = None, output: bool = True
    ) -> Iterator[Run]:
        where, params = self._where(job, since)
        cols = _RUN_COLS + (", o.stdout, o.stderr, o.merged" if output else "")
        join = " LEFT JOIN outputs o ON o.run_id=r.id" if output else ""
        sql = f"SELECT {cols} FROM runs r JOIN jobs j ON j.id=r.job_id{join}{where} ORDER BY r.started_at, r.id"
        for row in self.db.execute(sql, params):
            yield _run_from_row(row, row[15:18] if output else None)

    def open_runs(self) -> list[Run]:
        rows = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id WHERE r.status='running'"
        ).fetchall()
        return [_run_from_row(r) for r in rows]

    def open_runs_of(self, job: str, env: str | None = None) -> list[Run]:
        rows = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id "
            "WHERE r.job_id=? AND r.status='running'",  # the partial index; sorted below
            (self._job_id(job),),
        ).fetchall()
        runs = (_run_from_row(r) for r in rows)
        return sorted((r for r in runs if env is None or r.env == env), key=lambda r: r.started_at)

    def last_run(
        self, job: str, *, statuses: Iterable[Status] | None = None, env: str | None = None
    ) -> Run | None:
        jid = self._job_id(job)
        sql = f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id WHERE r.job_id=?"
        params: list[Any] = [jid]
        if env is not None:
            sql += " AND r.env=?"
            params.append(env)
        if statuses is not None:
            sts = [s.value for s in statuses]
            sql += f" AND r.status IN ({','.join('?' * len(sts))})"
            params += sts
        row = self.db.execute(sql + " ORDER BY r.started_at DESC LIMIT 1", params).fetchone()
        return None if row is None else _run_from_row(row)

    # --- aggregates: the per-day rollup (store/rollup.py) ---------------------------------
    DAY = 86400

    def _sealed(self) -> float:
        return self.rollup.sealed()

    def _fill_durs(self, pairs: Iterable[tuple[int, int]] | None = None) -> None:
        self.rollup.fill_durs(pairs)

    def _fold_late(self, runs: list[tuple[int, float]]) -> None:
        """After inserting or updating runs ((job id, started_at) pairs): recompute the
        sealed days among them (there are no triggers, see migration 6)."""
        self.rollup.fold(runs)

    def _refold(self, pairs: Iterable[tuple[int, int]], sealed: float) -> None:
        self.rollup.refold(pairs, sealed)

    def job_stats(
        self, job: str, *, since: float | None = None, env: str | None = None
    ) -> dict[str, Any]:
        if env is None:
            return self.rollup.job_stats(self._job_id(job), job, since)
        # One environment: the rollup counts days of every environment together, so its
        # runs are read themselves (the stats of a period, a few thousand rows at most).
        rows = self.db.execute(
            "SELECT status, started_at, duration FROM runs WHERE job_id=? AND env=? "
            "AND started_at>=? ORDER BY started_at",
            (self._job_id(job), env, -1e18 if since is None else since),
        ).fetchall()
        return stats_of_runs(job, since, rows)

    def recent_durations(self, job: str, n: int, env: str | None = None) -> list[tuple[float, str]]:
        jid = self._job_id(job)
        if env is not None:
            return self.db.execute(
                "SELECT duration, status FROM runs WHERE job_id=? AND env=? "
                "AND duration IS NOT NULL ORDER BY started_at DESC LIMIT ?",
                (jid, env, n),
            ).fetchall()
        return self.db.execute(
            "SELECT duration, status FROM runs WHERE job_id=? AND duration IS NOT NULL "
            "ORDER BY started_at DESC LIMIT ?",
            (jid, n),
        ).fetchall()

    def set_crash_event(self, run_id: str, crash_event_id: str) -> None:
        with self._write():
            row = self.db.execute("SELECT job_id FROM runs WHERE uid=?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"unknown run {run_id!r}")
            self.db.execute(
                "INSERT OR REPLACE INTO run_links(uid, job_id, crash_event_id) VALUES (?,?,?)",
                (run_id, row[0], crash_event_id),
            )

    def crash_events(self, run_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(run_ids), 500):  # SQLite's bound on parameters
            part = run_ids[i : i + 500]
            rows = self.db.execute(
                f"SELECT uid, crash_event_id FROM run_links WHERE uid IN ({','.join('?' * len(part))})",
                part,
            )
            out.update(dict(rows))
        return out

    def run_counts(self) -> dict[str, dict[str, int]]:
        """Stored runs of every job by status (for /metrics), from the rollup."""
        return self.rollup.run_counts()

    # --- the check schedule: which jobs can have changed health by now ---------------------------
    def due_jobs(self, *, now: float) -> list[str]:
        """Jobs whose next clock-driven change is due, or unknown (changed since last check)."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT name FROM jobs WHERE next_check IS NULL OR next_check<=? ORDER BY name",
                (now,),
            )
        ]

    def set_next_checks(self, items: list[tuple[str, float | None]]) -> None:
        with self._write():
            self.db.executemany(
                "UPDATE jobs SET next_check=? WHERE name=?",
                [(1e18 if at is None else at, name) for name, at in items],
            )

    def newest_start(self, job: str, env: str | None = None) -> float | None:
        """Start time of the job's newest run (any status; of ``env`` if given), or None."""
        if env is None:
            row = self.db.execute(
                "SELECT max(started_at) FROM runs WHERE job_id=?", (self._job_id(job),)
            ).fetchone()
        else:
            row = self.db.execute(
                "SELECT max(started_at) FROM runs WHERE job_id=? AND env=?",
                (self._job_id(job), env),
            ).fetchone()
        newest: float | None = row[0]  # sqlite3 rows are Any; NULL when it has no runs
        return newest

    def set_next_check(self, job: str, at: float | None) -> None:
        """Remember when ``job`` next needs a look (None: never, until something changes)."""
        with self._write():
            self.db.execute(
                "UPDATE jobs SET next_check=? WHERE id=?",
                (1e18 if at is None else at, self._job_id(job)),
            )

    # --- alerting: state, incidents, the notification outbox ----------------------------------
    def get_alert_state(self, job: str, env: str = "") -> dict[str, Any] | None:
        import json

        row = self.db.execute(
            "SELECT state FROM alert_state WHERE job_id=? AND env=?", (self._job_id(job), env)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def alert_summary(self, job: str, env: str = "") -> dict[str, Any] | None:
        """The counters and flags of the alert state, read by SQLite's JSON functions: the
        wrapper's steady-job test without importing ``json`` (and ``re``) for it."""
        try:
            row = self.db.execute(
                "SELECT json_extract(state, '$.down'), json_extract(state, '$.fail_streak'), "
                "json_extract(state, '$.ok_streak'), json_extract(state, '$.incident_open') "
                "FROM alert_state WHERE job_id=? AND env=?",
                (self._job_id(job), env),
            ).fetchone()
        except sqlite3.OperationalError:  # an SQLite built without its JSON functions
            return self.get_alert_state(job, env)
        if row is None:
            return None
        down, fail_streak, ok_streak, incident_open = row
        return {"down": bool(down), "fail_streak": fail_streak or 0, "ok_streak": ok_streak or 0,
                "incident_open": bool(incident_open)}  # fmt: skip

    def set_alert_state(self, job: str, env: str, state: dict[str, Any]) -> None:
        import json

        with self._write():
            self.db.execute(
                "INSERT INTO alert_state(job_id, env, state) VALUES (?,?,?) "
                "ON CONFLICT(job_id, env) DO UPDATE SET state=excluded.state, "
                "version=alert_state.version+1",
                (self._job_id(job), env, json.dumps(state)),
            )

    def read_alert_state(self, job: str, env: str = "") -> tuple[dict[str, Any] | None, int]:
        import json

        row = self.db.execute(
            "SELECT state, version FROM alert_state WHERE job_id=? AND env=?",
            (self._job_id(job), env),
        ).fetchone()
        return (None, 0) if row is None else (json.loads(row[0]), int(row[1]))

    def claim_alert_state(self, job: str, env: str, state: dict[str, Any], *, version: int) -> bool:
        """Store ``state`` if the stored version is still ``version`` (see the interface)."""
        import json

        with self._write():
            if version == 0:
                cur = self.db.execute(
                    "INSERT INTO alert_state(job_id, env, state, version) VALUES (?,?,?,1) "
                    "ON CONFLICT(job_id, env) DO NOTHING",
                    (self._job_id(job), env, json.dumps(state)),
                )
            else:
                cur = self.db.execute(
                    "UPDATE alert_state SET state=?, version=version+1 "
                    "WHERE job_id=? AND env=? AND version=?",
                    (json.dumps(state), self._job_id(job), env, version),
                )
        return cur.rowcount == 1

    def open_incident(
        self, job: str, env: str, *, at: float, cause: str, run_id: str | None
    ) -> int:
        with self._write():
            cur = self.db.execute(
                "INSERT INTO incidents(job_id, env, opened_at, cause, open_run) VALUES (?,?,?,?,?)",
                (self._job_id(job), env, at, cause, run_id),
            )
        return int(cur.lastrowid or 0)

    def close_incident(self, job: str, env: str, *, at: float, run_id: str | None) -> int | None:
        with self._write():
            row = self.db.execute(
                "SELECT id FROM incidents WHERE job_id=? AND env=? AND closed_at IS NULL "
                "ORDER BY opened_at DESC LIMIT 1",
                (self._job_id(job), env),
            ).fetchone()
            if row is None:
                return None
            cur = self.db.execute(
                "UPDATE incidents SET closed_at=?, close_run=? WHERE id=? AND closed_at IS NULL",
                (at, run_id, row[0]),
            )
        # closed by this call, or None: its incident.closed event is logged once
        return int(row[0]) if cur.rowcount == 1 else None

    def current_incident(self, job: str, env: str = "") -> int | None:
        row = self.db.execute(
            "SELECT id FROM incidents WHERE job_id=? AND env=? AND closed_at IS NULL "
            "ORDER BY opened_at DESC LIMIT 1",
            (self._job_id(job), env),
        ).fetchone()
        return None if row is None else int(row[0])

    _INCIDENT_SELECT = (
        "SELECT i.id, j.name, i.env, i.opened_at, i.closed_at, i.cause, i.open_run, i.close_run "
        "FROM incidents i JOIN jobs j ON j.id=i.job_id"
    )

    def _incident(self, row: tuple[Any, ...]) -> dict[str, Any]:
        keys = ("id", "job", "env", "opened_at", "closed_at", "cause", "open_run", "close_run")
        d = dict(zip(keys, row, strict=True))
        d["notifications"] = [
            dict(zip(("id", "kind", "channel", "status", "attempts", "created_at", "sent_at",
                      "last_error", "next_attempt_at"), n, strict=True))
            for n in self.db.execute(
                "SELECT id, kind, channel, status, attempts, created_at, sent_at, last_error, "
                "next_attempt_at FROM notifications WHERE incident_id=? ORDER BY id",
                (row[0],),
            )
        ]  # fmt: skip
        return d

    def list_incidents(
        self, *, job: str | None = None, limit: int = 50, open_only: bool = False
    ) -> list[dict[str, Any]]:
        sql, params = self._INCIDENT_SELECT, []
        where = []
        if job is not None:
            where.append("i.job_id=?")
            params.append(self._job_id(job))
        if open_only:
            where.append("i.closed_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY i.opened_at DESC, i.id DESC LIMIT ?"
        params.append(limit)
        return [self._incident(r) for r in self.db.execute(sql, params).fetchall()]

    def get_incident(self, incident_id: int) -> dict[str, Any]:
        row = self.db.execute(self._INCIDENT_SELECT + " WHERE i.id=?", (incident_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown incident {incident_id}")
        return self._incident(row)

    def enqueue_notification(
        self, *, job: str, incident_id: int | None, kind: str, channel: str,
        payload: dict[str, Any], at: float,
    ) -> int:  # fmt: skip
        import json

        with self._write():
            cur = self.db.execute(
                "INSERT INTO notifications(incident_id, job_id, kind, channel, payload, created_at, "
                "next_attempt_at) VALUES (?,?,?,?,?,?,?)",
                (incident_id, self._job_id(job), kind, channel, json.dumps(payload), at, at),
            )
        return int(cur.lastrowid or 0)

    def due_notifications(self, *, now: float, limit: int = 50) -> list[dict[str, Any]]:
        import json

        rows = self.db.execute(
            "SELECT id, channel, payload, attempts, kind FROM notifications "
            "WHERE status='pending' AND next_attempt_at<=? ORDER BY id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [
            {
                "id": r[0],
                "channel": r[1],
                "payload": json.loads(r[2]),
                "attempts": r[3],
                "kind": r[4],
            }
            for r in rows
        ]

    def claim_notification(self, nid: int, *, attempts: int, now: float, lease: float) -> bool:
        """Take one delivery attempt (conditional update: exactly one claimant wins)."""
        with self._write():
            cur = self.db.execute(
                "UPDATE notifications SET attempts=attempts+1, next_attempt_at=? "
                "WHERE id=? AND status='pending' AND attempts=? AND next_attempt_at<=?",
                (now + lease, nid, attempts, now),
            )
        return cur.rowcount == 1

    def finish_notification(
        self, nid: int, *, ok: bool, now: float, error: str = "", retry_at: float | None = None
    ) -> None:
        with self._write():
            if ok:
                self.db.execute(
                    "UPDATE notifications SET status='sent', sent_at=?, last_error='' WHERE id=?",
                    (now, nid),
                )
            elif retry_at is not None:
                self.db.execute(
                    "UPDATE notifications SET last_error=?, next_attempt_at=? WHERE id=?",
                    (error, retry_at, nid),
                )
            else:
                self.db.execute(
                    "UPDATE notifications SET status='failed', last_error=? WHERE id=?",
                    (error, nid),
                )

    # --- the leader lease (LeaderStore): a row per role, taken by a conditional upsert ---------
    def acquire_lead(self, role: str, holder: str, *, now: float, ttl: float) -> bool:
        with self._write():
            cur = self.db.execute(
                "INSERT INTO leases(role, holder, expires_at, since) VALUES (?,?,?,?) "
                "ON CONFLICT(role) DO UPDATE SET holder=excluded.holder, "
                "expires_at=excluded.expires_at, since=CASE WHEN leases.holder=excluded.holder "
                "THEN leases.since ELSE excluded.since END "
                "WHERE leases.holder=excluded.holder OR leases.expires_at<=?",
                (role, holder, now + ttl, now, now),
            )
        return cur.rowcount == 1

    def renew_lead(self, role: str, holder: str, *, now: float, ttl: float) -> bool:
        with self._write():
            cur = self.db.execute(
                "UPDATE leases SET expires_at=? WHERE role=? AND holder=?",
                (now + ttl, role, holder),
            )
        return cur.rowcount == 1

    def release_lead(self, role: str, holder: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM leases WHERE role=? AND holder=?", (role, holder))

    def lead_holder(self, role: str, *, now: float) -> str | None:
        row = self.db.execute(
            "SELECT holder FROM leases WHERE role=? AND expires_at>?", (role, now)
        ).fetchone()
        return None if row is None else str(row[0])

    # --- key/value ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def add_meta(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is there already; the one stored.
        Several replicas starting on a new database at once all get the first one's."""
        with self._write():
            self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0])

    # --- server: ping keys, tokens, the event log, incidents, log output ------------------
    def ensure_ping_key(self, name: str, *, now: float) -> str:
        """The job's ping key, made (random, 128 bits, URL-safe) and stored on first need."""
        with self._write():
            jid = self._ensure_job_id(name, now)
            row = self.db.execute("SELECT ping_key FROM jobs WHERE id=?", (jid,)).fetchone()
            if row[0]:
                return str(row[0])
            # Only if still unset, then read back: another replica may have read the same
            # empty key meanwhile (PostgreSQL's READ COMMITTED lets both through the read).
            self.db.execute(
                "UPDATE jobs SET ping_key=? WHERE id=? AND (ping_key IS NULL OR ping_key='')",
                (_new_ping_key(), jid),
            )
            row = self.db.execute("SELECT ping_key FROM jobs WHERE id=?", (jid,)).fetchone()
        return str(row[0])

    def set_ping_key(self, name: str, key: str) -> None:
        """Give a job an explicit ping key; a key another job holds is refused."""
        from cronwatch.core.errors import ValidationError

        if not key or len(key) > 128 or not all(c.isalnum() or c in "-_" for c in key):
            raise ValidationError(
                f"invalid ping key {key!r}: 1-128 characters of letters, digits, '-' and '_'"
            )
        with self._write():
            jid = self._job_id(name)
            row = self.db.execute("SELECT id FROM jobs WHERE ping_key=?", (key,)).fetchone()
            if row is not None and row[0] != jid:
                raise ValidationError("that ping key belongs to another job")
            self.db.execute("UPDATE jobs SET ping_key=? WHERE id=?", (key, jid))

    def project_ping_key(self) -> str:
        """The project-wide ping key for slug URLs, made on first use and kept in meta."""
        key = self.get_meta("project_ping_key")
        return key if key is not None else self.add_meta("project_ping_key", _new_ping_key())

    def set_project_ping_key(self, key: str) -> None:
        from cronwatch.core.model import validate_ping_key

        validate_ping_key(key)
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('project_ping_key', ?)", (key,)
            )

    # --- alerting configured once -------------------------------------------------------------
    def notification_lists(self) -> dict[str, list[str]]:
        import json

        rows = self.db.execute("SELECT name, channels FROM notify_lists ORDER BY name")
        return {name: json.loads(channels) for name, channels in rows}

    def set_notification_list(self, name: str, channels: list[str]) -> None:
        import json

        with self._write():
            self.db.execute("INSERT OR REPLACE INTO notify_lists(name, channels) VALUES (?, ?)",
                            (name, json.dumps(channels)))  # fmt: skip

    def delete_notification_list(self, name: str) -> None:
        with self._write():
            if not self.db.execute("DELETE FROM notify_lists WHERE name=?", (name,)).rowcount:
                raise NotFound(f"no notification list named {name!r}")

    def integrations(self) -> dict[str, dict[str, str]]:
        import json

        rows = self.db.execute("SELECT name, config FROM integrations ORDER BY name")
        return {name: json.loads(config) for name, config in rows}

    def set_integration(self, name: str, config: dict[str, str]) -> None:
        import json

        with self._write():
            self.db.execute("INSERT OR REPLACE INTO integrations(name, config) VALUES (?, ?)",
                            (name, json.dumps(config)))  # fmt: skip

    def delete_integration(self, name: str) -> None:
        with self._write():
            if not self.db.execute("DELETE FROM integrations WHERE name=?", (name,)).rowcount:
                raise NotFound(f"no {name!r} integration is configured")

    def set_job_key(self, name: str, key: str, attrs: dict[str, Any]) -> None:
        import json

        with self._write():
            jid = self._job_id(name)
            self.db.execute("DELETE FROM job_keys WHERE ext_key=? AND job_id<>?", (key, jid))
            self.db.execute(
                "INSERT OR REPLACE INTO job_keys(job_id, ext_key, attrs) VALUES (?, ?, ?)",
                (jid, key, json.dumps(attrs)),
            )

    def job_keys(self) -> dict[str, tuple[str, dict[str, Any]]]:
        import json

        rows = self.db.execute(
            "SELECT j.name, k.ext_key, k.attrs FROM job_keys k JOIN jobs j ON j.id = k.job_id"
        )
        return {name: (key, json.loads(attrs)) for name, key, attrs in rows}

    def create_token(
        self, name: str, *, read_only: bool, now: float, secret: str | None = None
    ) -> str:
        """Store a new API token's sha256 and return the token itself (shown once).
        ``secret``: a key carried over from another system (a Cronitor API key) instead
        of a new random one."""
        import hashlib
        import secrets

        from cronwatch.core.errors import ValidationError
        from cronwatch.core.model import validate_imported_token

        token = "cw_" + secrets.token_urlsafe(32) if secret is None else secret
        if secret is not None:
            validate_imported_token(secret)
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._write():
            if self.db.execute("SELECT 1 FROM tokens WHERE name=?", (name,)).fetchone():
                raise ValidationError(f"a token named {name!r} already exists")
            if self.db.execute("SELECT 1 FROM tokens WHERE hash=?", (digest,)).fetchone():
                raise ValidationError("another token has that secret already")
            self.db.execute(
                "INSERT INTO tokens(name, hash, read_only, created_at) VALUES (?,?,?,?)",
                (name, digest, int(read_only), now),
            )
        return token

    def check_token(self, token: str) -> dict[str, Any] | None:
        """The token's record ({name, read_only, ...}) or None when unknown."""
        import hashlib

        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        row = self.db.execute(
            "SELECT name, read_only, created_at, last_used_at FROM tokens WHERE hash=?", (digest,)
        ).fetchone()
        if row is None:
            return None
        return {"name": row[0], "read_only": bool(row[1]), "created_at": row[2],
                "last_used_at": row[3]}  # fmt: skip

    def touch_token(self, name: str, *, now: float) -> None:
        with self._write():
            self.db.execute("UPDATE tokens SET last_used_at=? WHERE name=?", (now, name))

    def list_tokens(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT name, read_only, created_at, last_used_at FROM tokens ORDER BY name"
        ).fetchall()
        return [{"name": r[0], "read_only": bool(r[1]), "created_at": r[2], "last_used_at": r[3]}
                for r in rows]  # fmt: skip

    def delete_token(self, name: str) -> None:
        with self._write():
            if self.db.execute("DELETE FROM tokens WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"unknown token {name!r}")

    # --- console users and sessions ----------------------------------------------------
    def create_user(self, name: str, *, role: str, password_hash: str, now: float) -> None:
        from cronwatch.core.errors import ValidationError

        with self._write():
            if self.db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise ValidationError(f"a user named {name!r} already exists")
            self.db.execute(
                "INSERT INTO users(name, role, password, created_at) VALUES (?,?,?,?)",
                (name, role, password_hash, now),
            )

    def get_user(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT name, role, password, created_at, last_login_at FROM users WHERE name=?",
            (name,),
        ).fetchone()
        if row is None:
            return None
        return {"name": row[0], "role": row[1], "password": row[2], "created_at": row[3],
                "last_login_at": row[4]}  # fmt: skip

    def list_users(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT name, role, created_at, last_login_at FROM users ORDER BY name"
        ).fetchall()
        return [{"name": r[0], "role": r[1], "created_at": r[2], "last_login_at": r[3]}
                for r in rows]  # fmt: skip

    def set_user(
        self, name: str, *, role: str | None = None, password_hash: str | None = None
    ) -> None:
        with self._write():
            row = self.db.execute("SELECT id FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"unknown user {name!r}")
            if role is not None:
                self.db.execute("UPDATE users SET role=? WHERE id=?", (role, row[0]))
            if password_hash is not None:
                self.db.execute("UPDATE users SET password=? WHERE id=?", (password_hash, row[0]))
                self.db.execute("DELETE FROM sessions WHERE user_id=?", (row[0],))

    def delete_user(self, name: str) -> None:
        with self._write():
            row = self.db.execute("SELECT id FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"unknown user {name!r}")
            self.db.execute("DELETE FROM sessions WHERE user_id=?", (row[0],))
            self.db.execute("DELETE FROM users WHERE id=?", (row[0],))

    def count_users(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM users").fetchone()[0])

    def create_session(
        self, digest: str, user: str, *, csrf: str, now: float, expires_at: float
    ) -> None:
        with self._write():
            row = self.db.execute("SELECT id FROM users WHERE name=?", (user,)).fetchone()
            if row is None:
                raise NotFound(f"unknown user {user!r}")
            self.db.execute(
                "INSERT INTO sessions(hash, user_id, csrf, created_at, expires_at) "
                "VALUES (?,?,?,?,?)",
                (digest, row[0], csrf, now, expires_at),
            )
            self.db.execute("UPDATE users SET last_login_at=? WHERE id=?", (now, row[0]))

    def get_session(self, digest: str, *, now: float) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT u.name, u.role, s.csrf, s.created_at, s.expires_at FROM sessions s "
            "JOIN users u ON u.id = s.user_id WHERE s.hash=? AND s.expires_at > ?",
            (digest, now),
        ).fetchone()
        if row is None:
            return None
        return {"user": row[0], "role": row[1], "csrf": row[2], "created_at": row[3],
                "expires_at": row[4]}  # fmt: skip

    def delete_session(self, digest: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM sessions WHERE hash=?", (digest,))

    def delete_expired_sessions(self, *, now: float) -> int:
        with self._write():
            return int(
                self.db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,)).rowcount
            )

    def add_sign_in_failure(
        self, keys: list[tuple[str, str]], *, at: float, forget_before: float
    ) -> None:
        with self._write():
            self.db.execute("DELETE FROM sign_in_failures WHERE at < ?", (forget_before,))
            self.db.executemany(
                "INSERT INTO sign_in_failures(kind, value, at) VALUES (?,?,?)",
                [(kind, value, at) for kind, value in keys],
            )

    def sign_in_failures(
        self, keys: list[tuple[str, str]], *, since: float
    ) -> dict[tuple[str, str], tuple[int, float]]:
        found: dict[tuple[str, str], tuple[int, float]] = {}
        for kind, value in keys:
            n, oldest = self.db.execute(
                "SELECT count(*), min(at) FROM sign_in_failures "
                "WHERE kind=? AND value=? AND at >= ?",
                (kind, value, since),
            ).fetchone()
            if n:
                found[(kind, value)] = (int(n), float(oldest))
        return found

    def add_event(self, type: str, data: dict[str, Any], *, now: float) -> int:
        """Append to the event log (SSE); ids increase, so clients resume by Last-Event-ID."""
        import json

        with self._write():
            cur = self.db.execute(
                "INSERT INTO events(at, type, data) VALUES (?,?,?)", (now, type, json.dumps(data))
            )
        return int(cur.lastrowid or 0)

    def add_events(self, rows: list[tuple[float, str, str]]) -> None:
        """Append (at, type, data JSON) rows in order: the server's writer logs a whole
        batch of pings with one executemany instead of a statement per event."""
        with self._write():
            self.db.executemany("INSERT INTO events(at, type, data) VALUES (?,?,?)", rows)

    def events_since(self, last_id: int, *, limit: int = 500) -> list[tuple[int, float, str, str]]:
        """(id, at, type, data JSON) of events after ``last_id``, oldest first."""
        rows = self.db.execute(
            "SELECT id, at, type, data FROM events WHERE id>? ORDER BY id LIMIT ?",
            (last_id, limit),
        ).fetchall()
        from cronwatch.core.events import expand  # here: the wrapper never reads the log

        return [(i, at, t, expand(at, t, d)) for i, at, t, d in rows]

    def last_event_id(self) -> int:
        row = self.db.execute("SELECT max(id) FROM events").fetchone()
        return int(row[0] or 0)

    def append_output(
        self,
        job: str,
        data: bytes,
        *,
        now: float,
        run_id: str | None = None,
        env: str = "",
        limit: int = 1_000_000,
    ) -> str | None:
        """Append ``data`` to the open run's stdout (a log ping); the run's id, or None when
        no run is open. Nothing else about the run changes."""
        from cronwatch.core.values import cap_bytes

        with self._write():
            jid = self._job_id(job)
            if run_id is not None:
                found = self._by_rid(jid, env, run_id)
                row = None if found is None else (found[0], found[1], found[3], found[2])
            else:
                row = self.db.execute(
                    "SELECT id, uid, started_at, status FROM runs INDEXED BY runs_open WHERE "
                    "job_id=? AND env=? AND status='running' AND client_rid=0 "
                    "ORDER BY started_at DESC LIMIT 1",
                    (jid, env),
                ).fetchone()
            if row is None:
                return None
            out = self.db.execute("SELECT stdout FROM outputs WHERE run_id=?", (row[0],)).fetchone()
            old = (decompress(out[0]) if out is not None else None) or b""
            self.db.execute(
                "INSERT OR REPLACE INTO outputs(run_id, job_id, started_at, failed, stdout, "
                "stderr) VALUES (?,?,?,?,?,NULL)",
                (
                    row[0],
                    jid,
                    row[2],
                    int(row[3] in _FAILED),
                    compress(cap_bytes(old + data, limit)),
                ),
            )
        return str(row[1])

    def forget_job_ids(self) -> None:
        """Drop the name -> id cache (another connection deleted or renamed a job)."""
        self._job_ids.clear()

    # --- added for the server's ping writer (server/apply.py): one statement a batch ----
    def ping_job_id(self, name: str, *, now: float) -> int:
        """The job's row id (created if missing), from this connection's cache."""
        return self._ensure_job_id(name, now)

    def has_open_run(self, jid: int, env: str) -> bool:
        """Whether a run without a client run id is open: what ``finish_run`` without a
        run id would close (with none, it records a synthetic run)."""
        return (
            self.db.execute(
                "SELECT 1 FROM runs INDEXED BY runs_open WHERE job_id=? AND env=? "
                "AND status='running' AND client_rid=0 LIMIT 1",
                (jid, env),
            ).fetchone()
            is not None
        )

    def add_finished_runs(
        self, rows: list[tuple[Any, ...]], jids: Iterable[int], *, now: float
    ) -> None:
        """Insert already-finished runs without output in one ``executemany``: what
        ``finish_run`` does for a run with no open run to close (a synthetic run), for a
        whole batch of pings. Rows are (uid, job id, env, status, started_at, ended_at,
        duration, exit_code, host, message, source). Then, once per job, the next-check
        reset and the retention sweep, as after any insert."""
        db = self.db
        with self._write():
            self._insert_rows(  # no OR IGNORE: a run id taken fails its ping, never drops it
                "INSERT INTO runs(uid, job_id, env, status, started_at, ended_at, "
                "duration, exit_code, host, message, source) VALUES ",
                "(?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self._fold_late([(r[1], r[4]) for r in rows])
            for jid in jids:
                db.execute(
                    "UPDATE jobs SET next_check=NULL WHERE id=? AND next_check IS NOT NULL",
                    (jid,),
                )
                self._retention(jid, now)

    flush_early = True  # an insert costs no round trip: overlap it with the writer's wait

    def add_quick_rows(
        self,
        runs: list[tuple[Any, ...]],
        jids: Iterable[int],
        events: list[tuple[float, str, str]],
        *,
        now: float,
    ) -> None:
        with self._write():
            if runs:
                self.add_finished_runs(runs, jids, now=now)
            if events:
                self.add_event_rows(events)

    def add_event_rows(self, rows: list[tuple[float, str, str]]) -> None:
        """``add_events`` with multi-row INSERTs (the ping writer's batches)."""
        with self._write():
            self._insert_rows("INSERT INTO events(at, type, data) VALUES ", "(?,?,?)", rows)

    def _insert_rows(self, head: str, values: str, rows: list[tuple[Any, ...]]) -> int:
        """One INSERT ... VALUES (..),(..) per 64 rows: a third cheaper a row than
        executemany, which runs the statement once a row. Rows go in in order. Returns
        how many rows were inserted (with OR IGNORE, fewer than given)."""
        db = self.db
        inserted = 0
        for i in range(0, len(rows), 64):
            part = rows[i : i + 64]
            cur = db.execute(head + ",".join([values] * len(part)), list(chain(*part)))
            inserted += cur.rowcount
        return inserted

    # --- the server's group commit (server/ingest.py) and its housekeeping -------------
    def changes(self) -> int:
        return self.db.total_changes

    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def savepoint(self) -> None:
        self.db.execute("SAVEPOINT op")

    def rollback_to_savepoint(self) -> None:
        self.db.execute("ROLLBACK TO op")
        self.db.execute("RELEASE op")

    def release_savepoint(self) -> None:
        self.db.execute("RELEASE op")

    def data_version(self) -> int:
        """PRAGMA data_version: changes only when another connection committed."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def writer_maintenance(self) -> Maintenance:
        """This connection never checkpoints inside its commits; a thread does, beside it
        (see sqlite/checkpoints.py)."""
        from cronwatch.store.sqlite.checkpoints import Checkpoints

        self.db.execute("PRAGMA wal_autocheckpoint=0")
        return Checkpoints(self.path, self.db)

    def jobs_last_finished(self) -> list[tuple[str, tuple[str, float, float | None] | None]]:
        rows = self.db.execute(
            "SELECT j.name, r.status, r.started_at, r.duration FROM jobs j LEFT JOIN runs r"
            " ON r.id=(SELECT id FROM runs INDEXED BY runs_job_started WHERE job_id=j.id"
            " AND status!='running' ORDER BY started_at DESC LIMIT 1) ORDER BY j.name"
        ).fetchall()
        return [(n, None if st is None else (st, t, d)) for n, st, t, d in rows]


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, re-entrant, turning sqlite errors into StoreError."""

    def __init__(self, db: sqlite3.Connection, on_rollback: Callable[[], None]) -> None:
        self.db = db
        self.outer = False
        self.on_rollback = on_rollback

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.outer = True
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _error(e, "database unavailable") from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.outer:
            return
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as e:
                self.db.execute("ROLLBACK")
                self.on_rollback()
                raise _error(e, "database write failed") from None
        self.db.execute("ROLLBACK")
        self.on_rollback()
        if isinstance(exc, sqlite3.Error):
            raise _error(exc, "database write failed") from None


def _error(e: Exception, what: str) -> StoreError:
    """A sqlite3 error as the StoreError a caller can act on (busy: try again later)."""
    msg = str(e)
    if "locked" in msg or "busy" in msg:
        return StoreBusy(f"{what}: {msg} (another process is writing)")
    return StoreError(f"{what}: {msg}")


if TYPE_CHECKING:  # mypy checks here that the SQLite store is a whole Store

    def _is_a_store(s: SQLiteStore) -> Store:
        return s
