"""Group commit: one writer thread owns a store connection and commits for everyone.

Requests put an operation (a function of the store) on a queue and await a future. The
writer takes everything queued, runs it in ONE transaction, commits, then resolves every
future, so a request is acknowledged only once its write is durable and concurrent
requests share the cost of the commit.

A bad operation fails alone and the rest of the batch still commits, whatever it raises:
the writer outlives any one operation. Operations run
without a savepoint each (two statements an op were a large part of a ping's cost): one
that fails before writing anything (``total_changes`` unchanged: an unknown ping key, a
validation error) simply fails; one that fails after writing rolls the whole batch back,
which is then replayed once with a savepoint per op, so only the bad one is undone.

The writer may keep caches (``Cache``: jobs by ping key, alert states) that are valid
only while nothing else changes the database. It drops them after any operation that is
not a cache-aware ping, after a rollback, and when another connection committed (the
store's data_version, read once a batch). A backend may check that last point only when
the batch is written (one statement instead of a look first, see PostgresStore): if
another connection had committed, nothing is written (``StaleCache``) and the batch runs
again at once, on fresh caches.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from cronwatch.core.errors import LostClaim, StaleCache, StoreError
from cronwatch.store.interface import Store

T = TypeVar("T")
log = logging.getLogger("cronwatch.server")

# (op, cache_aware): cache-aware ops keep the writer's caches coherent themselves
Op = tuple[Callable[[Store], Any], bool]
_Queued = tuple[Callable[[Store], Any], asyncio.Future[Any], bool]
_STOP = object()
_CLAIM_ATTEMPTS = 5  # an op that lost a conditional update to another process, at most


class Cache(Protocol):
    def invalidate(self) -> None: ...  # the database may have changed behind the cache
    def flush(self, store: Store) -> None: ...  # write buffered rows (before commit)
    def discard(self) -> None: ...  # the transaction rolled back: drop buffered rows


class _Replay(Exception):
    """An op failed after writing: roll the batch back and replay it with savepoints."""


class BufferLost(Exception):
    """Raised by a cache's ``flush`` that failed: rows buffered by earlier ops (already
    answered as done) were not written, so the batch is rolled back and replayed with a
    savepoint per op, where each op's rows are written with it and a bad one fails alone."""


class _NoCache:
    def invalidate(self) -> None:
        pass

    def flush(self, store: Store) -> None:
        pass

    def discard(self) -> None:
        pass


class Committer:
    """Runs batches of operations, each batch in one transaction (see the module doc)."""

    def __init__(self, store: Store, *, cache: Cache | None = None, retries: int = 20) -> None:
        self.store = store
        self.cache: Cache = cache or _NoCache()
        self.retries = retries
        self._data_version = -1

    def commit(self, batch: list[Op]) -> list[tuple[bool, Any]]:
        """Run the batch in one transaction; retry while the database is busy.

        Returns (True, result) or (False, exception) per op, in order.
        """
        return self._commit(lambda safe: self._run_all(batch, safe), batch.__len__)

    def commit_each(
        self,
        fn: Callable[[Store, T], Any],
        items: list[T],
        more: Callable[[], bool] | None = None,
    ) -> list[tuple[bool, Any]]:
        """``commit`` of the cache-aware ops ``fn(store, item)`` for each item, without an op
        object per item (the ping writer's batches: a closure a ping was a visible cost).

        ``more()``, called once the items are done and before the commit, may append items
        that arrived meanwhile (returning True): they join this transaction.
        """
        return self._commit(lambda safe: self._run_each(fn, items, safe, more), lambda: len(items))

    def _commit(
        self, run: Callable[[bool], list[tuple[bool, Any]]], size: Callable[[], int]
    ) -> list[tuple[bool, Any]]:
        delay = 0.002
        safe = False
        for attempt in range(self.retries):
            try:
                with self.store.transaction():
                    self._check_foreign_commits()
                    results = run(safe)
                    self.cache.flush(self.store)
                return results
            except _Replay:
                self._rolled_back()
                safe = True
            except StaleCache:  # nothing written; the caches are void: at once, as it was
                self._rolled_back()
            except StoreError as e:  # busy (another process writes) or I/O
                self._rolled_back()
                if attempt == self.retries - 1:
                    log.error("giving up on a batch of %d: %s", size(), e)
                    return [(False, e)] * size()
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
            except Exception as e:  # one op's bad row, found when the buffered rows were
                # written (flush) or by the commit: replay with a savepoint per op, where
                # each op's rows are written with it, so that it fails alone. Never the
                # writer's end: a failure that still escapes fails this batch only.
                self._rolled_back()
                if safe:
                    log.error("a batch of %d failed", size(), exc_info=e)
                    return [(False, e)] * size()
                safe = True
        err = StoreError("database write failed: giving up after retries")
        return [(False, err)] * size()

    def _rolled_back(self) -> None:
        self.cache.discard()
        self.cache.invalidate()
        self.store.forget_job_ids()  # ids cached inside the rolled-back tx are void

    def _check_foreign_commits(self) -> None:
        # data_version changes only when ANOTHER connection committed (a wrapper, the CLI,
        # the outbox): then jobs, keys and alert states may differ from what we remember.
        version = self.store.data_version()
        if version != self._data_version:
            self._data_version = version
            self.cache.invalidate()
            self.store.forget_job_ids()

    def _run_all(self, batch: list[Op], safe: bool) -> list[tuple[bool, Any]]:
        store, cache = self.store, self.cache
        changes, in_transaction = store.changes, store.in_transaction
        results: list[tuple[bool, Any]] = []
        append = results.append
        for op, cache_aware in batch:
            if not cache_aware:
                cache.flush(store)  # keep the event log in order with what the op writes
            if safe:
                append(self._one_savepoint(op))
            else:
                before = changes()
                try:
                    append((True, op(store)))
                except StaleCache:
                    raise
                except Exception as e:
                    if changes() != before or not in_transaction() or isinstance(e, BufferLost):
                        raise _Replay from e  # partial writes: undo them with the batch
                    append((False, _failed(e)))
            if not cache_aware:
                cache.invalidate()
        return results

    def _run_each(
        self,
        fn: Callable[[Store, T], Any],
        items: list[T],
        safe: bool,
        more: Callable[[], bool] | None,
    ) -> list[tuple[bool, Any]]:
        """``_run_all`` for cache-aware ops that are ``fn(store, item)``; ``items`` may grow
        (``more``), and a replay runs every item it holds by then."""
        if safe:
            return [self._one_savepoint(_bind(fn, item)) for item in items]
        store = self.store
        changes, in_transaction = store.changes, store.in_transaction
        results: list[tuple[bool, Any]] = []
        append = results.append
        done = 0
        while True:
            for item in items[done:] if done else items:
                before = changes()
                try:
                    append((True, fn(store, item)))
                except StaleCache:
                    raise
                except Exception as e:
                    if changes() != before or not in_transaction() or isinstance(e, BufferLost):
                        raise _Replay from e  # partial writes: undo them with the batch
                    append((False, _failed(e)))
            done = len(results)
            if more is None or not more():
                return results

    def _one_savepoint(self, op: Callable[[Store], Any]) -> tuple[bool, Any]:
        store = self.store
        for attempt in range(_CLAIM_ATTEMPTS):
            store.savepoint()
            try:
                result = op(self.store)
                self.cache.flush(self.store)  # its buffered rows too: a bad one fails with it
            except StaleCache:
                raise
            except Exception as e:  # this op fails alone; its partial writes are undone
                if not store.in_transaction():  # the database rolled back the whole transaction
                    raise StoreError(f"database write failed: {e}") from e
                store.rollback_to_savepoint()
                self.store.forget_job_ids()
                self.cache.discard()  # only this op's rows can be buffered: see the line above
                self.cache.invalidate()
                if isinstance(e, LostClaim) and attempt < _CLAIM_ATTEMPTS - 1:
                    continue  # another replica decided first: decide again on what it stored
                return False, _failed(e)
            store.release_savepoint()
            return True, result
        raise AssertionError("unreachable")


def _bind(fn: Callable[[Store, T], Any], item: T) -> Callable[[Store], Any]:
    return lambda store: fn(store, item)


def _failed(e: Exception) -> Exception:
    if not isinstance(e, StoreError) and not hasattr(e, "http_status"):
        log.error("write operation failed", exc_info=e)
    return e


class Writer:
    """The single writer thread. ``await writer.run(op)`` returns ``op(store)`` once
    committed."""

    def __init__(
        self, store: Store, *, cache: Cache | None = None, max_batch: int = 512, retries: int = 20
    ) -> None:
        self.store = store
        self.committer = Committer(store, cache=cache, retries=retries)
        self.max_batch = max_batch
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

    def run(self, op: Callable[[Store], T], *, cache_aware: bool = False) -> asyncio.Future[T]:
        assert self.loop is not None, "writer not started"
        fut: asyncio.Future[T] = self.loop.create_future()
        self.queue.put((op, fut, cache_aware))
        return fut

    # --- the writer thread ---------------------------------------------------------------
    def _main(self) -> None:
        get, get_nowait = self.queue.get, self.queue.get_nowait
        while True:
            item = get()
            if item is _STOP:
                return
            batch: list[_Queued] = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            results = self.committer.commit([(op, aware) for op, _f, aware in batch])
            self.batches += 1
            self.ops += len(batch)
            assert self.loop is not None
            try:
                self.loop.call_soon_threadsafe(self._resolve, batch, results)
            except RuntimeError:  # the loop is closed: shutting down
                return
            if stop:
                return

    def _resolve(self, batch: list[_Queued], results: list[tuple[bool, Any]]) -> None:
        for (_op, fut, _aware), (ok, value) in zip(batch, results, strict=True):
            if not fut.done():  # done: the client went away
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
        for hook in self.after_commit:
            hook()
