"""Remote reporting of the wrapper: start/finish pings, the outbox, flush — against a real
``cronwatch serve`` (tests/test_server_harness.py), a closed port and a blackhole."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cronwatch.core.model import Run, Status, new_run_id
from cronwatch.remote import hooks, outbox, transport
from cronwatch.remote import ping as remote
from cronwatch.remote.ping import BadServer, Ping, ping_url
from cronwatch.wrapper import runner
from test_server_harness import LiveServer, live  # noqa: F401  (fixture)

# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Outbox, key memory and config under tmp_path; no CRONWATCH_* from outside."""
    for k in list(os.environ):
        if k.startswith("CRONWATCH_"):
            monkeypatch.delenv(k)
    for var, sub in (("XDG_STATE_HOME", "st-state"), ("TMPDIR", "st-tmp"),
                     ("XDG_CONFIG_HOME", "st-cfg")):  # fmt: skip
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setattr(transport, "_KINDS", {})
    return tmp_path / "st-state"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def options(name: str, server: str | None, key: str | None, **kw: Any) -> runner.Options:
    o = runner.Options()
    o.name, o.server, o.key, o.command = name, server, key, ["true"]
    o.send_output = kw.pop("send_output", False)  # type: ignore[attr-defined]
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def finished(name: str, rid: str, started: float, code: int, out: bytes = b"") -> Run:
    end = time.time()
    status = Status.SUCCESS if code == 0 else Status.FAILED
    return Run(job=name, started_at=started, status=status, id=rid, ended_at=end,
               duration=end - started, exit_code=code, stdout=out, stderr=b"")  # fmt: skip


def wrapped(o: runner.Options, code: int = 0, out: bytes = b"", work: float = 0.0) -> Run:
    """What the wrapper does around one run: on_start after the spawn, on_finish at the end."""
    started = time.time()
    rid = new_run_id(started)
    hooks.on_start(o, rid, started)
    time.sleep(work)
    run = finished(o.name, rid, started, code, out)
    hooks.on_finish(o, run, None)
    return run


def server_run(server: LiveServer, rid: str) -> Run:
    with server.store() as s:
        return s.get_run(rid, output=True)


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except LookupError:  # not there yet
            pass
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


class Recording:
    """A transport that records what it sends and answers from a function of the URL."""

    def __init__(self, answer: Any = 200, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.urls: list[str] = []
        self.lock = threading.Lock()

    def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, bytes]:
        time.sleep(self.delay)
        with self.lock:
            self.urls.append(url)
        status = self.answer(url) if callable(self.answer) else self.answer
        if isinstance(status, BaseException):
            raise status
        return status, b"OK"


# --- the URL forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ping", "kind", "url"),
    [
        (Ping("http://h", "K", "run", rid="r1"), "job", "http://h/ping/K/start?rid=r1"),
        (Ping("http://h/", "K", "complete", rid="r1", exit_code=0), "job", "http://h/ping/K/0?rid=r1"),
        (Ping("http://h", "K", "fail", exit_code=3), "job", "http://h/ping/K/3?"),
        (Ping("http://h", "K", "fail"), "job", "http://h/ping/K/fail?"),
        (Ping("http://h", "K", "fail", exit_code=-9), "job", "http://h/ping/K/fail?"),
        (Ping("http://h/ping", "P", "run", slug="db-backup"), "project",
         "http://h/ping/P/db-backup/start?create=1"),
        (Ping("http://h", "K", "complete", message="ok now", duration=1.5, env="prod"), "job",
         "http://h/ping/K/0?env=prod&message=ok+now&metric=duration%3A1.500"),
        (Ping("https://h/base/jobs/p/", "K", "fail", rid="r", exit_code=2), "job",
         "https://h/base/jobs/p/K?state=fail&exit_code=2&rid=r"),
        (Ping("http://h", "K", "run", dialect="simob"), "job", "http://h/jobs/p/K?state=run"),
    ],
)  # fmt: skip
def test_ping_urls(ping: Ping, kind: str, url: str) -> None:
    assert ping_url(ping, kind) == url


@pytest.mark.parametrize("server", ["ftp://h", "h:8000", "", "http://"])
def test_a_server_url_that_can_never_work_is_refused(server: str) -> None:
    with pytest.raises(BadServer):
        ping_url(Ping(server, "K", "run"), "job")


def test_a_ping_survives_the_outbox_byte_for_byte() -> None:
    p = Ping("http://h", "K", "fail", rid="r", slug="j", exit_code=1, duration=0.25,
             message="é", body=b"\xff\x00bin", at=1.5)  # fmt: skip
    assert outbox.load(outbox.spool(p)) == p
    newer = json.loads(p.to_json()) | {"field_of_a_later_version": 1}
    assert Ping.from_json(json.dumps(newer).encode()) == p


# --- against a real server --------------------------------------------------------------------


def test_a_run_reaches_the_server_with_its_run_id(live: LiveServer) -> None:  # noqa: F811
    o = options("remote-ok", live.url, live.job_key("remote-ok"))
    started = time.time()
    rid = new_run_id(started)
    hooks.on_start(o, rid, started)
    wait_for(lambda: server_run(live, rid).status is Status.RUNNING)  # open while it runs
    hooks.on_finish(o, finished(o.name, rid, started, 0), None)
    run = server_run(live, rid)
    assert (run.job, run.status, run.exit_code) == ("remote-ok", Status.SUCCESS, 0)
    assert outbox.entries() == []


def test_a_failure_sends_exit_code_and_output_with_the_project_key(
    live: LiveServer,  # noqa: F811
) -> None:
    o = options("remote-made-here", live.url, live.project_key(), send_output=True)
    run = wrapped(o, code=3, out=b"line one\n")
    got = server_run(live, run.id)
    assert (got.job, got.status, got.exit_code) == ("remote-made-here", Status.FAILED, 3)
    assert got.stdout == b"line one\n"  # created on first use by its slug


def test_output_is_sent_only_when_asked(live: LiveServer) -> None:  # noqa: F811
    o = options("remote-quiet", live.url, live.job_key("remote-quiet"))
    run = wrapped(o, out=b"secret\n")
    assert server_run(live, run.id).stdout is None


def test_a_job_key_is_learnt_once(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    sent: list[str] = []
    real = transport.UrllibTransport()

    class Counting:
        def send(self, method: str, url: str, *a: Any) -> tuple[int, bytes]:
            sent.append(url)
            return real.send(method, url, *a)

    monkeypatch.setattr(remote, "UrllibTransport", Counting)
    o = options("remote-keyed", live.url, live.job_key("remote-keyed"))
    wrapped(o)
    assert len(sent) == 3  # project form 404, job form, then the finish straight away
    monkeypatch.setattr(transport, "_KINDS", {})  # a new process: remembered on disk
    wrapped(o)
    assert len(sent) == 5


def test_concurrent_runs_of_one_job_pair_by_run_id(live: LiveServer) -> None:  # noqa: F811
    o = options("remote-overlap", live.url, live.job_key("remote-overlap"))
    t0 = time.time()
    a, b = new_run_id(t0), new_run_id(t0 + 0.001)
    hooks.on_start(o, a, t0)
    hooks.on_start(o, b, t0)
    hooks.on_finish(o, finished(o.name, b, t0, 2), None)  # the later one ends first
    hooks.on_finish(o, finished(o.name, a, t0, 0), None)
    assert server_run(live, a).status is Status.SUCCESS
    assert (server_run(live, b).status, server_run(live, b).exit_code) == (Status.FAILED, 2)
    with live.store() as s:
        assert len(s.list_runs(job="remote-overlap")) == 2  # none marked timed out


def test_simob_dialect_by_url(live: LiveServer) -> None:  # noqa: F811
    o = options("remote-simob", live.url + "/jobs/p/", live.job_key("remote-simob"))
    run = wrapped(o, code=4)
    got = server_run(live, run.id)
    assert (got.status, got.exit_code, got.source) == (Status.FAILED, 4, "ping:simob")


def test_an_unknown_key_is_kept_aside_not_retried(
    live: LiveServer,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
) -> None:
    wrapped(options("remote-bad-key", live.url, "no-such-key"))
    assert "refused" in capfd.readouterr().err
    assert outbox.entries() == []
    kept = [n for d in outbox.dirs() if os.path.isdir(d) for n in os.listdir(d)]
    assert sum(n.endswith(".failed") for n in kept) == 2


# --- the server away --------------------------------------------------------------------------


def test_server_stopped_mid_way_then_back_every_run_once_in_order(tmp_path: Path) -> None:
    port = free_port()
    server = LiveServer(tmp_path / "srv.db", "--port", str(port)).start()
    try:
        key = server.job_key("remote-outage")
        o = options("remote-outage", server.url, key)
        started = time.time()
        first = new_run_id(started)
        hooks.on_start(o, first, started)
        wait_for(lambda: server_run(server, first).status is Status.RUNNING)
        server.stop()  # the server goes away while the job runs
        t = time.monotonic()
        hooks.on_finish(o, finished(o.name, first, started, 0), None)
        runs = [first] + [wrapped(o, code=i).id for i in (1, 0, 2)]
        assert time.monotonic() - t < 2.0  # a closed port answers at once
        assert len(outbox.entries()) == 7  # one finish, then three start+finish pairs
        server.start()
        last = wrapped(o, code=0)  # the next run delivers the backlog first, then its own
        runs.append(last.id)
        assert outbox.entries() == []
        assert outbox.flush().delivered == 0  # nothing sent twice
        with server.store() as s:
            stored = {r.id: r for r in s.list_runs(job="remote-outage")}
            events = [(json.loads(data)["run"], kind)
                      for _, _, kind, data in s.events_since(0, limit=1000)]  # fmt: skip
        assert set(stored) == set(runs)  # exactly once each, none synthetic
        assert [stored[r].exit_code for r in runs] == [0, 1, 0, 2, 0]
        order = [rid for rid, kind in events if kind in ("run.ok", "run.error")]
        assert order == runs  # finished in the order they happened
    finally:
        server.stop()


def test_a_replayed_ping_counts_once(live: LiveServer) -> None:  # noqa: F811
    """We may die between a 2xx and deleting the file: the replay must not double the run."""
    o = options("remote-replay", live.url, live.job_key("remote-replay"))
    run = wrapped(o, code=1)
    copy = Ping(live.url, o.key or "", "fail", rid=run.id, slug=o.name, kind="job", exit_code=1)
    outbox.spool(Ping(live.url, o.key or "", "run", rid=run.id, slug=o.name, kind="job"))
    outbox.spool(copy)
    assert outbox.flush().delivered == 2
    with live.store() as s:
        assert [r.id for r in s.list_runs(job="remote-replay")] == [run.id]


def timed_run(o: runner.Options, code: int) -> tuple[float, float]:
    """(seconds on_start took, seconds on_finish took) for a job that ends at once."""
    started = time.time()
    rid = new_run_id(started)
    t0 = time.monotonic()
    hooks.on_start(o, rid, started)
    t1 = time.monotonic()
    hooks.on_finish(o, finished(o.name, rid, started, code), None)
    return t1 - t0, time.monotonic() - t1


def states() -> list[str]:
    return [p.state for p in map(outbox.load, outbox.entries()) if p is not None]


def test_closed_port_costs_nothing_and_nothing_is_lost(capfd: pytest.CaptureFixture[str]) -> None:
    o = options("remote-dead", f"http://127.0.0.1:{free_port()}", "k")
    start, finish = timed_run(o, 1)
    assert start < 0.3 and finish < 1.0  # on_start never waits; a closed port answers at once
    assert states() == ["run", "fail"]
    assert "could not reach" in capfd.readouterr().err


def test_a_blackhole_delays_the_job_at_most_the_timeout(
    blackhole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a timeout long enough that "did not wait" and "waited" stay apart on a loaded machine
    monkeypatch.setenv("CRONWATCH_TIMEOUT", "3")
    start, finish = timed_run(options("remote-hole", blackhole, "k"), 0)
    assert start < 1  # far below the timeout: on_start does not wait for the answer
    assert 2 < finish < 3 + 1.5  # the start still hangs when the job ends: both are kept
    assert states() == ["run", "complete"]


def test_settings_from_the_environment_and_the_config(
    live: LiveServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CRONWATCH_URL", live.url)
    cfg = tmp_path / "st-cfg" / "cronwatch" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text(f'[server]\nkey = "{live.job_key("remote-env")}"\ntimeout = "2s"\n')
    s = hooks.settings_for(options("remote-env", None, None))
    assert s is not None and (s.server, s.timeout) == (live.url, 2.0)
    run = wrapped(options("remote-env", None, None))
    assert server_run(live, run.id).status is Status.SUCCESS


# --- the outbox on its own (a recording transport) ----------------------------------------------


def test_flush_goes_in_order_and_skips_only_the_server_that_is_away() -> None:
    for i in range(6):
        outbox.spool(Ping(f"http://{'ab'[i % 2]}.test", "K", "run", rid=f"r{i}", kind="job"))
    t = Recording(lambda url: ConnectionRefusedError() if "//a." in url else 200)
    r = outbox.flush(transport=t)
    assert (r.delivered, r.pending) == (3, 3)
    assert [u.split("rid=")[1] for u in t.urls] == ["r0", "r1", "r3", "r5"]  # a: once, then skipped
    assert [outbox.load(p).rid for p in outbox.entries()] == ["r0", "r2", "r4"]  # type: ignore[union-attr]


def test_a_server_that_is_gone_does_not_hold_up_another() -> None:
    outbox.spool(Ping("http://gone.test", "K", "run", kind="job"))
    t = Recording(lambda url: TimeoutError() if "gone" in url else 200)
    assert outbox.submit(Ping("http://up.test", "K", "run", kind="job"), transport=t) == (
        "sent",
        "",
    )
    assert t.urls == ["http://up.test/ping/K/start?"] and len(outbox.entries()) == 1


def test_a_new_ping_queues_behind_the_waiting_ones_of_its_server() -> None:
    outbox.spool(Ping("http://s.test", "K", "run", rid="a", kind="job"))
    down = Recording(ConnectionRefusedError())
    outcome, _ = outbox.submit(
        Ping("http://s.test", "K", "complete", rid="a", kind="job"), transport=down
    )
    assert outcome == "spooled" and len(down.urls) == 1  # tried the older one only
    up = Recording(200)
    assert (
        outbox.submit(Ping("http://s.test", "K", "run", rid="b", kind="job"), transport=up)[0]
        == "sent"
    )
    assert [u.rsplit("/", 1)[1] for u in up.urls] == ["start?rid=a", "0?rid=a", "start?rid=b"]


@pytest.mark.parametrize(("status", "left"), [(503, 2), (429, 2), (404, 0), (200, 0)])
def test_what_an_answer_does_to_the_outbox(status: int, left: int) -> None:
    for i in range(2):
        outbox.spool(Ping("http://s.test", "K", "run", rid=f"r{i}", kind="job"))
    outbox.flush(transport=Recording(status))
    assert len(outbox.entries()) == left


def test_two_flushers_never_send_a_ping_twice() -> None:
    for i in range(30):
        outbox.spool(Ping("http://s.test", "K", "run", rid=f"r{i:02d}", kind="job"))
    t = Recording(200, delay=0.002)
    threads = [threading.Thread(target=outbox.flush, kwargs={"transport": t}) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(t.urls) == sorted(set(t.urls)) and len(t.urls) == 30


def test_an_unreadable_file_is_kept_aside(state: Path) -> None:
    path = outbox.spool(Ping("http://s.test", "K", "run", kind="job"))
    Path(path).write_bytes(b"{not json")
    assert outbox.flush(transport=Recording(200)).pending == 0
    assert os.path.exists(path + ".bad")


def test_an_unwritable_state_dir_falls_back_to_tmp(state: Path) -> None:
    state.chmod(0o500)
    try:
        path = outbox.spool(Ping("http://s.test", "K", "run", kind="job"))
        assert path.startswith(os.environ["TMPDIR"]) or os.geteuid() == 0
        assert len(outbox.entries()) == 1
    finally:
        state.chmod(0o700)


# --- the wrapper end to end (needs the hooks in runner.py and record.py) -------------------------

HOOKED = hasattr(runner.Options(), "send_output")
needs_hook = pytest.mark.skipif(
    not HOOKED,
    reason="needs the lead's hook: runner.Options.send_output, hooks.on_start in runner.execute "
    "and hooks.on_finish in record.after_run",
)


@needs_hook
def test_wrapper_remote_mode_end_to_end(live: LiveServer, cw: Any, db_path: Path) -> None:  # noqa: F811
    key = live.job_key("wrapped-remote")
    rc, out, err = cw("run", "wrapped-remote", "--server", live.url, "--key", key,
                      "--capture-output", "--", "sh", "-c", "echo hello; exit 3")  # fmt: skip
    assert (rc, out) == (3, b"hello\n"), err
    with live.store() as s:
        (run,) = s.list_runs(job="wrapped-remote")
        run = s.get_run(run.id, output=True)
    assert (run.status, run.exit_code, run.stdout) == (Status.FAILED, 3, b"hello\n")
    rc, out, _ = cw("history", "wrapped-remote", "--json")
    assert json.loads(out)[0]["id"] == run.id  # the same run id locally and remotely


@needs_hook
def test_wrapper_no_local_and_env_settings(live: LiveServer, cw: Any) -> None:  # noqa: F811
    env = {"CRONWATCH_URL": live.url, "CRONWATCH_KEY": live.project_key()}
    rc, _, err = cw("run", "wrapped-env", "--no-local", "--", "true", env=env)
    assert rc == 0, err
    with live.store() as s:
        assert [r.status for r in s.list_runs(job="wrapped-env")] == [Status.SUCCESS]
    assert cw("history", "wrapped-env")[0] != 0  # not recorded here


@needs_hook
def test_wrapper_with_the_server_away_keeps_time_and_exit_code(
    cw: Any, cw_env: dict[str, str], blackhole: str
) -> None:
    t = time.monotonic()
    rc, _, err = cw("run", "wrapped-away", "--server", blackhole, "--key", "k", "--", "sh", "-c",
                    "exit 5", env={"CRONWATCH_TIMEOUT": "1"})  # fmt: skip
    assert rc == 5
    assert time.monotonic() - t < 1 + 2.5  # the timeout plus the interpreter's own start
    assert b"could not reach" in err
    rc, out, _ = cw("flush", "--list", "--json")
    assert [p["state"] for p in json.loads(out)] == ["run", "fail"]


@needs_hook
def test_wrapper_outage_is_delivered_by_the_next_run(
    cw: Any, cw_env: dict[str, str], tmp_path: Path
) -> None:
    server = LiveServer(tmp_path / "outage.db", "--port", str(free_port())).start()
    try:
        key = server.job_key("wrapped-outage")
        server.stop()
        args = ("run", "wrapped-outage", "--server", server.url, "--key", key, "--")
        assert cw(*args, "sh", "-c", "exit 1").rc == 1
        server.start()
        assert cw(*args, "true").rc == 0
        with server.store() as s:
            runs = s.list_runs(job="wrapped-outage", oldest_first=True)
        assert [(r.status, r.exit_code) for r in runs] == [(Status.FAILED, 1), (Status.SUCCESS, 0)]
        assert json.loads(cw("flush", "--list", "--json").out) == []
    finally:
        server.stop()


@needs_hook
def test_wrapper_concurrent_runs_of_one_job(live: LiveServer, cw_env: dict[str, str]) -> None:  # noqa: F811
    from conftest import CRONWATCH

    args = [CRONWATCH, "run", "wrapped-parallel", "--server", live.url, "--key",
            live.job_key("wrapped-parallel"), "--", "sh", "-c"]  # fmt: skip
    procs = [subprocess.Popen([*args, f"sleep 0.5; exit {c}"], env=cw_env) for c in (0, 3)]
    assert sorted(p.wait(timeout=30) for p in procs) == [0, 3]
    with live.store() as s:
        runs = s.list_runs(job="wrapped-parallel")
    got = sorted((r.status.value, r.exit_code) for r in runs)
    assert got == [("failed", 3), ("success", 0)]  # neither timed the other out


def test_flush_command_is_wired(cw: Any) -> None:
    rc, out, _ = cw("flush")
    assert (rc, out) == (0, b"delivered 0, still waiting 0\n")
