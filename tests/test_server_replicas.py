"""Several ``cronwatch serve`` replicas on one database, as real processes.

Two replicas share a database the way a load balancer would use them: pings go to
either, one is killed with SIGKILL, and what a user notices is checked: no acknowledged
ping is lost, a missed job alerts exactly once at a real webhook receiver (while both
run, and when the leader dies before the job's deadline), the scheduler moves to the
survivor within seconds, and the survivor's event stream still delivers and resumes
from an event id that the other replica gave.

The backend is a parameter: SQLite (several workers on one host) and PostgreSQL (a
throwaway cluster; several hosts).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CRONWATCH
from cronwatch.core.model import Job, Run, Status
from cronwatch.store import open_store
from test_server_harness import LiveServer, server_database
from test_server_stream import read_events


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database shared by the test's replicas: a SQLite file (several workers on one
    host) or a PostgreSQL database on the session's throwaway cluster."""
    with server_database(request, request.param, tmp_path_factory) as db:
        yield str(db)


class Hook:
    """A real local webhook receiver: every notification body it was sent, in order."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def alerts(self, job: str) -> list[dict[str, Any]]:
        return [m for m in self.got if m.get("job") == job and m.get("event") == "alert"]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()


@pytest.fixture
def replicas(database: str) -> Iterator[Callable[..., LiveServer]]:
    """``replicas("a")`` starts a replica on the test's database; all stop at the end."""
    started: list[LiveServer] = []

    def start(name: str, *extra: str) -> LiveServer:
        server = LiveServer(database, "--replica-id", name, "--public-metrics", *extra)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop(signal.SIGKILL)


def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def leads(server: LiveServer) -> bool:
    """This replica's own word, from /metrics."""
    try:
        text = httpx.get(server.url + "/metrics", timeout=5).text
    except httpx.TransportError:
        return False
    line = next(x for x in text.splitlines() if x.startswith("cronwatch_scheduler_leader{"))
    assert line.endswith((" 0", " 1")), line
    return line.endswith(" 1")


def missed_job(database: str, name: str, hook: Hook, *, deadline_in: float) -> None:
    """A job on a one-minute schedule (60 s grace) whose newest run puts its missed
    deadline ``deadline_in`` seconds from now (negative: already past)."""
    now = time.time()
    with open_store(database) as s:
        s.save_job(Job(name=name, created_at=now - 3600, schedule="every 1m", grace=60,
                       alert_after=1, notify=[hook.url]), now=now)  # fmt: skip
        started = now + deadline_in - 120  # expected 60 s later, late 60 s after that
        s.record_run(Run(job=name, started_at=started, status=Status.SUCCESS,
                         ended_at=started + 1, duration=1.0), now=now)  # fmt: skip


def incidents(database: str, job: str) -> list[dict[str, Any]]:
    with open_store(database) as s:
        return s.list_incidents(job=job, limit=100)


def test_acknowledged_pings_survive_kill_9_of_one_of_two_replicas(
    replicas: Callable[..., LiveServer], database: str
) -> None:
    a, b = replicas("a"), replicas("b")
    key = a.job_key("durable")
    acked: list[str] = []
    by: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        # half the clients on each replica; a client whose replica died goes on to the
        # other one, as a load balancer would send it
        order = [(a, "a"), (b, "b")] if worker % 2 == 0 else [(b, "b"), (a, "a")]
        i = 0
        for server, name in order:
            with httpx.Client(base_url=server.url, timeout=10) as c:
                while not stop.is_set():
                    rid = f"w{worker}-{i}"
                    i += 1
                    try:
                        r = c.get(f"/ping/{key}", params={"rid": rid})
                    except httpx.TransportError:
                        break
                    if r.status_code == 200:
                        with lock:
                            acked.append(rid)
                            by[name] += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    try:
        # kill once both replicas have acknowledged pings (a busy box may need long)
        assert wait_for(lambda: min(by.values()) >= 100, 60), by
        a.stop(signal.SIGKILL)
        before = len(acked)
        assert wait_for(lambda: len(acked) >= before + 100, 60), "the survivor took no load"
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert httpx.get(b.url + "/healthz", timeout=5).status_code == 200
    with open_store(database) as s:
        stored = {r.id for r in s.list_runs(job="durable")}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged pings lost"


def test_a_missed_job_alerts_exactly_once_while_two_replicas_and_check_run(
    replicas: Callable[..., LiveServer], database: str, hook: Hook, cw_env: dict[str, str]
) -> None:
    """Jobs already missed when both replicas start, with `cronwatch check` run over
    and over on the same database meanwhile (a cron entry someone left in place): every
    process evaluates the same jobs, one alert each is delivered."""
    jobs = [f"nightly-{i}" for i in range(4)]
    for name in jobs:
        missed_job(database, name, hook, deadline_in=-300)
    stop = threading.Event()

    def check_again_and_again() -> None:
        env = dict(cw_env, CRONWATCH_DB=database)
        while not stop.is_set():
            subprocess.run([CRONWATCH, "check"], env=env, capture_output=True, timeout=60)

    checker = threading.Thread(target=check_again_and_again)
    checker.start()
    try:
        replicas("a")
        replicas("b")
        assert wait_for(lambda: all(hook.alerts(j) for j in jobs), 60), hook.got
        time.sleep(7)  # an outbox round on each replica (5 s) and more checks: no second
    finally:
        stop.set()
        checker.join(60)
    for name in jobs:
        assert len(hook.alerts(name)) == 1, hook.got
        (incident,) = incidents(database, name)
        assert incident["closed_at"] is None and "missed" in incident["cause"]
        assert [n["kind"] for n in incident["notifications"]] == ["alert"]
        assert incident["notifications"][0]["status"] == "sent"


def test_failures_pinged_at_both_replicas_at_once_alert_once_and_recover_once(
    replicas: Callable[..., LiveServer], database: str, hook: Hook
) -> None:
    """The same jobs fail at both replicas at the same moment (a retrying client, two
    hosts of one job): one incident and one alert each; then they succeed at both at
    once: one recovery each."""
    jobs = [f"flaky-{i}" for i in range(4)]
    now = time.time()
    with open_store(database) as s:
        for name in jobs:
            s.save_job(Job(name=name, created_at=now, alert_after=1, notify=[hook.url]), now=now)
        keys = {name: s.ensure_ping_key(name, now=now) for name in jobs}
    a, b = replicas("a"), replicas("b")

    def storm(action: str) -> None:
        def pings(server: LiveServer) -> None:
            with httpx.Client(base_url=server.url, timeout=10) as c:
                for _ in range(5):
                    for name in jobs:
                        assert c.get(f"/ping/{keys[name]}{action}").text == "OK"

        threads = [threading.Thread(target=pings, args=(x,)) for x in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

    def kinds(name: str) -> list[str]:
        return [m["event"] for m in hook.got if m.get("job") == name]

    storm("/fail")
    assert wait_for(lambda: all(kinds(j) for j in jobs), 30), hook.got
    storm("")
    assert wait_for(lambda: all(len(kinds(j)) >= 2 for j in jobs), 30), hook.got
    time.sleep(7)  # an outbox round on each replica (5 s): nothing more arrives
    for name in jobs:
        assert kinds(name) == ["alert", "recovery"], hook.got
        (incident,) = incidents(database, name)
        assert incident["closed_at"] is not None


def test_leader_killed_before_a_deadline_the_survivor_takes_over_and_alerts_once(
    replicas: Callable[..., LiveServer], database: str, hook: Hook
) -> None:
    """The leader has alerted one job (``early``) and is killed a moment before another
    job's deadline (``late``): the survivor takes the lease within seconds, finds
    ``late`` missed from what the database holds (its deadline passed while nobody led),
    alerts it once, and does not alert ``early`` again."""
    missed_job(database, "early", hook, deadline_in=-300)
    a = replicas("a")
    assert wait_for(lambda: leads(a), 20), "the first replica never led"
    b = replicas("b")
    assert wait_for(lambda: len(hook.alerts("early")) == 1, 30), hook.got
    assert not leads(b)
    missed_job(database, "late", hook, deadline_in=2)
    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    assert wait_for(lambda: leads(b), 30), "the survivor never took over"
    took = time.monotonic() - killed
    assert took < 20, f"took {took:.1f}s (the lease lasts 5 s)"
    assert wait_for(lambda: len(hook.alerts("late")) >= 1, 30), hook.got
    time.sleep(7)  # an outbox round (5 s) and a few scheduler polls: nothing more
    assert len(hook.alerts("late")) == 1 and len(hook.alerts("early")) == 1, hook.got
    assert len(incidents(database, "late")) == 1 and len(incidents(database, "early")) == 1
    with open_store(database) as s:
        missed = [r for r in s.list_runs(job="late") if r.status is Status.MISSED]
    assert len(missed) == 1  # recorded once, by the survivor


def test_one_leader_at_a_time_and_it_moves_on_a_clean_shutdown(
    replicas: Callable[..., LiveServer],
) -> None:
    a, b = replicas("a"), replicas("b")
    assert wait_for(lambda: leads(a) or leads(b), 20)
    time.sleep(3)  # a few renewals: still exactly one
    first, second = (a, b) if leads(a) else (b, a)
    assert not leads(second)
    # /healthz says the same, for a balancer or a person without a token
    assert httpx.get(first.url + "/healthz", timeout=5).json()["leader"] is True
    assert httpx.get(second.url + "/healthz", timeout=5).json()["leader"] is False
    first.stop()  # SIGTERM: the lease is released, no need to wait for it to expire
    assert wait_for(lambda: leads(second), 10), "the lease did not move on shutdown"


def test_a_leader_that_lost_its_lease_stops_leading(
    replicas: Callable[..., LiveServer], database: str
) -> None:
    """Another holder in the lease (as when a paused leader's lease ran out and another
    replica took it; on PostgreSQL, when the server ended the leader's session and
    another took the lock): the replica that led sees its renewal refused and steps
    down; once the lease is free again, a replica takes it."""
    a = replicas("a")
    assert wait_for(lambda: leads(a), 20)
    with open_store(database) as s:
        holder = s.lead_holder("scheduler", now=time.time())
        assert holder is not None and holder.startswith("a#")
        if database.startswith("postgresql:"):
            release = _take_pg_lock_from(database, holder, "elsewhere#1")
        else:
            s.release_lead("scheduler", holder)
            assert s.acquire_lead("scheduler", "elsewhere#1", now=time.time(), ttl=3600)
            release = lambda: s.release_lead("scheduler", "elsewhere#1")  # noqa: E731
        assert s.lead_holder("scheduler", now=time.time()) == "elsewhere#1"
        assert wait_for(lambda: not leads(a), 10), "it still claims to lead"
        release()
    assert wait_for(lambda: leads(a), 10), "it did not take the free lease again"


def _take_pg_lock_from(database: str, holder: str, name: str) -> Callable[[], None]:
    """End ``holder``'s session while a session named ``name`` waits for the leader's
    advisory lock, which it gets as the holder's session ends (before the old holder can
    try again); returns what gives it up."""
    import psycopg

    from cronwatch.store.postgres.leader import SPACE, role_key

    key = (SPACE, role_key("scheduler"))
    thief = psycopg.connect(database, autocommit=True, application_name=name)
    waiting = threading.Thread(
        target=lambda: thief.execute("SELECT pg_advisory_lock(%s::int, %s::int)", key)
    )
    waiting.start()
    with psycopg.connect(database, autocommit=True) as admin:

        def queued() -> bool:
            return bool(admin.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = %s",
                (name,)).fetchone()[0])  # fmt: skip

        assert wait_for(queued, 10)
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = %s", (holder,))  # fmt: skip
    waiting.join(10)
    assert not waiting.is_alive(), "the lock did not pass on"
    return thief.close


def test_events_reach_every_replica_and_resume_across_replicas(
    replicas: Callable[..., LiveServer],
) -> None:
    a, b = replicas("a"), replicas("b")
    headers = a.token("sse", read_only=True)
    key = a.job_key("streamed")
    out: list[Any] = []
    reader = threading.Thread(target=lambda: out.append(read_events(b, headers, 3, 30)))
    reader.start()
    time.sleep(1.0)  # connected to b
    for action in ("start", "log", "fail"):  # pinged at a
        assert httpx.post(f"{a.url}/ping/{key}/{action}", content=b"x").text == "OK"
    reader.join(30)
    events, _ = out[0]
    assert [e["event"] for e in events] == ["run.started", "run.log", "run.error"]
    assert all(e["data"]["job"] == "streamed" for e in events)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)

    # the id b gave resumes on a: the same events after it, with the same ids
    resumed, _ = read_events(a, {**headers, "Last-Event-ID": str(ids[0])}, 2, 30)
    assert [(e["id"], e["event"]) for e in resumed] == [(e["id"], e["event"]) for e in events[1:]]

    # a dies; b's stream still delivers what is pinged at b, and resumes from a's ids
    a.stop(signal.SIGKILL)
    out.clear()
    reader = threading.Thread(target=lambda: out.append(read_events(b, headers, 1, 30)))
    reader.start()
    time.sleep(1.0)
    assert httpx.get(f"{b.url}/ping/{key}").text == "OK"
    reader.join(30)
    (live,) = out[0][0]
    assert live["event"] == "run.ok" and live["id"] > ids[-1]
    caught_up, _ = read_events(b, {**headers, "Last-Event-ID": str(ids[-1])}, 1, 30)
    assert caught_up[0]["id"] == live["id"]


def test_healthz_is_503_when_the_database_cannot_be_read() -> None:
    """What a load balancer's health check sees once this replica cannot read the
    database (whatever its driver raises): 503 with a JSON reason, no token needed.
    In process: a live database cannot be made unreachable for one process alone."""
    import asyncio
    import sqlite3

    from cronwatch.server.app import Config, Server

    class Unreachable:
        def get_meta(self, key: str) -> str:
            raise sqlite3.OperationalError("disk I/O error")

    server = Server(Config(replica_id="r1"))
    server.health_store = Unreachable()  # type: ignore[assignment]
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(server.healthz(send))
    assert sent[0]["status"] == 503
    body = json.loads(sent[1]["body"])
    assert body["status"] == "error" and "disk I/O error" in body["error"]
    assert body["leader"] is False and "r1" not in sent[1]["body"].decode()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [("--leader-ttl", "0.5", "at least 1 second"), ("--replica-id", "a\x1bb", "printable")],
)
def test_replica_options_out_of_bounds_are_one_line_errors(
    cw: Callable[..., Any], flag: str, value: str, says: str
) -> None:
    rc, out, err = cw("serve", "--port", "0", flag, value)
    assert rc == 2 and says in err.decode() and len(err.decode().strip().splitlines()) == 1


def _doc_block(lang: str) -> str:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "deployment.md").read_text()
    found = re.search(rf"```{lang}\n(.*?)```", doc, re.S)
    assert found, f"no {lang} example in docs/deployment.md"
    return found.group(1)


@pytest.mark.parametrize("balancer", ["nginx", "haproxy"])
def test_the_load_balancer_examples_of_the_docs_keep_pings_answered_through_a_kill(
    replicas: Callable[..., LiveServer], balancer: str, tmp_path: Path
) -> None:
    """docs/deployment.md's nginx and HAProxy configurations (TLS lines made a plain
    listener, the replicas' ports filled in) in front of two replicas: pings are
    answered through the balancer, also once one replica is killed with SIGKILL."""
    binary = shutil.which(balancer) or shutil.which(balancer, path="/usr/sbin")
    if binary is None:
        pytest.skip(f"{balancer} is not installed (apt-get install nginx-light haproxy)")
    a, b = replicas("a"), replicas("b")
    key = a.job_key("balanced")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = _doc_block(balancer)
    for old, server in (("127.0.0.1:8001", a), ("127.0.0.1:8002", b)):
        text = text.replace(old, server.url.removeprefix("http://"))
    if balancer == "nginx":
        text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/nginx.err; daemon off;\n"
            f"events {{}}\nhttp {{ access_log off; client_body_temp_path {tmp_path}; "
            f"proxy_temp_path {tmp_path};\n{text}\n}}\n"
        )
        cmd = [binary, "-c", str(conf)]
    else:
        text = text.replace("bind :443 ssl crt /etc/haproxy/cronwatch.pem",
                            f"bind 127.0.0.1:{port}")  # fmt: skip
        conf = tmp_path / "haproxy.cfg"
        conf.write_text(text)
        cmd = [binary, "-f", str(conf)]
    check = subprocess.run([*cmd, "-t" if balancer == "nginx" else "-c"], capture_output=True)
    assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:

        def answered() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(answered, 20), f"{balancer} did not come up"
        assert all(httpx.get(f"{url}/ping/{key}", timeout=10).text == "OK" for _ in range(10))
        a.stop(signal.SIGKILL)
        time.sleep(3)  # HAProxy's health check: twice a second apart, then it is out
        codes = [httpx.get(f"{url}/ping/{key}", timeout=10).status_code for _ in range(20)]
        assert codes == [200] * 20, codes
    finally:
        proc.terminate()
        proc.wait(10)
    with open_store(str(a.db)) as s:
        assert len(s.list_runs(job="balanced")) == 30


def test_a_rotated_project_key_is_refused_at_every_replica_at_once(
    replicas: Callable[..., LiveServer],
) -> None:
    a, b = replicas("a"), replicas("b")
    old, headers = a.project_key(), a.token("admin")
    off = {"name": "off", "disabled": True}  # its pings are answered, nothing written
    assert httpx.post(f"{a.url}/api/v1/jobs", json=off, headers=headers).status_code == 201
    for s in (a, b):  # both replicas' ping writers have used the old key
        assert httpx.get(f"{s.url}/ping/{old}/rot/start", params={"create": "1"}).text == "OK"
        assert httpx.get(f"{s.url}/ping/{old}/rot").text == "OK"
        assert httpx.get(f"{s.url}/ping/{old}/off").text == "OK"
    new = "N" * 8 + "newprojectkey0123456"
    r = httpx.put(f"{a.url}/api/v1/project-key", json={"key": new}, headers=headers)
    assert r.status_code == 200, r.text

    # answered only once committed: the next ping at any replica sees the new key
    for s in (a, b):
        # a disabled job's ping alone: a batch that sends nothing to the database
        assert httpx.get(f"{s.url}/ping/{old}/off").status_code == 404
        assert httpx.get(f"{s.url}/ping/{old}/rot").status_code == 404
        assert httpx.get(f"{s.url}/ping/{old}/rot/start").status_code == 404
    assert httpx.get(f"{a.url}/ping/{new}/rot").text == "OK"
    for s in (a, b):  # a has now seen the new key, b not yet: neither takes the old one
        assert httpx.get(f"{s.url}/ping/{old}/rot").status_code == 404
    assert httpx.get(f"{b.url}/ping/{new}/rot").text == "OK"
    for s in (a, b):
        assert httpx.get(f"{s.url}/ping/{old}/rot").status_code == 404


def test_a_job_deleted_and_made_again_at_one_replica_reads_the_same_at_the_other(
    replicas: Callable[..., LiveServer],
) -> None:
    a, b = replicas("a"), replicas("b")
    headers = a.token("admin")

    def runs(s: LiveServer, job: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{s.url}/api/v1/jobs/{job}/runs", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    assert (
        httpx.post(f"{a.url}/api/v1/jobs", json={"name": "x"}, headers=headers).status_code == 201
    )
    assert httpx.get(f"{a.url}/ping/{a.job_key('x')}").text == "OK"
    assert len(runs(b, "x")) == 1  # b has read x under its first id

    assert httpx.delete(f"{a.url}/api/v1/jobs/x", headers=headers).status_code == 204
    # Another job first: SQLite may give it x's old id, and x a new one (PostgreSQL's
    # ids are new anyway), so b's old idea of x's id now names another job's runs.
    for job in ("other", "x"):
        r = httpx.post(f"{a.url}/api/v1/jobs", json={"name": job}, headers=headers)
        assert r.status_code == 201, r.text
    for _ in range(2):
        assert httpx.get(f"{a.url}/ping/{a.job_key('other')}").text == "OK"
    assert httpx.get(f"{a.url}/ping/{a.job_key('x')}").text == "OK"

    for s in (a, b):
        assert len(runs(s, "other")) == 2
        got = runs(s, "x")
        assert len(got) == 1 and got[0]["job"] == "x", (s.url, got)
    assert runs(a, "x") == runs(b, "x")
