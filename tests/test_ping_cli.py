"""``cronwatch ping`` and ``cronwatch flush`` through the real script, against a real server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from conftest import Result
from cronwatch.core.model import Status
from test_server_harness import LiveServer, live  # noqa: F401  (fixture)

Cw = Callable[..., Result]


def runs(live: LiveServer, job: str) -> list[Any]:  # noqa: F811
    with live.store() as s:
        return [s.get_run(r.id, output=True) for r in s.list_runs(job=job, oldest_first=True)]


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_run_then_complete_with_a_printed_run_id(cw: Cw, live: LiveServer) -> None:  # noqa: F811
    key = live.job_key("cli-pair")
    rc, out, err = cw("ping", key, "run", "--print-run-id", "--server", live.url)
    assert rc == 0, err
    rid = out.decode().strip()
    assert runs(live, "cli-pair")[0].status is Status.RUNNING
    rc, _, err = cw("ping", key, "complete", "--run-id", rid, "--server", live.url)
    assert rc == 0 and err == b""
    (run,) = runs(live, "cli-pair")
    assert (run.id, run.status, run.exit_code) == (rid, Status.SUCCESS, 0)


def test_fail_with_exit_code_and_output_from_stdin(cw: Cw, live: LiveServer) -> None:  # noqa: F811
    key = live.job_key("cli-fail")
    rc, _, err = cw("ping", key, "fail", "--exit-code", "4", "--output", "-", "--message",
                    "disk full", input=b"last lines\n", env={"CRONWATCH_URL": live.url})  # fmt: skip
    assert rc == 0, err
    (run,) = runs(live, "cli-fail")
    assert (run.status, run.exit_code, run.stdout) == (Status.FAILED, 4, b"last lines\n")


def test_project_key_with_job_creates_the_job(cw: Cw, live: LiveServer) -> None:  # noqa: F811
    rc, _, err = cw(
        "ping", live.project_key(), "complete", "--job", "cli-made", "--server", live.url
    )
    assert rc == 0, err
    assert [r.status for r in runs(live, "cli-made")] == [Status.SUCCESS]


def test_simob_dialect(cw: Cw, live: LiveServer) -> None:  # noqa: F811
    key = live.job_key("cli-simob")
    for state in ("run", "complete"):
        rc, _, err = cw("ping", key, state, "--server", live.url, "--dialect", "simob")
        assert rc == 0, err
    (run,) = runs(live, "cli-simob")
    assert (run.status, run.source) == (Status.SUCCESS, "ping:simob")


def test_server_away_spools_then_flush_delivers_in_order_once(
    cw: Cw,
    live: LiveServer,  # noqa: F811
) -> None:
    key, url = live.job_key("cli-later"), dead_url()
    for args in (["run", "--run-id", "r-1"], ["fail", "--run-id", "r-1", "--exit-code", "2"],
                 ["run", "--run-id", "r-2"], ["complete", "--run-id", "r-2"]):  # fmt: skip
        rc, _, err = cw("ping", key, *args, "--server", url)
        assert rc == 0  # a script with `set -e` goes on: nothing is lost
        assert b"could not reach" in err
    rc, out, _ = cw("flush", "--list", "--json")
    assert [(p["state"], p["run_id"]) for p in json.loads(out)] == [
        ("run", "r-1"), ("fail", "r-1"), ("run", "r-2"), ("complete", "r-2")]  # fmt: skip
    rc, out, err = cw("flush")
    assert rc == 1 and out == b"delivered 0, still waiting 4\n" and b"Connection" in err
    # the server is reachable again (the spooled pings name the dead URL: point them over)
    _retarget(cw, url, live.url)
    rc, out, _ = cw("flush")
    assert (rc, out) == (0, b"delivered 4, still waiting 0\n")
    assert cw("flush", "--quiet") == (0, b"", b"")
    assert [(r.id, r.status, r.exit_code) for r in runs(live, "cli-later")] == [
        ("r-1", Status.FAILED, 2), ("r-2", Status.SUCCESS, 0)]  # fmt: skip


def _retarget(cw: Cw, old: str, new: str) -> None:
    from pathlib import Path

    rc, out, _ = cw("flush", "--list", "--json")
    for item in json.loads(out):
        path = Path(item["file"])
        path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))


def test_unknown_key_is_an_error_and_kept_aside(cw: Cw, live: LiveServer) -> None:  # noqa: F811
    rc, _, err = cw("ping", "no-such-key", "complete", "--server", live.url)
    assert rc == 1 and b"refused the ping (HTTP 404)" in err
    assert cw("flush", "--list")[1] == b"the outbox is empty\n"


def test_a_blackhole_costs_at_most_the_timeout(cw: Cw) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        t = time.monotonic()
        rc, _, err = cw("ping", "k", "run", "--server", f"http://127.0.0.1:{s.getsockname()[1]}",
                        "--timeout", "0.5")  # fmt: skip
        assert rc == 0 and b"TimeoutError" in err
        assert time.monotonic() - t < 0.5 + 2.0  # plus the interpreter's start
    finally:
        s.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["k", "run"], b"no server"),
        (["k", "run", "--server", "ftp://x"], b"invalid server URL"),
        (["k", "complete", "--server", "http://x", "--exit-code", "300"], b"0-255"),
        (["k", "run", "--server", "http://x", "--exit-code", "1"], b"complete or fail"),
        (["k", "fail", "--server", "http://x", "--print-run-id"], b"goes with run"),
        (["k", "fail", "--server", "http://x", "--run-id", "a b"], b"invalid run id"),
        (["k", "done", "--server", "http://x"], b"invalid choice"),
    ],
)
def test_usage_errors_are_one_line(cw: Cw, args: list[str], message: bytes) -> None:
    rc, _, err = cw("ping", *args)
    assert rc == 2 and message in err and len(err.splitlines()) == 1
