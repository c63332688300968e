"""SQLite's text for the backend-neutral rollup (store/rollup.py).

``INDEXED BY``: without it the planner sometimes walks a job's whole history to skip a
sort. ``CAST(started_at / 86400 AS INTEGER)`` is the day of run_days' rows.
"""

from __future__ import annotations

from cronwatch.store.rollup import RollupSQL

_DAY = "CAST(started_at / 86400 AS INTEGER)"
# The aggregate of some runs, in run_days' column order (after job_id and day) ...
_AGGREGATE = (
    "count(*), sum(status='running'), sum(status='success'), sum(status='failed'),"
    " sum(status='timeout'), sum(status='missed'), count(duration),"
    " coalesce(sum(duration), 0), max(duration)"
)
_COLUMNS = "job_id, day, runs, running, success, failed, timeout, missed, n_dur, sum_dur, max_dur"
# ... and merged into an existing row of run_days.
_MERGE = (
    "runs=runs+excluded.runs, running=running+excluded.running,"
    " success=success+excluded.success, failed=failed+excluded.failed,"
    " timeout=timeout+excluded.timeout, missed=missed+excluded.missed,"
    " n_dur=n_dur+excluded.n_dur, sum_dur=sum_dur+excluded.sum_dur,"
    " max_dur=CASE WHEN max_dur IS NULL OR excluded.max_dur>max_dur"
    " THEN excluded.max_dur ELSE max_dur END"
)
# The runs of job :jid counted in sealed day :day, through (job_id, started_at): the
# range bounds the index walk, the CAST is the exact day.
_IN_SEALED_DAY = (
    " WHERE job_id=:jid AND started_at>=:day*86400-1 AND started_at<:day*86400+86401"
    f" AND {_DAY}=:day AND started_at<:sealed"
)
_BY_START = "FROM runs INDEXED BY runs_job_started"


class SQLiteRollupSQL(RollupSQL):
    seal = (
        f"INSERT INTO run_days ({_COLUMNS}) SELECT job_id, {_DAY} AS d, {_AGGREGATE}"
        " FROM runs WHERE started_at >= ? AND started_at < ?"
        f" GROUP BY job_id, d ON CONFLICT (job_id, day) DO UPDATE SET {_MERGE}"
    )
    refold_day = (
        f"INSERT INTO run_days ({_COLUMNS}) SELECT :jid, :day, {_AGGREGATE} FROM runs"
        f"{_IN_SEALED_DAY} HAVING count(*)>0"
    )
    day_durations = f"SELECT duration {_BY_START}{_IN_SEALED_DAY} AND duration IS NOT NULL"
    stale_days = "SELECT job_id, day FROM run_days INDEXED BY run_days_stale WHERE durs IS NULL"
    first_day_aggregate = (
        f"SELECT {_AGGREGATE} {_BY_START} WHERE job_id=? AND started_at>=? AND started_at<?"
        f" AND {_DAY} < ?"
    )
    unsealed_aggregate = f"SELECT {_AGGREGATE} {_BY_START} WHERE job_id=? AND started_at>=?"
    durations = (
        f"SELECT duration {_BY_START} WHERE job_id=? AND started_at>=? AND started_at<?"
        " AND duration IS NOT NULL"
    )
    durations_first_day = durations + f" AND {_DAY}<?"
    at_start = "SELECT count(*), sum(status='running') FROM runs WHERE job_id=? AND started_at=?"
    deleted_days = (
        f"SELECT {_DAY} AS d, {_AGGREGATE} {_BY_START} WHERE job_id=? AND started_at<? GROUP BY d"
    )
    max_of_day = (
        f"UPDATE run_days SET max_dur=(SELECT max(duration) FROM runs{_IN_SEALED_DAY})"
        " WHERE job_id=:jid AND day=:day AND :gone>=max_dur"
    )
    state = (
        "SELECT sum(runs>0), sum(n_dur>0 AND durs IS NOT NULL), sum(n_dur>0 AND durs IS NULL),"
        " sum(runs=0) FROM run_days"
    )
    counts_by_job = (
        "SELECT j.name, sum(d.running), sum(d.success), sum(d.failed), sum(d.timeout),"
        " sum(d.missed) FROM run_days d JOIN jobs j ON j.id=d.job_id GROUP BY d.job_id"
    )
    unsealed_counts = (
        "SELECT j.name, r.status, count(*) FROM runs r INDEXED BY runs_started"
        " JOIN jobs j ON j.id=r.job_id WHERE r.started_at>=? GROUP BY r.job_id, r.status"
    )

    def newest_unsealed(self, n: int) -> str:
        return (
            f"SELECT started_at {_BY_START} WHERE job_id=? AND started_at>=?"
            f" AND status IN ({','.join('?' * n)}) ORDER BY started_at DESC LIMIT 1"
        )

    def newest_in_day(self, n: int) -> str:
        return (
            f"SELECT started_at {_BY_START} WHERE job_id=? AND started_at>=? AND started_at<?"
            f" AND {_DAY}=? AND status IN ({','.join('?' * n)}) ORDER BY started_at DESC LIMIT 1"
        )


SQL = SQLiteRollupSQL()
