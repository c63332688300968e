"""The CLI through its entry point: usage errors, help, and the query commands."""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import pytest

import cronwatch
from conftest import CRONWATCH, JOB_WATCH, last_run, warnings
from cronwatch.cli.commands import build_parser
from cronwatch.core.model import NAME_RULE, Job, Run, Status

# --- the wrapper's command line -------------------------------------------------------------


# A name that breaks the rule used to cost the job (exit 2, nothing run); since issue 11
# the run is recorded under the nearest valid name, and one warning line says which.
@pytest.mark.parametrize(
    ("name", "recorded_as"),
    [("Backup", "backup"), ("-backup", "backup"), ("_x", "x"), (".x", "x"), ("a b", "a-b"),
     ("x" * 65, "x" * 64), ("naïve", "na-ve"), ("a/b", "a-b"), ("semi;colon", "semi-colon"),
     ("Observatory_Check", "observatory_check"), ("ÉTÉ", "t"), ("***", "sh"), ("", "sh")],
)  # fmt: skip
@pytest.mark.parametrize("form", ["run", "name"])
def test_invalid_job_names_are_normalised_and_the_job_runs(
    cw, db_path, tmp_path, name, recorded_as, form
):
    marker = tmp_path / "ran"
    cmd = ["sh", "-c", 'touch "$0"; echo out; exit 5', marker]
    if form == "run" and name.startswith("-"):  # read as an (unknown) option of ours
        rc, out, err = cw("run", f"--name={name}", "--", *cmd)
    elif form == "run":
        rc, out, err = cw("run", name, "--", *cmd)
    else:
        rc, out, err = cw(f"--name={name}", *cmd)
    assert (rc, out) == (5, b"out\n") and marker.exists()
    assert len(err.splitlines()) == 1 and len(warnings(err)) == 1, err
    assert f"recorded as {recorded_as!r}".encode() in err
    assert (NAME_RULE if name else "no job name given").encode() in err
    assert last_run(db_path, recorded_as).exit_code == 5


@pytest.mark.parametrize("name", ["0", "db-backup.daily_2", "x" * 64])
def test_valid_job_names_are_accepted(cw, name):
    assert cw("run", name, "--", "true").rc == 0


# Only a command line with no command in it is an error now (issue 11): `run backup echo
# hi`, `run -- true` and an unknown option used to be, and now run the job (see
# tests/test_wrapper_args.py).
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "backup"], "no command given: put it after --"),
        (["run", "backup", "--"], "no command given: put it after --"),
        (["run", "backup", "--timeout", "5s"], "no command given: put it after --"),
        (["run"], "no command given"),
        (["run", "--"], "no command given"),
        (["--name", "backup"], "no command given"),
        (["--name", "backup", "--"], "no command given"),
        (["--name=backup", "--timeout", "5s", "--no-capture"], "no command given"),
    ],
)
def test_run_usage_errors(cw, args, message):
    rc, out, err = cw(*args)
    assert rc == 2
    assert out == b""
    assert err.startswith(b"cronwatch: ") and message.encode() in err
    assert len(err.splitlines()) == 1


def test_a_usage_error_beside_a_missing_command_is_said_too(cw):
    rc, out, err = cw("run", "backup", "--timeout")
    assert (rc, out) == (2, b"")
    assert err.splitlines() == [b"cronwatch: warning: ignoring --timeout: it needs a value",
                                b"cronwatch: no command given: put it after --, as in: "
                                b"cronwatch run NAME -- CMD [ARGS...]"]  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        [CRONWATCH, "--name", "same"],
        [JOB_WATCH, "--name", "same"],
        [JOB_WATCH, "--name=same"],
        [JOB_WATCH, "--db", "{db}", "--name", "same"],
        [CRONWATCH, "run", "same", "--"],
        [CRONWATCH, "run", "--db", "{db}", "same", "--"],
    ],
    ids=["cronwatch-name", "job-watch", "name=", "db-first", "run", "run-db"],
)
def test_name_form_and_run_form_behave_the_same(cw_env, db_path, argv):
    argv = [a.replace("{db}", str(db_path)) for a in argv]
    cmd = ["sh", "-c", "echo out; echo err >&2; exit 3", "--not-ours"]
    p = subprocess.run([*argv, *cmd], env=cw_env, capture_output=True, stdin=subprocess.DEVNULL)
    assert (p.returncode, p.stdout, p.stderr) == (3, b"out\n", b"err\n")
    run = last_run(db_path, "same")
    assert (run.exit_code, run.stdout, run.stderr) == (3, b"out\n", b"err\n")


@pytest.mark.parametrize("before", [["--db", "{db}"], ["--db={db}"], ["--db", "{db}", "--json"]])
def test_options_before_run_are_the_wrappers_and_the_command_runs(cw, tmp_path, before):
    # `cronwatch --db X run NAME -- CMD` once parsed `run` as the help-only subcommand: CMD
    # never ran and the exit code was 0, a crontab line that silently did nothing
    other = tmp_path / "other.db"  # not $CRONWATCH_DB: the --db given is the one used
    before = [a.replace("{db}", str(other)) for a in before]
    rc, out, err = cw(*before, "run", "job", "--", "sh", "-c", "echo out; exit 3")
    assert (rc, out) == (3, b"out\n"), err
    run = last_run(other, "job")
    assert (run.exit_code, run.stdout) == (3, b"out\n")


def test_serve_uses_the_db_given_before_the_command(cw_env, db_path, tmp_path):
    # serve's own --db default once overwrote the one given before `serve`: it served (and
    # created) the default database instead
    pytest.importorskip("starlette")
    other = tmp_path / "given.db"
    proc = subprocess.Popen([CRONWATCH, "--db", str(other), "serve", "--port", "0"],
                            env=cw_env, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert "serving on" in line, line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert other.exists() and not db_path.exists()


def test_the_config_files_database_is_used_when_none_is_given(cw, cw_env, tmp_path):
    from pathlib import Path

    config = Path(cw_env["XDG_CONFIG_HOME"]) / "cronwatch" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    named = tmp_path / "from-config.db"
    config.write_text(f'[database]\nurl = "{named}"\n\n[jobs.nightly]\nschedule = "0 3 * * *"\n')
    unset = {"CRONWATCH_DB": None}
    rc, _, err = cw("run", "job", "--", "sh", "-c", "echo hi", env=unset)
    assert (rc, warnings(err)) == (0, [])
    assert last_run(named, "job").stdout == b"hi\n"
    assert cw("apply", env=unset).rc == 0  # the file that names the database is also apply's
    rc, out, _ = cw("jobs", "--json", env=unset)
    assert rc == 0 and {j["name"] for j in json.loads(out)} == {"job", "nightly"}
    # $CRONWATCH_DB, then --db, win over the file
    env_db, flag_db = tmp_path / "env.db", tmp_path / "flag.db"
    assert cw("run", "second", "--", "true", env={"CRONWATCH_DB": str(env_db)}).rc == 0
    assert last_run(env_db, "second").exit_code == 0
    assert cw("run", "--db", flag_db, "third", "--", "true", env=unset).rc == 0
    assert last_run(flag_db, "third").exit_code == 0
    # a [database] without a usable url: one warning, and the job runs and is recorded in
    # the default database all the same
    config.write_text("[database]\nurl = 5\n")
    rc, _, err = cw("run", "fourth", "--", "sh", "-c", "exit 4", env=unset)
    assert rc == 4
    (line,) = warnings(err)
    assert b"[database] needs url" in line
    default = Path(cw_env["XDG_DATA_HOME"]) / "cronwatch" / "history.db"
    assert last_run(default, "fourth").exit_code == 4


def test_options_after_the_command_belong_to_the_command(cw, db_path):
    rc, out, _ = cw("run", "echo", "--", "echo", "--timeout", "1s", "--help")
    assert (rc, out) == (0, b"--timeout 1s --help\n")
    assert last_run(db_path, "echo").stdout == b"--timeout 1s --help\n"


def test_version(cw):
    rc, out, _ = cw("--version")
    assert rc == 0
    assert out.decode().strip() == f"cronwatch {cronwatch.__version__}"


def subcommands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


def test_top_level_help_has_examples(cw):
    rc, out, _ = cw("--help")
    assert rc == 0
    assert b"example" in out
    for name in subcommands():  # every command is listed
        assert name.encode() in out


def test_every_command_help_shows_an_example(capsys):
    """An undocumented command fails the suite. (In-process through cli.main: one
    subprocess per command would cost seconds; test_run_help covers the script.)"""
    from cronwatch.main import main

    names = subcommands()
    assert {"run", "history", "stats", "last-failure", "runs", "jobs", "show", "export",
            "import"} <= set(names)  # fmt: skip
    missing = []
    for name in names:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0, name
        text = capsys.readouterr().out
        if "example" not in text.lower() or f"cronwatch {name}" not in text:
            missing.append(name)
    assert missing == [], f"commands whose --help lacks an example: {missing}"


@pytest.mark.parametrize("args", [["run", "--help"], ["run", "backup", "-h"], ["history", "-h"]])
def test_command_help_through_the_script(cw, args):
    rc, out, _ = cw(*args)
    assert rc == 0
    assert b"example:\n  cronwatch " + args[0].encode() in out


# --- query commands -----------------------------------------------------------------------

BIG_OUT = "".join(f"line {i} of the failed run\n" for i in range(500)).encode()


@pytest.fixture
def seeded(store):
    """backup: 4 runs (one failure 2 h ago), report: 1 run. Times relative to now."""
    now = time.time()
    backup = [
        Run(job="backup", started_at=now - 3 * 86400, status=Status.SUCCESS, duration=10.0,
            ended_at=now - 3 * 86400 + 10, exit_code=0, stdout=b"old\n", stderr=b""),
        Run(job="backup", started_at=now - 7200, status=Status.FAILED, duration=20.0,
            ended_at=now - 7180, exit_code=2, stdout=BIG_OUT, stderr=b"disk full\n",
            command="backup.sh --full"),
        Run(job="backup", started_at=now - 3600, status=Status.SUCCESS, duration=30.0,
            ended_at=now - 3570, exit_code=0, stdout=b"ok 1\n", stderr=b""),
        Run(job="backup", started_at=now - 1800, status=Status.SUCCESS, duration=40.0,
            ended_at=now - 1760, exit_code=0, stdout=b"ok 2\n", stderr=b""),
    ]  # fmt: skip
    report = Run(job="report", started_at=now - 600, status=Status.SUCCESS, duration=1.5,
                 ended_at=now - 598.5, exit_code=0, stdout=b"report done\n")  # fmt: skip
    assert store.record_runs([*backup, report], now=now) == (5, 0)
    return {"now": now, "backup": backup, "report": report}


def cw_json(cw, *args):
    rc, out, err = cw(*args, "--json")
    assert rc == 0, err
    return json.loads(out)


def test_history_newest_first(cw, seeded):
    runs = seeded["backup"]
    rows = cw_json(cw, "history", "backup")
    assert [r["id"] for r in rows] == [r.id for r in reversed(runs)]
    assert [r["status"] for r in rows] == ["success", "success", "failed", "success"]
    assert rows[1]["exit_code"] == 0 and rows[2]["exit_code"] == 2
    assert [r["id"] for r in cw_json(cw, "history", "backup", "-n", "2")] == [
        runs[3].id, runs[2].id,
    ]  # fmt: skip
    rc, out, _ = cw("history", "backup")
    lines = out.decode().splitlines()
    assert rc == 0 and len(lines) == 5  # header + 4 runs
    assert "FAILED" in lines[3] and "line 0 of the failed run" in lines[3]


def test_stats(cw, seeded):
    s = cw_json(cw, "stats", "backup")
    assert (s["runs"], s["success"], s["failed"]) == (4, 3, 1)
    assert s["success_rate"] == pytest.approx(0.75)
    # nearest rank over [10, 20, 30, 40]: k = round(q * 3)
    assert (s["duration_p50"], s["duration_p95"], s["duration_max"]) == (30.0, 40.0, 40.0)
    assert s["last_success"] == pytest.approx(seeded["backup"][3].started_at)
    assert s["last_failure"] == pytest.approx(seeded["backup"][1].started_at)
    assert s["streak"] == {"status": "success", "count": 2}
    recent = cw_json(cw, "stats", "backup", "--since", "24h")
    assert (recent["runs"], recent["duration_p50"]) == (3, 30.0)
    rc, out, _ = cw("stats", "backup")
    text = out.decode()
    assert rc == 0
    for word in ("success rate", "75.0%", "p50", "p95", "max", "last success", "last failure",
                 "2 successes in a row"):  # fmt: skip
        assert word in text


def test_last_failure_shows_the_full_output(cw, seeded):
    failed = seeded["backup"][1]
    rc, out, _ = cw("last-failure", "backup")
    assert rc == 0
    assert failed.id.encode() in out
    assert BIG_OUT in out  # all of it, not the first line
    assert b"disk full" in out
    d = cw_json(cw, "last-failure", "backup")
    assert d["id"] == failed.id
    assert (d["stdout"], d["stderr"]) == (BIG_OUT.decode(), "disk full\n")


def test_last_failure_without_failures(cw, seeded):
    rc, out, _ = cw("last-failure", "report")
    assert rc == 0 and b"no failed runs" in out
    assert cw_json(cw, "last-failure", "report") is None


def test_show(cw, seeded):
    run = seeded["backup"][1]
    rc, out, _ = cw("show", run.id)
    assert rc == 0
    assert b"backup.sh --full" in out and BIG_OUT in out
    d = cw_json(cw, "show", run.id)
    assert (d["id"], d["job"], d["exit_code"], d["stdout"]) == (
        run.id,
        "backup",
        2,
        BIG_OUT.decode(),
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["runs"], ["report", "backup", "backup", "backup"]),
        (["runs", "--since", "7d"], ["report", "backup", "backup", "backup", "backup"]),
        (["runs", "--since", "90m"], ["report", "backup", "backup"]),
        (["runs", "--job", "backup"], ["backup", "backup", "backup"]),
        (["runs", "--status", "failed"], ["backup"]),
        (["runs", "--status", "FAILED", "--job", "report"], []),
        (["runs", "-n", "2"], ["report", "backup"]),
        (["--since", "24h"], ["report", "backup", "backup", "backup"]),
    ],
)
def test_runs_filters(cw, seeded, args, expected):
    assert [r["job"] for r in cw_json(cw, *args)] == expected


def test_runs_text(cw, seeded):
    rc, out, _ = cw("runs", "--since", "7d")
    lines = out.decode().splitlines()
    assert rc == 0 and len(lines) == 6
    assert lines[0].split()[:3] == ["JOB", "STARTED", "(UTC)"]
    assert [line.split()[0] for line in lines[1:]] == ["report"] + ["backup"] * 4
    assert "FAILED" in lines[4]
    rc, out, _ = cw("runs", "--status", "timeout")
    assert rc == 0 and b"no runs since" in out


def test_jobs(cw, seeded):
    items = {j["name"]: j for j in cw_json(cw, "jobs")}
    assert set(items) == {"backup", "report"}
    assert items["backup"]["runs"] == 4
    assert items["backup"]["success_rate"] == pytest.approx(0.75)
    assert items["backup"]["last_run"]["id"] == seeded["backup"][3].id
    rc, out, _ = cw("jobs")
    lines = out.decode().splitlines()
    assert rc == 0 and len(lines) == 3
    assert lines[1].startswith("backup") and "75.0%" in lines[1]
    assert lines[2].startswith("report") and "100.0%" in lines[2]


def test_no_jobs_yet(cw, store):
    rc, out, _ = cw("jobs")
    assert rc == 0 and b"no jobs yet" in out
    assert cw_json(cw, "jobs") == []


def test_job_with_settings_but_no_runs(cw, store):
    store.save_job(Job("planned"), now=time.time())
    rc, out, _ = cw("history", "planned")
    assert rc == 0 and b"no runs yet" in out
    s = cw_json(cw, "stats", "planned")
    assert (s["runs"], s["success_rate"], s["duration_p50"]) == (0, None, None)


@pytest.mark.parametrize(
    "args",
    [
        ["history", "nope"],
        ["stats", "nope", "--json"],
        ["last-failure", "nope"],
        ["runs", "--job", "nope", "--json"],
        ["export", "--job", "nope"],
    ],
)
def test_unknown_job_is_a_clear_error(cw, seeded, args):
    rc, out, err = cw(*args)
    assert rc == 1
    assert out == b""
    assert err == b"cronwatch: unknown job 'nope': it has no runs and no settings yet\n"


def test_unknown_run_id(cw, seeded):
    rc, out, err = cw("show", "01nosuchrun")
    assert (rc, out) == (1, b"")
    assert err.startswith(b"cronwatch: unknown run") and len(err.splitlines()) == 1


def test_queries_before_anything_was_recorded(cw, db_path):
    rc, out, err = cw("history", "backup")
    assert (rc, out) == (1, b"")
    assert b"no database" in err and len(err.splitlines()) == 1
    assert not db_path.exists()  # a query never creates the database


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "5x"],
        ["stats", "backup", "--since", "5x"],
        ["runs", "--since", "5x"],
        ["jobs", "--since=-1h"],
        ["export", "--since", "yesterday"],
    ],
)
def test_bad_duration_is_a_usage_error(cw, seeded, args):
    rc, out, err = cw(*args)
    assert (rc, out) == (2, b"")
    assert b"invalid duration" in err and b"such as 90s, 15m, 24h" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "Bad Name"], NAME_RULE),
        (["runs", "--status", "bogus"], "invalid status 'bogus'"),
        (["history", "backup", "-n", "0"], "must be at least 1"),
        (["history", "backup", "-n", "many"], "invalid number"),
        (["frobnicate"], "invalid choice"),
        (["history"], "required"),
    ],
)
def test_bad_arguments_are_usage_errors(cw, seeded, args, message):
    rc, out, err = cw(*args)
    assert (rc, out) == (2, b"")
    assert message.encode() in err


def test_bare_cronwatch_prints_help(cw):
    rc, out, _ = cw()
    assert rc == 0 and b"cronwatch run" in out


@pytest.mark.parametrize("args", ["history many -n 5000", "export"])
def test_query_output_into_a_closed_pipe(cw_env, store, args):
    """`cronwatch history x | head -1` exits quietly."""
    now = time.time()
    store.record_runs([Run(job="many", started_at=now - i, status=Status.SUCCESS, duration=1.0,
                           stdout=b"x" * 100) for i in range(3000)], now=now)  # fmt: skip
    p = subprocess.run(f"{CRONWATCH} {args} | head -c 10", shell=True, env=cw_env,
                       capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert (p.returncode, len(p.stdout)) == (0, 10)
    assert p.stderr == b""


def test_damaged_database_is_one_line_not_a_traceback(cw, store, db_path):
    now = time.time()
    store.record_runs([Run(job="j", started_at=now - i, status=Status.SUCCESS, duration=1.0,
                           stdout=b"x" * 500) for i in range(3000)], now=now)  # fmt: skip
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(db_path, "r+b") as f:  # the header survives, the pages behind it do not
        f.seek(5 * 4096)
        f.write(b"\xff" * 20 * 4096)
    for args in (["history", "j"], ["stats", "j", "--json"], ["jobs"]):
        rc, out, err = cw(*args)
        assert rc == 1
        assert err.startswith(b"cronwatch: ") and len(err.splitlines()) == 1, err


def test_db_and_json_before_the_command_are_honoured(cw, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = str(tmp_path / "other.db")
    assert cw("run", "--db", other, "elsewhere", "--", "true").rc == 0
    r = cw("--db", other, "--json", "history", "elsewhere")
    assert r.rc == 0, r.err
    assert [run["job"] for run in json.loads(r.out)] == ["elsewhere"]
    assert cw("history", "elsewhere").rc == 1  # not in the default database


def test_the_recorded_command_line_is_shell_quoted_like_shlex(cw) -> None:  # type: ignore[no-untyped-def]
    import shlex

    argv = ["sh", "-c", 'echo "it\'s" $HOME; true', "", "a b", "--opt=x,y", "ünï"]
    assert cw("run", "quoting", "--", *argv).rc == 0
    (run,) = json.loads(cw("history", "quoting", "--json").out)
    assert run["command"] == shlex.join(argv)
