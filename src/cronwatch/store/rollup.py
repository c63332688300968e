"""The per-day rollup behind stats, written once for every backend.

Runs that started before the *seal* (a UTC midnight, kept in the ``rollup`` table) are
counted in ``run_days``, one row a (job, UTC day); newer runs are read from ``runs``.
The store moves the seal up to the start of the current day as runs are written
(``seal``), once a day. Whatever changes runs of sealed days goes through this module:

* a late insert or an update (an import, a replayed spool, a run finished after
  midnight): ``fold`` recomputes those days from ``runs`` (rare, and exact);
* a delete (retention): ``unfold`` subtracts the runs before they go and marks the
  day's sorted durations unknown, which ``seal`` writes again (frequent: at the
  retention edge every write deletes a run, so it must not recompute a whole day);
* a job deleted: its rows go with it.

The logic lives here; a backend supplies the SQL text (``RollupSQL``) and a connection
with ``execute``/``executemany``. Parameters are positional except where one value is
used twice (named: ``jid``, ``day``, ``sealed``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Protocol

    class Conn(Protocol):
        """What the rollup needs of a DB-API connection (sqlite3; psycopg 3 via a cursor)."""

        def execute(self, sql: str, params: Any = ..., /) -> Any: ...
        def executemany(self, sql: str, params: Any, /) -> Any: ...


DAY = 86400
ALL_DAYS = -(1 << 62)  # a day before any run
STATUS_COLUMNS = ("running", "success", "failed", "timeout", "missed")  # run_days' order
COUNTED = frozenset(STATUS_COLUMNS)
FAILED = ("failed", "timeout", "missed")


class RollupSQL:
    """The statements of the rollup, in a backend's dialect (see sqlite/dialect.py).

    Row shapes: an *aggregate* is (runs, running, success, failed, timeout, missed,
    n_dur, sum_dur, max_dur) of some runs; a day is ``started_at / 86400`` rounded down.
    """

    # The statements every dialect spells alike are given here; a dialect sets the rest.
    sealed: str = "SELECT sealed FROM rollup WHERE id=1"  # () -> (sealed,)
    # () -> (sealed,), the row held until the transaction ends: two connections moving the
    # seal at once would each fold the same days into run_days (counted twice). SQLite's
    # write transaction already holds the whole database.
    sealed_to_move: str = "SELECT sealed FROM rollup WHERE id=1"
    set_sealed: str = "UPDATE rollup SET sealed=? WHERE id=1"  # (sealed,)
    seal: str  # (from, to): merge the aggregates of runs in [from, to) into run_days
    delete_day: str = "DELETE FROM run_days WHERE job_id=? AND day=?"  # (jid, day)
    refold_day: str  # {jid, day, sealed}: the day's row recomputed from runs (none if empty)
    day_durations: str  # {jid, day, sealed} -> durations of a sealed day's runs
    stale_days: str  # () -> (jid, day) of rows whose durations are unknown
    drop_empty_day: str = "DELETE FROM run_days WHERE job_id=? AND day=? AND runs=0"
    set_durs: str = "UPDATE run_days SET durs=? WHERE job_id=? AND day=?"  # (blob, jid, day)
    # (jid, first_day) -> an aggregate of whole sealed days
    days_aggregate: str = (
        "SELECT sum(runs), sum(running), sum(success), sum(failed), sum(timeout),"
        " sum(missed), sum(n_dur), sum(sum_dur), max(max_dur) FROM run_days"
        " WHERE job_id=? AND day>=?"
    )
    first_day_aggregate: str  # (jid, lo, sealed, first_day) -> of the partial first day
    unsealed_aggregate: str  # (jid, from) -> of runs from ``from`` on
    # (jid, first_day) -> (day, durs blob or None)
    days_durs: str = "SELECT day, durs FROM run_days WHERE job_id=? AND day>=? AND n_dur>0"
    durations: str  # (jid, from, to) -> durations
    durations_first_day: str  # (jid, lo, sealed, first_day) -> durations
    # (jid,) -> (status, started_at) of the newest finished run
    last_finished: str = (
        "SELECT status, started_at FROM runs WHERE job_id=? AND status!='running' "
        "ORDER BY started_at DESC LIMIT 1"
    )
    at_start: str  # (jid, started_at) -> (count, running)
    deleted_days: str  # (jid, before, sealed) -> (day, *aggregate) of sealed runs about to go
    # (*aggregate[:8], jid, day): subtract, durations unknown
    unfold_day: str = (
        "UPDATE run_days SET runs=runs-?, running=running-?, success=success-?,"
        " failed=failed-?, timeout=timeout-?, missed=missed-?, n_dur=n_dur-?,"
        " sum_dur=sum_dur-?, durs=NULL WHERE job_id=? AND day=?"
    )
    max_of_day: str  # {jid, day, sealed, gone}: max_dur again if a run as long went
    counts_by_job: str  # () -> (name, running, success, failed, timeout, missed)
    unsealed_counts: str  # (sealed,) -> (name, status, count)
    state: str  # () -> (days with runs, with durations, durations unknown, emptied days)

    def newest_unsealed(self, n: int) -> str:
        """(jid, sealed, *statuses) -> (started_at,) of the newest unsealed such run."""
        raise NotImplementedError

    def newest_sealed_day(self, columns: list[str]) -> str:
        """(jid,) -> (max day,) with one of these status columns > 0."""
        return f"SELECT max(day) FROM run_days WHERE job_id=? AND ({'+'.join(columns)})>0"

    def newest_in_day(self, n: int) -> str:
        """(jid, day_lo, day_hi, day, *statuses) -> (started_at,) newest in that day."""
        raise NotImplementedError


def first_day(lo: float) -> int:
    """The first whole UTC day at or after ``lo`` (``ALL_DAYS`` for all history)."""
    return ALL_DAYS if lo == float("-inf") else int(-(-lo // DAY))


def pack_durs(durs: list[float]) -> bytes:
    """Sorted durations as run_days.durs stores them: little-endian float64."""
    from array import array

    a = array("d", durs)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def unpack_durs(blob: bytes) -> Any:
    from array import array

    a = array("d")
    a.frombytes(blob)
    if sys.byteorder == "big":
        a.byteswap()
    return a


class Rollup:
    """The rollup of one connection. Writes happen inside the caller's transaction."""

    def __init__(self, db: Conn, sql: RollupSQL) -> None:
        self.db = db
        self.sql = sql
        self.seal_due = float("-inf")  # when seal() next has work to do
        self._max_after: list[dict[str, Any]] = []  # see unfold_before

    # --- the seal ---------------------------------------------------------------------
    def sealed(self) -> float:
        row = self.db.execute(self.sql.sealed).fetchone()
        return row[0] if row else float("-inf")

    def set_sealed(self, at: float) -> None:
        """Move the seal (tests, and a store made "today" for an older history)."""
        self.db.execute(self.sql.set_sealed, (at,))
        self.seal_due = float("-inf")

    def seal(self, now: float) -> None:
        """Fold the runs of the whole UTC days since the last seal into ``run_days``.
        Once a day, about a day of runs; until it happens readers read more of ``runs``."""
        target = float(int(now // DAY) * DAY)
        sealed = self.sealed()
        if sealed < target:
            row = self.db.execute(self.sql.sealed_to_move).fetchone()  # and wait for it
            sealed = float("-inf") if row is None or row[0] is None else float(row[0])
        if sealed < target:
            self.db.execute(self.sql.seal, (sealed, target))
            self.db.execute(self.sql.set_sealed, (target,))
            self.fill_durs()
        self.seal_due = max(sealed, target) + DAY

    def maybe_seal(self, now: float) -> None:
        if now >= self.seal_due:
            self.seal(now)

    # --- runs of sealed days changed ----------------------------------------------------
    def fold(self, runs: Iterable[tuple[int, float]]) -> None:
        """After inserting or updating runs ((job id, started_at) pairs, old and new start
        for an update): recompute the sealed days among them from ``runs``. Today's runs,
        the usual case, cost one lookup of the seal."""
        sealed = self.sealed()
        self.refold({(jid, int(t / DAY)) for jid, t in runs if t < sealed}, sealed)

    def refold(self, pairs: Iterable[tuple[int, int]], sealed: float) -> None:
        """Recompute these (job id, day) rows of ``run_days`` from ``runs``."""
        days = sorted(pairs)
        if not days:
            return
        db = self.db
        db.executemany(self.sql.delete_day, days)
        db.executemany(
            self.sql.refold_day,
            [{"jid": jid, "day": day, "sealed": sealed} for jid, day in days],
        )
        self.fill_durs(days)

    def unfold_before(self, jid: int, before: float) -> None:
        """The job's runs that started before ``before`` are about to be deleted: take
        those of sealed days out of their days. Their days' sorted durations become
        unknown (read from ``runs`` until the next seal writes them); a day left with no
        runs goes at the next seal. Costs one index probe when nothing sealed goes."""
        sealed = self.sealed()
        rows = self.db.execute(self.sql.deleted_days, (jid, min(before, sealed))).fetchall()
        if not rows:
            return
        db = self.db
        db.executemany(self.sql.unfold_day, [(*r[1:9], jid, r[0]) for r in rows])
        # the longest run of a day may go: its new longest is found once they went
        self._max_after = [
            {"jid": jid, "day": r[0], "sealed": sealed, "gone": r[9]}
            for r in rows
            if r[9] is not None
        ]

    def after_delete(self) -> None:
        """Finish ``unfold_before`` once the runs are deleted: the days' longest runs."""
        if self._max_after:
            self.db.executemany(self.sql.max_of_day, self._max_after)
            self._max_after = []

    def fill_durs(self, pairs: Iterable[tuple[int, int]] | None = None) -> None:
        """Write the sorted durations of these (job id, day) rows of ``run_days``; by
        default of every row whose durations are not known (NULL). Rows left with no
        runs (retention emptied the day) go instead."""
        db = self.db
        if pairs is None:
            pairs = db.execute(self.sql.stale_days).fetchall()
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            return
        db.executemany(self.sql.drop_empty_day, pairs)
        sealed = self.sealed()
        db.executemany(
            self.sql.set_durs,
            [(pack_durs(self.day_durs(jid, day, sealed)), jid, day) for jid, day in pairs],
        )

    def day_durs(self, jid: int, day: int, sealed: float) -> list[float]:
        """The sorted durations of a job's runs of one sealed UTC day, from ``runs``."""
        params = {"jid": jid, "day": day, "sealed": sealed}
        return sorted(r[0] for r in self.db.execute(self.sql.day_durations, params))

    def state(self) -> dict[str, int]:
        """What the rollup holds (tests and diagnostics): day rows with runs, those whose
        sorted durations are stored or unknown, and rows emptied by retention."""
        row = self.db.execute(self.sql.state).fetchone()
        keys = ("days", "durs_known", "durs_unknown", "emptied")
        return {k: int(v or 0) for k, v in zip(keys, row, strict=True)}

    # --- reading ------------------------------------------------------------------------
    def aggregate(self, jid: int, lo: float) -> tuple[Any, ...]:
        """(runs, running, success, failed, timeout, missed, n_dur, sum_dur, max_dur) of
        the runs of a job that started at or after ``lo``: whole sealed days from
        ``run_days``, the rest (the first, partial day and everything unsealed) from
        ``runs``. Each run is counted exactly once: by the rollup if it started before
        the seal and its day is a whole day of the window, else from ``runs``."""
        sealed = self.sealed()
        db, sql = self.db, self.sql
        parts = []
        first = first_day(lo)
        if first * DAY < sealed:
            parts.append(db.execute(sql.days_aggregate, (jid, first)).fetchone())
        if first != ALL_DAYS:
            # the partial first day, and everything when the seal is inside it
            parts.append(db.execute(sql.first_day_aggregate, (jid, lo, sealed, first)).fetchone())
        parts.append(db.execute(sql.unsealed_aggregate, (jid, max(lo, sealed))).fetchone())
        sums = [sum(p[i] or 0 for p in parts) for i in range(8)]
        maxes = [p[8] for p in parts if p[8] is not None]
        return (*sums, max(maxes) if maxes else None)

    def percentiles(self, jid: int, lo: float, qs: tuple[float, ...]) -> list[float | None]:
        """Nearest-rank percentiles (stats.percentile's rule) of the durations of a job's
        runs that started at or after ``lo``, exact: the sorted durations of whole sealed
        days (``run_days.durs``), the rest (the partial first day, unsealed runs, days
        whose durations are not known) read from ``runs``; the k-th value is selected
        across those sorted pieces without merging them."""
        from cronwatch.core.stats import kth_smallest, nearest_rank

        sealed = self.sealed()
        db, sql = self.db, self.sql
        pieces: list[Any] = []
        first = first_day(lo)
        if first * DAY < sealed:
            for day, blob in db.execute(sql.days_durs, (jid, first)):
                pieces.append(
                    unpack_durs(blob) if blob is not None else self.day_durs(jid, day, sealed)
                )
        # the unsealed runs, and the partial first day (two queries: an OR would make
        # SQLite walk the job's whole history instead of two index ranges)
        rest = [r[0] for r in db.execute(sql.durations, (jid, max(lo, sealed), float("inf")))]
        if first != ALL_DAYS:
            rest += [r[0] for r in db.execute(sql.durations_first_day, (jid, lo, sealed, first))]
        rest.sort()
        pieces.append(rest)
        n = sum(map(len, pieces))
        return [None if n == 0 else kth_smallest(pieces, nearest_rank(q, n)) for q in qs]

    def newest(self, jid: int, statuses: tuple[str, ...]) -> float | None:
        """Start of the job's newest run with one of ``statuses``.

        Unsealed runs first (walking the index back from the newest, bounded by the seal),
        then the newest sealed day that has such a run, then that day's runs. A job that
        never failed costs two index probes, not a walk over its whole history."""
        sealed = self.sealed()
        db, sql = self.db, self.sql
        row = db.execute(sql.newest_unsealed(len(statuses)), (jid, sealed, *statuses)).fetchone()
        if row is not None:
            newest: float = row[0]  # rows are Any; started_at is a REAL
            return newest
        columns = [s for s in statuses if s in COUNTED]
        day = db.execute(sql.newest_sealed_day(columns), (jid,)).fetchone()[0]
        if day is None:
            return None
        row = db.execute(
            sql.newest_in_day(len(statuses)),
            (jid, day * DAY - 1, min(sealed, (day + 1) * DAY + 1), day, *statuses),
        ).fetchone()
        return None if row is None else row[0]

    def job_stats(self, jid: int, job: str, since: float | None) -> dict[str, Any]:
        lo = since if since is not None else float("-inf")
        total, running, ok, failed, timeout, missed, n_dur, sum_dur, mx = self.aggregate(jid, lo)
        finished = total - running
        p50, p95 = self.percentiles(jid, lo, (0.50, 0.95)) if n_dur else (None, None)
        last_success = self.newest(jid, ("success",))
        last_failure = self.newest(jid, FAILED)
        last = self.db.execute(self.sql.last_finished, (jid,)).fetchone()
        streak: dict[str, Any] = {"status": None, "count": 0}
        if last is not None:
            kind = "success" if last[0] == "success" else "failure"
            since_other = last_failure if kind == "success" else last_success
            # finished runs that started after since_other
            lo_other = float("-inf") if since_other is None else since_other
            n, still_open = self.aggregate(jid, lo_other)[:2]
            if since_other is not None:  # aggregate counts from since_other on: take those out
                at = self.db.execute(self.sql.at_start, (jid, since_other)).fetchone()
                n, still_open = n - at[0], still_open - (at[1] or 0)
            streak = {"status": kind, "count": n - still_open}
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
            "duration_avg": sum_dur / n_dur if n_dur else None,
            "duration_p50": p50,
            "duration_p95": p95,
            "duration_max": mx if n_dur else None,
            "last_success": last_success,
            "last_failure": last_failure,
            "streak": streak,
        }

    def run_counts(self) -> dict[str, dict[str, int]]:
        """Stored runs of every job by status: the sealed days plus the unsealed runs,
        never a scan of the whole history."""
        sealed = self.sealed()
        counts: dict[str, dict[str, int]] = {}
        for name, *values in self.db.execute(self.sql.counts_by_job):
            counts[name] = {s: n for s, n in zip(STATUS_COLUMNS, values, strict=True) if n}
        for name, status, n in self.db.execute(self.sql.unsealed_counts, (sealed,)):
            per_job = counts.setdefault(name, {})
            per_job[status] = per_job.get(status, 0) + n
        return counts
