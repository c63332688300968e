"""PostgreSQL store: psycopg 3, connections from a pool, explicit short transactions.

The store's logic (run semantics, retention, the rollup, the ping writer's batch methods)
is SQLite's store, unchanged: this class supplies the connection (``_Conn``: SQLite's
statements in PostgreSQL's dialect, see dialect.py), transactions, migrations, and the
few methods whose SQL has no translation (PRAGMAs, SQLite's JSON functions).

Connections: the first store a process opens connects directly (a CLI command opens one;
a bad URL, password or database name is reported as PostgreSQL words it); later ones
come from a pool per URL (the server opens one per thread and one per page render), so
that opening a store costs no new connection.

Autocommit is on and transactions are explicit (``BEGIN``/``COMMIT`` in ``_PgTx``), as
in SQLite: a read outside a write transaction sees the latest commit, and a store
method's writes commit together.
"""

from __future__ import annotations

import atexit
import itertools
import re
import threading
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.pq import TransactionStatus

from cronwatch.core.errors import StaleCache, StoreBusy, StoreError
from cronwatch.core.events import expand
from cronwatch.store.postgres import arrays, leader
from cronwatch.store.postgres.dialect import DML, RETURNING, SQL, translate, unnest_insert
from cronwatch.store.postgres.eventlog import EventLog, Listener
from cronwatch.store.postgres.leader import Leads
from cronwatch.store.postgres.tcp import tcp_options
from cronwatch.store.rollup import Rollup
from cronwatch.store.sqlite import migrations
from cronwatch.store.sqlite.backend import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from cronwatch.store.interface import EventWaker, Maintenance, Store

_IDLE, _INTRANS, _INERROR = (
    TransactionStatus.IDLE,
    TransactionStatus.INTRANS,
    TransactionStatus.INERROR,
)


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    head, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{head}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def without_nul(value: Any) -> Any:
    """``value`` with every NUL character of its strings replaced (U+FFFD): PostgreSQL's
    text cannot hold one, SQLite's can, and a ping whose message has one is still a ping
    to record. Bytes (captured output) are stored as they are."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list | tuple):
        return type(value)(without_nul(v) for v in value)
    if isinstance(value, dict):
        return {k: without_nul(v) for k, v in value.items()}
    return value


class _Cursor(psycopg.Cursor[Any]):
    """A cursor with DB-API's ``lastrowid`` (set from ``RETURNING id``)."""

    lastrowid: int | None = None


class _Conn:
    """What the store logic needs of a connection (sqlite3's ``execute``/``executemany``
    returning a cursor), over psycopg, with SQLite's statements translated."""

    def __init__(self, pg: psycopg.Connection[Any]) -> None:
        self._pg: psycopg.Connection[Any] | None = pg
        self.total_changes = 0
        self.savepoints = 0
        # A transaction's BEGIN waits to go out with its first statement without
        # parameters (the ping writer's first, data_version): a round trip less.
        self.begin_pending = False
        # A connection the server closed (a restart, a failover, an idle timeout) is
        # replaced at the next use outside a transaction: a long-lived store (the
        # server's) would otherwise fail every call from then on.
        self.reconnect: Callable[[], psycopg.Connection[Any]] | None = None
        # The writer's look for changes to what it remembers, put off (data_version): run
        # before the transaction's first statement, unless the batch's rows go in one
        # statement that makes the look itself (PostgresStore.add_quick_rows).
        self.deferred_check: Callable[[], None] | None = None
        # That one statement was its own transaction, committed: nothing left to commit.
        self.autocommitted = False

    def _usable(self) -> psycopg.Connection[Any]:
        assert self._pg is not None, "the store is closed"
        if self._pg.closed and self.reconnect is not None:
            self._pg = self.reconnect()
        return self._pg

    @property
    def pg(self) -> psycopg.Connection[Any]:
        """The connection, its transaction begun."""
        self._usable()
        assert self._pg is not None
        if self.deferred_check is not None and self.begin_pending:
            self.deferred_check()  # begins the transaction with its look
        if self.begin_pending:
            self.begin_pending = False
            self._pg.execute("BEGIN")
        return self._pg

    def detach(self) -> psycopg.Connection[Any] | None:
        pg, self._pg = self._pg, None
        return pg

    def query(self, q: str) -> Any:
        """A statement without parameters (no ``%`` either), sent with a pending BEGIN."""
        self._usable()
        assert self._pg is not None
        if self.deferred_check is not None and self.begin_pending:
            self.deferred_check()
        if not self.begin_pending:
            return self._pg.execute(q)
        self.begin_pending = False
        cur = self._pg.execute("BEGIN; " + q)
        cur.nextset()
        return cur

    def execute(self, sql: str, params: Any = (), /) -> Any:
        q, flags = translate(sql)
        if not params and self.begin_pending and "%" not in q:
            cur = self.query(q)
        else:
            try:
                cur = self.pg.execute(q, params)
            except psycopg.DataError as e:  # found while encoding the parameters: unsent
                if "NUL" not in str(e):
                    raise
                cur = self.pg.execute(q, without_nul(params))
        if flags & DML:
            if flags & RETURNING:
                row = cur.fetchone()
                cur.lastrowid = None if row is None else row[0]
            self.total_changes += max(cur.rowcount, 0)
        return cur

    def executemany(self, sql: str, params: Any, /) -> Any:
        q, flags = translate(sql)
        params = without_nul(list(params))
        if not params:
            return None
        cur = self.pg.cursor()
        cur.executemany(q, params)
        if flags & DML:
            self.total_changes += max(cur.rowcount, 0)
        return cur

    def status(self) -> TransactionStatus:
        if self.begin_pending:
            return _INTRANS
        assert self._pg is not None, "the store is closed"
        if self._pg.closed:  # lost: no transaction any more (the next use reconnects)
            return _IDLE
        return self._pg.info.transaction_status


# --- connections ----------------------------------------------------------------------------
_lock = threading.Lock()
_opened: set[str] = set()  # URLs this process connected to directly once
_pools: dict[str, Any] = {}


class _BoolAsInt(Dumper):
    """Python's bools as 0/1: the schema's flags are INTEGER columns, as in SQLite."""

    oid = psycopg.adapters.types["int2"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configure(pg: psycopg.Connection[Any]) -> None:
    pg.cursor_factory = _Cursor
    pg.adapters.register_dumper(bool, _BoolAsInt)
    arrays.register(pg.adapters)


def _connect(url: str, timeout: float) -> tuple[psycopg.Connection[Any], Any]:
    """A connection (and the pool it came from, or None)."""
    with _lock:
        pool = _pools.get(url)
        first = url not in _opened
        _opened.add(url)
    if pool is None and not first:
        from psycopg_pool import ConnectionPool

        # the server's connections: a pool that cannot connect in 5 s says so (/healthz)
        alive = tcp_options(url, connect_timeout="5")
        with _lock:
            pool = _pools.get(url)
            if pool is None:
                pool = _pools[url] = ConnectionPool(
                    url, min_size=1, max_size=16, kwargs={"autocommit": True, **alive},
                    configure=_configure, open=True, name="cronwatch",
                )  # fmt: skip
                atexit.register(pool.close, timeout=1.0)
    if pool is not None:
        try:
            return pool.getconn(timeout=max(timeout, 1.0)), pool
        except Exception:  # the pool cannot connect: connect here, and say why
            pass
    if timeout < 2:
        _probe(url, timeout)
    pg = psycopg.connect(
        url, autocommit=True, connect_timeout=max(2, int(timeout + 0.999)), **tcp_options(url)
    )
    _configure(pg)
    return pg, None


def _probe(url: str, timeout: float) -> None:
    """Fail within ``timeout`` if the server cannot be reached at all: libpq waits at least
    2 s for a connection, more than a wrapper's post-run budget (1 s by default)."""
    import os
    import socket

    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = str(params.get("host") or os.environ.get("PGHOST") or "/var/run/postgresql")
    host = host.split(",")[0]
    port = int(str(params.get("port") or os.environ.get("PGPORT") or 5432).split(",")[0])
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(f"{host}/.s.PGSQL.{port}")
        else:
            socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise psycopg.OperationalError(
            f"connection to {host} port {port} failed: {e.strerror or 'timed out'}"
        ) from None


def close_pools() -> None:
    """Close this process's connection pools (their connections in use close when given
    back). Stores opened later connect again."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
        _opened.clear()
    for pool in pools:
        pool.close(timeout=1.0)


class PostgresStore(SQLiteStore):
    def __init__(self, url: str, *, timeout: float = 10.0, create: bool = True) -> None:
        self.url = url
        self.path = redact(url)  # what messages name
        try:
            pg, self._pool = _connect(url, timeout)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to {redact(url)}: {_reason(e)}") from None
        self.conn = _Conn(pg)
        self.conn.reconnect = self._reconnect
        self._timeout = timeout
        # the inherited logic runs its statements on ``db``: SQLite's text, translated
        self.db = self.conn  # type: ignore[assignment]
        self.seal_cache = _PgRollup(self.conn, SQL)
        self.rollup = self.seal_cache
        self._job_ids: dict[str, int] = {}
        self._swept: dict[int, float] = {}
        self._bulk = False
        self._versions: tuple[int, int, bool] | None = None  # see data_version
        self._mine: list[int] = []
        self._looked = False
        self._writer = False  # the ping writer's long-lived store (writer_maintenance)
        self._epoch: int | None = None  # cache_epoch as of what the writer remembers
        self._epoch_version = 0  # data_version for the writer: moved by others' changes
        # Batches for which the writer looks at once, after one that found another
        # connection's commit (another replica writing would undo every batch put off),
        # and how many the next such find makes: doubled by each, back to 1 by a success.
        self._look_now = 0
        self._backoff = 1
        try:
            self.set_timeout(timeout)
            self._migrate_pg(create)
        except psycopg.Error as e:
            self.close()
            raise StoreError(f"cannot open database {redact(url)}: {_reason(e)}") from None
        except BaseException:
            self.close()
            raise

    def _migrate_pg(self, create: bool) -> None:
        pg = self.conn.pg
        steps = migrations.POSTGRES
        row = pg.execute(
            "SELECT value FROM meta WHERE key='schema_version'"
            if _has_meta(pg)
            else "SELECT NULL WHERE false"
        ).fetchone()
        version = int(row[0]) if row else 0
        if version >= len(steps):
            return
        if version == 0 and not create:
            raise StoreError(f"no cronwatch tables in {redact(self.url)} (nothing recorded yet)")
        with pg.transaction():
            # Several servers may start on a new database at once: one migrates.
            pg.execute("SELECT pg_advisory_xact_lock(7302650913)")
            pg.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = pg.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            for step in steps[version:]:
                if step.strip():
                    pg.execute(step)
            pg.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                (str(len(steps)),),
            )

    def close(self) -> None:
        _close_leads(self)
        conn = getattr(self, "conn", None)
        pg = None if conn is None else conn.detach()
        if conn is None or pg is None:
            return
        conn.begin_pending = False
        if self._pool is not None:
            try:
                self._pool.putconn(pg)
                return
            except Exception:
                pass
        pg.close()

    def _reconnect(self) -> psycopg.Connection[Any]:
        old = self.conn.detach()
        if old is not None and self._pool is not None:
            try:
                self._pool.putconn(old)  # the pool discards a closed connection
            except Exception:
                pass
        try:
            pg, self._pool = _connect(self.url, self._timeout)
        except psycopg.Error as e:
            self._pool = None
            self.conn._pg = old  # still closed: the next use tries again
            raise StoreError(f"cannot connect to {redact(self.url)}: {_reason(e)}") from None
        pg.execute(f"SET lock_timeout = {max(1, int(self._timeout * 1000))}")
        if self._versions is not None:  # whatever happened meanwhile: caches are stale
            self._versions = (self._versions[0], 0, False)
        self._forget()
        return pg

    def set_timeout(self, seconds: float) -> None:
        self._timeout = seconds
        # How long a statement waits for a row lock another transaction holds (SQLite's
        # busy timeout); 0 would mean forever here.
        self.conn.pg.execute(f"SET lock_timeout = {max(1, int(seconds * 1000))}")

    # --- transactions ---------------------------------------------------------------------
    def _write(self) -> _PgTx:  # type: ignore[override]
        return _PgTx(self, self._forget)

    def transaction(self) -> _PgTx:  # type: ignore[override]
        return _PgTx(self, self._forget)

    def changes(self) -> int:
        return self.conn.total_changes

    def in_transaction(self) -> bool:
        """Whether the transaction can go on: open, or failed inside a savepoint (which
        rolling back to it recovers). A statement that failed outside a savepoint has
        aborted the whole transaction: as SQLite's rollback of it, that is False."""
        status = self.conn.status()
        return status == _INTRANS or (status == _INERROR and self.conn.savepoints > 0)

    def savepoint(self) -> None:
        self.conn.pg.execute("SAVEPOINT op")
        self.conn.savepoints += 1

    def rollback_to_savepoint(self) -> None:
        self.conn.pg.execute("ROLLBACK TO SAVEPOINT op")
        self.release_savepoint()

    def release_savepoint(self) -> None:
        self.conn.pg.execute("RELEASE SAVEPOINT op")
        self.conn.savepoints -= 1

    def data_version(self) -> int:
        """Changes when another connection may have committed a write since the last call.

        The ping writer (``writer_maintenance``) asks a narrower question: whether anything
        it remembers (jobs, alert states, open runs, the project key) may have changed.
        Triggers count such changes in ``cache_epoch`` (migration 16), so other replicas'
        steady pings, which change none of it, do not make it forget; see ``_epoch_look``.

        It does not look at once when its last look found nothing: it assumes nothing
        changed and the look is made with the batch's first statement
        (``_Conn.deferred_check``), or inside the one statement that writes a batch of
        quick pings (``add_quick_rows``). If the look then finds a change, the batch is
        undone and ``StaleCache`` runs it again. A steady batch costs one statement
        instead of four (BEGIN and the look, the rows, COMMIT): on PostgreSQL each is a
        round trip and a fixed cost on both sides.
        """
        if not self._writer:
            return self._read_version()
        if self.conn.begin_pending and self._epoch is not None and self._may_defer():
            self.conn.deferred_check = self._check_deferred
        else:
            self._epoch_look()
        return self._epoch_version

    def _may_defer(self) -> bool:
        if self._look_now:
            self._look_now -= 1
            return False
        return True

    def _epoch_look(self) -> None:
        """Read the epoch (with a pending BEGIN); a new one means another's change."""
        looked = self.conn.status() == _INTRANS
        row = self.conn.query(
            "SELECT n, (SELECT sealed FROM rollup WHERE id=1) FROM cache_epoch WHERE id=1"
        ).fetchone()
        assert row is not None
        if looked:  # the seal for the rest of this transaction, read with it
            self.seal_cache.known = row[1]
        if row[0] != self._epoch:
            self._epoch = int(row[0])
            self._epoch_version += 1

    def _check_deferred(self) -> None:
        self.conn.deferred_check = None
        before = self._epoch_version
        self._epoch_look()
        if self._epoch_version != before:
            self._stale()

    def _stale(self) -> NoReturn:
        self._look_now = self._backoff
        self._backoff = min(self._backoff * 2, 64)
        raise StaleCache(
            "another connection changed what the writer remembers: the batch runs again"
        )

    def _read_version(self) -> int:
        """``data_version``, looked up now.

        PostgreSQL has no such counter; transaction ids tell it. Each call takes an id
        (in the writer's batch, its transaction's: it writes anyway) and looks at the
        snapshot. If no write transaction was in flight and ours was the next id to be
        given out, at the last call and at this one, and every id given out in between
        was one of this connection's commits, nobody else wrote. Under any doubt the
        version changes: the caller's caches are reloaded, which is only slower."""
        self._looked = self.conn.status() == _INTRANS
        row = self.conn.query(
            "SELECT pg_current_xact_id()::text::bigint, pg_snapshot_xmin(s)::text::bigint, "
            "pg_snapshot_xmax(s)::text::bigint, (SELECT sealed FROM rollup WHERE id=1) "
            "FROM pg_current_snapshot() s"
        ).fetchone()
        assert row is not None
        ours, xmin, xmax, sealed = row
        if self._looked:  # the seal for the rest of this transaction, read with it
            self.seal_cache.known = sealed
        clean = xmin == xmax == ours
        state, mine = self._versions, sorted(self._mine)
        self._mine = []
        version = 0
        if state is not None:
            version, last_ours, last_clean = state
            if not (last_clean and clean and mine == list(range(last_ours + 1, ours))):
                version += 1
        self._versions = (version, ours, clean)
        return version

    def _before_commit(self) -> None:
        """Remember this transaction's id when ``data_version`` did not take it; for the
        writer, the epoch its own changes moved (see ``_EPOCH_END``)."""
        if self._writer:
            row = self.conn.pg.execute(_EPOCH_END).fetchone()
            assert row is not None
            n, ours, bumps = int(row[0]), bool(row[1]), int(row[2])
            if self._epoch is None or n != self._epoch + (bumps if ours else 0):
                self._epoch_version += 1  # another's change came in meanwhile: forget
            self._epoch = n
            return
        if self._versions is not None and not self._looked:
            row = self.conn.pg.execute("SELECT pg_current_xact_id_if_assigned()::text").fetchone()
            if row is not None and row[0] is not None:
                self._mine.append(int(row[0]))

    def writer_maintenance(self) -> Maintenance:
        """Nothing runs beside PostgreSQL's writer (its checkpoints are the server's)."""
        self._writer = True
        return _NoMaintenance()

    def _insert_rows(self, head: str, values: str, rows: list[tuple[Any, ...]]) -> int:
        """Many rows in one statement, in order: a column's values as one array."""
        if not rows:
            return 0
        sql = unnest_insert(head, values)
        if sql is None:
            return super()._insert_rows(head, values, rows)
        cur = self._arrays(sql, [list(c) for c in zip(*rows, strict=True)])
        self.conn.total_changes += max(cur.rowcount, 0)
        return int(cur.rowcount)

    def _arrays(
        self, sql: str, params: list[Any], pg: psycopg.Connection[Any] | None = None
    ) -> Any:
        """Run ``sql`` on ``pg`` (default: the connection, its transaction begun), its
        ``%b::T[]`` arrays encoded by arrays.py (their NULs replaced there)."""
        on = self.conn.pg if pg is None else pg
        return on.execute(sql, _encoded(on, sql, params))

    _FINISHED = (
        "INSERT INTO runs(uid, job_id, env, status, started_at, ended_at, "
        "duration, exit_code, host, message, source) VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?)",
    )

    def add_finished_runs(
        self, rows: list[tuple[Any, ...]], jids: Iterable[int], *, now: float
    ) -> None:
        """SQLite's ``add_finished_runs`` with the runs and their jobs' next-check reset in
        one statement: each statement is a round trip to the server, and the ping writer
        makes this one for every batch."""
        insert = unnest_insert(*self._FINISHED)
        assert insert is not None  # every column's type is known
        jids = list(jids)
        with self._write():
            if not rows:
                self.conn.execute(
                    "UPDATE jobs SET next_check=NULL WHERE id = ANY(?) AND next_check IS NOT NULL",
                    (jids,),
                )
            else:
                self._arrays(
                    f"WITH ins AS ({insert} RETURNING 1) UPDATE jobs SET next_check=NULL "
                    "WHERE id = ANY(%b::bigint[]) AND next_check IS NOT NULL",
                    [*(list(c) for c in zip(*rows, strict=True)), jids],
                )
                self.conn.total_changes += len(rows)
                self._fold_late([(r[1], r[4]) for r in rows])
            for jid in jids:
                self._retention(jid, now)

    # --- the ping writer's buffered rows ---------------------------------------------------
    flush_early = False  # each statement costs a round trip: write them once, at the end
    _quick: _Prepared | None = None

    def add_quick_rows(
        self,
        runs: list[tuple[Any, ...]],
        jids: Iterable[int],
        events: list[tuple[float, str, str]],
        *,
        now: float,
    ) -> None:
        """A batch of quick pings whose transaction has sent nothing yet (the steady
        case) is one statement, its own transaction: the events, the runs, the jobs'
        next-check reset, and the put-off look for changes to what the writer remembers
        (``data_version``), which undoes the statement if it finds one. Otherwise (a
        transaction under way, a retention sweep or the seal due, no look put off), the
        same rows by the usual statements."""
        conn = self.conn
        jids = list(jids)
        if not (
            conn.begin_pending
            and conn.deferred_check is not None
            and self._epoch is not None
            and runs
            and not self._sweep_due(jids, now)
        ):
            super().add_quick_rows(runs, jids, events, now=now)
            return
        params: list[Any] = [list(c) for c in zip(*events, strict=True)] if events else [[]] * 3
        params += [list(c) for c in zip(*runs, strict=True)]
        # The look: nothing the writer remembers changed since. The seal: a run of a
        # sealed day needs its day folded again (the usual statements do it).
        params += [jids, self._epoch, min(r[4] for r in runs)]
        conn.deferred_check = None
        conn.begin_pending = False  # no BEGIN: the statement is its own transaction
        try:
            if self._quick is None:
                self._quick = _Prepared("cronwatch_quick", _QUICK_SQL)
            self._quick.run(conn._usable(), params)
        except pg_errors.InvalidTextRepresentation as e:
            if _STALE not in str(e):
                raise _error(e, "database write failed") from None
            self._epoch = None  # the next look is made at once, and reads it again
            self._stale()
        except psycopg.Error as e:
            raise _error(e, "database write failed") from None
        conn.autocommitted = True
        self._backoff = 1
        conn.total_changes += len(runs) + len(events)

    # Only the index's order may answer it: with statistics that lag a fast-growing
    # ``runs`` (a new or just migrated database, before autoanalyze), the planner picked
    # a bitmap scan of all the job's runs and a sort, every sweep, tens of ms growing with
    # the history, on the ping writer's path. SQLite's text says INDEXED BY.
    _PIN_INDEX = (
        "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; "
        "SET LOCAL enable_seqscan = off"
    )
    _UNPIN = (
        "SET LOCAL enable_sort TO DEFAULT; SET LOCAL enable_bitmapscan TO DEFAULT; "
        "SET LOCAL enable_seqscan TO DEFAULT"
    )

    def _nth_newest_start(self, jid: int, n: int) -> float | None:
        with self._write():
            self.conn.query(self._PIN_INDEX)
            try:
                return super()._nth_newest_start(jid, n)
            finally:
                self.conn.query(self._UNPIN)

    def _sweep_due(self, jids: list[int], now: float) -> bool:
        """Whether ``_retention`` would do more than look at the clock for these jobs."""
        if now >= self.rollup.seal_due:
            return True
        swept = self._swept
        for jid in jids:
            last = swept.get(jid)
            if last is None or not 0 <= now - last < self.RETENTION_EVERY:
                return True
        return False

    # --- what has no translation -----------------------------------------------------------
    def alert_summary(self, job: str, env: str = "") -> dict[str, Any] | None:
        return self.get_alert_state(job, env)

    def import_rows(
        self,
        rows: list[tuple[Any, ...]],
        *,
        now: float,
        days: dict[str, set[int]] | None = None,
    ) -> int:
        return self._add_rows(rows, now, days)

    # --- the leader: an advisory lock on a connection of its own (leader.py) ---------------
    _leads: Leads | None = None

    def _lead_conns(self) -> Leads:
        if self._leads is None:
            self._leads = Leads(self.url, self._timeout)
        return self._leads

    def acquire_lead(self, role: str, holder: str, *, now: float, ttl: float) -> bool:
        try:
            return self._lead_conns().acquire(role, holder, ttl)
        except psycopg.Error as e:
            raise _error(e, f"cannot take the {role} lock") from None

    def renew_lead(self, role: str, holder: str, *, now: float, ttl: float) -> bool:
        return self._leads is not None and self._leads.renew(role, holder)

    def release_lead(self, role: str, holder: str) -> None:
        if self._leads is not None:
            self._leads.release(role, holder)

    def lead_holder(self, role: str, *, now: float) -> str | None:
        row = self.conn.execute(leader.HOLDER, (leader.SPACE, leader.role_key(role))).fetchone()
        return None if row is None else str(row[0])

    # --- the event log: ids in order, and notifications (eventlog.py) -----------------------
    _events: EventLog | None = None

    def _event_log(self) -> EventLog:
        if self._events is None:
            self._events = EventLog()
        return self._events

    def events_since(self, last_id: int, *, limit: int = 500) -> list[tuple[int, float, str, str]]:
        rows = self._event_log().since(self.conn, last_id, limit)
        return [(i, at, t, expand(at, t, d)) for i, at, t, d in rows]

    def last_event_id(self) -> int:
        return self._event_log().newest(self.conn)

    def listen_events(self, wake: Callable[[], None]) -> Listener:
        log = self._event_log()
        return Listener(self.url, wake, timeout=self._timeout, held=lambda: log.gap is not None)


def _close_leads(store: PostgresStore) -> None:
    if store._leads is not None:
        store._leads.close()
        store._leads = None


class _PgRollup(Rollup):
    """The rollup, with the seal the writer's transaction read at its start (with
    ``data_version``: a round trip less a batch). The seal moves once a day, in
    ``seal``, which reads it again with the row locked (``sealed_to_move``)."""

    def __init__(self, db: _Conn, sql: Any) -> None:
        super().__init__(db, sql)
        self.conn = db
        self.known: float | None = None  # valid inside the current transaction only

    def sealed(self) -> float:
        if self.known is not None and self.conn.status() == _INTRANS:
            return self.known
        return super().sealed()

    def set_sealed(self, at: float) -> None:
        self.known = None
        super().set_sealed(at)

    def seal(self, now: float) -> None:
        self.known = None
        super().seal(now)


class _NoMaintenance:
    def committed(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _PgTx:
    """BEGIN ... COMMIT, re-entrant, turning psycopg errors into StoreError."""

    def __init__(self, store: PostgresStore, on_rollback: Callable[[], None]) -> None:
        self.store = store
        self.outer = False
        self.on_rollback = on_rollback

    def __enter__(self) -> None:
        db = self.store.conn
        if db.status() == _IDLE:
            self.outer = True
            db.autocommitted = False
            db.deferred_check = None
            db.savepoints = 0
            self.store._looked = False
            self.store.seal_cache.known = None
            db.begin_pending = True  # sent with the first statement (_Conn.pg, query)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.outer:
            return
        db = self.store.conn
        check, db.deferred_check = db.deferred_check, None
        if db.autocommitted:  # its one statement committed it (add_quick_rows)
            db.autocommitted = False
            if exc_type is None:
                return
        if exc_type is None:
            if db.begin_pending and check is not None:
                # Nothing was sent, yet the batch was answered from the writer's caches
                # (a disabled job's pings): the look put off must still be made, or those
                # answers outlive another replica's change (a rotated project key).
                try:
                    check()
                except BaseException as e:
                    self._rollback()
                    if isinstance(e, psycopg.Error):
                        raise _error(e, "database write failed") from None
                    raise
            if db.begin_pending:  # nothing was sent: nothing to commit
                db.begin_pending = False
                self.store.seal_cache.known = None
                return
            try:
                if db.status() != _INTRANS:  # a failed statement aborted it
                    raise StoreError("database write failed: the transaction was aborted")
                self.store._before_commit()
                self.store.seal_cache.known = None
                db.pg.execute("COMMIT")
                return
            except (psycopg.Error, StoreError) as e:
                self._rollback()
                if isinstance(e, StoreError):
                    raise
                raise _error(e, "database write failed") from None
        self._rollback()
        if isinstance(exc, psycopg.Error):
            raise _error(exc, "database write failed") from None

    def _rollback(self) -> None:
        db = self.store.conn
        db.savepoints = 0
        db.deferred_check = None
        versions = self.store._versions
        if versions is not None:  # its transaction id is a gap: the next look is made at once
            self.store._versions = (versions[0], versions[1], False)
        self.store.seal_cache.known = None
        if db.begin_pending:
            db.begin_pending = False
            self.on_rollback()
            return
        try:
            if db.status() != _IDLE:
                db.pg.execute("ROLLBACK")
        except psycopg.Error:
            pass  # a lost connection: the server rolled it back
        self.on_rollback()


_STALE = "cronwatch: what the ping writer remembers changed"
# No ON CONFLICT on the runs: a run id already taken (the writer draws 80 random bits a
# millisecond) must fail its ping, not acknowledge it unstored; the batch is then replayed
# a ping at a time (ingest.Committer). It also cost a fifth of the statement's CPU.
_QUICK_SQL = (
    "WITH e AS (INSERT INTO events (at, type, data)"
    " SELECT * FROM unnest(%b::float8[], %b::text[], %b::text[])),"
    " r AS (INSERT INTO runs (uid, job_id, env, status, started_at, ended_at, duration,"
    " exit_code, host, message, source) SELECT * FROM unnest(%b::text[], %b::bigint[],"
    " %b::text[], %b::text[], %b::float8[], %b::float8[], %b::float8[], %b::integer[],"
    " %b::text[], %b::text[], %b::text[])),"
    " u AS (UPDATE jobs SET next_check=NULL WHERE id = ANY(%b::bigint[])"
    " AND next_check IS NOT NULL)"
    " SELECT CAST(CASE WHEN (SELECT n FROM cache_epoch WHERE id=1) = %b"
    " AND coalesce((SELECT sealed FROM rollup WHERE id=1), '-infinity') <= %b"
    f" THEN '0' ELSE '{_STALE}' END AS integer)"
)


def _encoded(pg: psycopg.Connection[Any], sql: str, params: list[Any]) -> list[Any]:
    """``params`` of ``sql`` with its ``%b::T[]`` arrays encoded by arrays.py (text only
    on a UTF-8 connection: what it writes)."""
    return arrays.params(sql, params, utf8=pg.info.encoding == "utf-8")


class _Prepared:
    """A statement sent by libpq directly, prepared once a connection, its array
    parameters encoded by arrays.py: the ping writer's steady batch (``_QUICK_SQL``), a
    statement a few milliseconds. psycopg's ``execute`` around it (a cursor, the query's
    conversion, its prepared-statement bookkeeping, the result's) cost the writer about
    as much as encoding the rows. What arrays.py does not write goes through psycopg."""

    def __init__(self, name: str, sql: str) -> None:
        self.name = name.encode()
        self.sql = sql  # psycopg's %b placeholders
        n = itertools.count(1)
        self.text = re.sub(r"%b", lambda _m: f"${next(n)}", sql).encode()
        self.on: Any = None  # the libpq connection it is prepared on

    def run(self, pg: psycopg.Connection[Any], params: list[Any]) -> None:
        values = _encoded(pg, self.sql, params)
        if any(type(v) is list for v in values):
            pg.execute(self.sql, values)
            return
        args = [v if isinstance(v, bytes) else repr(v).encode() for v in values]
        formats = [1 if isinstance(v, bytes) else 0 for v in values]
        pgconn = pg.pgconn
        for attempt in (1, 2):
            if self.on is not pgconn:
                self._prepare(pg)
            res = pgconn.exec_prepared(self.name, args, formats)
            if res.status == pq.ExecStatus.TUPLES_OK:
                return
            error = pg_errors.error_from_result(res, encoding=pg.info.encoding)
            if isinstance(error, pg_errors.InvalidSqlStatementName) and attempt == 1:
                self.on = None  # deallocated behind our back (DISCARD ALL, a pooler)
                continue
            raise error

    def _prepare(self, pg: psycopg.Connection[Any]) -> None:
        res = pg.pgconn.prepare(self.name, self.text)
        if res.status == pq.ExecStatus.COMMAND_OK:
            self.on = pg.pgconn
            return
        error = pg_errors.error_from_result(res, encoding=pg.info.encoding)
        if not isinstance(error, pg_errors.DuplicatePreparedStatement):
            raise error
        self.on = pg.pgconn  # prepared by an earlier store on this connection (a pool's)


# At the end of a writer's transaction: the epoch, and how many of its moves were this
# transaction's (the triggers count them): it holds the epoch's row from its first move
# to its commit, so any other move is one committed before that, which it may have read
# around; then it forgets.
_EPOCH_END = (
    "SELECT n, by_xid IS NOT NULL AND by_xid = pg_current_xact_id_if_assigned(), bumps"
    " FROM cache_epoch WHERE id=1"
)


def _has_meta(pg: psycopg.Connection[Any]) -> bool:
    row = pg.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


_BUSY = (
    pg_errors.LockNotAvailable,
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.QueryCanceled,
)


def _error(e: Exception, what: str) -> StoreError:
    """A psycopg error as the StoreError a caller can act on (busy: try again later)."""
    if isinstance(e, _BUSY):
        return StoreBusy(f"{what}: {_reason(e)} (another transaction holds the rows)")
    return StoreError(f"{what}: {_reason(e)}")


if TYPE_CHECKING:  # mypy checks here that the PostgreSQL store is a whole Store

    def _is_a_store(s: PostgresStore) -> Store:
        return s

    def _is_a_waker(s: PostgresStore) -> EventWaker:  # it hears other processes' events
        return s
