"""The Python SDK: start_job/finish_job and monitor(), locally and against a real server."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import cronwatch
from cronwatch import ValidationError, finish_job, monitor, start_job
from cronwatch.core.model import Status
from cronwatch.remote import outbox, transport
from cronwatch.store import open_store
from test_server_harness import LiveServer, live  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Local database, outbox and config under tmp_path; nothing from the environment."""
    for k in list(os.environ):
        if k.startswith("CRONWATCH_"):
            monkeypatch.delenv(k)
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "TMPDIR"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("CRONWATCH_DB", str(tmp_path / "local.db"))
    # the post-run step (evaluation, the page) in-process, as under systemd
    monkeypatch.setenv("CRONWATCH_POSTRUN", "before-exit")
    monkeypatch.setenv("CRONWATCH_POSTRUN_BUDGET", "60")
    monkeypatch.setattr(transport, "_KINDS", {})
    return tmp_path


@pytest.fixture
def remote(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:  # noqa: F811
    """Configured the production way: CRONWATCH_URL and the project key."""
    monkeypatch.setenv("CRONWATCH_URL", live.url)
    monkeypatch.setenv("CRONWATCH_KEY", live.project_key())
    return live


def runs(target: LiveServer | Path, job: str) -> list[Any]:
    store = target.store() if isinstance(target, LiveServer) else open_store(str(target))
    with store as s:
        return [s.get_run(r.id, output=True) for r in s.list_runs(job=job)]


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# --- the public surface ----------------------------------------------------------------------


def test_all() -> None:
    assert cronwatch.__all__ == [
        "CronwatchError",
        "JobHandle",
        "Monitor",
        "Settings",
        "Transport",
        "ValidationError",
        "__version__",
        "finish_job",
        "monitor",
        "start_job",
    ]
    assert cronwatch.__all__ == sorted(cronwatch.__all__)
    for name in cronwatch.__all__:
        assert getattr(cronwatch, name) is not None
    with pytest.raises(AttributeError):
        cronwatch.no_such_name  # noqa: B018


def test_import_cronwatch_stays_tiny() -> None:
    """The wrapper imports the package on every cron run: the SDK must load lazily."""
    code = "import sys, cronwatch; print(sorted(m for m in sys.modules if 'cronwatch' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['cronwatch', 'cronwatch._version']"


@pytest.mark.parametrize("name", ["Daily Report", "", "-x", "UPPER", "a/b", "x" * 65])
def test_a_bad_job_name_is_a_clear_error(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid job name"):
        start_job(name)
    with pytest.raises(ValidationError, match="invalid job name"):
        monitor(name)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="schedule"):
        monitor("ok-name", schedule="every banana")
    with pytest.raises(ValidationError, match="status"):
        finish_job(start_job("ok-name"), "done")


# --- no server: the local database ------------------------------------------------------------


def test_local_start_and_finish(home: Path) -> None:
    h = start_job("daily-report")
    time.sleep(0.05)
    finish_job(h, "failed", message="3 rows missing", output="details\n")
    (run,) = runs(home / "local.db", "daily-report")
    assert (run.id, run.status, run.message, run.source) == (
        h.run_id,
        Status.FAILED,
        "3 rows missing",
        "sdk",
    )
    assert run.stdout == b"details\n" and 0.05 <= run.duration < 1
    assert run.started_at == h.started_at


def test_finishing_twice_reports_once(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = start_job("twice")
    finish_job(h)
    finish_job(h, "failed")
    assert [r.status for r in runs(home / "local.db", "twice")] == [Status.SUCCESS]
    assert "already finished" in caplog.text


def test_monitor_context_manager_reraises(home: Path) -> None:
    with monitor("ctx"):
        pass
    with pytest.raises(ZeroDivisionError), monitor("ctx"):
        1 / 0  # noqa: B018
    failed, ok = runs(home / "local.db", "ctx")
    assert ok.status is Status.SUCCESS
    assert (failed.status, failed.message) == (Status.FAILED, "ZeroDivisionError: division by zero")
    assert b"Traceback" in failed.stdout


def test_monitor_decorates_sync_and_async_functions(home: Path) -> None:
    @monitor("deco")
    def job(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * 2

    @monitor("deco-async")
    async def ajob(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise KeyError("missing")
        return x + 1

    assert job(2) == 4 and job.__name__ == "job"
    with pytest.raises(ValueError, match="negative"):
        job(-1)
    assert asyncio.run(ajob(1)) == 2
    with pytest.raises(KeyError):
        asyncio.run(ajob(-1))
    for name in ("deco", "deco-async"):
        assert [r.status for r in runs(home / "local.db", name)] == [Status.FAILED, Status.SUCCESS]


def test_sys_exit_zero_is_a_success(home: Path) -> None:
    with pytest.raises(SystemExit), monitor("exits"):
        sys.exit(0)
    assert runs(home / "local.db", "exits")[0].status is Status.SUCCESS


def test_a_locked_database_spools_the_run(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    (home / "local.db").mkdir()  # not a database: cannot be opened
    with monitor("spooled"):
        pass
    assert "spooled" in caplog.text
    assert any(p.name.endswith(".json") for p in (home / "local.db.spool").iterdir())


def test_a_local_finish_merges_the_spool_and_writes_the_page(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK records through the wrapper's path: a run spooled earlier is merged by the next
    # finish, and the static page shows both (rendered in-process: see `home`).
    (home / "local.db").mkdir()
    with monitor("sdk-spool"):
        pass
    (home / "local.db").rmdir()
    with monitor("sdk-spool"):
        pass
    assert [r.status for r in runs(home / "local.db", "sdk-spool")] == [Status.SUCCESS] * 2
    assert not any(p.name.endswith(".json") for p in (home / "local.db.spool").iterdir())
    assert "sdk-spool" in (home / "dashboard.html").read_text()


def test_schedule_is_declared_locally(home: Path) -> None:
    with monitor("scheduled", schedule="0 2 * * *", grace="15m"):
        pass
    with open_store(str(home / "local.db")) as s:
        job = s.get_job("scheduled")
    assert (job.schedule, job.grace) == ("0 2 * * *", 900.0)


# --- against a real server ----------------------------------------------------------------------


def test_remote_success_failure_and_exception(remote: LiveServer) -> None:
    h = start_job("sdk-report")
    finish_job(h, "success")
    h2 = start_job("sdk-report")
    finish_job(h2, "failed", "3 rows missing")

    @monitor("sdk-report")
    def broken() -> None:
        raise RuntimeError("upstream is down")

    with pytest.raises(RuntimeError):
        broken()
    ok, told, failed = sorted(runs(remote, "sdk-report"), key=lambda r: r.started_at)
    assert (ok.id, ok.status, ok.exit_code) == (h.run_id, Status.SUCCESS, 0)
    assert (told.id, told.status, told.stdout) == (h2.run_id, Status.FAILED, b"3 rows missing")
    assert failed.status is Status.FAILED
    assert b"RuntimeError: upstream is down" in failed.stdout  # the traceback as output


def test_remote_async_monitor(remote: LiveServer) -> None:
    async def main() -> None:
        async with monitor("sdk-async"):
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert [r.status for r in runs(remote, "sdk-async")] == [Status.SUCCESS]


def test_server_down_never_raises_and_nothing_is_lost(
    live: LiveServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CRONWATCH_URL", dead_url())
    monkeypatch.setenv("CRONWATCH_KEY", live.project_key())
    t = time.monotonic()
    with pytest.raises(OSError, match="the job's own"), monitor("sdk-offline"):
        raise OSError("the job's own error")
    assert time.monotonic() - t < 1
    assert caplog.records and all(r.levelno == logging.WARNING for r in caplog.records)
    assert len(outbox.entries()) == 2
    # the server comes back (here: the pings are pointed at it) and the next flush delivers
    for path in outbox.entries():
        p = outbox.load(path)
        assert p is not None
        p.server = live.url
        Path(path).write_bytes(p.to_json())
    assert outbox.flush().delivered == 2
    (run,) = runs(live, "sdk-offline")
    assert run.status is Status.FAILED


@pytest.mark.parametrize("server", ["not a url", "ftp://example.com"])
def test_a_bad_url_never_raises(server: str, caplog: pytest.LogCaptureFixture) -> None:
    with monitor("sdk-bad-url", server=server, key="k"):
        pass
    assert "refused" in caplog.text or "invalid server URL" in caplog.text
    assert outbox.entries() == []  # kept aside as refused, not retried forever


def test_a_blackhole_costs_at_most_the_timeout() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        t = time.monotonic()
        with monitor("sdk-hole", server=f"http://127.0.0.1:{s.getsockname()[1]}", key="k",
                     timeout=0.3):  # fmt: skip
            pass
        assert time.monotonic() - t < 2 * 0.3 + 0.3  # one timeout per ping, at most
    finally:
        s.close()


def test_a_transport_can_be_replaced() -> None:
    sent: list[tuple[str, str, bytes | None]] = []

    class Fake:
        def send(
            self, method: str, url: str, body: bytes | None, headers: Mapping[str, str],
            timeout: float,
        ) -> tuple[int, bytes]:  # fmt: skip
            sent.append((method, url, body))
            return 200, b"OK"

    h = start_job("faked", server="https://cron.example.com", key="PK", transport=Fake())
    finish_job(h, "failed", "bad input", output="log", exit_code=2)
    (m1, u1, _), (m2, u2, b2) = sent
    assert (m1, u1) == (
        "GET",
        f"https://cron.example.com/ping/PK/faked/start?create=1&rid={h.run_id}",
    )
    assert m2 == "POST" and b2 == b"log"
    assert u2.startswith(
        f"https://cron.example.com/ping/PK/faked/2?create=1&rid={h.run_id}&message=bad+input"
    )


def test_schedule_upserts_the_job_on_the_server(
    remote: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONWATCH_TOKEN", remote.token("sdk")["Authorization"][7:])
    with monitor("sdk-scheduled", schedule="*/5 * * * *"):
        pass
    with remote.store() as s:
        s_job = s.get_job("sdk-scheduled")
        s_job.notify = ["https://hooks.example.com/x"]
        s.save_job(s_job, now=time.time())
    with monitor("sdk-scheduled", schedule="0 3 * * *", grace=60):  # an update keeps the rest
        pass
    with remote.store() as s:
        job = s.get_job("sdk-scheduled")
    assert (job.schedule, job.grace, job.notify) == (
        "0 3 * * *",
        60.0,
        ["https://hooks.example.com/x"],
    )


def test_schedule_without_a_token_says_so(
    remote: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with monitor("sdk-no-token", schedule="@daily"):
        pass
    assert "needs an API token" in caplog.text
    assert [r.status for r in runs(remote, "sdk-no-token")] == [Status.SUCCESS]
