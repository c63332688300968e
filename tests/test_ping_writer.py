"""The ping writer process's own machinery: WAL checkpoints beside the writer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cronwatch.server.pingproc import Checkpoints
from cronwatch.store import open_store


def _write(store, n: int) -> None:  # type: ignore[no-untyped-def]
    with store.transaction():
        store.add_event_rows([(time.time(), "test", "x" * 3000)] * n)


def test_writer_catches_up_only_when_the_thread_saw_a_long_log(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "c.db"))
    store.db.execute("PRAGMA wal_autocheckpoint=0")
    cp = Checkpoints(store.path)
    cp.stop()  # no thread: this test sets what it would have measured
    try:
        cp.log = cp.frames + 1  # the thread's last checkpoint saw a log past LIMIT
        cp.committed(store)
        assert cp.catch_ups == 1 and cp.log == 0
        cp.committed(store)  # not again until the thread measures a long log again
        assert cp.catch_ups == 1
    finally:
        store.close()


def test_log_stays_bounded_without_a_catch_up_every_few_commits(tmp_path: Path) -> None:
    # The -wal file keeps its largest size when the log starts over, so its size must not
    # be read as the log's length (that made the writer checkpoint every 16th commit).
    store = open_store(str(tmp_path / "c.db"))
    store.db.execute("PRAGMA wal_autocheckpoint=0")
    cp = Checkpoints(store.path)
    cp.LIMIT = 1 << 20
    cp.frames = cp.LIMIT // 4096
    commits = 0
    try:
        deadline = time.monotonic() + 30
        while commits < 1200 and time.monotonic() < deadline:
            _write(store, 1)  # ~2 pages a commit: the log passes LIMIT every ~128 commits
            commits += 1
            cp.committed(store)
            time.sleep(0.001)
        size = os.path.getsize(store.path + "-wal")
        assert size < 8 * cp.LIMIT, size  # the log started over: the file stopped growing
        assert cp.catch_ups >= 1
        assert cp.catch_ups < commits // 32, (cp.catch_ups, commits)  # the file's size: ~70
    finally:
        cp.stop()
        store.close()
