"""kill -9 during load: every acknowledged ping is in the database after a restart."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from test_server_harness import LiveServer, server_database


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_acknowledged_pings_survive_kill_9(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with server_database(request, backend, tmp_path_factory) as db:
        acknowledged_pings_survive_kill_9(db)


def acknowledged_pings_survive_kill_9(db: Path | str) -> None:
    server = LiveServer(db).start()
    key = server.job_key("durable")
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as c:
            i = 0
            while not stop.is_set():
                rid = f"w{worker}-{i}"
                i += 1
                try:
                    r = c.get(f"/ping/{key}", params={"rid": rid})
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.append(rid)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    # kill once the load is well under way (a busy CI box may need long to get there),
    # and while it still runs
    deadline = time.monotonic() + 60
    while len(acked) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 100  # the load got under way; what matters is that none is lost
    restarted = LiveServer(server.db).start()  # SQLite: recovery of the WAL on open
    try:
        with restarted.store() as s:
            stored = {r.id for r in s.list_runs(job="durable")}
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} acknowledged pings lost"
        assert httpx.get(f"{restarted.url}/ping/{key}").text == "OK"
    finally:
        restarted.stop()
