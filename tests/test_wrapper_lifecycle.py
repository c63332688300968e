"""A wrapped run's life through real processes: on record from its start, closed by `check`
when its wrapper is killed, evaluated and alerted after the wrapper exits (detached, or
before exit within a budget where a detached process would be killed), and never holding
cron up on a dead channel or a locked database.

Nothing here is a timing test in disguise: each bound is far from what it rules out (a
5 s hang against a bound of a few seconds, the old 30 s database wait against ~1 s), and
every wait for another process is a condition polled with a generous deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import CRONWATCH, warnings

DEADLINE = 60.0  # seconds to wait for something another process does


def until(what: str, ok: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = ok()
        if value:
            return value
        assert time.monotonic() < end, f"gave up waiting: {what}"
        time.sleep(0.05)


def runs(cw, job: str, *, yet: bool = True) -> list[dict[str, Any]]:
    """The job's runs; ``yet=False``: [] while the job is not in the database yet."""
    rc, out, err = cw("history", job, "--json", "-n", "100")
    if not yet and rc == 1 and (b"unknown job" in err or b"no database" in err):
        return []
    assert rc == 0, err
    return list(json.loads(out))


def start(cw_env: dict[str, str], *args: str, env: dict[str, str | None] | None = None,
          **kw: Any) -> subprocess.Popen[bytes]:  # fmt: skip
    full = dict(cw_env)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.Popen([CRONWATCH, *args], env=full, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip


# --- kill -9 of the wrapper -----------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 2])
def test_a_killed_wrapper_leaves_an_open_run_that_check_closes(cw, cw_env, timeout) -> None:
    limit = [] if timeout is None else ["--timeout", str(timeout)]
    proc = start(cw_env, "run", "killed", *limit, "--", "sleep", "30", start_new_session=True)
    try:
        # on record while it runs, before it ends
        (run,) = until("the open run", lambda: runs(cw, "killed", yet=False))
        assert run["status"] == "running" and run["ended_at"] is None
        assert run["command"] == "sleep 30"
        # a check while the wrapper lives leaves it open
        assert cw("check").rc == 0
        assert [r["status"] for r in runs(cw, "killed")] == ["running"]

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=DEADLINE)  # reaped: not even a zombie is left
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the orphaned `sleep`
        proc.communicate()
    # as of now, or (with a timeout) well past it
    at = run["started_at"] + (1 if timeout is None else 100)
    rc, out, err = cw("check", "--at", repr(at))
    assert rc == 0, err
    assert out.split() == [b"run.error" if timeout is None else b"job.timeout", b"killed"]
    (closed,) = runs(cw, "killed")
    assert closed["id"] == run["id"]
    assert "the wrapper was killed" in closed["message"]
    assert closed["status"] == ("failed" if timeout is None else "timeout")
    # closed once: a second check has nothing to say about it
    rc, out, _ = cw("check", "--at", repr(at + 1))
    assert (rc, out) == (0, b"checked: nothing new\n")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_an_owner_token_names_one_process_across_pid_reuse_and_reboots() -> None:
    from cronwatch.system import process_gone, process_token, token_timeout

    child = subprocess.Popen(["sleep", "30"])
    try:
        token = process_token(12.5, pid=child.pid)
        assert process_gone(token) is None and token_timeout(token) == 12.5
        host, boot, pid, begun, _limit = token.split()
        assert "killed" in str(process_gone(f"{host} {boot} {pid} {int(begun) + 1} -"))  # reused
        assert "restarted" in str(process_gone(f"{host} another-boot {pid} {begun} -"))
        assert process_gone(f"elsewhere {boot} {pid} {begun} -") is None  # only it can tell
        child.kill()
        # killed but not yet reaped (a zombie) is gone too
        until("the zombie counts as gone", lambda: process_gone(token))
    finally:
        child.kill()
        child.wait()
    assert process_gone(token) == f"the wrapper was killed (pid {pid} on {host})"


# --- a channel that never answers -------------------------------------------------------------


class Channel:
    """A webhook endpoint on a raw socket. ``mode``: ``silent`` reads the request and never
    answers; ``hold`` answers 200 after ``hold`` seconds; ``answer`` answers at once.
    ``delivered`` counts the requests answered with 200."""

    def __init__(self, mode: str, hold: float = 0.0) -> None:
        self.mode, self.hold = mode, hold
        self.delivered = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                return
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            body += conn.recv(65536)
        mode = self.mode
        if mode == "silent":
            self.held.append(conn)  # open, unanswered, until the test ends
            return
        if mode == "hold":
            time.sleep(self.hold)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        with self.lock:
            self.delivered += 1
        conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def channel() -> Iterator[Callable[..., Channel]]:
    made: list[Channel] = []

    def make(mode: str, hold: float = 0.0) -> Channel:
        made.append(Channel(mode, hold))
        return made[-1]

    yield make
    for ch in made:
        ch.close()


def notifications(cw, job: str) -> list[dict[str, Any]]:
    rc, out, err = cw("incidents", job, "--json")
    assert rc == 0, err
    return [n for it in json.loads(out) for n in it["notifications"]]


def test_an_alert_on_a_slow_channel_does_not_hold_the_wrapper(cw, channel) -> None:
    """Detached (the default outside systemd): the wrapper exits at once; its post-run step
    waits for the channel and delivers the alert, once."""
    # the old wrapper waited for it before exiting (held for less than a send's 5 s timeout,
    # so that the detached step's one attempt delivers it)
    hook = channel("hold", hold=4.5)
    assert cw("job", "set", "slow", "--notify", hook.url, "--alert-after", "1").rc == 0
    t0 = time.monotonic()
    rc, _out, err = cw("run", "slow", "--", "false", env={"CRONWATCH_POSTRUN": "detached"})
    elapsed = time.monotonic() - t0
    assert rc == 1 and warnings(err) == []
    assert elapsed < 3.5, f"the wrapper took {elapsed:.1f}s: it waited for the channel"
    until("the alert delivered", lambda: [n for n in notifications(cw, "slow")
                                          if n["status"] == "sent"])  # fmt: skip
    assert hook.delivered == 1
    # nothing is left to send: later looks send nothing more
    assert cw("check").rc == 0
    assert cw("run", "slow", "--", "false", env={"CRONWATCH_POSTRUN": "detached"}).rc == 1
    time.sleep(1)
    assert cw("check").rc == 0
    assert hook.delivered == 1
    assert [n["status"] for n in notifications(cw, "slow")] == ["sent"]


def test_under_systemd_a_silent_channel_costs_at_most_the_budget(cw, channel) -> None:
    """Under systemd the post-run step runs before exit (a detached one would be killed
    with the unit), within ~1 s: an alert its channel does not answer in time stays in
    the outbox, and a later `check` delivers it once."""
    hook = channel("silent")
    assert cw("job", "set", "unit", "--notify", hook.url, "--alert-after", "1").rc == 0
    unit = {"CRONWATCH_POSTRUN": None, "CRONWATCH_POSTRUN_BUDGET": None, "INVOCATION_ID": "1"}
    t0 = time.monotonic()
    rc, _out, err = cw("run", "unit", "--", "false", env=unit)
    elapsed = time.monotonic() - t0
    assert rc == 1 and warnings(err) == []
    # a send's own timeout is 5 s: the budget cut it short
    assert elapsed < 4.5, f"the wrapper took {elapsed:.1f}s: it waited for the channel"
    (run,) = runs(cw, "unit")
    assert run["status"] == "failed"
    (pending,) = notifications(cw, "unit")  # decided before exit, not delivered
    assert pending["status"] == "pending" and hook.delivered == 0

    hook.mode = "answer"
    later = run["started_at"] + 3600  # past the retry's backoff
    assert cw("check", "--at", repr(later)).rc == 0
    until("the alert delivered", lambda: hook.delivered)
    assert cw("check", "--at", repr(later + 3600)).rc == 0
    assert hook.delivered == 1
    assert [n["status"] for n in notifications(cw, "unit")] == ["sent"]


# --- the dashboard when the run's session is killed -----------------------------------------


@pytest.mark.parametrize("marker", ["INVOCATION_ID", "SYSTEMD_EXEC_PID"])
def test_under_systemd_the_page_is_written_before_exit(cw, cw_env, db_path, marker) -> None:
    """systemd ends a unit by killing every process of its control group; here, as close
    as a test gets: the wrapper in a session of its own, killed whole as soon as the
    wrapper has exited. The page and the evaluation are done by then."""
    page = db_path.parent / "site" / "page.html"  # its directory does not exist yet
    env = {"CRONWATCH_POSTRUN": None, "CRONWATCH_POSTRUN_BUDGET": None, marker: "1",
           "CRONWATCH_DASHBOARD": str(page)}  # fmt: skip
    for job in ("unit-job", "unit-job-2"):
        proc = start(cw_env, "run", job, "--", "true", env=env, start_new_session=True)
        proc.wait(timeout=DEADLINE)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _out, err = proc.communicate()
        assert proc.returncode == 0 and warnings(err) == [], err
        # at once: nothing was left to finish after the exit
        assert job in page.read_text()
        assert not Path(str(page) + ".pending").exists()


def test_detached_the_page_survives_the_session_being_killed(cw, cw_env, db_path) -> None:
    page = db_path.parent / "page.html"
    env = {"CRONWATCH_POSTRUN": "detached", "INVOCATION_ID": None, "SYSTEMD_EXEC_PID": None,
           "CRONWATCH_DASHBOARD": str(page)}  # fmt: skip
    proc = start(cw_env, "run", "session-job", "--", "true", env=env, start_new_session=True)
    proc.wait(timeout=DEADLINE)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _out, err = proc.communicate()
    assert proc.returncode == 0 and warnings(err) == [], err
    until("the page shows the run", lambda: page.exists() and "session-job" in page.read_text())


# --- a locked database ------------------------------------------------------------------------


def test_a_locked_database_costs_about_a_second_and_the_run_is_replayed(
    cw, cw_env, db_path, tmp_path
) -> None:
    assert cw("run", "locked", "--", "true").rc == 0  # the database exists
    marker = tmp_path / "ran"
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        proc = start(cw_env, "run", "locked", "--", "sh", "-c", f"touch {marker}; exit 3",
                     env={"CRONWATCH_DB_TIMEOUT": None, "CRONWATCH_POSTRUN": "detached"})  # fmt: skip
        _out, err = proc.communicate(timeout=DEADLINE)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 3 and marker.exists()
        # the default wait was 30 s; now ~1 s (plus start-up on a loaded machine)
        assert elapsed < 10, f"the wrapper took {elapsed:.1f}s on a locked database"
        assert len(warnings(err)) == 1 and b"spooled" in err, err
        spooled = list(Path(str(db_path) + ".spool").glob("*.json"))
        assert len(spooled) == 1
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # the post-run step waited for the lock and merged the run, evaluated
    until("the spooled run merged", lambda: not spooled[0].exists())
    got = until("the run", lambda: [r for r in runs(cw, "locked") if r["exit_code"] == 3])
    assert got[0]["status"] == "failed"
    assert len(runs(cw, "locked")) == 2


# --- the server on the same database -------------------------------------------------------


def test_the_server_finishes_what_wrappers_left_on_its_database(cw, cw_env, db_path) -> None:
    """A wrapper killed mid-job, and a run whose post-run step had no time left: the
    server's scheduler, on the same database, closes the one and evaluates the other."""
    from test_server_harness import LiveServer

    db_path.parent.mkdir(exist_ok=True)
    server = LiveServer(db_path).start()
    try:
        assert cw("job", "set", "left", "--alert-after", "1").rc == 0
        no_time = {"CRONWATCH_POSTRUN": "before-exit", "CRONWATCH_POSTRUN_BUDGET": "0"}
        assert cw("run", "left", "--", "false", env=no_time).rc == 1
        proc = start(cw_env, "run", "gone", "--", "sleep", "30", start_new_session=True)
        try:
            until("the open run", lambda: runs(cw, "gone", yet=False))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=DEADLINE)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        (closed,) = until("the server closed the run",
                          lambda: [r for r in runs(cw, "gone") if r["status"] == "failed"])  # fmt: skip
        assert "the wrapper was killed" in closed["message"]
        until("the server evaluated the failure",
              lambda: json.loads(cw("incidents", "left", "--json").out))  # fmt: skip
    finally:
        server.stop()


def test_detached_the_alert_sees_the_status_its_assertions_give(cw) -> None:
    """The wrapper records the exit (0: success) pending evaluation; the detached step
    applies the assertion first, so the run is failed before the alert state machine
    sees it, and the incident's cause is the assertion."""
    rc = cw("job", "set", "asserted", "--assert", "output contains OK", "--alert-after", "1").rc
    assert rc == 0
    rc, out, _err = cw(
        "run", "asserted", "--", "echo", "nope", env={"CRONWATCH_POSTRUN": "detached"}
    )
    assert (rc, out) == (0, b"nope\n")  # the exit code is the job's, whatever we decide
    (incident,) = until(
        "the incident", lambda: json.loads(cw("incidents", "asserted", "--json").out)
    )
    assert "assertion failed" in incident["cause"]
    (run,) = runs(cw, "asserted")
    assert run["status"] == "failed" and "assertion failed" in run["message"]
