# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""``cronwatch run KEY -- CMD`` as ``simob run KEY -- CMD``: the job's ping key in place of
its name, with a server configured (CRONWATCH_URL or the config file), through the real
script against a real ``cronwatch serve``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import Result
from cronwatch.core.errors import ValidationError
from cronwatch.core.model import validate_ping_key
from cronwatch.wrapper.options import key_ok
from test_server_harness import LiveServer, live  # noqa: F401

SIMOB_KEY = "Vp4s8S0SsnMo"  # simob's documented key: 12 characters


def job_with_key(live: LiveServer, name: str, key: str) -> None:
    r = httpx.put(f"{live.url}/api/v1/jobs/{name}", json={"ping_key": key},
                  headers=live.token(f"setter-{name}"), timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.json()["ping_key"] == key, r.text


def runs_of(live: LiveServer, name: str) -> list[dict]:
    for _ in range(100):  # the finish ping is sent before exit; its commit is quick
        runs = httpx.get(f"{live.url}/api/v1/jobs/{name}/runs",
                         headers=live.token(f"reader-{name}-{time.monotonic()}"), timeout=10).json()  # fmt: skip
        if runs and runs[0]["status"] != "running":
            return list(runs)
        time.sleep(0.1)
    raise AssertionError(f"no finished run of {name}")


@pytest.mark.parametrize("suffix", ["", "/jobs/p"])  # our dialect, and simob's own URLs
def test_run_with_a_key_reports_to_the_server(
    cw: Callable[..., Result], live: LiveServer, suffix: str
) -> None:
    name = "backup" + suffix.replace("/", "-")
    key = SIMOB_KEY if not suffix else "Qz7" + SIMOB_KEY
    job_with_key(live, name, key)
    # the document's crontab line, with our command's name
    r = cw("run", key, "--capture-output", "--", "sh", "-c", "echo backed up; echo oops >&2; exit 2",
           env={"CRONWATCH_URL": live.url + suffix})  # fmt: skip
    assert r.rc == 2  # the command's exit code
    assert r.out == b"backed up\n" and r.err == b"oops\n"  # output passes through, no warning
    (run,) = runs_of(live, name)
    assert (run["status"], run["exit_code"]) == ("failed", 2)
    assert run["duration"] is not None and run["duration"] >= 0
    # the server keeps the record: no local job named after the key
    local = cw("jobs", "--json")
    assert local.rc == 1 and b"no database" in local.err
    r = cw("run", key, "--", "true", env={"CRONWATCH_URL": live.url + suffix})
    assert r.rc == 0 and r.err == b""
    assert [x["status"] for x in runs_of(live, name)] == ["success", "failed"]


def test_run_with_a_key_from_the_config_file(
    cw: Callable[..., Result], live: LiveServer, cw_env: dict[str, str]
) -> None:
    job_with_key(live, "from-config", "Cfg4s8S0SsnMo")
    config = Path(cw_env["XDG_CONFIG_HOME"]) / "cronwatch" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[server]\nurl = "{live.url}"\n')
    r = cw("run", "Cfg4s8S0SsnMo", "--", "sh", "-c", "exit 0")
    assert r.rc == 0 and r.err == b"", r.err
    assert [x["status"] for x in runs_of(live, "from-config")] == ["success"]


def test_a_lowercase_key_with_a_server_and_no_project_key(
    cw: Callable[..., Result], live: LiveServer
) -> None:
    """A key that could be a name too: with a server and no project key to send a name
    with, it is the job's key (and the local record keeps the run under that word)."""
    job_with_key(live, "lowkey", "lowercasekey12")
    r = cw("run", "lowercasekey12", "--", "true", env={"CRONWATCH_URL": live.url})
    assert r.rc == 0 and r.err == b"", r.err
    assert [x["status"] for x in runs_of(live, "lowkey")] == ["success"]


def test_an_unknown_key_warns_and_keeps_the_exit_code(
    cw: Callable[..., Result], live: LiveServer
) -> None:
    r = cw("run", "NoSuchKey1234", "--", "sh", "-c", "exit 3", env={"CRONWATCH_URL": live.url})
    assert r.rc == 3
    assert b"refused the ping" in r.err and b"check the key" in r.err


def test_without_a_server_the_word_is_a_name(cw: Callable[..., Result]) -> None:
    r = cw("run", SIMOB_KEY, "--", "true")
    assert r.rc == 0
    assert b"recorded as 'vp4s8s0ssnmo'" in r.err  # the name rule, as before
    assert [j["name"] for j in json.loads(cw("jobs", "--json").out)] == ["vp4s8s0ssnmo"]


@pytest.mark.parametrize(
    "word", [SIMOB_KEY, "a" * 12, "a" * 11, "-" + "a" * 12, "a" * 128, "a" * 129, "ab cd" * 3,
             "é" * 12, "Key_with-dashes_"],
)  # fmt: skip
def test_the_wrappers_key_rule_is_the_cores(word: str) -> None:
    try:
        validate_ping_key(word)
        valid = True
    except ValidationError:
        valid = False
    assert key_ok(word) is valid
