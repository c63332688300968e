"""WAL checkpoints beside the server's ping writer (SQLiteStore.writer_maintenance).

Moved from server/pingproc.py: nothing outside store/ speaks SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time

log = logging.getLogger("cronwatch.server")


class Checkpoints:
    """WAL checkpoints beside the writer, not inside its commits.

    SQLite's automatic checkpoint runs inside the COMMIT that takes the log past 1000
    pages: it copies the pages into the database and syncs, while the pings of that batch
    wait for their answer (most of the p99 latency). Here the writer's connection never
    checkpoints on its own; a thread with its own connection runs a PASSIVE checkpoint
    (which never blocks the writer) after commits, at most 50 a second. A checkpoint that
    races a busy writer rarely catches up completely, and only then can the log start
    over, so when the log passes ``LIMIT`` the writer checkpoints the few pages left
    itself, between two batches (after their answers went out); its next transaction then
    starts the log from the beginning. The log stays near ``LIMIT`` under any load (the
    -wal file a little above it).

    The log's length is what the thread's last checkpoint reported, not the size of the
    -wal file: the file keeps its largest size when the log starts over (SQLite writes it
    again from the start), so once it had passed ``LIMIT`` its size said "catch up" after
    every 16th commit, and the writer copied ~300 pages itself each time (3-4 ms of its
    time, ~5 µs a ping at 28k pings/s, before the next batch could start).

    The writer's catch-up copies what was committed while the thread's last checkpoint
    ran, and syncs the log and the database: every waiting ping waits for it. Once the log
    is past 3/4 of ``LIMIT`` the thread checkpoints again at once instead of after 20 ms,
    so its checkpoints are short and so is what the writer has left to copy: the p99
    latency of pings under a flood went from 6.2 to 3.0 ms (the catch-ups were most of it).
    """

    # bytes of log before the writer catches it up itself: under a flood (~70 MB of log a
    # second at 35k pings/s: a commit rewrites a dozen pages) 8 MB meant ~6 catch-ups a
    # second; 32 MB gave 0.62x -> 0.64-0.65x the front's hello world, the same p99
    LIMIT = 32 << 20

    def __init__(self, path: str, writer: sqlite3.Connection) -> None:
        self.path = path
        self.writer = writer
        self.wake = threading.Event()
        self.stopping = False
        self.log = 0  # frames in the log at the thread's last checkpoint
        self.frames = self.LIMIT // 4096  # LIMIT in frames (the thread reads the page size)
        self.catch_ups = 0  # checkpoints the writer ran itself
        self.thread = threading.Thread(target=self._main, name="checkpoints", daemon=True)
        self.thread.start()

    def committed(self) -> None:
        if not self.wake.is_set():  # set() takes a lock and notifies: not on every commit
            self.wake.set()
        if self.log > self.frames:
            self.log = 0  # until the thread measures again: one catch-up, not one a commit
            self.catch_ups += 1
            with contextlib.suppress(sqlite3.Error):
                self.writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=10)

    def connect(self) -> sqlite3.Connection:
        """The thread's own connection; it never checkpoints on its own either."""
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        self.frames = self.LIMIT // db.execute("PRAGMA page_size").fetchone()[0]
        return db

    def measure(self, db: sqlite3.Connection) -> None:
        """One PASSIVE checkpoint; the log's length it reports is what committed() reads."""
        _busy, frames, _done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.log = frames

    def _main(self) -> None:
        try:
            db = self.connect()
        except sqlite3.Error as e:
            log.warning("no checkpoint thread: %s", e)
            return
        try:
            while not self.stopping:
                self.wake.wait()
                self.wake.clear()
                if self.stopping:
                    break
                try:
                    self.measure(db)
                except sqlite3.Error as e:
                    log.warning("checkpoint failed: %s", e)
                if self.log < self.frames * 3 // 4:
                    time.sleep(0.02)  # else the next one at once: see the class doc
        finally:
            db.close()
