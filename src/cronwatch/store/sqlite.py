"""SQLite store: stdlib sqlite3, WAL, busy timeout, short write transactions."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from .._utils import compress, decompress
from ..errors import NotFound, StoreError
from ..models import Job, Run, Status
from . import migrations
from .base import Store

_RUN_COLS = (
    "r.id, r.uid, j.name, r.env, r.status, r.started_at, r.ended_at, r.duration, r.exit_code, "
    "r.signal, r.host, r.user, r.command, r.message, r.source"
)
_FAILED = ("failed", "timeout", "missed")


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
    return run


def _job_from_row(row: tuple[Any, ...]) -> Job:
    settings = json.loads(row[4]) if row[4] else {}
    job = Job(name=row[1], created_at=row[2], ping_key=row[3] or "")
    for key, value in settings.items():
        if hasattr(job, key) and key not in ("name", "created_at", "ping_key"):
            setattr(job, key, value)
    job.paused = bool(row[5])
    return job


class SQLiteStore(Store):
    def __init__(self, path: str, *, timeout: float = 10.0, create: bool = True) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = "sqlite://" + self.path
        if not create and not os.path.exists(self.path):
            raise StoreError(f"no database at {self.path} (nothing has been recorded yet)")
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from None
        self._job_ids: dict[str, int] = {}

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
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            for step in migrations.SQLITE[version:]:
                for stmt in step.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
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

    # --- helpers -------------------------------------------------------------------
    def _write(self) -> _Tx:
        return _Tx(self.db)

    def transaction(self) -> _Tx:
        """One write transaction around several store calls (group commit): nested store
        writes join it, and everything commits or rolls back together."""
        return _Tx(self.db)

    def _job_id(self, name: str) -> int:
        jid = self._job_ids.get(name)
        if jid is None:
            row = self.db.execute("SELECT id FROM jobs WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"unknown job {name!r}")
            jid = self._job_ids[name] = row[0]
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
    _JOB_SELECT = "SELECT id, name, created_at, ping_key, settings, paused FROM jobs"

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
        settings = {k: v for k, v in job.settings().items() if k != "paused"}
        with self._write():
            self._ensure_job_id(job.name, job.created_at or now)
            self.db.execute(
                "UPDATE jobs SET settings=?, paused=?, ping_key=? WHERE name=?",
                (json.dumps(settings), int(job.paused), job.ping_key or None, job.name),
            )
        return self.get_job(job.name)

    def delete_job(self, name: str) -> None:
        with self._write():
            jid = self._job_id(name)
            self.db.execute("DELETE FROM outputs WHERE job_id=?", (jid,))
            self.db.execute("DELETE FROM runs WHERE job_id=?", (jid,))
            self.db.execute("DELETE FROM jobs WHERE id=?", (jid,))
        self._job_ids.pop(name, None)

    def list_jobs(self) -> list[Job]:
        return [_job_from_row(r) for r in self.db.execute(self._JOB_SELECT + " ORDER BY name")]

    # --- writing runs -----------------------------------------------------------------
    def _retention(self, jid: int, now: float) -> None:
        """Cheap per-write retention: index range scans bounded by the kept window."""
        row = self.db.execute("SELECT settings FROM jobs WHERE id=?", (jid,)).fetchone()
        s = json.loads(row[0]) if row and row[0] else {}
        keep_days = float(s.get("keep_days", 365.0))
        keep_output = int(s.get("keep_output", 1000))
        keep_failed = int(s.get("keep_failed_output", 5000))
        db = self.db
        if keep_days > 0:
            cutoff = now - keep_days * 86400
            db.execute("DELETE FROM runs WHERE job_id=? AND started_at<?", (jid, cutoff))
            db.execute("DELETE FROM outputs WHERE job_id=? AND started_at<?", (jid, cutoff))
        row = db.execute(
            "SELECT started_at FROM outputs WHERE job_id=? ORDER BY started_at DESC "
            "LIMIT 1 OFFSET ?",
            (jid, keep_output),
        ).fetchone()
        if row is not None:
            db.execute(
                "DELETE FROM outputs WHERE job_id=? AND failed=0 AND started_at<=?", (jid, row[0])
            )
        row = db.execute(
            "SELECT started_at FROM outputs WHERE job_id=? AND failed=1 "
            "ORDER BY started_at DESC LIMIT 1 OFFSET ?",
            (jid, keep_failed),
        ).fetchone()
        if row is not None:
            db.execute(
                "DELETE FROM outputs WHERE job_id=? AND failed=1 AND started_at<=?", (jid, row[0])
            )

    def _insert(self, jid: int, run: Run, client_rid: bool = False) -> int | None:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO runs(uid, job_id, env, status, started_at, ended_at, duration, "
            "exit_code, signal, client_rid, host, user, command, message, source) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run.id, jid, run.env, run.status.value, run.started_at, run.ended_at,
                run.duration, run.exit_code, run.signal, int(client_rid), run.host, run.user,
                run.command, run.message, run.source,
            ),
        )  # fmt: skip
        if cur.rowcount == 0:
            return None
        rowid = cur.lastrowid
        if run.stdout is not None or run.stderr is not None:
            self.db.execute(
                "INSERT INTO outputs(run_id, job_id, started_at, failed, stdout, stderr) "
                "VALUES (?,?,?,?,?,?)",
                (rowid, jid, run.started_at, int(run.status.is_failure),
                 compress(run.stdout), compress(run.stderr)),
            )  # fmt: skip
        return rowid

    def record_runs(self, runs: Iterable[Run], *, now: float) -> tuple[int, int]:
        inserted = skipped = 0
        touched: set[int] = set()
        with self._write():
            for run in runs:
                jid = self._ensure_job_id(run.job, now)
                if self._insert(jid, run) is None:
                    skipped += 1
                else:
                    inserted += 1
                    touched.add(jid)
            for jid in touched:
                self._retention(jid, now)
        return inserted, skipped

    def _open_rows(self, jid: int, env: str) -> list[tuple[Any, ...]]:
        return self.db.execute(
            "SELECT id, uid, started_at, client_rid FROM runs "
            "WHERE job_id=? AND env=? AND status='running' ORDER BY started_at DESC",
            (jid, env),
        ).fetchall()

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
                row = self.db.execute(
                    f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id WHERE r.uid=?",
                    (run_id,),
                ).fetchone()
                if row is not None:  # a repeated start: idempotent
                    return _run_from_row(row), []
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
                    timed_out.append(self._run_by_rowid(rowid))
            run = Run(job=job, started_at=now, id=run_id or "", env=env, host=host, user=user,
                      command=command, source=source)  # fmt: skip
            self._insert(jid, run, client_rid=run_id is not None)
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
    ) -> Run:
        with self._write():
            jid = self._ensure_job_id(job, now)
            target: int | None = None
            if run_id is not None:
                row = self.db.execute(
                    "SELECT id, status FROM runs WHERE uid=? AND job_id=?", (run_id, jid)
                ).fetchone()
                if row is not None:
                    if row[1] != "running":  # already finished: at-least-once delivery
                        return self._run_by_rowid(row[0], output=True)
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
                          host=host, source=source)  # fmt: skip
                self._insert(jid, run, client_rid=run_id is not None)
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
                if stdout is not None or stderr is not None:
                    self.db.execute(
                        "INSERT OR REPLACE INTO outputs(run_id, job_id, started_at, failed, "
                        "stdout, stderr) VALUES (?,?,?,?,?,?)",
                        (target, jid, started, int(status.is_failure), compress(stdout),
                         compress(stderr)),
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
            row = self.db.execute("SELECT id FROM runs WHERE uid=?", (run.id,)).fetchone()
            if row is None:
                raise NotFound(f"unknown run {run.id!r}")
            self.db.execute(
                "UPDATE runs SET status=?, started_at=?, ended_at=?, duration=?, exit_code=?, "
                "signal=?, message=? WHERE id=?",
                (run.status.value, run.started_at, run.ended_at, run.duration, run.exit_code,
                 run.signal, run.message, row[0]),
            )  # fmt: skip
            if run.stdout is not None or run.stderr is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO outputs(run_id, job_id, started_at, failed, stdout, "
                    "stderr) VALUES (?,?,?,?,?,?)",
                    (row[0], jid, run.started_at, int(run.status.is_failure),
                     compress(run.stdout), compress(run.stderr)),
                )  # fmt: skip

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
                "SELECT stdout, stderr FROM outputs WHERE run_id=?", (row[0],)
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
        clauses, params = [], []
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
        sql = f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id{where} ORDER BY r.started_at {order}, r.id {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self.db.execute(sql, params).fetchall()
        if not output:
            return [_run_from_row(r) for r in rows]
        return [self._with_output(r, True) for r in rows]

    def iter_runs(
        self, *, job: str | None = None, since: float | None = None, output: bool = True
    ) -> Iterator[Run]:
        where, params = self._where(job, since)
        cols = _RUN_COLS + (", o.stdout, o.stderr" if output else "")
        join = " LEFT JOIN outputs o ON o.run_id=r.id" if output else ""
        sql = f"SELECT {cols} FROM runs r JOIN jobs j ON j.id=r.job_id{join}{where} ORDER BY r.started_at, r.id"
        for row in self.db.execute(sql, params):
            yield _run_from_row(row, row[15:17] if output else None)

    def open_runs(self) -> list[Run]:
        rows = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id WHERE r.status='running'"
        ).fetchall()
        return [_run_from_row(r) for r in rows]

    def last_run(self, job: str, *, statuses: Iterable[Status] | None = None) -> Run | None:
        jid = self._job_id(job)
        sql = f"SELECT {_RUN_COLS} FROM runs r JOIN jobs j ON j.id=r.job_id WHERE r.job_id=?"
        params: list[Any] = [jid]
        if statuses is not None:
            sts = [s.value for s in statuses]
            sql += f" AND r.status IN ({','.join('?' * len(sts))})"
            params += sts
        row = self.db.execute(sql + " ORDER BY r.started_at DESC LIMIT 1", params).fetchone()
        return None if row is None else _run_from_row(row)

    # --- aggregates -------------------------------------------------------------------------
    def _percentile(self, jid: int, since: float, n: int, q: float) -> float | None:
        """Nearest-rank percentile by walking the (job_id, duration) index from the near end."""
        if n == 0:
            return None
        k = min(n - 1, max(0, round(q * (n - 1))))
        order, offset = ("ASC", k) if k <= (n - 1) / 2 else ("DESC", n - 1 - k)
        row = self.db.execute(
            "SELECT duration FROM runs INDEXED BY runs_job_duration WHERE job_id=? AND "
            f"duration IS NOT NULL AND started_at>=? ORDER BY duration {order} LIMIT 1 OFFSET ?",
            (jid, since, offset),
        ).fetchone()
        return None if row is None else row[0]

    def job_stats(self, job: str, *, since: float | None = None) -> dict[str, Any]:
        jid = self._job_id(job)
        lo = since if since is not None else float("-inf")
        row = self.db.execute(
            "SELECT count(*), sum(status='success'), sum(status='failed'), sum(status='timeout'),"
            " sum(status='missed'), sum(status='running'), count(duration), avg(duration),"
            " max(duration) FROM runs INDEXED BY runs_job_started WHERE job_id=? AND started_at>=?",
            (jid, lo),
        ).fetchone()
        total, ok, failed, timeout, missed, running, n_dur, avg, mx = (v or 0 for v in row)
        finished = total - running
        last_success = self._newest(jid, "'success'")
        last_failure = self._newest(jid, "'failed','timeout','missed'")
        last = self.db.execute(
            "SELECT status, started_at FROM runs WHERE job_id=? AND status!='running' "
            "ORDER BY started_at DESC LIMIT 1",
            (jid,),
        ).fetchone()
        streak = {"status": None, "count": 0}
        if last is not None:
            kind = "success" if last[0] == "success" else "failure"
            other = ("'failed','timeout','missed'") if kind == "success" else "'success'"
            since_other = self._newest(jid, other)
            count = self.db.execute(
                "SELECT count(*) FROM runs WHERE job_id=? AND started_at>? AND status!='running'",
                (jid, since_other if since_other is not None else float("-inf")),
            ).fetchone()[0]
            streak = {"status": kind, "count": count}
        return {
            "job": job,
            "since": since,
            "runs": total,
            "finished": finished,
            "running": running,
            "success": ok,
            "failed": failed,
            "timeout": timeout,
            "missed": missed,
            "success_rate": (ok / finished) if finished else None,
            "duration_avg": avg if n_dur else None,
            "duration_p50": self._percentile(jid, lo, n_dur, 0.50),
            "duration_p95": self._percentile(jid, lo, n_dur, 0.95),
            "duration_max": mx if n_dur else None,
            "last_success": last_success,
            "last_failure": last_failure,
            "streak": streak,
        }

    def _newest(self, jid: int, statuses_sql: str) -> float | None:
        # ORDER BY ... LIMIT 1 walks the index backwards and stops at the first match;
        # max() with a status filter would scan the whole job.
        row = self.db.execute(
            f"SELECT started_at FROM runs INDEXED BY runs_job_started WHERE job_id=? AND status IN "
            f"({statuses_sql}) ORDER BY started_at DESC LIMIT 1",
            (jid,),
        ).fetchone()
        return None if row is None else row[0]

    def recent_durations(self, job: str, n: int) -> list[tuple[float, str]]:
        jid = self._job_id(job)
        return self.db.execute(
            "SELECT duration, status FROM runs WHERE job_id=? AND duration IS NOT NULL "
            "ORDER BY started_at DESC LIMIT ?",
            (jid, n),
        ).fetchall()

    # --- key/value ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, re-entrant, turning sqlite errors into StoreError."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.outer = True
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"database unavailable: {e}") from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.outer:
            return
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as e:
                self.db.execute("ROLLBACK")
                raise StoreError(f"database write failed: {e}") from None
        self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"database write failed: {exc}") from None
