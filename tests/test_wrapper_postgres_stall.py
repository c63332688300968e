"""The wrapper against a PostgreSQL that connects and then never answers: the job's exit
code and output are never delayed past the post-run budget, the run waits in the spool,
and a later `cronwatch check` delivers it. The detached post-run step can be stopped by
the usual signals (it does not inherit the wrapper's blocked ones), and ends at its limit."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cronwatch.core.model import Status
from test_postgres import wait_for_runs

BUDGET = 1.0


class StallProxy:
    """A TCP port in front of PostgreSQL: ``silent`` accepts connections and never
    answers; ``after-startup`` forwards a connection's start (until the server says it
    is ready for a query) and then forwards nothing more from the client; ``forward``
    passes everything. Stalled connections are held open until ``forward`` or ``stop``."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.mode = "silent"
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.held.append(client)
                mode = self.mode
            if mode == "silent":
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.held.append(upstream)
            ready = threading.Event() if mode == "after-startup" else None
            threading.Thread(target=self._up, args=(client, upstream, ready), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, ready), daemon=True).start()

    @staticmethod
    def _up(a: socket.socket, b: socket.socket, ready: threading.Event | None) -> None:
        try:
            while data := a.recv(65536):
                if ready is not None and ready.is_set():
                    continue  # the stall: read (so TCP acknowledges it), never forward
                b.sendall(data)
        except OSError:
            pass

    @staticmethod
    def _down(a: socket.socket, b: socket.socket, ready: threading.Event | None) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
                if ready is not None and b"Z\x00\x00\x00\x05I" in data:  # ReadyForQuery
                    ready.set()
        except OSError:
            pass

    def _drop_held(self) -> None:
        with self.lock:
            held, self.held = self.held, []
        for s in held:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def forward(self) -> None:
        with self.lock:
            self.mode = "forward"
        self._drop_held()  # the stalled connections' clients see them end

    def stop(self) -> None:
        self.server.close()
        self._drop_held()


@pytest.fixture
def stall_proxy(pg_cluster: Any) -> Iterator[StallProxy]:
    p = StallProxy(pg_cluster.port)
    yield p
    p.stop()


def spooled_ids(cw_env: dict[str, str], url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from cronwatch.wrapper import spool

    for key in ("XDG_STATE_HOME", "TMPDIR", "HOME"):
        monkeypatch.setenv(key, cw_env[key])
    return [run.id for _path, run, owner in spool.spooled(url) if run and owner is None]


@pytest.mark.parametrize("mode", ["silent", "after-startup"])
def test_a_stalled_postgresql_never_holds_the_wrapper_past_its_budget(
    cw,
    cw_env: dict[str, str],
    pg_database: Callable[[], str],
    stall_proxy: StallProxy,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    url = pg_database().replace(f":{stall_proxy.target}/", f":{stall_proxy.port}/")
    stall_proxy.mode = mode
    env = {"CRONWATCH_DB": url, "CRONWATCH_POSTRUN": "before-exit",
           "CRONWATCH_POSTRUN_BUDGET": str(BUDGET)}  # fmt: skip
    t0 = time.monotonic()
    rc, out, err = cw("run", "stalled", "--", "sh", "-c", "echo kept; echo also >&2; exit 3",
                      env=env, timeout=30)  # fmt: skip
    elapsed = time.monotonic() - t0
    assert (rc, out) == (3, b"kept\n")
    assert err.startswith(b"also\n"), err
    assert elapsed < BUDGET + 1.5, f"{elapsed:.2f}s for a {BUDGET}s budget"
    assert len(spooled_ids(cw_env, url, monkeypatch)) == 1
    # PostgreSQL answers again: `check` merges the spooled run
    stall_proxy.forward()
    cw("check", "--db", url, timeout=60)
    (run,) = wait_for_runs(url, "stalled", 1)
    assert (run.status, run.exit_code, run.stdout) == (Status.FAILED, 3, b"kept\n")
    assert spooled_ids(cw_env, url, monkeypatch) == []


def detached_steps(marker: str) -> list[int]:
    """The pids of post-run steps started for a database URL holding ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cronwatch.wrapper.postrun" in argv and any(marker.encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


def test_the_detached_step_does_not_inherit_the_wrappers_blocked_signals(
    cw, pg_database: Callable[[], str], stall_proxy: StallProxy
) -> None:
    """The wrapper blocks SIGTERM, SIGINT, SIGHUP and SIGQUIT while its job runs (it
    forwards them): the post-run step it starts meanwhile (the open run's, for
    PostgreSQL) must not keep them blocked, or only SIGKILL stops it. A stalled
    PostgreSQL keeps that step alive long enough to look at it."""
    url = pg_database().replace(f":{stall_proxy.target}/", f":{stall_proxy.port}/")
    stall_proxy.mode = "after-startup"
    env = {"CRONWATCH_DB": url, "CRONWATCH_POSTRUN": "detached"}
    marker = f":{stall_proxy.port}/"
    pids: list[int] = []
    try:
        assert cw("run", "watched", "--", "true", env=env).rc == 0
        deadline = time.monotonic() + 30
        while not pids and time.monotonic() < deadline:
            pids = detached_steps(marker)
            time.sleep(0.05)
        assert pids, "no detached post-run step found"
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text()
            (blocked,) = [ln.split()[1] for ln in status.splitlines() if ln.startswith("SigBlk:")]
            assert int(blocked, 16) == 0, f"pid {pid} blocks {blocked}"
        for pid in pids:  # SIGTERM ends it, stalled or not
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while detached_steps(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert detached_steps(marker) == []
    finally:
        for pid in detached_steps(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_detached_step_ends_whatever_the_database_does(
    cw_env: dict[str, str], pg_database: Callable[[], str], stall_proxy: StallProxy
) -> None:
    """Nobody waits for the detached step, but one held forever by a stalled PostgreSQL
    piles up a process per run: it ends at its limit (here made short) all the same."""
    import subprocess
    import sys

    url = pg_database().replace(f":{stall_proxy.target}/", f":{stall_proxy.port}/")
    stall_proxy.mode = "after-startup"
    step = ("import sys; from cronwatch.wrapper import postrun; postrun.DETACHED_LIMIT = 2; "
            "sys.exit(postrun.main(sys.argv[1:]))")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", step, url], env=cw_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert proc.wait(timeout=30) == -signal.SIGALRM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
