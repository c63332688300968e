"""/healthz of a real `cronwatch serve` on a real PostgreSQL that goes away: stopped, or
frozen (SIGSTOP: connections stay open and nothing answers). A load balancer checks
about every second, so each check must get its 503 within 2 s, and the replica must keep
answering what does not need the database meanwhile. A cluster of the test's own: the
session's is shared with other tests."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from test_server_harness import LiveServer

ANSWER_WITHIN = 2.0  # seconds: a load balancer's check interval, with some slack


@pytest.fixture
def cluster() -> Iterator[Any]:
    from pg import start_cluster

    try:
        c = start_cluster()
    except RuntimeError as e:
        pytest.skip(str(e))
    try:
        yield c
    finally:
        _signal_cluster(c, signal.SIGCONT)
        try:
            c.stop()  # (removes its files whatever pg_ctl says)
        except RuntimeError:
            pass  # already stopped: a test that failed while it was down


def _cluster_pids(c: Any) -> list[int]:
    """The postmaster and its children (the backends, the checkpointer, ...)."""
    try:
        with open(os.path.join(c.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
    except (OSError, ValueError):
        return []
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(entry))
    return pids


def _signal_cluster(c: Any, sig: int) -> None:
    for pid in _cluster_pids(c):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _timed_get(url: str) -> tuple[int, float]:
    t = time.monotonic()
    r = httpx.get(url, timeout=30)
    return r.status_code, time.monotonic() - t


def _answers_while_down(server: LiveServer) -> None:
    """Checks one after another, and a check alongside a static file of the console
    (served from memory: it needs no database): all answered within ANSWER_WITHIN."""
    for _ in range(4):
        status, took = _timed_get(server.url + "/healthz")
        assert status == 503 and took < ANSWER_WITHIN, (status, took)
        body = httpx.get(server.url + "/healthz", timeout=30).json()
        assert body["status"] == "error" and "database unreachable" in body["error"]
    with ThreadPoolExecutor(3) as pool:
        checks = [pool.submit(_timed_get, server.url + "/healthz") for _ in range(2)]
        time.sleep(0.2)  # the checks are in flight: the static file comes while they wait
        static = pool.submit(_timed_get, server.url + "/static/console.js")
        for status, took in [f.result() for f in checks]:
            assert status == 503 and took < ANSWER_WITHIN, (status, took)
        status, took = static.result()
        assert status == 200 and took < ANSWER_WITHIN, (status, took)


def _healthy_again(server: LiveServer) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/healthz", timeout=30).status_code == 200:
            return
        time.sleep(0.5)
    raise AssertionError("/healthz did not answer 200 again within 60 s")


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_healthz_answers_503_at_once_while_postgresql_is_away(cluster: Any, outage: str) -> None:
    from pg import migrated_template

    server = LiveServer(cluster.new_database(template=migrated_template(cluster))).start()
    try:
        assert httpx.get(server.url + "/static/console.js", timeout=10).status_code == 200
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        if outage == "stopped":
            cluster._run("pg_ctl", "-D", cluster.data, "-m", "immediate", "-w", "stop")
        else:
            _signal_cluster(cluster, signal.SIGSTOP)
        _answers_while_down(server)
        if outage == "stopped":
            opts = f"-p {cluster.port} -k {cluster.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
            log = os.path.join(cluster.dir, "log")
            cluster._run("pg_ctl", "-D", cluster.data, "-l", log, "-o", opts, "-w", "start")
        else:
            _signal_cluster(cluster, signal.SIGCONT)
        _healthy_again(server)
    finally:
        server.stop(signal.SIGKILL)
        from cronwatch.store.postgres.backend import close_pools

        close_pools()
