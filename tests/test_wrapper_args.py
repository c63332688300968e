"""Whenever a command can be identified, it runs (issue 11).

Our own usage errors (an unknown option, a bad value, a bad or missing job name, a
top-level option such as --json), a broken config file or an unusable database cost at
most one warning line each: the command runs, its output and exit code pass through
unchanged, and the run is recorded (or spooled). Also: the files we create are private,
and the dashboard's directory is made when missing. Everything through the real entry
points, with real child processes.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import CRONWATCH, JOB_WATCH, last_run, warnings
from cronwatch.core.errors import ValidationError
from cronwatch.core.model import normalize_name, validate_name
from cronwatch.store import open_store
from cronwatch.wrapper import spool
from cronwatch.wrapper.options import Usage, name_ok, parse_run_args, settle_name

# The job of every test: leaves a marker (proof that it ran), writes to both streams,
# prints its own arguments and exits 5.
SCRIPT = 'touch "$0"; echo "out $*"; echo err >&2; exit 5'


def job(marker: Path, *args: str) -> list[str]:
    return ["sh", "-c", SCRIPT, str(marker), *args]


def assert_ran(rc: int, out: bytes, err: bytes, marker: Path, args: str = "") -> list[bytes]:
    """The job ran and passed through unchanged; returns our warning lines."""
    assert marker.exists(), err
    assert rc == 5, err
    assert out == f"out {args}\n".encode()
    ours = warnings(err)
    assert [line for line in err.splitlines() if line not in ours] == [b"err"], err
    return ours


def assert_recorded(db_path: Path, name: str, args: str = "") -> None:
    run = last_run(db_path, name)
    assert (run.exit_code, run.stdout, run.stderr) == (5, f"out {args}\n".encode(), b"err\n")


@pytest.fixture
def same_env(cw_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process looks for spooled runs where the subprocesses put them."""
    for key in ("HOME", "XDG_STATE_HOME", "TMPDIR"):
        monkeypatch.setenv(key, cw_env[key])
    return cw_env


# --- -h / --help --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        ["--name", "disk-usage"],
        ["--name=disk-usage", "--timeout", "1h"],
        ["run", "disk-usage", "--"],
        ["run", "disk-usage"],  # no `--`: the word after the name begins the command
    ],
    ids=["name", "name-options", "run", "run-no-dashdash"],
)
@pytest.mark.parametrize("prog", [JOB_WATCH, CRONWATCH], ids=["job-watch", "cronwatch"])
@pytest.mark.parametrize("help_args", [["-h", "/"], ["--help"], ["-h", "--help", "--", "-h"]])
def test_help_among_the_commands_arguments_is_the_commands(
    cw, db_path, tmp_path, form, prog, help_args
):
    marker = tmp_path / "ran"
    rc, out, err = cw(*form, *job(marker, *help_args), prog=prog)
    args = " ".join(help_args)
    assert assert_ran(rc, out, err, marker, args) == []
    assert_recorded(db_path, "disk-usage", args)


def test_df_dash_h_runs_df(cw, db_path):
    """The issue's own example: `job-watch --name disk-usage df -h /`."""
    if not shutil.which("df"):
        pytest.skip("no df on this machine")
    expected = subprocess.run(["df", "-h", "/"], capture_output=True).stdout.splitlines()[0]
    rc, out, err = cw("--name", "disk-usage", "df", "-h", "/", prog=JOB_WATCH)
    assert (rc, err) == (0, b"")
    assert out.splitlines()[0] == expected  # df's header, in df's -h form
    assert last_run(db_path, "disk-usage").stdout == out


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "x", "--help", "CMD"],
        ["--name", "x", "-h"],
        ["-h", "--name", "x", "CMD"],
        ["run", "x", "--help", "--", "CMD"],
        ["run", "x", "-h"],
        ["run", "--help"],
    ],
)
def test_help_among_our_options_shows_help_with_examples(cw, db_path, tmp_path, args):
    marker = tmp_path / "ran"
    args = [str(marker) if a == "CMD" else a for a in args]  # `touch`-free: must not run
    rc, out, err = cw(*args, prog=JOB_WATCH)
    assert (rc, err) == (0, b"")
    assert b"usage: cronwatch run" in out
    assert b"example:\n  cronwatch run backup" in out and b"job-watch --name backup" in out
    assert not marker.exists() and not db_path.exists()


# --- a bad or missing job name -------------------------------------------------------------


def test_a_bad_name_is_normalised_and_the_job_runs(cw_env, db_path, tmp_path):
    """The issue's example, in the job's working directory as cron would run it."""
    p = subprocess.run([JOB_WATCH, "--name", "Observatory_Check", "sh", "-c", "touch ran; exit 5"],
                       cwd=tmp_path, env=cw_env, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert (tmp_path / "ran").exists()
    assert (p.returncode, p.stdout) == (5, b"")
    assert p.stderr.splitlines() == [
        b"cronwatch: warning: invalid job name 'Observatory_Check' (a job name is 1-64 "
        b"characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit); "
        b"the run is recorded as 'observatory_check'"
    ]
    run = last_run(db_path, "observatory_check")
    assert (run.exit_code, run.command) == (5, "sh -c 'touch ran; exit 5'")


@pytest.mark.parametrize(
    ("args", "recorded_as"),
    [
        (["run", "--"], "sh"),
        (["run", "--timeout", "1h", "--"], "sh"),
        (["--name="], "sh"),
        (["run", "", "--"], "sh"),
    ],
)
def test_a_missing_name_is_taken_from_the_command(cw, db_path, tmp_path, args, recorded_as):
    marker = tmp_path / "ran"
    rc, out, err = cw(*args, *job(marker))
    assert assert_ran(rc, out, err, marker) == [
        f"cronwatch: warning: no job name given; the run is recorded as {recorded_as!r}".encode()
    ]
    assert_recorded(db_path, recorded_as)


# --- our own usage errors before the command ------------------------------------------------


@pytest.mark.parametrize(
    ("prog", "args", "warning"),
    [
        (CRONWATCH, ["run", "x", "--bogus", "--"], "ignoring unknown option '--bogus'"),
        (JOB_WATCH, ["--bogus", "--name", "x"], "ignoring unknown option '--bogus'"),
        (JOB_WATCH, ["--name", "x", "-v"], "ignoring unknown option '-v'"),
        (JOB_WATCH, ["--name", "x", "--retries=3"], "ignoring unknown option '--retries=3'"),
        # an unknown option's value, told apart from the command by the `--` that follows
        (CRONWATCH, ["run", "x", "--retries", "3", "--"], "ignoring unknown option --retries '3'"),
        (CRONWATCH, ["run", "--retries", "3", "x", "--"], "ignoring unknown option --retries '3'"),
        (JOB_WATCH, ["--retries", "3", "--name", "x"], "ignoring unknown option --retries '3'"),
        (JOB_WATCH, ["-r", "3", "--db", "{db}", "--name=x"], "ignoring unknown option -r '3'"),
        (JOB_WATCH, ["--name", "x", "--retries", "3", "--no-dashboard", "--"],
         "ignoring unknown option --retries '3'"),
        (JOB_WATCH, ["--json", "--name", "x"],
         "ignoring --json: a wrapped run prints only the command's output"),
        (CRONWATCH, ["--name", "x", "--json"],
         "ignoring --json: a wrapped run prints only the command's output"),
        (CRONWATCH, ["run", "x", "--timeout", "soon", "--"],
         "ignoring --timeout: invalid duration 'soon'"),
        (JOB_WATCH, ["--name", "x", "--max-output=lots"], "ignoring --max-output: invalid size"),
        (JOB_WATCH, ["--name", "x", "--no-capture=yes"],
         "ignoring unknown option '--no-capture=yes'"),
    ],
)  # fmt: skip
def test_a_usage_error_of_ours_costs_one_warning_line(cw, db_path, tmp_path, prog, args, warning):
    marker = tmp_path / "ran"
    args = [str(db_path) if a == "{db}" else a for a in args]
    rc, out, err = cw(*args, *job(marker, "a", "--b"), prog=prog)
    ours = assert_ran(rc, out, err, marker, "a --b")
    assert len(ours) == 1 and ours[0].startswith(b"cronwatch: warning: " + warning.encode()), err
    assert_recorded(db_path, "x", "a --b")


def test_an_unknown_option_before_a_command_with_its_own_dashdash(cw, db_path, tmp_path):
    """`sh -c '...' -- a` after an unknown option: sh is the command, not the option's
    value (what follows it is not ours)."""
    marker = tmp_path / "ran"
    rc, out, err = cw("run", "x", "--bogus", *job(marker, "--", "a"))
    assert assert_ran(rc, out, err, marker, "-- a") == [
        b"cronwatch: warning: ignoring unknown option '--bogus'"
    ]
    assert_recorded(db_path, "x", "-- a")


def test_several_usage_errors_one_line_each(cw, db_path, tmp_path):
    marker = tmp_path / "ran"
    rc, out, err = cw("--json", "--name", "Bad Name", "--bogus", "--timeout=x", *job(marker),
                      prog=JOB_WATCH)  # fmt: skip
    ours = assert_ran(rc, out, err, marker)
    assert [w.split(b":")[2].split()[0] for w in ours] == [b"ignoring"] * 3 + [b"invalid"]
    assert_recorded(db_path, "bad-name")


# --- a broken config, an unusable database ---------------------------------------------------


@pytest.mark.parametrize(
    "config", ["this is [not toml", '[server]\nurl = 5\nkey = ["k"]\n', "[jobs.x]\nschedule = 1\n"]
)
def test_a_broken_config_file_does_not_stop_the_job(cw, cw_env, db_path, tmp_path, config):
    path = Path(cw_env["XDG_CONFIG_HOME"]) / "cronwatch" / "config.toml"
    path.parent.mkdir()
    path.write_text(config)
    marker = tmp_path / "ran"
    for args in (["run", "x", "--"], ["run", "x", "--config", str(path), "--"]):
        marker.unlink(missing_ok=True)
        rc, out, err = cw(*args, *job(marker))
        assert len(assert_ran(rc, out, err, marker)) <= 1  # at most a warning about it
        assert_recorded(db_path, "x")


@pytest.mark.parametrize("kind", ["not-a-database", "a-directory", "under-a-file"])
def test_an_unusable_database_does_not_stop_the_job(cw, same_env, tmp_path, kind):
    bad = tmp_path / "bad"
    if kind == "not-a-database":
        bad.write_bytes(b"this is not SQLite\n" * 100)
        db = bad
    elif kind == "a-directory":
        bad.mkdir()
        db = bad
    else:
        bad.write_text("")
        db = bad / "h.db"
    marker = tmp_path / "ran"
    rc, out, err = cw("run", "x", "--db", db, "--", *job(marker))
    (warning,) = assert_ran(rc, out, err, marker)
    assert b"spooled to" in warning
    (spooled,) = [run for _path, run, _owner in spool.spooled(str(db))]
    assert spooled is not None and (spooled.job, spooled.exit_code) == ("x", 5)


# --- file modes -------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def umask_zero(env: dict[str, str], *argv: object) -> subprocess.CompletedProcess[bytes]:
    """Run under umask 0, so that a mode below 0666/0777 is ours and not the umask's."""
    return subprocess.run(["sh", "-c", 'umask 000; exec "$@"', "sh", *map(str, argv)], env=env,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip


def test_a_new_database_is_private(cw_env, tmp_path):
    db = tmp_path / "new" / "deeper" / "history.db"
    p = umask_zero(cw_env, CRONWATCH, "run", "x", "--db", db, "--", "true")
    assert (p.returncode, p.stderr) == (0, b"")
    assert mode(db) == 0o600
    assert mode(db.parent) == mode(db.parent.parent) == 0o700  # both made by us
    # The -wal and -shm files exist while a connection is open: they take the database
    # file's mode, whoever opens it.
    with open_store(str(db)) as store:
        store.ensure_job("y", now=time.time())
        assert mode(Path(f"{db}-wal")) == mode(Path(f"{db}-shm")) == 0o600


def test_an_existing_database_keeps_its_modes(cw_env, tmp_path):
    """Files and directories we did not create are not ours to change."""
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    db = d / "history.db"
    sqlite3.connect(db).close()
    db.chmod(0o640)
    p = umask_zero(cw_env, CRONWATCH, "run", "x", "--db", db, "--", "true")
    assert (p.returncode, p.stderr) == (0, b"")
    assert (mode(db), mode(d)) == (0o640, 0o755)
    with open_store(str(db), create=False) as store:
        assert store.last_run("x") is not None


def test_spooled_runs_are_private(same_env, tmp_path):
    cw_env = same_env
    db = tmp_path / "a-directory"
    db.mkdir()
    p = umask_zero(cw_env, CRONWATCH, "run", "x", "--db", db, "--", "true")
    assert p.returncode == 0 and b"spooled to" in p.stderr
    (path,) = [Path(path) for path, _run, _owner in spool.spooled(str(db))]
    assert path.parent == tmp_path / "a-directory.spool"
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)


def test_the_temporary_spool_is_private_and_refused_when_not(same_env, monkeypatch, tmp_path):
    blocker = tmp_path / "blocker"  # a file: no spool beside the database nor in XDG state
    blocker.write_text("")
    env = {**same_env, "XDG_STATE_HOME": str(blocker)}
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    ours = Path(env["TMPDIR"]) / f"cronwatch-{os.getuid()}"
    p = umask_zero(env, CRONWATCH, "run", "x", "--db", blocker / "h.db", "--", "true")
    assert p.returncode == 0 and b"spooled to" in p.stderr
    (path,) = [Path(path) for path, _run, _owner in spool.spooled(str(blocker / "h.db"))]
    assert path.is_relative_to(ours)
    assert mode(path) == 0o600 and mode(ours) == mode(ours / "spool") == 0o700
    # Anyone could have made that directory in a shared /tmp, and planted runs in it: a
    # directory that others may write to is neither written nor merged.
    ours.chmod(0o777)
    assert list(spool.spooled(str(blocker / "h.db"))) == []
    p = umask_zero(env, CRONWATCH, "run", "x", "--db", blocker / "h.db", "--", "sh", "-c",
                   "echo out; exit 3")  # fmt: skip
    assert (p.returncode, p.stdout) == (3, b"out\n")
    assert b"could not be spooled either" in p.stderr
    assert len(list(ours.rglob("*.json"))) == 1  # only the first run's


def test_the_outbox_refuses_a_temporary_directory_others_may_write(tmp_path, monkeypatch):
    """The remote outbox (queued pings, with their keys) shares that directory."""
    from cronwatch.remote import outbox

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    ours = tmp_path / f"cronwatch-{os.getuid()}"
    assert outbox.dirs()[1:] == [str(ours / "outbox")]  # absent: ours to make
    ours.mkdir(mode=0o700)
    ours.chmod(0o700)
    assert outbox.dirs()[1:] == [str(ours / "outbox")]
    ours.chmod(0o777)
    assert outbox.dirs() == [str(tmp_path / "state" / "cronwatch" / "outbox")]


# --- the dashboard ---------------------------------------------------------------------------


def wait_for(path: Path, deadline: float = 30.0) -> str:
    """The page's text once it exists (the page is rendered by a detached process)."""
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} was not written"
        time.sleep(0.05)
    return path.read_text()


@pytest.mark.parametrize("sync", ["0", "1"], ids=["detached", "inline"])
def test_the_dashboards_directory_is_made_when_missing(cw, tmp_path, sync):
    page = tmp_path / "new" / "dir" / "page.html"
    rc, out, err = cw("run", "shown-job", "--dashboard", page, "--", "echo", "hi",
                      env={"CRONWATCH_DASHBOARD_SYNC": sync})  # fmt: skip
    assert (rc, out, err) == (0, b"hi\n", b"")
    assert "shown-job" in wait_for(page)
    assert not [p for p in page.parent.iterdir() if p.suffix == ".html" and p != page]


# --- the parser and the name rule, in-process ---------------------------------------------


@given(st.text(max_size=80))
def test_normalize_name_gives_a_valid_name_or_nothing(text):
    name = normalize_name(text)
    if name:
        assert validate_name(name) == name
        assert normalize_name(name) == name  # idempotent
    if any(c.isascii() and c.isalnum() for c in text.lower()):
        assert name  # something of it is usable
    try:
        validate_name(text)
    except ValidationError:
        pass
    else:
        assert name == text  # a valid name is kept as it is


@given(st.text(max_size=80))
def test_the_wrappers_quick_name_check_is_the_rule(text):
    """options.name_ok runs before the spawn without importing the core: the same rule."""
    try:
        validate_name(text)
    except ValidationError:
        assert not name_ok(text)
    else:
        assert name_ok(text)


WORDS = st.sampled_from(
    ["--", "-", "-h", "--help", "--name", "--name=", "--name=x", "--db", "--timeout", "5s",
     "soon", "--timeout=x", "--no-capture", "--no-capture=1", "--json", "--bogus", "-v", "x",
     "Bad Name", "cmd", "", "--max-output", "1k"]
)  # fmt: skip


@given(st.lists(WORDS, max_size=10), st.booleans())
def test_the_parser_finds_a_command_or_says_there_is_none(args, name_form):
    try:
        o = parse_run_args(args, name_form=name_form)
    except Usage as e:
        assert "no command given" in str(e)
        return
    assert o.command and args[len(args) - len(o.command) :] == o.command  # a tail of args
    assert all(isinstance(w, str) and "\n" not in w for w in o.warnings)
    settle_name(o)
    assert validate_name(o.name) == o.name
