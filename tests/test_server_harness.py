"""A real ``cronwatch serve`` process for the server tests (imported by test_server_*)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from cronwatch.store import open_store


class LiveServer:
    def __init__(self, db: Path | str, *extra: str) -> None:
        self.db = db
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> LiveServer:
        cmd = [sys.executable, "-m", "cronwatch.main", "serve", "--port", "0", "--db",
               str(self.db), "--keepalive", "0.3", *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline().decode()
        assert "serving on" in line, line + self.proc.stderr.read().decode()
        self.url = line.strip().rsplit(" ", 1)[-1]
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def store(self):  # type: ignore[no-untyped-def]
        return open_store(str(self.db))

    def token(self, name: str, *, read_only: bool = False) -> dict[str, str]:
        with self.store() as s:
            secret = s.create_token(name, read_only=read_only, now=time.time())
        return {"Authorization": f"Bearer {secret}"}

    def project_key(self) -> str:
        with self.store() as s:
            return s.project_ping_key()

    def job_key(self, name: str) -> str:
        with self.store() as s:
            return s.ensure_ping_key(name, now=time.time())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    os.environ.pop("CRONWATCH_DB", None)
    server = LiveServer(tmp_path_factory.mktemp("srv") / "history.db").start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live_any(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """``live`` on each store backend: a module whose tests should run on both takes it
    as its ``live`` (``live = live_any`` does not work: define ``live`` returning it)."""
    with server_database(request, request.param, tmp_path_factory) as db:
        os.environ.pop("CRONWATCH_DB", None)
        server = LiveServer(db).start()
        yield server
        server.stop()


@contextmanager
def server_database(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path | str]:
    """A new, empty database for a server: a SQLite file, or a PostgreSQL database on the
    session's cluster (skips when there is none), dropped at the end."""
    if backend == "sqlite":
        yield tmp_path_factory.mktemp("srv") / "history.db"
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database(template=request.getfixturevalue("pg_template"))
    try:
        yield url
    finally:
        from cronwatch.store.postgres.backend import close_pools

        close_pools()
        cluster.drop_database(url)


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as c:
        yield c
