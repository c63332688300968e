"""The wrapper against a PostgreSQL that connects and then never answers: the job's exit
code and output are never delayed past the post-run budget, the run waits in the spool,
and a later `cronwatch check` delivers it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
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
