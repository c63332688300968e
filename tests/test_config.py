"""`job set`, `job show/rm`, `apply` (monitors as code) and settings validation, through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result

CONFIG = """
[defaults]
grace = "10m"

[jobs.backup]
schedule = "30 2 * * *"
tz = "Europe/Berlin"
max_runtime = "2h"
assert = ["output contains 'backup complete'", "duration < 1h"]

[jobs.report]
schedule = "every 15m"
alert_after = 3
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cronwatch.toml"
    path.write_text(text)
    return str(path)


def show(cw: Callable[..., Result], name: str) -> dict:
    r = cw("job", "show", name, "--json")
    assert r.rc == 0, r.err
    return json.loads(r.out)


def test_apply_creates_then_reports_nothing_to_change(
    cw: Callable[..., Result], tmp_path: Path
) -> None:
    path = write(tmp_path, CONFIG)
    r = cw("apply", "--config", path)
    assert r.rc == 0, r.err
    assert b"create backup" in r.out and b"create report" in r.out
    backup = show(cw, "backup")
    assert (backup["schedule"], backup["tz"], backup["grace"], backup["max_runtime"]) == (
        "30 2 * * *", "Europe/Berlin", 600.0, 7200.0)  # fmt: skip
    assert backup["asserts"] == ["output contains 'backup complete'", "duration < 1h"]
    assert show(cw, "report")["alert_after"] == 3
    again = cw("apply", "--config", path)
    assert again.rc == 0 and b"nothing to change" in again.out


def test_apply_prints_each_change_and_dry_run_changes_nothing(
    cw: Callable[..., Result], tmp_path: Path
) -> None:
    assert cw("apply", "--config", write(tmp_path, CONFIG)).rc == 0
    changed = write(tmp_path, CONFIG.replace('"every 15m"', '"every 30m"'))
    dry = cw("apply", "--config", changed, "--dry-run", "--json")
    assert dry.rc == 0, dry.err
    (change,) = json.loads(dry.out)
    assert change["job"] == "report" and change["action"] == "update"
    assert change["changes"] == {"schedule": {"from": "every 15m", "to": "every 30m"}}
    assert show(cw, "report")["schedule"] == "every 15m"  # dry run
    r = cw("apply", "--config", changed)
    assert b"update report" in r.out and b"'every 15m' -> 'every 30m'" in r.out
    assert show(cw, "report")["schedule"] == "every 30m"


def test_apply_leaves_jobs_outside_the_file_alone(
    cw: Callable[..., Result], tmp_path: Path
) -> None:
    assert cw("run", "adhoc", "--", "true").rc == 0
    assert cw("apply", "--config", write(tmp_path, CONFIG)).rc == 0
    assert json.loads(cw("history", "adhoc", "--json").out)[0]["status"] == "success"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[jobs.x]\nschedule = "61 * * * *"\n', b"[jobs.x] schedule"),
        ('[jobs.x]\ntz = "Mars/Olympus"\n', b"unknown time zone 'Mars/Olympus'"),
        ('[jobs.x]\ngrace = "5 parsecs"\n', b"grace: invalid duration '5 parsecs'"),
        ("[jobs.x]\nalert_after = 0\n", b"alert_after: invalid value 0"),
        ('[jobs.x]\nnotify = ["ftp://example.com/x"]\n', b"notify"),
        ('[jobs.x]\nassert = ["output smells nice"]\n', b"asserts"),
        ('[jobs.x]\ncolour = "blue"\n', b"unknown setting 'colour'"),
        ("[jobs.x]\nassert = []\nasserts = []\n", b"asserts is given twice"),
        ('[defaults]\nping_key = "aaaaaaaaaaaaaaaa"\n[jobs.x]\n', b"ping_key"),
        ("[jobs.x]\nkeep_days = inf\n", b"keep_days: invalid value inf: expected a number from 1"),
        ("[jobs.x]\nkeep_output = 0\n", b"keep_output: invalid value 0 (out of range)"),
        ('[jobs."Bad Name"]\n', b"invalid job name 'Bad Name'"),
        ("[extras]\n", b"unknown section 'extras'"),
        ("[jobs.x\n", b"invalid TOML"),
    ],
)
def test_invalid_config_names_field_and_value_and_changes_nothing(
    cw: Callable[..., Result], tmp_path: Path, text: str, expected: bytes
) -> None:
    r = cw("apply", "--config", write(tmp_path, text))
    assert r.rc == 2, (r.out, r.err)
    assert expected in r.err and r.err.count(b"\n") == 1  # one line, no traceback
    assert cw("job", "show", "x").rc == 1  # nothing was created


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--schedule", "every never"], b"schedule"),
        (["--grace", "-5m"], b"grace"),
        (["--max-runtime", "soon"], b"max_runtime"),
        (["--notify", "tgram://only-a-token"], b"notify"),
        (["--assert", "duration < forever"], b"asserts"),
        (["--key", "short"], b"invalid ping key"),
    ],
)
def test_job_set_rejects_bad_values(
    cw: Callable[..., Result], args: list[str], expected: bytes
) -> None:
    r = cw("job", "set", "x", *args)
    assert r.rc == 2 and expected in r.err, (r.out, r.err)


def test_apply_sets_and_changes_the_ping_key_and_defaults_yield_to_aliases(
    cw: Callable[..., Result], tmp_path: Path
) -> None:
    text = '[defaults]\nassert = ["duration < 1h"]\n[jobs.k]\nping_key = "%s"\nasserts = []\n'
    assert cw("apply", "--config", write(tmp_path, text % ("k" * 16))).rc == 0
    assert show(cw, "k")["ping_key"] == "k" * 16 and show(cw, "k")["asserts"] == []
    dry = cw("apply", "--config", write(tmp_path, text % ("q" * 16)), "--dry-run", "--json")
    assert json.loads(dry.out)[0]["changes"] == {"ping_key": {"from": "k" * 16, "to": "q" * 16}}
    assert cw("apply", "--config", write(tmp_path, text % ("q" * 16))).rc == 0
    assert show(cw, "k")["ping_key"] == "q" * 16
    assert b"nothing to change" in cw("apply", "--config", write(tmp_path, text % ("q" * 16))).out


def test_job_set_has_a_flag_for_every_setting(cw: Callable[..., Result]) -> None:
    assert cw("job", "set", "f", "--keep-failed-output", "9", "--tag", "a").rc == 0
    assert (show(cw, "f")["keep_failed_output"], show(cw, "f")["tags"]) == (9, ["a"])
    assert cw("job", "set", "f", "--no-tag").rc == 0
    assert show(cw, "f")["tags"] == [] and show(cw, "f")["keep_failed_output"] == 9


def test_job_set_show_and_rm(cw: Callable[..., Result]) -> None:
    r = cw("job", "set", "nightly", "--schedule", "@daily", "--grace", "1h", "--tag", "db")
    assert r.rc == 0, r.err
    assert b"next expected" in r.out
    info = show(cw, "nightly")
    assert info["health"] == "unknown" and info["tags"] == ["db"] and len(info["ping_key"]) >= 16
    assert cw("job", "set", "nightly", "--pause").rc == 0
    assert show(cw, "nightly")["health"] == "paused"
    assert cw("job", "rm", "nightly").rc == 0
    assert cw("job", "show", "nightly").rc == 1


def test_an_invalid_config_file_never_stops_the_job(
    cw: Callable[..., Result], cw_env: dict
) -> None:
    config = Path(cw_env["XDG_CONFIG_HOME"]) / "cronwatch" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[server\nurl = ")
    r = cw("run", "resilient", "--", "sh", "-c", "echo ran; exit 7")
    assert r.rc == 7 and r.out == b"ran\n"
    assert b"Traceback" not in r.err
    assert json.loads(cw("history", "resilient", "--json").out)[0]["exit_code"] == 7
