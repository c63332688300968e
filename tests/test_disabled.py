# ruff: noqa: F811  (fixtures imported from another test module, used as arguments)
"""A disabled job records nothing and alerts nothing (Loom's "disabled" status), from the
TOML file and the CLI, for wrapped runs, with time travel and a real webhook receiver.
(Pings and check-ins of a disabled monitor: tests/test_loom_api.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Result
from test_checks_e2e import Receiver, at, ok, receiver  # noqa: F401


def test_disabled_job_records_and_alerts_nothing(
    cw: Callable[..., Result],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text(f"""
[jobs.cleanup]
schedule = "every 1h"
alert_after = 1
notify = ["{receiver.url}"]
disabled = true
""")
    ok(cw("apply", "--config", str(config)))
    shown = json.loads(ok(cw("job", "show", "cleanup", "--json")).out)
    assert shown["disabled"] is True and shown["health"] == "disabled"
    r = cw("run", "cleanup", "--", "sh", "-c", "echo still runs; exit 4")
    assert r.rc == 4 and r.out == b"still runs\n"  # the job itself is untouched
    assert json.loads(ok(cw("history", "cleanup", "--json")).out) == []
    out = json.loads(ok(cw("check", "--at", at(time.time() + 5 * 3600), "--json")).out)
    assert out["events"] == [] and receiver.events() == []
    assert b"disabled" in ok(cw("job", "show", "cleanup")).out

    # enabled again (the CLI's spelling): recorded and alerted as any job
    ok(cw("job", "set", "cleanup", "--enable"))
    assert cw("run", "cleanup", "--", "false").rc == 1
    assert [r["status"] for r in json.loads(ok(cw("history", "cleanup", "--json")).out)] == [
        "failed"]  # fmt: skip
    assert receiver.events() == [("alert", "cleanup", "failed")]
