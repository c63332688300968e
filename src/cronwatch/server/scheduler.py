"""The scheduler: missed and timed-out runs, and the notification outbox.

Several replicas may serve one database. Missed and timed-out runs are the leader's
work: one replica at a time holds the ``scheduler`` lease (``LeaderStore``), renews it a
few times per ``leader_ttl`` and acts only while its lease is surely valid; when it dies,
another takes the lease once it expires (at once after a clean shutdown; on PostgreSQL,
whose lease is an advisory lock of the holder's session, as soon as its connection ends)
and starts from what the database says is due, so nothing due in between is skipped. Every replica
delivers the outbox and evaluates wrapped runs: those take their work by claims
(conditional updates), so two replicas never send the same notification.

On the leader, deadlines live in a min-heap; the loop sleeps until the earliest one (or
until a ping moves a job's deadline), so each event costs O(log n) and nothing scans every
job per tick. It also asks the database once a second which jobs are due or changed
(``due_jobs``: a ping, an API call or a wrapper on another replica reset a job's next
look), so the leader never depends on what it alone saw. Deadline maths and the alert
state machine are ``cronwatch.app.evaluate`` (core): ``job_deadline``, ``check_jobs`` and
``deliver_outbox``; and the wrapped runs recorded on the same database (``settle``,
``close_abandoned``) beside the outbox. Checks run in the writer thread, inside the group
transaction, like pings; deadlines, which only read, are computed on a connection of
their own in a worker thread (a write transaction every 50 ms under a ping storm made
the ping writer wait for the lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from typing import Any

from cronwatch.app import evaluate as checks
from cronwatch.store import open_store
from cronwatch.store.interface import Store

log = logging.getLogger("cronwatch.server")

ROLE = "scheduler"  # the lease's name (LeaderStore)
POLL = 1.0  # seconds between the leader's looks at the database's due jobs
CHUNK = 200  # jobs checked in one write transaction, at most


class Scheduler:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.heap: list[tuple[float, str]] = []
        self.deadline: dict[str, float] = {}  # the live entry per job; others are stale
        self.dirty: set[str] = set()
        self.wakeup = asyncio.Event()
        self.deliver_now = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        # Deadlines are only read: they are computed on a connection of their own, in a
        # worker thread, not in a write transaction (which the ping writer would wait for).
        self.readonly: Store | None = None
        config = server.config
        self.holder: str = server.holder  # this process, in the lease
        self.ttl: float = config.leader_ttl
        self.leading = False
        self.lease_until = 0.0  # monotonic: acts as the leader only before this
        self.leaderships = 0  # times this process became the leader (a metric)
        self.main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(self._lead()), asyncio.ensure_future(self._outbox())]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.readonly is not None:
            self.readonly.close()
            self.readonly = None

    def holds_lease(self) -> bool:
        return self.leading and time.monotonic() < self.lease_until

    # --- the lease -------------------------------------------------------------------------
    async def _lead(self) -> None:
        """Take the lease when it is free, renew it while held (four times per ttl), and
        run the deadline loop (``_main``) only meanwhile."""
        # a store of its own: a backend may tie the lease to its connection (LeaderStore)
        leases: Store = await asyncio.to_thread(open_store, self.server.config.db)
        every = self.ttl / 4
        try:
            while True:
                asked = time.monotonic()
                try:
                    if self.leading:
                        held = await asyncio.to_thread(
                            leases.renew_lead, ROLE, self.holder, now=time.time(), ttl=self.ttl
                        )
                    else:
                        held = await asyncio.to_thread(
                            leases.acquire_lead, ROLE, self.holder, now=time.time(), ttl=self.ttl
                        )
                except Exception as e:  # a busy or lost database: the lease runs out
                    log.warning("scheduler lease: %s", e)
                    if self.leading and time.monotonic() >= self.lease_until:
                        self._step_down("its lease ran out (the database did not answer)")
                else:
                    if held:
                        # counted from before the request, with a margin for clock skew
                        self.lease_until = lease_deadline(asked, self.ttl)
                        if not self.leading:
                            self._take_over()
                    elif self.leading:
                        self._step_down("another replica holds the lease")
                await asyncio.sleep(every)
        finally:
            if self.leading:
                self._step_down("shutting down")
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(leases.release_lead, ROLE, self.holder)
            await asyncio.to_thread(leases.close)

    def _take_over(self) -> None:
        log.warning("replica %s leads the scheduler", self.holder)
        self.leading = True
        self.leaderships += 1
        # Nothing from an earlier term: what is due comes from the database.
        self.heap, self.deadline, self.dirty = [], {}, set()
        self.main = asyncio.ensure_future(self._main())

    def _step_down(self, why: str) -> None:
        log.warning("replica %s no longer leads the scheduler: %s", self.holder, why)
        self.leading = False
        if self.main is not None:
            self.main.cancel()
            self.main = None

    def _deadlines(self, names: set[str], deadline_of: Any) -> dict[str, float | None]:
        if self.readonly is None:
            self.readonly = open_store(self.server.config.db)
        return _deadlines(self.readonly, names, deadline_of)

    def touch(self, job: str) -> None:
        """A ping changed the job: recompute its deadline."""
        self.dirty.add(job)
        self.wakeup.set()

    async def _main(self) -> None:
        deadline_of = checks.job_deadline
        self.dirty.update(j.name for j in self.server.reader.list_jobs())  # once, at start
        writer = self.server.writer
        polled = 0.0
        while True:
            try:
                if self.dirty:
                    names, self.dirty = self.dirty, set()
                    found = await asyncio.to_thread(self._deadlines, names, deadline_of)
                    for name, when in found.items():
                        self._set(name, when)
                now = time.time()
                due: set[str] = set()
                if time.monotonic() - polled >= POLL:
                    # what the database says is due or changed: another replica's pings
                    # and API calls, a wrapper's run, an earlier leader's unfinished work
                    polled = time.monotonic()
                    due.update(await asyncio.to_thread(self._due, now))
                while self.heap and self.heap[0][0] <= now:
                    when, name = heapq.heappop(self.heap)
                    if self.deadline.get(name) == when:
                        del self.deadline[name]
                        due.add(name)
                if due and self.holds_lease():
                    names_ = sorted(due)
                    try:
                        # in ops of CHUNK jobs: each holds the write lock while it runs,
                        # and the ping writer's commits go in between (~170 µs a job)
                        for i in range(0, len(names_), CHUNK):
                            if not self.holds_lease():
                                break  # what is left stays due in the database
                            events = await writer.run(
                                lambda s, names=names_[i : i + CHUNK], now=now: _check(
                                    s, names, now
                                )
                            )
                            if events:
                                self.deliver_now.set()
                    finally:
                        self.dirty.update(due)  # their next deadlines, whatever happened
                    continue
                timeout = min(self.heap[0][0] - time.time(), 3600.0) if self.heap else 3600.0
                timeout = min(timeout, POLL)
                self.wakeup.clear()
                if not self.dirty:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.wait(), max(0.0, timeout))
                # under a ping storm, collect touches for a moment: one recompute each. Also
                # when touches came in during the last recompute: else recomputes run back
                # to back, each a write transaction that the ping writer has to wait for.
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler step failed; retrying in 1s")
                await asyncio.sleep(1)

    def _due(self, now: float) -> list[str]:
        if self.readonly is None:
            self.readonly = open_store(self.server.config.db)
        return self.readonly.due_jobs(now=now)

    def _set(self, name: str, when: float | None) -> None:
        if when is None:
            self.deadline.pop(name, None)  # its heap entry goes stale
            return
        if self.deadline.get(name) != when:
            self.deadline[name] = when
            heapq.heappush(self.heap, (when, name))

    async def _outbox(self) -> None:
        deliver = checks.deliver_outbox
        # its own connection: deliveries do network I/O and must never hold up pings
        store = await asyncio.to_thread(open_store, self.server.config.db)
        try:
            while True:
                try:  # wrapped runs on the same database: their evaluation if still due
                    for name in await asyncio.to_thread(_tidy, store, time.time()):
                        self.touch(name)
                except Exception:
                    log.exception("evaluation of wrapped runs failed")
                try:
                    await asyncio.to_thread(deliver, store, now=time.time())
                except Exception:
                    log.exception("outbox delivery failed")
                self.deliver_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.deliver_now.wait(), self.server.config.outbox_interval
                    )
        finally:
            store.close()


def _deadlines(store: Store, names: set[str], deadline_of: Any) -> dict[str, float | None]:
    now = time.time()
    out: dict[str, float | None] = {}
    for name in names:
        try:
            out[name] = deadline_of(store, name, now=now)
        except Exception:  # a deleted job, a bad schedule: no deadline
            out[name] = None
    return out


def _tidy(store: Store, now: float) -> set[str]:
    """Runs that wrappers recorded on this database and whose post-run step did not
    evaluate them, and open runs whose wrapper was killed; returns the jobs touched."""
    settled = checks.settle(store, now=now)  # logs its events with each claim
    with store.transaction():
        events = checks.close_abandoned(store, now=now)
        for ev in events:
            store.add_event(str(ev.get("type", "job.event")), ev, now=now)
    return {str(ev["job"]) for ev in settled + events if ev.get("job")}


def _check(store: Store, names: list[str], now: float) -> list[dict[str, Any]]:
    """Check the due jobs in the writer's transaction: their missed and timed-out runs,
    alerts, next looks (in the database, for whichever replica leads next), events."""
    events = checks.check_jobs(store, names, now=now)
    checks.log_events(store, events, now=now)
    return events


def lease_deadline(asked: float, ttl: float) -> float:
    """Until when (monotonic) a lease granted for ``ttl`` from a request sent at ``asked``
    may be relied on: a fifth of it is left as a margin for the clocks of other hosts and
    for a step that is already under way when it runs out."""
    return asked + ttl * 0.8
