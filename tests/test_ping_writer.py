"""The ping writer process's own machinery: WAL checkpoints beside the writer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cronwatch.store import open_store


def _write(store, n: int) -> None:  # type: ignore[no-untyped-def]
    with store.transaction():
        store.add_event_rows([(time.time(), "test", "x" * 3000)] * n)


def test_writer_catches_up_only_when_the_thread_saw_a_long_log(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "c.db"))
    cp = store.writer_maintenance()  # SQLite: checkpoints by a thread, not in commits
    cp.stop()  # no thread: this test sets what it would have measured
    try:
        cp.log = cp.frames + 1  # the thread's last checkpoint saw a log past LIMIT
        cp.committed()
        assert cp.catch_ups == 1 and cp.log == 0
        cp.committed()  # not again until the thread measures a long log again
        assert cp.catch_ups == 1
    finally:
        store.close()


def test_log_stays_bounded_without_a_catch_up_every_few_commits(tmp_path: Path) -> None:
    # The -wal file keeps its largest size when the log starts over, so its size must not
    # be read as the log's length (that made the writer checkpoint every 16th commit).
    # The thread's checkpoints are run here, in step with the commits, so that the test
    # does not depend on how the machine schedules threads.
    store = open_store(str(tmp_path / "c.db"))
    cp = store.writer_maintenance()  # SQLite: checkpoints by a thread, not in commits
    cp.stop()
    cp.LIMIT = 1 << 20
    db = cp.connect()
    wal = store.path + "-wal"
    try:
        for _ in range(400):  # no checkpoint at all: the log (and the file) passes LIMIT
            _write(store, 1)
            cp.committed()
        assert os.path.getsize(wal) > 2 * cp.LIMIT
        cp.measure(db)  # the thread sees the long log ...
        assert cp.log > cp.frames
        _write(store, 1)
        cp.committed()  # ... so the writer catches up once
        assert cp.catch_ups == 1
        biggest = os.path.getsize(wal)
        for i in range(1200):  # the thread keeps up: the log starts over and stays short
            _write(store, 1)
            cp.committed()
            if i % 10 == 0:
                cp.measure(db)
        # the file never shrinks, but it stopped growing: the log started over ...
        assert os.path.getsize(wal) == biggest > cp.LIMIT
        # ... and its size (past LIMIT all along) never made the writer catch up again
        assert cp.catch_ups == 1, cp.catch_ups
    finally:
        db.close()
        store.close()


# --- batches: a turn of the server's event loop streamed to the writer, one commit ---------


def _request(seq: int) -> tuple[int, str, bytes, None]:
    return (seq, f"/ping/key-{seq}", b"", None)


def test_link_streams_a_turn_in_frames_and_marks_the_last(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from cronwatch.server import pingproc

    sent: list[bytes] = []

    class Transport:
        def write(self, data: bytes) -> None:
            sent.append(data)

        def is_closing(self) -> bool:
            return False

    async def turn() -> None:
        link = pingproc.Link(lambda n: None, lambda: None)
        link.connection_made(Transport())
        for i in range(pingproc._STREAM * 2 + 3):  # one turn of the loop
            link.submit(f"/ping/k{i}", b"", None, lambda reply: None)
        await asyncio.sleep(0)  # the end of the turn
        for i in range(2):  # a quiet turn: one frame, final
            link.submit(f"/ping/x{i}", b"", None, lambda reply: None)
        await asyncio.sleep(0)

    asyncio.run(turn())
    frames = pingproc._frames(bytearray(b"".join(sent)))
    assert [(final, len(requests)) for final, requests in frames] == [
        (False, pingproc._STREAM), (False, pingproc._STREAM), (True, 3), (True, 2)
    ]  # fmt: skip
    seqs = [r[0] for _final, requests in frames for r in requests]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_inbox_waits_for_the_rest_of_a_turn_and_inserts_meanwhile() -> None:
    import socket
    import threading

    from cronwatch.server import pingproc

    server, child = socket.socketpair()
    inbox = pingproc._Inbox(child)
    inbox.WAIT = 10  # the final frame comes after 50 ms: well within
    try:
        server.sendall(pingproc._frame((False, [_request(1), _request(2)])))
        assert inbox.wait()
        batch = inbox.take(pingproc._CHUNK)
        assert [r[0] for r in batch] == [1, 2] and inbox.open
        flushed: list[int] = []
        later = threading.Timer(
            0.05, lambda: server.sendall(pingproc._frame((True, [_request(3)])))
        )
        later.start()
        new = inbox.more(batch, lambda rows: flushed.append(len(batch)))
        later.join()
        assert [r[0] for r in new] == [3] and [r[0] for r in batch] == [1, 2, 3]
        assert flushed == [2]  # the rows of 1 and 2 were written while 3 was on its way
        assert not inbox.open and inbox.more(batch, lambda rows: flushed.append(0)) == []
        # a turn whose final frame does not come: commit what is there after WAIT
        inbox.WAIT = 0.05
        server.sendall(pingproc._frame((False, [_request(4)])))
        assert inbox.wait()
        batch = inbox.take(pingproc._CHUNK)
        start = time.monotonic()
        assert inbox.more(batch, lambda rows: None) == []
        assert 0.04 < time.monotonic() - start < 2
        # a batch is never larger than _CHUNK: the rest waits for the next one
        many = [_request(i) for i in range(10, 10 + pingproc._CHUNK + 5)]
        server.sendall(pingproc._frame((True, many)))
        assert inbox.wait()
        batch = inbox.take(pingproc._CHUNK)
        assert len(batch) == pingproc._CHUNK and inbox.more(batch, lambda rows: None) == []
        assert [r[0] for r in inbox.take(100)] == [r[0] for r in many[pingproc._CHUNK :]]
        server.close()  # the server went away: the end of the link
        assert not inbox.wait()
    finally:
        server.close()
        child.close()


def test_commit_each_takes_more_items_into_the_same_transaction(tmp_path: Path) -> None:
    from cronwatch.core.errors import NotFound
    from cronwatch.server.ingest import Committer

    store = open_store(str(tmp_path / "c.db"))
    committer = Committer(store)
    versions: list[bool] = []

    def op(store, item: int) -> int:  # type: ignore[no-untyped-def]
        if item == 3:
            raise NotFound("no such job")  # before writing: fails alone
        store.add_event_rows([(time.time(), "test", str(item))])
        versions.append(store.in_transaction())
        return item * 10

    items = [1, 2]
    arriving = [[3, 4]]  # what came in while 1 and 2 were applied

    def more() -> bool:
        if not arriving:
            return False
        items.extend(arriving.pop())
        return True

    try:
        results = committer.commit_each(op, items, more)
        assert items == [1, 2, 3, 4]
        assert [ok for ok, _v in results] == [True, True, False, True]
        assert [v for ok, v in results if ok] == [10, 20, 40]
        assert isinstance(results[2][1], NotFound)
        assert all(versions)
        assert [d for _i, _at, _t, d in store.events_since(0)] == ["1", "2", "4"]
    finally:
        store.close()
