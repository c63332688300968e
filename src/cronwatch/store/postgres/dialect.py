"""PostgreSQL's text: the rollup's statements, and SQLite's statements as PostgreSQL's.

The store logic is written once, with SQLite's spelling (sqlite/backend.py); this backend
runs the same statements through ``translate`` (once per distinct text, then cached):
placeholders (``?`` and ``:name``) become psycopg's, ``INSERT OR IGNORE``/``OR REPLACE``
become ``ON CONFLICT``, SQLite's ``INDEXED BY`` hints go (PostgreSQL's planner picks the
same indexes once its statistics are current; the one on the ping writer's path, the
retention sweep's, is pinned in backend.py, since statistics lag a fast-growing history),
the reserved word ``user`` is quoted, and an INSERT whose row id is read
(``lastrowid``) gets ``RETURNING id``. Statements the translation cannot express are
overridden in backend.py instead.
"""

from __future__ import annotations

import re

from cronwatch.store.rollup import RollupSQL

# --- the rollup (store/rollup.py): PostgreSQL's own text -----------------------------------
# trunc, not CAST: a CAST to INTEGER rounds in PostgreSQL, and days are rounded down.
_DAY = "trunc(started_at / 86400)"
_AGGREGATE = (
    "count(*), count(*) FILTER (WHERE status='running'),"
    " count(*) FILTER (WHERE status='success'), count(*) FILTER (WHERE status='failed'),"
    " count(*) FILTER (WHERE status='timeout'), count(*) FILTER (WHERE status='missed'),"
    " count(duration), coalesce(sum(duration), 0), max(duration)"
)
_COLUMNS = "job_id, day, runs, running, success, failed, timeout, missed, n_dur, sum_dur, max_dur"
_MERGE = (
    "runs=run_days.runs+excluded.runs, running=run_days.running+excluded.running,"
    " success=run_days.success+excluded.success, failed=run_days.failed+excluded.failed,"
    " timeout=run_days.timeout+excluded.timeout, missed=run_days.missed+excluded.missed,"
    " n_dur=run_days.n_dur+excluded.n_dur, sum_dur=run_days.sum_dur+excluded.sum_dur,"
    " max_dur=CASE WHEN run_days.max_dur IS NULL OR excluded.max_dur>run_days.max_dur"
    " THEN excluded.max_dur ELSE run_days.max_dur END"
)
# BIGINT arithmetic: a day's seconds overflow INTEGER in 2038
_IN_SEALED_DAY = (
    " WHERE job_id=:jid AND started_at>=CAST(:day AS BIGINT)*86400-1"
    " AND started_at<CAST(:day AS BIGINT)*86400+86401"
    f" AND {_DAY}=:day AND started_at<:sealed"
)
_BY_START = "FROM runs"


class PostgresRollupSQL(RollupSQL):
    sealed_to_move = "SELECT sealed FROM rollup WHERE id=1 FOR UPDATE"
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
    stale_days = "SELECT job_id, day FROM run_days WHERE durs IS NULL"
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
    at_start = (
        "SELECT count(*), count(*) FILTER (WHERE status='running') FROM runs"
        " WHERE job_id=? AND started_at=?"
    )
    deleted_days = (
        f"SELECT {_DAY} AS d, {_AGGREGATE} {_BY_START} WHERE job_id=? AND started_at<? GROUP BY d"
    )
    max_of_day = (
        f"UPDATE run_days SET max_dur=(SELECT max(duration) FROM runs{_IN_SEALED_DAY})"
        " WHERE job_id=:jid AND day=:day AND :gone>=max_dur"
    )
    state = (
        "SELECT count(*) FILTER (WHERE runs>0),"
        " count(*) FILTER (WHERE n_dur>0 AND durs IS NOT NULL),"
        " count(*) FILTER (WHERE n_dur>0 AND durs IS NULL), count(*) FILTER (WHERE runs=0)"
        " FROM run_days"
    )
    counts_by_job = (
        "SELECT j.name, sum(d.running), sum(d.success), sum(d.failed), sum(d.timeout),"
        " sum(d.missed) FROM run_days d JOIN jobs j ON j.id=d.job_id GROUP BY j.name"
    )
    unsealed_counts = (
        "SELECT j.name, r.status, count(*) FROM runs r"
        " JOIN jobs j ON j.id=r.job_id WHERE r.started_at>=? GROUP BY j.name, r.status"
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


SQL = PostgresRollupSQL()

# --- SQLite's statements as PostgreSQL's ---------------------------------------------------
DML = 1  # changes rows: counted in ``changes()``
RETURNING = 2  # a one-row INSERT with ``RETURNING id``: the cursor's ``lastrowid``

# What ``INSERT OR REPLACE`` replaces on: the primary key of each table it is used on, and
# the columns a replaced row gets back at their default when the statement leaves them out.
_KEYS = {"meta": ("key",), "outputs": ("run_id",), "alert_state": ("job_id", "env"),
         "run_links": ("uid",), "notify_lists": ("name",), "integrations": ("name",),
         "job_keys": ("job_id",)}  # fmt: skip
_DEFAULTS = {"outputs": {"merged": "0"}}
# Tables whose INSERTs may be asked for the new row's id.
_IDS = re.compile(r"\s*INSERT INTO (runs|incidents|notifications|events|jobs|tokens)\b")
_ONE_ROW = re.compile(r"VALUES \([^()]*\)( ON CONFLICT DO NOTHING)?$")
_REPLACE = re.compile(r"\s*INSERT OR REPLACE INTO (\w+)\s*\(([^)]*)\)")
_TOKENS = re.compile(r"'[^']*'|\?|(?<![:\w]):([A-Za-z_]\w*)|%")

_cache: dict[str, tuple[str, int]] = {}


def translate(sql: str) -> tuple[str, int]:
    """(PostgreSQL's text, flags) of a statement written for SQLite."""
    hit = _cache.get(sql)
    if hit is not None:
        return hit
    q = re.sub(r"\s+INDEXED BY \w+", "", sql.strip())
    if q.startswith("INSERT OR IGNORE INTO"):
        q = "INSERT INTO" + q[len("INSERT OR IGNORE INTO") :] + " ON CONFLICT DO NOTHING"
    elif m := _REPLACE.match(q):
        table, columns = m.group(1), [c.strip() for c in m.group(2).split(",")]
        keys = _KEYS[table]
        sets = [f"{c}=EXCLUDED.{c}" for c in columns if c not in keys]
        sets += [f"{c}={v}" for c, v in _DEFAULTS.get(table, {}).items() if c not in columns]
        q = (
            "INSERT INTO" + q[len("INSERT OR REPLACE INTO") :]
            + f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}"
        )  # fmt: skip
    q = re.sub(r"(?<=[ ,.(])user(?=[ ,)])", '"user"', q)
    q = _TOKENS.sub(_placeholder, q)
    flags = DML if q[:6].upper() in ("INSERT", "UPDATE", "DELETE") else 0
    if _IDS.match(q) and _ONE_ROW.search(q):
        q += " RETURNING id"
        flags |= RETURNING
    _cache[sql] = (q, flags)
    return q, flags


def _placeholder(m: re.Match[str]) -> str:
    text = m.group(0)
    if text == "?":
        return "%s"
    if text == "%":
        return "%%"
    if m.group(1):
        return f"%({m.group(1)})s"
    return text  # a string literal, as it is


# --- many rows in one statement: arrays, unnested ------------------------------------------
# SQLite's store inserts many rows as INSERT ... VALUES (..),(..) of 64 rows. PostgreSQL
# takes them as one array a column, whatever their number: one short statement, parsed
# and planned once (psycopg re-parses a long query text at every execution: 6 ms a
# 64-row INSERT here, most of a batch of pings).
_TYPES = {
    "uid": "text", "job_id": "bigint", "env": "text", "status": "text",
    "started_at": "float8", "ended_at": "float8", "duration": "float8",
    "exit_code": "integer", "signal": "integer", "client_rid": "integer", "rid": "text",
    "host": "text", "user": "text", "command": "text", "message": "text", "source": "text",
    "owner": "text", "pending": "integer", "at": "float8", "type": "text", "data": "text",
}  # fmt: skip
_HEAD = re.compile(r"\s*INSERT (OR IGNORE )?INTO (\w+)\s*\(([^)]*)\)\s*VALUES\s*$")
_unnest_cache: dict[tuple[str, str], str | None] = {}


def unnest_insert(head: str, values: str) -> str | None:
    """``head`` (``INSERT [OR IGNORE] INTO t(cols) VALUES ``) and a row's ``values``
    template (``(?,?,0,?)``: placeholders and constants) as one INSERT ... SELECT FROM
    unnest(arrays), one array parameter a placeholder; None if a column's type is unknown
    (the caller inserts row by row)."""
    key = (head, values)
    if key in _unnest_cache:
        return _unnest_cache[key]
    m = _HEAD.match(head)
    sql = None
    if m:
        ignore, table = bool(m.group(1)), m.group(2)
        columns = [c.strip() for c in m.group(3).split(",")]
        slots = [v.strip() for v in values.strip()[1:-1].split(",")]
        if len(slots) == len(columns):
            params, select, names = [], [], []
            for i, (column, slot) in enumerate(zip(columns, slots, strict=True)):
                if slot != "?":
                    select.append(slot)
                    continue
                kind = _TYPES.get(column)
                if kind is None:
                    break
                params.append(f"%b::{kind}[]")
                names.append(f"c{i}")
                select.append(f"c{i}")
            else:
                cols = ", ".join('"user"' if c == "user" else c for c in columns)
                sql = (
                    f"INSERT INTO {table} ({cols}) SELECT {', '.join(select)} "
                    f"FROM unnest({', '.join(params)}) AS t({', '.join(names)})"
                    + (" ON CONFLICT DO NOTHING" if ignore else "")
                )
    _unnest_cache[key] = sql
    return sql
