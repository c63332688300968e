"""``cronwatch migrate-db``: a SQLite history copied into PostgreSQL in bulk (COPY).

Both schemas are brought to the same version first (the migrations mirror each other), so
every table has the same columns on both sides. The tables keyed by a row id (jobs,
runs, outputs, incidents, notifications, tokens, events) are copied in id order, in
chunks of ``CHUNK`` rows, each chunk one COPY in one transaction: a copy that is stopped
(Ctrl-C, a lost connection) resumes after the highest id PostgreSQL has, and copying
again copies nothing. The small tables keyed otherwise (meta, alert state, the rollup's
days and seal) are upserted, in one transaction at the end. Ids are kept as they are (runs,
outputs, incidents and notifications refer to each other by them), and PostgreSQL's id
sequences are moved past them, so that new rows do not collide.

The target must be empty, or a copy of this same source: ``meta.migrated_from`` names the
source a copy started from, and a database that holds jobs without it is refused. A copy
that completes leaves ``meta.migrate_db_copied``, what PostgreSQL held then; a database
that has changed since (in use after the cutover), or that holds more rows than the source
(changed before a copy completed), is refused before anything is written: copying again
would upsert the source's older alert state, settings and keys over the newer ones.
Writers on the SQLite file (wrappers, a server) should be stopped for the copy: runs
recorded during it may be missed by the chunk that already passed them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

from cronwatch.core.errors import StoreError, ValidationError
from cronwatch.store.postgres.backend import PostgresStore

CHUNK = 50_000
# (table, key column): copied in key order, resumable.
BY_ID = (
    ("jobs", "id"),
    ("runs", "id"),
    ("outputs", "run_id"),
    ("incidents", "id"),
    ("notifications", "id"),
    ("tokens", "id"),
    ("events", "id"),
    ("users", "id"),
)
# (table, primary key): upserted at the end.
SMALL = (
    ("meta", ("key",)),
    ("alert_state", ("job_id", "env")),
    ("run_days", ("job_id", "day")),
    ("rollup", ("id",)),
    ("run_links", ("uid",)),
    ("notify_lists", ("name",)),
    ("integrations", ("name",)),
    ("job_keys", ("job_id",)),
)
# Not copied: console sign-in sessions (users sign in again) and the scheduler's lease
# (the replicas on PostgreSQL take it afresh).
IDENTITY = ("jobs", "runs", "incidents", "notifications", "tokens", "events", "users")
# meta keys that are each database's own
_OWN_META = ("schema_version", "migrated_from", "migrate_db_indexes", "migrate_db_copied")

Progress = Callable[[str, int, int], None]


def _quote(column: str) -> str:
    return f'"{column}"'


def migrate(
    source: str, target: PostgresStore, *, progress: Progress | None = None, chunk: int = CHUNK
) -> dict[str, tuple[int, int]]:
    """Copy the SQLite database at ``source`` into ``target``. Returns {table: (rows in
    SQLite, rows in PostgreSQL)}, verified equal (else StoreError)."""
    from cronwatch.store.sqlite import migrations
    from cronwatch.store.sqlite.backend import SQLiteStore

    if len(migrations.SQLITE) != len(migrations.POSTGRES):
        raise StoreError(
            f"this cronwatch's PostgreSQL schema (version {len(migrations.POSTGRES)}) is not "
            f"SQLite's (version {len(migrations.SQLITE)}): it cannot copy between them"
        )
    source = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(source):
        raise ValidationError(f"no SQLite database at {source}")
    src_store = SQLiteStore(source, create=False)  # brings its schema up to date
    src = src_store.db
    try:
        pg = target.conn.pg
        _claim(src, pg, source)
        _drop_indexes(pg)
        for table, key in BY_ID:
            _copy_by_key(src, pg, table, key, chunk, progress)
        _upsert_small(src, pg)
        _restore_indexes(pg, progress)
        _move_sequences(pg)
        counts = _verify(src, pg)
        _mark_copied(pg)
        # The planner's statistics of what was copied, now rather than at autoanalyze's
        # next round: with none, it plans for empty tables (scans and sorts of a whole
        # job's history where an index walk reads a few rows).
        pg.execute("ANALYZE")
    finally:
        src_store.close()
    return counts


def _columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f"PRAGMA table_info({table})")]


def _claim(src: sqlite3.Connection, pg: Any, source: str) -> None:
    with pg.transaction():
        row = pg.execute("SELECT value FROM meta WHERE key='migrated_from'").fetchone()
        if row is not None and row[0] != source:
            raise ValidationError(
                f"this PostgreSQL database holds a copy of {row[0]}, not of {source}"
            )
        if row is not None:
            _refuse_if_diverged(src, pg)
        if row is None:
            has = pg.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs) OR EXISTS (SELECT 1 FROM runs)"
            ).fetchone()[0]
            if has:
                raise ValidationError(
                    "this PostgreSQL database already has a history: migrate-db copies "
                    "into an empty one (create a new database, or drop its tables)"
                )
            pg.execute("INSERT INTO meta(key, value) VALUES ('migrated_from', %s)", (source,))


def _fingerprint(pg: Any) -> dict[str, list[Any]]:
    """What PostgreSQL holds, to tell later whether it changed: the rows and highest key
    of each table copied by key (those grow when used), a digest of each upserted one
    (those change in place: a streak, a rotated key)."""
    found: dict[str, list[Any]] = {}
    for table, key in BY_ID:
        found[table] = list(pg.execute(f"SELECT count(*), max({key}) FROM {table}").fetchone())
    for table, _keys in SMALL:
        where = f" WHERE key NOT IN {_OWN_META}" if table == "meta" else ""
        found[table] = list(
            pg.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY "
                f"t::text), '')) FROM {table} t{where}"
            ).fetchone()
        )
    return found


def _mark_copied(pg: Any) -> None:
    import json

    pg.execute(
        "INSERT INTO meta(key, value) VALUES ('migrate_db_copied', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (json.dumps(_fingerprint(pg)),),
    )


def _refuse_if_diverged(src: sqlite3.Connection, pg: Any) -> None:
    import json

    advice = (
        "copying again would overwrite its newer rows with the SQLite file's older ones; "
        "to copy afresh, migrate-db into a new, empty database"
    )
    row = pg.execute("SELECT value FROM meta WHERE key='migrate_db_copied'").fetchone()
    if row is not None:
        then, now = json.loads(row[0]), _fingerprint(pg)
        changed = [t for t in now if then.get(t) != now[t]]
        if changed:
            # .get: a table a later cronwatch added is not in an older copy's record
            detail = ", ".join(
                f"{t} {then.get(t, [None])[0]} then, {now[t][0]} now"
                if then.get(t, [None])[0] != now[t][0]
                else t
                for t in changed
            )
            raise ValidationError(
                f"this PostgreSQL database changed after migrate-db copied into it "
                f"({detail}): it is in use; {advice}"
            )
        return
    # a copy that did not complete: PostgreSQL holds at most what the source has
    beyond = []
    for table, key in BY_ID:
        n_pg, top_pg = pg.execute(f"SELECT count(*), max({key}) FROM {table}").fetchone()
        n_src, top_src = src.execute(f"SELECT count(*), max({key}) FROM {table}").fetchone()
        if n_pg > n_src or (top_pg is not None and (top_src is None or top_pg > top_src)):
            beyond.append(f"{table} {n_pg} in PostgreSQL, {n_src} in SQLite")
    if beyond:
        raise ValidationError(
            f"this PostgreSQL database holds rows the copy did not put there "
            f"({', '.join(beyond)}): it is in use; {advice}"
        )


# Secondary indexes of the big tables are dropped for the copy and made again at the end
# (one sort each instead of a million inserts into each), their definitions kept in meta
# meanwhile so that an interrupted copy's next run makes them again too.
_INDEXED = ("runs", "outputs", "events")


def _drop_indexes(pg: Any) -> None:
    import json

    with pg.transaction():
        row = pg.execute("SELECT value FROM meta WHERE key='migrate_db_indexes'").fetchone()
        if row is not None:
            return  # dropped by a copy that was interrupted
        if pg.execute("SELECT EXISTS (SELECT 1 FROM runs)").fetchone()[0]:
            return  # resuming an old copy with its indexes: keep them
        defs = pg.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = "
            "current_schema() AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
            "pg_constraint c WHERE c.conname = i.indexname)",
            (list(_INDEXED),),
        ).fetchall()
        pg.execute(
            "INSERT INTO meta(key, value) VALUES ('migrate_db_indexes', %s)",
            (json.dumps([list(d) for d in defs]),),
        )
        for name, _definition in defs:
            pg.execute(f'DROP INDEX "{name}"')


def _restore_indexes(pg: Any, progress: Progress | None) -> None:
    import json

    row = pg.execute("SELECT value FROM meta WHERE key='migrate_db_indexes'").fetchone()
    if row is None:
        return
    defs = json.loads(row[0])
    with pg.transaction():
        pg.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for i, (name, definition) in enumerate(defs):
            if progress:
                progress("indexes", i, len(defs))
            if pg.execute("SELECT to_regclass(%s) IS NULL", (name,)).fetchone()[0]:
                pg.execute(definition)
        pg.execute("DELETE FROM meta WHERE key='migrate_db_indexes'")
    if progress:
        progress("indexes", len(defs), len(defs))


def _copy_by_key(
    src: sqlite3.Connection,
    pg: Any,
    table: str,
    key: str,
    chunk: int,
    progress: Progress | None,
) -> None:
    """Copy ``table`` in ``key`` order after the highest key PostgreSQL has: chunks read
    from SQLite on a thread (sqlite3 lets go of the GIL while it steps) while the previous
    chunk goes out as binary COPY, sent by psycopg's writer thread."""
    import queue
    import threading

    from psycopg.copy import QueuedLibpqWriter

    columns = _columns(src, table)
    types = _pg_types(pg, table, columns)
    total = src.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    last = pg.execute(f"SELECT max({key}) FROM {table}").fetchone()[0]
    done = 0
    if last is not None:
        done = src.execute(f"SELECT count(*) FROM {table} WHERE {key}<=?", (last,)).fetchone()[0]
    else:
        last = -(1 << 62)
    if progress:
        progress(table, done, total)
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE {key}>? ORDER BY {key} LIMIT ?"
    copy_sql = f"COPY {table} ({', '.join(map(_quote, columns))}) FROM STDIN (FORMAT BINARY)"
    k = columns.index(key)
    chunks: queue.Queue[list[Any] | BaseException] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read(after: Any) -> None:
        try:
            while not stop.is_set():
                rows = src.execute(select, (after, chunk)).fetchall()
                chunks.put(rows)
                if not rows:
                    return
                after = rows[-1][k]
        except BaseException as e:
            chunks.put(e)

    reader = threading.Thread(target=read, args=(last,), name="migrate-db-read", daemon=True)
    reader.start()
    try:
        while True:
            rows = chunks.get()
            if isinstance(rows, BaseException):
                raise rows
            if not rows:
                break
            cur = pg.cursor()
            with pg.transaction(), cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
                copy.set_types(types)
                write = copy.write_row
                for row in rows:
                    write(row)
            done += len(rows)
            if progress:
                progress(table, done, total)
    finally:
        stop.set()
        while reader.is_alive():  # let it finish its read: the connection is shared
            try:
                chunks.get(timeout=0.1)
            except queue.Empty:
                pass
        reader.join()


def _pg_types(pg: Any, table: str, columns: list[str]) -> list[str]:
    found = dict(
        pg.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns "
            "JOIN pg_attribute ON attrelid = %s::regclass AND attname = column_name "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table, table),
        ).fetchall()
    )
    missing = [c for c in columns if c not in found]
    if missing:
        raise StoreError(f"PostgreSQL's {table} has no column {', '.join(missing)}")
    return [found[c] for c in columns]


def _upsert_small(src: sqlite3.Connection, pg: Any) -> None:
    with pg.transaction():
        for table, keys in SMALL:
            columns = _columns(src, table)
            rows = src.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            if table == "meta":
                rows = [r for r in rows if r[0] not in _OWN_META]
            if not rows:
                continue
            others = [c for c in columns if c not in keys]
            sets = ", ".join(f"{_quote(c)}=EXCLUDED.{_quote(c)}" for c in others)
            cols = ", ".join(map(_quote, columns))
            # COPY into a scratch table, then one upsert (row by row cost a second for
            # the rollup's days of a large history)
            pg.execute(f"CREATE TEMP TABLE scratch (LIKE {table}) ON COMMIT DROP")
            types = _pg_types(pg, table, columns)  # not while the COPY holds the connection
            cur = pg.cursor()
            with cur.copy(f"COPY scratch ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            pg.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM scratch "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
            )
            pg.execute("DROP TABLE scratch")


def _move_sequences(pg: Any) -> None:
    with pg.transaction():
        for table in IDENTITY:
            pg.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )


def _verify(src: sqlite3.Connection, pg: Any) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    tables = [t for t, _ in BY_ID] + [t for t, _ in SMALL]
    for table in tables:
        where = f" WHERE key NOT IN {_OWN_META}" if table == "meta" else ""
        n_src = src.execute(f"SELECT count(*) FROM {table}{where}").fetchone()[0]
        n_pg = pg.execute(f"SELECT count(*) FROM {table}{where}").fetchone()[0]
        counts[table] = (n_src, n_pg)
    wrong = {t: c for t, c in counts.items() if c[0] != c[1]}
    if wrong:
        detail = ", ".join(f"{t}: {a} in SQLite, {b} in PostgreSQL" for t, (a, b) in wrong.items())
        raise StoreError(f"the copy does not match its source ({detail}); run it again")
    return counts
