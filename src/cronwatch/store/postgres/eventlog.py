"""The event log on PostgreSQL: ids read in order although they commit out of order, and a
listener that hears other processes' events (``EventStore``, ``EventWaker``).

Event ids come from an identity sequence, which hands them out when a row is inserted,
not when its transaction commits: a ping writer's batch may hold id 10 uncommitted while
another replica's transaction commits id 11. A reader that returned 11 and went on from
there (``id > 11``) would never see 10. So a reader stops before a missing id until that
id cannot appear any more: a transaction that inserts into ``events`` holds a
``RowExclusiveLock`` on the table (taken before the sequence is asked) until it ends, and
``pg_locks`` lists those transactions. When a read finds a gap, the transactions then
writing events are noted; once none of them is running, a new read sees whichever of them
committed, and what is still missing was rolled back (or deleted) for good. A gap whose
writers run longer than ``HOLD`` is passed anyway (logged): streams must not stall behind
a forgotten open transaction.

Ids at or below ``final`` are known to be complete, so readers behind it (a stream
catching up with ``Last-Event-ID``) are not held up by gaps passed before.

Notifications: migration 15's statement-level trigger does ``pg_notify(CHANNEL)`` in every
transaction that inserts events (once a transaction: PostgreSQL folds equal
notifications), whichever process writes them; ``Listener`` hears it on a connection of
its own, in a thread, and calls ``wake``; while a gap holds the reader back, it also wakes
it every ``RECHECK`` seconds (a rollback notifies nobody).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from cronwatch.store.postgres.tcp import tcp_options

log = logging.getLogger("cronwatch")

CHANNEL = "cronwatch_events"  # the trigger of migration 15 notifies it
HOLD = 30.0  # seconds a gap may hold readers back while its writers still run
SETTLE = 0.5  # seconds ``newest`` waits, at most, for the writers it saw to end
RECHECK = 0.1  # seconds between reads while a gap holds the reader (Listener)

_WRITERS = (
    "SELECT DISTINCT virtualtransaction FROM pg_locks WHERE locktype = 'relation' "
    "AND relation = 'events'::regclass AND mode = 'RowExclusiveLock' AND granted "
    "AND pid <> pg_backend_pid() "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_SINCE = "SELECT id, at, type, data FROM events WHERE id>? ORDER BY id LIMIT ?"

Row = tuple[int, float, str, str]


@dataclass
class _Gap:
    upto: int  # the newest id of the read that found it: its missing ids are at or below
    writers: frozenset[str]  # transactions writing events right after that read
    seen: float  # monotonic


class EventLog:
    """One store's reading position in the log: what is complete, the gap waited on."""

    def __init__(self) -> None:
        self.final: int | None = None  # every id at or below it is committed or never will be
        self.gap: _Gap | None = None

    def _writers(self, db: Any) -> frozenset[str]:
        return frozenset(str(r[0]) for r in db.execute(_WRITERS).fetchall())

    def since(self, db: Any, last: int, limit: int) -> list[Row]:
        return self._since(db, last, limit, again=True)

    def _since(self, db: Any, last: int, limit: int, *, again: bool) -> list[Row]:
        gap = self.gap
        cleared = False
        if gap is not None:
            # asked before the read: a writer that ended before it has its rows in it
            if time.monotonic() - gap.seen > HOLD:
                cleared = True
                log.warning("event log: ids up to %d missing for %.0f s while their "
                            "transactions run; streams go on past them", gap.upto, HOLD)  # fmt: skip
            else:
                cleared = not (gap.writers & self._writers(db))
        rows: list[Row] = db.execute(_SINCE, (last, limit)).fetchall()
        if not rows:
            return rows
        final = self.final
        base = final if final is not None and last <= final else last
        expected, stop = last + 1, None
        for i, row in enumerate(rows):
            rid = row[0]
            missing = rid > expected and rid - 1 > base  # ids missing below this one
            if missing and not (cleared and gap is not None and rid - 1 <= gap.upto):
                stop = i
                break
            expected = rid + 1
        out = rows if stop is None else rows[:stop]
        if out and final is not None and last <= final:
            self.final = max(final, out[-1][0])
        if cleared or (gap is not None and stop is None and out[-1][0] >= gap.upto):
            self.gap = gap = None  # what it covered is passed (or is ahead of another gap)
        if stop is not None and gap is None:
            writers = self._writers(db)  # after the read: any writer of a missing id is here
            self.gap = _Gap(rows[-1][0], writers, time.monotonic())
            if not writers and again:  # all ended: what they committed is readable now
                return self._since(db, last, limit, again=False)
        return out

    def newest(self, db: Any) -> int:
        """The newest event's id, once the transactions that may hold smaller ids have
        ended (those writing events right after the read; usually a batch, a few ms):
        a stream that starts from it misses nothing committed after it started. After
        ``SETTLE`` it returns anyway (logged): it runs in the server's event loop."""
        row = db.execute("SELECT max(id) FROM events").fetchone()
        top = int(row[0] or 0)
        writers = self._writers(db)
        until = time.monotonic() + SETTLE
        while writers and time.monotonic() < until:
            time.sleep(0.002)
            writers &= self._writers(db)
        if writers:
            log.warning("event log: a transaction has written events for over %.1f s; a "
                        "stream starting now may miss them", SETTLE)  # fmt: skip
        self.final = max(self.final or 0, top)
        return top


class Listener:
    """A thread on a connection of its own that calls ``wake`` on every notification of
    ``CHANNEL``; it reconnects after a failure (and wakes then, as it may have missed
    some). ``close`` stops it."""

    def __init__(
        self,
        url: str,
        wake: Callable[[], None],
        *,
        timeout: float = 10.0,
        held: Callable[[], bool] = lambda: False,
    ) -> None:
        self.url = url
        self.wake = wake
        # Whether the reader waits before a missing id: a transaction that rolls back
        # notifies nobody, so meanwhile it wakes the reader every RECHECK seconds.
        self.held = held
        self.timeout = timeout
        self.stopped = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in effect
        self.thread = threading.Thread(target=self._run, name="cronwatch-listen", daemon=True)
        self.thread.start()

    def _call(self) -> None:
        try:
            self.wake()
        except Exception:  # the loop is closing: nobody to wake
            pass

    def _run(self) -> None:
        # the store's TCP defaults: a listener whose server vanished silently would wait
        # for notifications that never come (the streams then only poll) instead of
        # connecting again
        failed = 0.0
        while not self.stopped.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, application_name="cronwatch listener",
                    connect_timeout=max(2, int(self.timeout + 0.999)), **tcp_options(self.url),
                ) as pg:  # fmt: skip
                    pg.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._call()  # what was committed before LISTEN took effect
                    while not self.stopped.is_set():
                        held = self.held()
                        heard = False
                        for _ in pg.notifies(timeout=RECHECK if held else 1.0, stop_after=1):
                            heard = True
                            self._call()
                        if held and not heard:
                            self._call()
            except psycopg.Error as e:
                self.listening.clear()
                if time.monotonic() - failed > 60:  # once a minute while it lasts
                    log.warning("event listener: %s; the event streams poll meanwhile",
                                str(e).strip().splitlines()[0] if str(e).strip() else e)  # fmt: skip
                    failed = time.monotonic()
                self.stopped.wait(1.0)
        self.listening.clear()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(3.0)
