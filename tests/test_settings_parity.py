# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""One schema, one verdict: every job setting through `job set`, the TOML file and the API.

Each row of the table gives one input in each entry point's spelling (the CLI and the TOML
file take text such as "15m" and "none", the API strict JSON: seconds, null) and the
verdict: the stored value, read back through the same entry point, or REJECT, which means
a clear error naming the setting (CLI: exit 2, one line, no traceback; TOML: the same from
`apply`; API: 422 whose "error" names the field) and no job created.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from conftest import Result
from cronwatch.core.model import Job
from cronwatch.core.settings import BY_NAME, LIST_KINDS, NUMBER_KINDS, SETTINGS, Kind, defaults
from cronwatch.main import main
from test_server_harness import LiveServer, client, live  # noqa: F401

REJECT = "<rejected>"
SKIP = "<no such spelling>"


class Raw(str):
    """JSON text sent as is (NaN and Infinity, which json= would not write)."""


class Row(NamedTuple):
    setting: str
    cli: Any  # argv after `job set NAME`, or SKIP
    toml: Any  # the right-hand side of `setting = ...`, or SKIP
    api: Any  # the JSON value (or Raw text), or SKIP
    want: Any  # the stored value, or REJECT


KEY_A = "a" * 16
KEY_B = "Key_with-dashes_" + "z" * 112  # 128 characters
TAGS_51 = [f"t{i}" for i in range(51)]
TAGS_50 = TAGS_51[:50]
HOOK = "https://hooks.example.com/cron"

HAND: list[Row] = [
    # --- the reproductions: the API used to take what the CLI and TOML refuse ----
    Row("asserts", ["--assert", "duration < 30 minutes"], '["duration < 30 minutes"]',
        ["duration < 30 minutes"], REJECT),
    Row("keep_output", ["--keep-output", "0"], "0", 0, REJECT),
    Row("keep_days", ["--keep-days", "0"], "0", 0, REJECT),
    Row("tags", ["--tag", "Bad Tag"], '["Bad Tag"]', ["Bad Tag"], REJECT),
    Row("ping_key", ["--key", "k"], '"k"', "k", REJECT),
    # --- schedule ---------------------------------------------------------------------------
    Row("schedule", ["--schedule", "@daily"], '"@daily"', "@daily", "@daily"),
    Row("schedule", ["--schedule", "*/5 * * * *"], '"*/5 * * * *"', "*/5 * * * *", "*/5 * * * *"),
    Row("schedule", ["--schedule", "every 15m"], '"every 15m"', "every 15m", "every 15m"),
    Row("schedule", ["--schedule", ""], '""', "", ""),
    Row("schedule", ["--schedule", "61 * * * *"], '"61 * * * *"', "61 * * * *", REJECT),
    Row("schedule", ["--schedule", "every never"], '"every never"', "every never", REJECT),
    Row("schedule", ["--schedule", "x" * 501], f'"{"x" * 501}"', "x" * 501, REJECT),
    Row("schedule", SKIP, "5", 5, REJECT),
    # --- tz -----------------------------------------------------------------------------------
    Row("tz", ["--tz", "Europe/Berlin"], '"Europe/Berlin"', "Europe/Berlin", "Europe/Berlin"),
    Row("tz", ["--tz", "Mars/Olympus"], '"Mars/Olympus"', "Mars/Olympus", REJECT),
    Row("tz", ["--tz", ""], '""', "", REJECT),
    Row("tz", SKIP, "1", 1, REJECT),
    # --- durations: text in the CLI and TOML, seconds in the API ------------------------------
    Row("grace", ["--grace", "15m"], '"15m"', 900, 900.0),
    Row("grace", ["--grace", "1h30m"], "5400", 5400.0, 5400.0),
    Row("grace", ["--grace=-5m"], '"-5m"', -300, REJECT),
    Row("grace", ["--grace", "5 parsecs"], '"5 parsecs"', SKIP, REJECT),
    Row("grace", ["--grace", "367d"], '"367d"', 367 * 86400, REJECT),
    Row("grace", SKIP, "true", True, REJECT),
    Row("max_runtime", ["--max-runtime", "2h"], '"2h"', 7200, 7200.0),
    Row("max_runtime", ["--max-runtime", "none"], '"none"', None, None),
    Row("max_runtime", ["--max-runtime", "0"], "0", 0, REJECT),
    Row("max_runtime", ["--max-runtime", "soon"], '"soon"', SKIP, REJECT),
    Row("realert", ["--realert", "1h"], '"1h"', 3600, 3600.0),
    Row("realert", ["--realert", "none"], '"none"', None, None),
    Row("realert", ["--realert", "0s"], '"0s"', 0, REJECT),
    # --- counts -------------------------------------------------------------------------------
    Row("alert_after", ["--alert-after", "3"], "3", 3, 3),
    Row("alert_after", ["--alert-after", "0"], "0", 0, REJECT),
    Row("alert_after", ["--alert-after", "1.5"], "1.5", 1.5, REJECT),
    Row("alert_after", ["--alert-after", "3.0"], "3.0", 3.0, 3),  # a whole number, as JSON Schema says
    Row("alert_after", ["--alert-after", "three"], '"three"', "three", REJECT),
    Row("alert_after", SKIP, "true", True, REJECT),
    Row("recover_after", ["--recover-after", "2"], "2", 2, 2),
    Row("recover_after", ["--recover-after=-1"], "-1", -1, REJECT),
    Row("keep_output", ["--keep-output", "50"], "50", 50, 50),
    Row("keep_failed_output", ["--keep-failed-output", "7"], "7", 7, 7),
    Row("keep_failed_output", ["--keep-failed-output", "0"], "0", 0, REJECT),
    # --- keep_days: any number in range -------------------------------------------------------
    Row("keep_days", ["--keep-days", "30"], "30", 30, 30.0),
    Row("keep_days", ["--keep-days", "1.5"], "1.5", 1.5, 1.5),
    Row("keep_days", ["--keep-days=-3"], "-3", -3, REJECT),
    Row("keep_days", ["--keep-days", "1e400"], "1e400", Raw("1e400"), REJECT),
    # --- booleans -----------------------------------------------------------------------------
    Row("paused", ["--pause"], "true", True, True),
    Row("paused", ["--resume"], "false", False, False),
    Row("paused", SKIP, "1", 1, REJECT),
    Row("slowdown_alert", ["--slowdown-alert", "on"], "true", True, True),
    Row("slowdown_alert", ["--slowdown-alert", "off"], "false", False, False),
    Row("slowdown_alert", ["--slowdown-alert", "maybe"], '"maybe"', "maybe", REJECT),
    Row("slowdown_alert", SKIP, "0", 0, REJECT),
    # --- lists --------------------------------------------------------------------------------
    Row("notify", ["--notify", HOOK], f'["{HOOK}"]', [HOOK], [HOOK]),
    Row("notify", ["--no-notify"], "[]", [], []),
    Row("notify", ["--notify", "ftp://example.com/x"], '["ftp://example.com/x"]',
        ["ftp://example.com/x"], REJECT),
    Row("notify", ["--notify", "tgram://only-a-token"], '["tgram://only-a-token"]',
        ["tgram://only-a-token"], REJECT),
    Row("notify", SKIP, "[1]", [1], REJECT),
    Row("asserts", ["--assert", "duration < 30m", "--assert", "output contains done"],
        '["duration < 30m", "output contains done"]', ["duration < 30m", "output contains done"],
        ["duration < 30m", "output contains done"]),
    Row("asserts", ["--no-assert"], "[]", [], []),
    Row("asserts", ["--assert", "output smells nice"], '["output smells nice"]',
        ["output smells nice"], REJECT),
    Row("tags", ["--tag", "db", "--tag", "nightly.2"], '["db", "nightly.2"]', ["db", "nightly.2"],
        ["db", "nightly.2"]),
    Row("tags", ["--no-tag"], "[]", [], []),
    Row("tags", ["--tag=-x"], '["-x"]', ["-x"], REJECT),
    Row("tags", ["--tag", "a" * 65], f'["{"a" * 65}"]', ["a" * 65], REJECT),
    Row("tags", [a for t in TAGS_50 for a in ("--tag", t)], json.dumps(TAGS_50), TAGS_50, TAGS_50),
    Row("tags", [a for t in TAGS_51 for a in ("--tag", t)], json.dumps(TAGS_51), TAGS_51, REJECT),
    Row("tags", SKIP, "[1]", [1], REJECT),
    # --- ping key: 12-128 of [A-Za-z0-9_-], not starting with '-' ----------------------------
    Row("ping_key", ["--key", KEY_A], f'"{KEY_A}"', KEY_A, KEY_A),
    Row("ping_key", ["--key", KEY_B], f'"{KEY_B}"', KEY_B, KEY_B),
    Row("ping_key", ["--key", "Vp4s8S0SsnMo"], '"Vp4s8S0SsnMo"', "Vp4s8S0SsnMo", "Vp4s8S0SsnMo"),
    Row("ping_key", ["--key", "a" * 11], f'"{"a" * 11}"', "a" * 11, REJECT),
    Row("ping_key", ["--key", "a" * 129], f'"{"a" * 129}"', "a" * 129, REJECT),
    Row("ping_key", ["--key=-" + "a" * 16], f'"-{"a" * 16}"', "-" + "a" * 16, REJECT),
    Row("ping_key", ["--key", "a" * 15 + "!"], f'"{"a" * 15}!"', "a" * 15 + "!", REJECT),
    Row("ping_key", ["--key", "é" * 16], f'"{"é" * 16}"', "é" * 16, REJECT),
    # --- disabled, title, environments (Loom's and Cronitor's monitors) ----------------------
    Row("disabled", ["--disable"], "true", True, True),
    Row("disabled", ["--enable"], "false", False, False),
    Row("disabled", SKIP, '"yes please"', "yes please", REJECT),
    Row("title", ["--title", "Daily Cleanup Job"], '"Daily Cleanup Job"', "Daily Cleanup Job",
        "Daily Cleanup Job"),
    Row("title", ["--title", "two\nlines"], '"two\\nlines"', "two\nlines", REJECT),
    Row("title", ["--title", "x" * 201], f'"{"x" * 201}"', "x" * 201, REJECT),
    Row("environments", ["--environment", "production", "--environment", "staging"],
        '["production", "staging"]', ["production", "staging"], ["production", "staging"]),
    Row("environments", ["--no-environment"], "[]", [], []),
    Row("environments", ["--environment", "pro duction"], '["pro duction"]', ["pro duction"],
        REJECT),
    Row("environments", SKIP, "[1]", [1], REJECT),
    Row("mute_envs", ["--mute-env", "staging"], '["staging"]', ["staging"], ["staging"]),
    Row("mute_envs", ["--mute-env", "x" * 65], f'["{"x" * 65}"]', ["x" * 65], REJECT),
    # --- schedule tolerance, surge threshold, timed pause ------------------------------------
    Row("schedule_tolerance", ["--schedule-tolerance", "2"], "2", 2, 2),
    Row("schedule_tolerance", ["--schedule-tolerance", "none"], '"none"', None, None),
    Row("schedule_tolerance", ["--schedule-tolerance", "two"], '"two"', "two", REJECT),
    Row("surge_threshold", ["--surge-threshold", "10"], "10", 10, 10),
    Row("surge_threshold", ["--surge-threshold", "none"], '"none"', None, None),
    Row("surge_threshold", ["--surge-threshold", "1.5"], "1.5", 1.5, REJECT),
    Row("paused_until", ["--paused-until", "2026-12-03T08:00:00Z"], '"2026-12-03T08:00:00Z"',
        1796284800, 1796284800.0),
    Row("paused_until", SKIP, "2026-12-03T08:00:00Z", 1796284800, 1796284800.0),  # TOML date-time
    Row("paused_until", ["--paused-until", "tomorrow"], '"tomorrow"', "tomorrow", REJECT),
    # --- notify: Cronitor's shorthands and notification lists ----------------------------------
    Row("notify", ["--notify", "email:team@company.com", "--notify", "slack:#alerts"],
        '["email:team@company.com", "slack:#alerts"]', ["email:team@company.com", "slack:#alerts"],
        ["email:team@company.com", "slack:#alerts"]),
    Row("notify", ["--notify", "on-call-team"], '["on-call-team"]', ["on-call-team"],
        ["on-call-team"]),
    Row("notify", ["--notify", "sms:+15551234567"], '["sms:+15551234567"]', ["sms:+15551234567"],
        ["sms:+15551234567"]),
    Row("notify", ["--notify", "email:not-an-address"], '["email:not-an-address"]',
        ["email:not-an-address"], REJECT),
    Row("notify", ["--notify", "slack:"], '["slack:"]', ["slack:"], REJECT),
    Row("notify", ["--notify", "On Call"], '["On Call"]', ["On Call"], REJECT),
]  # fmt: skip


def _bound_rows() -> list[Row]:
    """For every number: both bounds accepted, just past each refused, NaN and infinity
    refused, in each entry point's spelling (the bounds come from the schema; the rows
    above pin the values the issue is about)."""
    rows = []
    for s in SETTINGS:
        if s.kind not in NUMBER_KINDS:
            continue
        assert s.lo is not None and s.hi is not None, s.name
        step = 1 if s.kind is Kind.COUNT else 0.5
        for x, ok in ((s.lo, True), (s.hi, True), (s.lo - step, False), (s.hi + step, False)):
            x = int(x) if s.kind is Kind.COUNT else float(x)
            rows.append(Row(s.name, [f"{s.flag}={x}"], repr(x), x, x if ok else REJECT))
        for word, js in (("nan", "NaN"), ("inf", "Infinity"), ("-inf", "-Infinity")):
            rows.append(Row(s.name, [f"{s.flag}={word}"], word, Raw(js), REJECT))
    return rows


ROWS = HAND + _bound_rows()


def test_the_table_covers_every_setting_both_ways() -> None:
    for s in SETTINGS:
        verdicts = {r.want == REJECT for r in ROWS if r.setting == s.name}
        assert verdicts == {True, False}, f"{s.name}: needs accepted and rejected rows"
        assert s.kind in NUMBER_KINDS or s.kind in LIST_KINDS or s.max_len or s.kind is Kind.BOOL
    assert {r.setting for r in ROWS} == set(BY_NAME)


def test_every_number_is_bounded_and_schema_defaults_are_the_jobs() -> None:
    for s in SETTINGS:
        if s.kind in NUMBER_KINDS:
            assert s.lo is not None and s.hi is not None and math.isfinite(s.hi), s.name
    assert defaults() == Job(name="x").settings()
    assert set(defaults()) | {"ping_key"} == set(BY_NAME)


# --- the three entry points -----------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("CRONWATCH_DASHBOARD", "off")
    monkeypatch.delenv("CRONWATCH_DB", raising=False)
    return tmp_path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse's own errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return rc, out, err


def _stored(capsys: pytest.CaptureFixture[str], db: Path, job: str) -> dict[str, Any] | None:
    rc, out, err = _cli(capsys, "job", "show", job, "--json", "--db", str(db))
    if rc == 1:
        assert "unknown job" in err or "no database" in err, err
        return None
    assert rc == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def _check_rejected(rc: int, err: str, setting: str) -> None:
    assert rc == 2, err
    assert err.startswith("cronwatch: ") and err.count("\n") == 1, err  # one line
    assert setting in err, err


@pytest.fixture(scope="module")
def rw(live: LiveServer) -> dict[str, str]:
    return live.token("parity")


@pytest.mark.parametrize(
    "i", range(len(ROWS)), ids=[f"{r.setting}-{n}" for n, r in enumerate(ROWS)]
)
def test_same_verdict_from_cli_toml_and_api(
    i: int, home: Path, capsys: pytest.CaptureFixture[str], client: httpx.Client, rw: dict
) -> None:
    row = ROWS[i]
    name = f"parity-{i}"
    verdicts = []
    if row.cli is not SKIP:
        db = home / "cli.db"
        rc, out, err = _cli(capsys, "job", "set", name, "--db", str(db), "--json", *row.cli)
        if row.want == REJECT:
            _check_rejected(rc, err, row.setting)
            assert _stored(capsys, db, name) is None  # nothing half-made
        else:
            assert rc == 0, err
            assert _stored(capsys, db, name)[row.setting] == row.want  # type: ignore[index]
        verdicts.append("cli")
    if row.toml is not SKIP:
        db, path = home / "toml.db", home / "cronwatch.toml"
        path.write_text(f"[jobs.{name}]\n{row.setting} = {row.toml}\n")
        rc, out, err = _cli(capsys, "apply", "--config", str(path), "--db", str(db))
        if row.want == REJECT:
            _check_rejected(rc, err, row.setting)
            assert f"[jobs.{name}]" in err
            assert _stored(capsys, db, name) is None
        else:
            assert rc == 0, err
            assert _stored(capsys, db, name)[row.setting] == row.want  # type: ignore[index]
        verdicts.append("toml")
    if row.api is not SKIP:
        url = f"/api/v1/jobs/{name}"
        if isinstance(row.api, Raw):
            body = f'{{"{row.setting}": {row.api}}}'.encode()
            headers = {**rw, "Content-Type": "application/json"}
            r = client.put(url, content=body, headers=headers)
        else:
            r = client.put(url, json={row.setting: row.api}, headers=rw)
        if row.want == REJECT:
            assert r.status_code == 422, r.text
            assert row.setting in r.json()["error"], r.text
            assert client.get(url, headers=rw).status_code == 404  # nothing half-made
        else:
            assert r.status_code == 200, r.text
            assert r.json()[row.setting] == row.want
            assert client.get(url, headers=rw).json()[row.setting] == row.want
        verdicts.append("api")
    assert len(verdicts) >= 2  # a row compares at least two entry points


# --- a few through the real script, and the other API verbs ---------------------------------


@pytest.mark.parametrize(
    ("args", "setting"),
    [(["--assert", "duration < 30 minutes"], "asserts"), (["--keep-output", "0"], "keep_output"),
     (["--keep-days", "nan"], "keep_days"), (["--key", "k"], "ping_key")],
)  # fmt: skip
def test_the_real_script_refuses_naming_the_setting(
    cw: Callable[..., Result], args: list[str], setting: str
) -> None:
    r = cw("job", "set", "x", *args)
    assert r.rc == 2 and setting.encode() in r.err and r.err.count(b"\n") == 1, r.err
    assert cw("job", "show", "x").rc == 1


def test_the_real_script_sets_every_setting(cw: Callable[..., Result]) -> None:
    r = cw("job", "set", "all", "--schedule", "@hourly", "--tz", "Europe/Berlin",
           "--grace", "5m", "--max-runtime", "1h", "--alert-after", "3", "--recover-after", "2",
           "--realert", "2h", "--notify", HOOK, "--assert", "duration < 30m", "--pause",
           "--tag", "db", "--keep-days", "30", "--keep-output", "20",
           "--keep-failed-output", "40", "--slowdown-alert", "on", "--key", KEY_A,
           "--disable", "--title", "All of them", "--environment", "production",
           "--environment", "staging", "--mute-env", "staging",
           "--schedule-tolerance", "1", "--surge-threshold", "3",
           "--paused-until", "2030-01-01T00:00:00Z", "--json")  # fmt: skip
    assert r.rc == 0, r.err
    got = json.loads(cw("job", "show", "all", "--json").out)
    assert {k: got[k] for k in BY_NAME} == {
        "schedule": "@hourly", "tz": "Europe/Berlin", "grace": 300.0, "max_runtime": 3600.0,
        "alert_after": 3, "recover_after": 2, "realert": 7200.0, "notify": [HOOK],
        "asserts": ["duration < 30m"], "paused": True, "tags": ["db"], "keep_days": 30.0,
        "keep_output": 20, "keep_failed_output": 40, "slowdown_alert": True, "ping_key": KEY_A,
        "disabled": True, "title": "All of them", "environments": ["production", "staging"],
        "mute_envs": ["staging"],
        "schedule_tolerance": 1, "surge_threshold": 3, "paused_until": 1893456000.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [("post", "/api/v1/jobs", {"name": "new-x", "asserts": ["duration < 30 minutes"]}, "asserts"),
     ("post", "/api/v1/jobs", {"name": "new-y", "keep_days": 0}, "keep_days"),
     ("patch", "/api/v1/jobs/patched", {"tags": ["Bad Tag"]}, "tags"),
     ("patch", "/api/v1/jobs/patched", {"ping_key": "k"}, "ping_key"),
     ("patch", "/api/v1/jobs/patched", {"schedule": "every never"}, "schedule")],
)  # fmt: skip
def test_create_and_patch_refuse_as_put_does(
    client: httpx.Client, rw: dict, method: str, path: str, body: dict, field: str
) -> None:
    assert client.put("/api/v1/jobs/patched", json={"tags": ["kept"]}, headers=rw).is_success
    r = client.request(method.upper(), path, json=body, headers=rw)
    assert r.status_code == 422 and field in r.json()["error"], r.text
    assert client.get("/api/v1/jobs/patched", headers=rw).json()["tags"] == ["kept"]
    assert client.get("/api/v1/jobs/new-x", headers=rw).status_code == 404


@pytest.mark.parametrize(
    "body", [{"grace": "60"}, {"max_runtime": "none"}, {"tags": "db"}, {"paused": "yes"},
             {"keep_output": "5"}, {"slowdown_alert": "on"}],
)  # fmt: skip
def test_the_api_takes_json_types_not_the_cli_text(
    client: httpx.Client, rw: dict, body: dict
) -> None:
    r = client.put("/api/v1/jobs/typed-json", json=body, headers=rw)
    assert r.status_code == 422 and next(iter(body)) in r.json()["error"], r.text


def test_the_api_stores_the_schedule_as_the_cli_does(client: httpx.Client, rw: dict) -> None:
    r = client.put("/api/v1/jobs/sched", json={"schedule": "  @daily ", "tz": "UTC"}, headers=rw)
    assert r.status_code == 200, r.text
    assert r.json()["schedule"] == "@daily"
