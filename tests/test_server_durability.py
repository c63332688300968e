"""kill -9 during load: every acknowledged ping is in the database after a restart."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from test_server_harness import LiveServer


def test_acknowledged_pings_survive_kill_9(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "h.db").start()
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
    deadline = time.monotonic() + 30  # under load, until enough are acknowledged
    while len(acked) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and kill it in the middle of the load, not at its first acks
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) > 20  # a busy CI box is slow; what matters is that none is lost
    restarted = LiveServer(server.db).start()  # recovery of the WAL on open
    try:
        with restarted.store() as s:
            stored = {r.id for r in s.list_runs(job="durable")}
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} acknowledged pings lost"
        assert httpx.get(f"{restarted.url}/ping/{key}").text == "OK"
    finally:
        restarted.stop()
