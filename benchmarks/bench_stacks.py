"""HTTP stacks side by side: acknowledged pings/s and p99 of each, against its own hello world.

    python benchmarks/bench_stacks.py [--duration 8] [--connections 64] [--rounds 3]
                                      [--stacks front,uvicorn,granian,granian-uvloop]

For each stack, the real server app (``cronwatch.server.app``, ping writer process,
scheduler on) and a hello world on the same stack, driven by wrk (2 threads) round after
round so that every target sees the same machine load; medians of the rounds.

- ``front``: today's ``server/front.py`` as uvicorn's protocol class (``--front fast``);
  its hello world answers every ping at once with the same parser and answer bytes.
- ``uvicorn``: ``cronwatch serve`` as it is by default: uvicorn with httptools and
  uvloop, the limits of server/limits.py, pings dispatched by the app's raw ASGI router
  straight to the writer link (no FastAPI routing); hello world is raw ASGI on uvicorn
  with httptools and uvloop.
- ``granian``: granian's ASGI interface (asyncio loop, one worker), the same app
  (``pip install granian``); ``granian-uvloop``: the same on uvloop.

"server CPU" is the user+system time of the server's process tree per request. After
the run the acknowledged pings are compared with the stored runs (stored >= acked).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import HELLO_FRONT, wait_up, wrk  # noqa: E402

HELLO_ASGI = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"OK"})
"""
HELLO_UVICORN = (
    HELLO_ASGI
    + """
import sys, uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="off", loop="uvloop", http="httptools")
"""
)
# granian's CLI imports the app by name: these go in a module of their own (below)
GRANIAN_APP = """
import os
from cronwatch.server.app import Config, create_app
app = create_app(Config(db=os.environ["BENCH_DB"]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def granian(
    module: str, port: int, tmp: str, env: dict[str, str], loop: str
) -> subprocess.Popen[bytes]:
    gran = str(Path(sys.executable).parent / "granian")
    return subprocess.Popen(
        [gran, "--interface", "asgi", "--loop", loop,
         "--workers", "1", "--no-ws",
         "--http", "1", "--log-level", "warning", "--port", str(port), f"{module}:app"],
        env={**os.environ, "PYTHONPATH": tmp, **env},
    )  # fmt: skip


def granian_loop(stack: str) -> str:
    return "uvloop" if stack == "granian-uvloop" else "asyncio"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stacks", default="front,uvicorn,granian,granian-uvloop")
    args = ap.parse_args()
    from cronwatch.store import open_store

    stacks = args.stacks.split(",")
    tmp = tempfile.mkdtemp(prefix="cw-stacks-")
    Path(tmp, "hello_asgi.py").write_text(HELLO_ASGI)
    Path(tmp, "cw_app.py").write_text(GRANIAN_APP)
    procs: list[subprocess.Popen[bytes]] = []
    # (stack, label, url, pid, db or None, job or None)
    targets: list[tuple[str, str, str, int, str | None, str | None]] = []

    def serve(stack: str) -> tuple[str, int, str, dict[str, str]]:
        db = os.path.join(tmp, f"{stack}.db")
        with open_store(db) as s:
            keys = {n: s.ensure_ping_key(n, now=time.time()) for n in ("hc", "simob")}
        if stack.startswith("granian"):
            port = free_port()
            proc = granian("cw_app", port, tmp, {"BENCH_DB": db}, granian_loop(stack))
            url = f"http://127.0.0.1:{port}"
        else:
            front = "fast" if stack == "front" else "uvicorn"
            proc = subprocess.Popen(
                [sys.executable, "-m", "cronwatch.main", "serve", "--port", "0", "--db", db,
                 "--front", front],
                stderr=subprocess.PIPE,
            )  # fmt: skip
            url = proc.stderr.readline().decode().strip().rsplit(" ", 1)[-1]  # type: ignore[union-attr]
        procs.append(proc)
        return url, proc.pid, db, keys

    try:
        for stack in stacks:
            port = free_port()
            if stack == "front":
                hello = subprocess.Popen([sys.executable, "-c", HELLO_FRONT, str(port)])
                hello_url = f"http://127.0.0.1:{port}/ping/hello"
            elif stack == "uvicorn":
                hello = subprocess.Popen([sys.executable, "-c", HELLO_UVICORN, str(port)])
                hello_url = f"http://127.0.0.1:{port}/"
            else:
                hello = granian("hello_asgi", port, tmp, {}, granian_loop(stack))
                hello_url = f"http://127.0.0.1:{port}/"
            procs.append(hello)
            wait_up(hello_url)
            url, pid, db, keys = serve(stack)
            wait_up(url + "/healthz")
            wrk(url + "/healthz", 2, args.connections)  # warm up
            targets.append((stack, "hello world", hello_url, hello.pid, None, None))
            targets.append((stack, "/ping/{key}", f"{url}/ping/{keys['hc']}", pid, db, "hc"))
            targets.append((stack, "/jobs/p/{key}?state=complete",
                            f"{url}/jobs/p/{keys['simob']}?state=complete", pid, db, "simob"))  # fmt: skip
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            hello_rps: dict[str, float] = {}
            for stack, label, url, pid, _db, _job in targets:
                before = cpu(pid)
                r = wrk(url, args.duration, args.connections)
                r["cpu_us"] = (cpu(pid) - before) * 1e6 / max(1, r["total"])
                if label == "hello world":
                    hello_rps[stack] = r["rps"]
                r["ratio"] = r["rps"] / hello_rps[stack]
                results.setdefault((stack, label), []).append(r)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} rounds (medians), "
          f"server and wrk on the same {os.cpu_count()}-core machine, 127.0.0.1, "
          f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")  # fmt: skip
    print("| stack | target | req/s | p50 ms | p99 ms | errors | × hello (same stack) "
          "| server CPU µs/req |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (stack, label), rs in results.items():

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        print(f"| {stack} | {label} | {med('rps'):,.0f} | {med('p50'):.2f} | {med('p99'):.2f} "
              f"| {int(sum(r['errors'] for r in rs))} | {med('ratio'):.2f} "
              f"| {med('cpu_us'):.0f} |")  # fmt: skip
    print()
    for stack, label, _url, _pid, db, job in targets:
        if db is not None and job is not None:
            acked = int(sum(r["ok"] for r in results[(stack, label)]))
            with open_store(db) as s:
                stored = s.job_stats(job)["runs"]
            verdict = "ok" if stored >= acked else "LOST ACKNOWLEDGED PINGS"
            print(f"{stack} {job}: {acked:,} acknowledged, {stored:,} stored: {verdict}")


if __name__ == "__main__":
    main()
