# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Fuzz the management API from its own OpenAPI document with every Schemathesis check
(no 5xx, documented statuses and bodies, Allow headers, schema-valid data accepted and
invalid data refused, ...), in every phase (coverage, fuzzing, stateful), through the
schemathesis CLI against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from test_server_harness import LiveServer, live  # noqa: F401

pytest.importorskip("schemathesis")
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
TESTS = str(Path(__file__).parent)


@pytest.mark.parametrize("base", ["/api/v1", "/api/crons"])
def test_api_fuzz_with_every_check_finds_nothing(
    live: LiveServer, tmp_path: Path, base: str
) -> None:
    """Our own API, and Loom's (/api/crons) from its own document."""
    token = live.token("fuzzer" + base.replace("/", "-"))["Authorization"]
    env = dict(os.environ, PYTHONPATH=TESTS, SCHEMATHESIS_HOOKS="fuzz_hooks")
    cmd = [
        SCHEMATHESIS, "run", f"{live.url}{base}/openapi.json", "--url", f"{live.url}{base}",
        "-H", f"Authorization: {token}", "--checks", "all",
        # replaced by fuzz_hooks.py's version, which knows the four parsed settings
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "10", "--seed", "20261202", "--request-timeout", "20",
        "--no-color",
    ]  # fmt: skip
    # (in tmp_path: the CLI keeps a cache directory where it runs)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=500, cwd=tmp_path)
    report = p.stdout + p.stderr
    assert p.returncode == 0, report[-20000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 500, report[-5000:]
    assert httpx.get(live.url + "/healthz").status_code == 200


def test_cronitor_api_fuzz_with_every_check_finds_nothing(live: LiveServer, tmp_path: Path) -> None:
    """Cronitor's Monitor API (server/cronitor_api.py) from its own document, the same way:
    HTTP Basic with the token as user name."""
    import base64

    secret = live.token("cronitor-fuzzer")["Authorization"].removeprefix("Bearer ")
    auth = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
    env = dict(os.environ, PYTHONPATH=TESTS, SCHEMATHESIS_HOOKS="fuzz_hooks")
    cmd = [
        SCHEMATHESIS, "run", f"{live.url}/api/cronitor/openapi.json", "--url", f"{live.url}/api",
        "-H", f"Authorization: {auth}", "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "10", "--seed", "20261202", "--request-timeout", "20",
        "--no-color",
    ]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=500, cwd=tmp_path)
    report = p.stdout + p.stderr
    assert p.returncode == 0, report[-20000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 100, report[-5000:]
    assert httpx.get(live.url + "/healthz").status_code == 200
