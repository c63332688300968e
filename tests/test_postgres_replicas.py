"""PostgreSQL's side of several replicas, on a throwaway cluster (tests/pg.py): the
scheduler's leader as a session advisory lock (processes contend, the holder is killed
with SIGKILL, a session is ended under its holder), event ids that commit out of order
and still reach a reader in order, and notifications that wake another replica's event
stream long before its poll."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cronwatch.store import open_store
from cronwatch.store.postgres.leader import app_name
from test_server_harness import LiveServer
from test_server_stream import read_events

psycopg = pytest.importorskip("psycopg")

ROLE = "scheduler"


@pytest.fixture
def url(pg_database: Callable[[], str]) -> str:
    return pg_database()


@pytest.fixture
def stores(url: str) -> Iterator[Callable[[], Any]]:
    opened: list[Any] = []

    def open_() -> Any:
        opened.append(open_store(url))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


# --- the leader -----------------------------------------------------------------------------

CONTENDER = """
import sys, time
from cronwatch.store import open_store
store = open_store(sys.argv[1])
while not store.acquire_lead("scheduler", sys.argv[2], now=time.time(), ttl=5):
    time.sleep(0.1)
print("leads", flush=True)
while store.renew_lead("scheduler", sys.argv[2], now=time.time(), ttl=5):
    time.sleep(0.5)
print("lost", flush=True)
"""


def contender(url: str, holder: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CONTENDER, url, holder],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def test_of_two_processes_one_leads_and_the_other_takes_over_when_it_is_killed(
    url: str, stores: Callable[[], Any]
) -> None:
    procs = {name: contender(url, name) for name in ("p1#a", "p2#b")}
    try:
        watcher = stores()
        assert wait_for(lambda: watcher.lead_holder(ROLE, now=time.time()) is not None, 30)
        holder = watcher.lead_holder(ROLE, now=time.time())
        assert holder in procs
        first = procs[holder]
        assert first.stdout is not None and first.stdout.readline() == "leads\n"
        (other_name,) = set(procs) - {holder}
        other = procs[other_name]
        time.sleep(1.0)  # both have tried again meanwhile: still the same one
        assert watcher.lead_holder(ROLE, now=time.time()) == holder
        assert other.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # no lease to run out: the survivor leads at its next try (every 0.1 s here)
        assert other.stdout is not None and other.stdout.readline() == "leads\n"
        assert watcher.lead_holder(ROLE, now=time.time()) == other_name
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_a_holder_whose_session_ended_is_not_the_leader_and_does_not_take_it_back(
    url: str, stores: Callable[[], Any]
) -> None:
    """The server ends the leader's session (an administrator, a failover): its next
    renewal says it lost the lock, at once, and another process holds it by then; the
    old holder neither reconnects into leading nor takes it while the other holds it."""
    a, b = stores(), stores()
    assert a.acquire_lead(ROLE, "a#1", now=time.time(), ttl=5)
    with psycopg.connect(url, autocommit=True) as admin:
        (pid,) = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'a#1'"
        ).fetchone()
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
    assert wait_for(lambda: b.acquire_lead(ROLE, "b#2", now=time.time(), ttl=5), 10)
    assert not a.renew_lead(ROLE, "a#1", now=time.time(), ttl=5)
    assert not a.acquire_lead(ROLE, "a#1", now=time.time(), ttl=5)  # b's now
    assert a.lead_holder(ROLE, now=time.time()) == "b#2"
    b.release_lead(ROLE, "b#2")
    assert a.acquire_lead(ROLE, "a#1", now=time.time(), ttl=5)  # a new session: a leads


def test_the_lock_is_on_a_connection_of_its_own_and_closing_the_store_frees_it(
    url: str, stores: Callable[[], Any]
) -> None:
    """Stores come from a pool after the first: the lock must not ride on a pooled
    connection, which would keep it after the store is closed."""
    stores().close()  # the first store of the process connects directly; later: the pool
    a = stores()
    assert a.acquire_lead(ROLE, "a#1", now=time.time(), ttl=5)
    with psycopg.connect(url, autocommit=True) as admin:
        names = [r[0] for r in admin.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted"
        ).fetchall()]  # fmt: skip
    assert names == ["a#1"]
    a.close()  # its pooled connection goes back to the pool, the lock's is closed
    b = stores()
    assert wait_for(lambda: b.acquire_lead(ROLE, "b#2", now=time.time(), ttl=5), 5)


def test_long_holder_names_stay_apart_in_application_name(stores: Callable[[], Any]) -> None:
    long = "r" * 100 + "\u00e9"
    a_name, b_name = app_name(long + "#0a0a0a0a"), app_name(long + "#0b0b0b0b")
    assert len(a_name) <= 63 and a_name.isascii() and a_name.endswith("#0a0a0a0a")
    assert a_name != b_name
    a = stores()
    assert a.acquire_lead(ROLE, long + "#0a0a0a0a", now=time.time(), ttl=5)
    assert stores().lead_holder(ROLE, now=time.time()) == a_name


# --- the event log --------------------------------------------------------------------------


def insert_event(pg: Any, type_: str) -> int:
    row = pg.execute(
        "INSERT INTO events(at, type, data) VALUES (%s, %s, '{}') RETURNING id",
        (time.time(), type_),
    ).fetchone()
    return int(row[0])


def test_an_event_that_commits_after_a_newer_one_still_reaches_the_reader(
    url: str, stores: Callable[[], Any]
) -> None:
    """Transaction A takes an id and commits after B, which took the next one: a reader
    that went on from B's id would skip A's event for good."""
    reader, other = stores(), stores()
    start = reader.last_event_id()
    with psycopg.connect(url) as a:  # a transaction, not autocommitted
        first = insert_event(a, "a")
        second = other.add_event("b", {}, now=time.time())
        assert second > first
        assert reader.events_since(start) == []  # held back: A may still commit
        a.commit()
    got = [r[0] for r in reader.events_since(start)]
    assert got == [first, second]
    assert reader.events_since(second) == []


def test_a_rolled_back_event_holds_the_reader_only_while_it_is_in_flight(
    url: str, stores: Callable[[], Any]
) -> None:
    reader, other = stores(), stores()
    start = reader.last_event_id()
    with psycopg.connect(url, autocommit=True) as unrelated:
        # a long transaction that writes elsewhere (an xid of its own) never holds events
        unrelated.execute("BEGIN")
        unrelated.execute("INSERT INTO meta(key, value) VALUES ('x', 'y')")
        with psycopg.connect(url) as a:
            insert_event(a, "a")
            kept = other.add_event("b", {}, now=time.time())
            assert reader.events_since(start) == []
            a.rollback()
        assert [r[0] for r in reader.events_since(start)] == [kept]
        unrelated.execute("ROLLBACK")


def test_a_stream_resuming_below_passed_gaps_is_not_held_up(
    url: str, stores: Callable[[], Any]
) -> None:
    """Gaps already passed (rolled back long ago) do not hold a reader that resumes from
    an older id: it gets every event after it at once, in order."""
    reader, other = stores(), stores()
    start = reader.last_event_id()
    ids = []
    for i in range(3):
        with psycopg.connect(url) as a:
            insert_event(a, "gone")
            a.rollback()
        ids.append(other.add_event(f"e{i}", {}, now=time.time()))
    assert [r[0] for r in reader.events_since(start)] == ids
    assert [r[0] for r in reader.events_since(start, limit=2)] == ids[:2]
    assert [r[0] for r in reader.events_since(ids[0])] == ids[1:]


def test_a_transaction_holding_an_event_id_too_long_is_passed(
    url: str,
    stores: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A forgotten open transaction that inserted an event must not stall every stream:
    after ``HOLD`` the reader goes on past its id (and says so)."""
    from cronwatch.store.postgres import eventlog

    monkeypatch.setattr(eventlog, "HOLD", 0.5)
    reader, other = stores(), stores()
    start = reader.last_event_id()
    with psycopg.connect(url) as a:
        insert_event(a, "forgotten")
        kept = other.add_event("b", {}, now=time.time())
        assert reader.events_since(start) == []
        time.sleep(0.7)
        with caplog.at_level("WARNING", logger="cronwatch"):
            assert [r[0] for r in reader.events_since(start)] == [kept]
        assert "missing for" in caplog.text
        a.rollback()


def test_the_newest_id_waits_for_events_in_flight(
    url: str, stores: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream starts from ``last_event_id``: an event that is in flight then, with a
    smaller id than the newest, is committed (or gone) once the call returns, so that
    the stream cannot start past something that commits later."""
    from cronwatch.store.postgres import eventlog

    monkeypatch.setattr(eventlog, "SETTLE", 30.0)  # far beyond the commit below
    reader, other = stores(), stores()
    a = psycopg.connect(url)
    first = insert_event(a, "a")
    newest = other.add_event("b", {}, now=time.time())
    threading.Timer(0.3, a.commit).start()
    try:
        assert reader.last_event_id() == newest
        assert [r[0] for r in reader.events_since(first - 1)] == [first, newest]
    finally:
        time.sleep(0.5)
        a.close()


# --- notifications between replicas ---------------------------------------------------------


@pytest.fixture
def two_replicas(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LiveServer]]:
    # streams look at the database once a minute: only a notification delivers sooner
    monkeypatch.setenv("CRONWATCH_EVENT_POLL", "60")
    servers = [LiveServer(url, "--replica-id", name) for name in ("a", "b")]
    try:
        yield [s.start() for s in servers]
    finally:
        for s in servers:
            s.stop(signal.SIGKILL)


def read_in_background(
    server: LiveServer, headers: dict[str, str], n: int, timeout: float
) -> tuple[threading.Thread, list[Any]]:
    """A thread reading ``n`` events from ``server``'s stream, connected when this returns
    (its keep-alives come every 0.3 s); ``out`` gets (events, when they came)."""
    out: list[Any] = []

    def read() -> None:
        events, _ = read_events(server, headers, n, timeout)
        out.append((events, time.monotonic()))

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(1.5)
    return reader, out


def test_an_event_made_at_one_replica_reaches_a_stream_at_the_other_by_notification(
    two_replicas: list[LiveServer],
) -> None:
    a, b = two_replicas
    headers = a.token("sse", read_only=True)
    key = a.job_key("notified")
    reader, out = read_in_background(b, headers, 2, 30)
    pinged = time.monotonic()
    assert httpx.get(f"{a.url}/ping/{key}/start", timeout=10).text == "OK"
    assert httpx.get(f"{a.url}/ping/{key}", timeout=10).text == "OK"
    reader.join(40)
    assert out, "b's stream did not deliver a's events"
    events, at = out[0]
    assert [e["event"] for e in events] == ["run.started", "run.ok"]
    assert at - pinged < 5, f"{at - pinged:.1f}s: the poll (60 s), not a notification"

    # b's listening session ends (a failover, an administrator): it listens again
    with psycopg.connect(a.db, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'cronwatch listener'"
        ).fetchone()[0]
        assert ended == 1  # b's: a has no stream open, so it does not listen
        assert wait_for(lambda: admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cronwatch listener'"
        ).fetchone()[0] == 1, 10)  # fmt: skip
    reader, out = read_in_background(b, headers, 2, 30)
    pinged = time.monotonic()
    assert httpx.get(f"{a.url}/ping/{key}/start", timeout=10).text == "OK"
    assert httpx.get(f"{a.url}/ping/{key}", timeout=10).text == "OK"
    reader.join(40)
    assert out and out[0][1] - pinged < 5, "no notification after the listener reconnected"


def test_the_event_poll_setting_is_checked(cw: Callable[..., Any]) -> None:
    rc, _, err = cw("serve", "--port", "0", env={"CRONWATCH_EVENT_POLL": "soon"})
    assert rc == 2 and "CRONWATCH_EVENT_POLL" in err.decode()


def test_an_event_held_behind_a_rolled_back_one_reaches_the_stream_soon(
    two_replicas: list[LiveServer],
) -> None:
    """A transaction holds an event id and rolls back, which notifies nobody: the event
    committed after it (at replica a) waits on b's stream only while that transaction
    runs, and then arrives without waiting for the poll (60 s)."""
    a, b = two_replicas
    headers = a.token("sse", read_only=True)
    key = a.job_key("held")
    reader, out = read_in_background(b, headers, 1, 40)
    with psycopg.connect(str(a.db)) as doomed:
        insert_event(doomed, "never")
        assert httpx.get(f"{a.url}/ping/{key}", timeout=10).text == "OK"
        time.sleep(1.5)
        assert not out, "delivered past an id still in flight"
        rolled_back = time.monotonic()
        doomed.rollback()
    reader.join(45)
    assert out, "the held event never arrived"
    events, at = out[0]
    assert [e["event"] for e in events] == ["run.ok"]
    assert at - rolled_back < 5, f"{at - rolled_back:.1f}s: the poll, not the recheck"


def test_a_quick_pings_event_is_stored_compact_and_streamed_whole(
    two_replicas: list[LiveServer],
) -> None:
    """The ping writer's steady batch stores a success's ``run.ok`` as a short array
    (core.events.expand); the other replica's stream, resuming from the database, hands
    out the whole object, the run's id and times included."""
    a, b = two_replicas
    key = a.job_key("compact")
    httpx.get(f"{a.url}/ping/{key}", timeout=10)  # the first: the full path
    with psycopg.connect(str(a.db)) as pg:
        last = int(pg.execute("SELECT max(id) FROM events").fetchone()[0])
    assert httpx.get(f"{a.url}/ping/{key}", timeout=10).text == "OK"  # steady: quick
    with psycopg.connect(str(a.db)) as pg:
        at, data = pg.execute("SELECT at, data FROM events WHERE id > %s", (last,)).fetchone()
        uid = pg.execute("SELECT uid FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert data == f'["compact","","{uid}"]'
    headers = {**b.token("sse-compact", read_only=True), "Last-Event-ID": str(last)}
    events, _ = read_events(b, headers, 1, 20)
    assert events[0]["event"] == "run.ok"
    assert events[0]["data"] == {
        "type": "run.ok", "job": "compact", "env": "", "run": uid, "status": "success",
        "started_at": at, "ended_at": at, "duration": None, "exit_code": None,
    }  # fmt: skip


# --- a replica's ping writers ---------------------------------------------------------------


def _writers(server: LiveServer) -> list[int]:
    assert server.proc is not None
    try:
        with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    out = []
    for pid in kids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"cronwatch.server.pingproc" in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _pipelined(server: LiveServer, requests: list[str]) -> list[bytes]:
    """Send ``requests`` (paths) on one connection at once; their answers' status lines."""
    import socket

    host, port = server.url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"".join(f"GET {r} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for r in requests))
        data = b""
        while data.count(b"HTTP/1.1 ") < len(requests) or not data.endswith(b"OK"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    return [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def test_a_replica_on_postgresql_runs_two_ping_writers_in_order_per_connection(
    url: str,
) -> None:
    """Two writers by default on PostgreSQL (their statements overlap): the second takes
    what the first cannot (over ``PingWriters.FULL`` pings unanswered). A connection's
    pings go to one of them, so a start and its end sent together are committed in that
    order: no run is left open by an end recorded before its start."""
    server = LiveServer(url).start()
    try:
        writers = _writers(server)
        assert len(writers) == 2, writers
        before = [_cpu(pid) for pid in writers]
        key = server.job_key("ordered")
        for batch in range(2):
            threads = []
            for i in range(30):  # 60 pings at once: more than one writer takes
                rid = f"r{batch}-{i}"
                paths = [f"/ping/{key}/start?rid={rid}", f"/ping/{key}?rid={rid}"]
                t = threading.Thread(target=lambda p=paths: _pipelined(server, p))
                threads.append(t)
                t.start()
            for t in threads:
                t.join(30)
        after = [_cpu(pid) for pid in writers]
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
        with open_store(url) as s:
            runs = s.list_runs(job="ordered", limit=1000)
        assert len(runs) == 60 and {r.status.value for r in runs} == {"success"}, [
            (r.status, r.started_at, r.ended_at) for r in runs if r.status.value != "success"
        ]
    finally:
        server.stop()


def test_a_killed_ping_writer_is_replaced_and_pings_go_on_meanwhile(url: str) -> None:
    server = LiveServer(url).start()
    try:
        key = server.job_key("survivor")
        writers = _writers(server)
        assert len(writers) == 2
        os_kill = __import__("os").kill
        os_kill(writers[0], signal.SIGKILL)
        answers = [httpx.get(f"{server.url}/ping/{key}?rid=k{i}", timeout=10) for i in range(30)]
        # each on a new connection, half of them meant for the killed writer: served by
        # the other one (or the new one) rather than answered 503
        assert [a.status_code for a in answers] == [200] * 30, [a.text for a in answers]
        assert wait_for(lambda: len(_writers(server)) == 2, 15), "the writer was not replaced"
        assert writers[0] not in _writers(server)
        with open_store(url) as s:
            assert s.job_stats("survivor")["runs"] == 30
    finally:
        server.stop()


def test_more_ping_writers_than_one_need_postgresql(cw: Callable[..., Any]) -> None:
    rc, _, err = cw("serve", "--port", "0", "--ping-writers", "2")
    assert rc == 2 and "SQLite has one writer at a time" in err.decode(), err
    rc, _, err = cw("serve", "--port", "0", "--ping-writers", "0")
    assert rc == 2 and "--ping-writers" in err.decode(), err
