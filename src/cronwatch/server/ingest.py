"""Group commit: one writer thread owns a store connection and commits for everyone.

Requests put an operation (a function of the store) on a queue and await a future. The
writer takes everything queued, runs it in ONE transaction, commits, then resolves every
future, so a request is acknowledged only once its write is durable and concurrent
requests share the cost of the commit. Each operation runs inside a savepoint: a bad one
fails alone and the rest of the batch still commits.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import StoreError
from ..store.base import Store

T = TypeVar("T")
log = logging.getLogger("cronwatch.server")

_Op = tuple[Callable[[Store], Any], asyncio.Future[Any]]
_STOP = object()


class Writer:
    """The single writer. ``await writer.run(op)`` returns ``op(store)`` once committed."""

    def __init__(self, store: Store, *, max_batch: int = 512, retries: int = 20) -> None:
        self.store = store
        self.max_batch = max_batch
        self.retries = retries
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.after_commit: list[Callable[[], None]] = []  # called in the loop after a batch
        self.batches = 0
        self.ops = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.Thread(target=self._main, name="cronwatch-writer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.queue.put(_STOP)
            self.thread.join(timeout=10)
            self.thread = None

    def run(self, op: Callable[[Store], T]) -> asyncio.Future[T]:
        assert self.loop is not None, "writer not started"
        fut: asyncio.Future[T] = self.loop.create_future()
        self.queue.put((op, fut))
        return fut

    # --- the writer thread ---------------------------------------------------------------
    def _main(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            batch: list[_Op] = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            results = self._commit(batch)
            self.batches += 1
            self.ops += len(batch)
            assert self.loop is not None
            try:
                self.loop.call_soon_threadsafe(self._resolve, batch, results)
            except RuntimeError:  # the loop is closed: shutting down
                return
            if stop:
                return

    def _commit(self, batch: list[_Op]) -> list[tuple[bool, Any]]:
        """Run the batch in one transaction; retry while the database is busy."""
        delay = 0.002
        for attempt in range(self.retries):
            results: list[tuple[bool, Any]] = []
            try:
                with self.store.transaction():
                    for op, _fut in batch:
                        results.append(self._one(op))
                return results
            except StoreError as e:  # busy (another process writes) or I/O: roll back, retry
                self.store.forget_job_ids()  # ids cached inside the rolled-back tx are void
                if attempt == self.retries - 1:
                    log.error("giving up on a batch of %d: %s", len(batch), e)
                    return [(False, e)] * len(batch)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        raise AssertionError("unreachable")

    def _one(self, op: Callable[[Store], Any]) -> tuple[bool, Any]:
        db = self.store.db  # type: ignore[attr-defined]
        db.execute("SAVEPOINT op")
        try:
            result = op(self.store)
        except Exception as e:  # this op fails alone; its partial writes are undone
            db.execute("ROLLBACK TO op")
            db.execute("RELEASE op")
            self.store.forget_job_ids()
            if not isinstance(e, StoreError) and not hasattr(e, "http_status"):
                log.exception("ping operation failed")
            return False, e
        db.execute("RELEASE op")
        return True, result

    @staticmethod
    def _resolve_one(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        if fut.done():  # the client went away
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def _resolve(self, batch: list[_Op], results: list[tuple[bool, Any]]) -> None:
        for (_op, fut), (ok, value) in zip(batch, results, strict=True):
            self._resolve_one(fut, ok, value)
        for hook in self.after_commit:
            hook()
