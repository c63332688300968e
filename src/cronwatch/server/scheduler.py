"""The scheduler: missed and timed-out runs, and the notification outbox.

Deadlines live in a min-heap; the loop sleeps until the earliest one (or until a ping
moves a job's deadline), so each event costs O(log n) and nothing scans every job per
tick. Deadline maths and the alert state machine are ``cronwatch.app.evaluate`` (core):
``job_deadline``, ``check_job`` and ``deliver_outbox``; and the wrapped runs recorded on
the same database (``settle``, ``close_abandoned``) beside the outbox. Checks run in the writer thread,
inside the group transaction, like pings; deadlines, which only read, are computed on a
connection of their own in a worker thread (a write transaction every 50 ms under a ping
storm made the ping writer wait for the lock).
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

    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(self._main()), asyncio.ensure_future(self._outbox())]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.readonly is not None:
            self.readonly.close()
            self.readonly = None

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
        check_job = checks.check_job
        self.dirty.update(j.name for j in self.server.reader.list_jobs())  # once, at start
        writer = self.server.writer
        while True:
            try:
                if self.dirty:
                    names, self.dirty = self.dirty, set()
                    found = await asyncio.to_thread(self._deadlines, names, deadline_of)
                    for name, when in found.items():
                        self._set(name, when)
                now = time.time()
                due: list[str] = []
                while self.heap and self.heap[0][0] <= now:
                    when, name = heapq.heappop(self.heap)
                    if self.deadline.get(name) == when:
                        del self.deadline[name]
                        due.append(name)
                if due:
                    events = await writer.run(
                        lambda s, due=due, now=now: _check(s, due, check_job, now)
                    )
                    self.dirty.update(due)
                    if events:
                        self.deliver_now.set()
                    continue
                timeout = min(self.heap[0][0] - time.time(), 3600.0) if self.heap else 3600.0
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


def _check(store: Store, names: list[str], check_job: Any, now: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for name in names:
        try:
            found = list(check_job(store, name, now=now) or [])
        except Exception:
            log.exception("check of %s failed", name)
            continue
        for ev in found:
            store.add_event(str(ev.get("type", "job.event")), ev, now=now)
        events.extend(found)
    return events
