"""When our side fails (locked, corrupt or unwritable database, bad config), the job still
runs, its exit code passes through, one warning goes to stderr and the run is spooled,
then merged by a later run. Nothing is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cronsim
import oncalendar
import pytest

import cronwatch
from conftest import CRONWATCH, last_run, warnings
from cronwatch.core.model import Run, Status
from cronwatch.store import open_store
from cronwatch.wrapper import spool

ALL_BYTES = bytes(range(256))


def spooled_files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.json") if not p.name.startswith(".tmp-"))


def history_count(cw, job: str, **kw) -> int:
    rc, out, err = cw("history", job, "--json", "-n", "1000", **kw)
    assert rc == 0, err
    return len(json.loads(out))


# --- through the wrapper ------------------------------------------------------------------


def test_locked_database_job_runs_at_once_and_the_run_is_spooled(cw, cw_env, db_path, tmp_path):
    assert cw("run", "locked", "--", "true").rc == 0  # the database exists
    marker = tmp_path / "marker"
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        proc = subprocess.Popen(
            [CRONWATCH, "run", "locked", "--", "sh", "-c", f"touch {marker}; echo out; exit 7"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**cw_env, "CRONWATCH_DB_TIMEOUT": "3"},
        )
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.02)
        # The job has run while the wrapper still waits for the database.
        assert proc.poll() is None
        out, err = proc.communicate(timeout=60)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert proc.returncode == 7
    assert out == b"out\n"
    assert b"Traceback" not in err
    assert len(err.splitlines()) == 1 and len(warnings(err)) == 1, err
    assert b"spooled" in err
    (spooled,) = spooled_files(Path(str(db_path) + ".spool"))

    # The lock is gone: the next run records itself and merges the spooled one.
    rc, _, err = cw("run", "locked", "--", "true")
    assert rc == 0 and warnings(err) == []
    assert not spooled.exists()
    assert history_count(cw, "locked") == 3
    failed = [r for r in json.loads(cw("history", "locked", "--json").out) if r["exit_code"] == 7]
    assert len(failed) == 1 and failed[0]["status"] == "failed"


def test_corrupt_database_job_runs_and_the_run_is_spooled(cw, db_path):
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not an SQLite database\n" * 200)
    script = "import sys; sys.stdout.buffer.write(bytes(range(256))); sys.exit(3)"
    rc, out, err = cw("run", "corrupt", "--", "python3", "-c", script)
    assert (rc, out) == (3, ALL_BYTES)
    assert len(err.splitlines()) == 1 and len(warnings(err)) == 1, err
    (path,) = spooled_files(Path(str(db_path) + ".spool"))
    run = spool.decode_run(json.loads(path.read_bytes()))
    assert (run.job, run.exit_code, run.status) == ("corrupt", 3, Status.FAILED)
    assert run.stdout == ALL_BYTES

    # Queries say what is wrong, in one line, exit 1.
    rc, out, err = cw("history", "corrupt")
    assert rc == 1
    assert err.startswith(b"cronwatch: ") and len(err.splitlines()) == 1

    # Once the file is replaced, the next run merges what was spooled.
    db_path.unlink()
    assert cw("run", "corrupt", "--", "true").rc == 0
    assert not path.exists()
    assert history_count(cw, "corrupt") == 2


def test_unusable_database_directory_falls_back_to_xdg_state(cw, cw_env, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {"CRONWATCH_DB": str(blocker / "history.db")}  # ENOTDIR, even for root
    rc, out, err = cw("run", "nowhere", "--", "sh", "-c", "echo out; exit 5", env=env)
    assert (rc, out) == (5, b"out\n")
    assert len(err.splitlines()) == 1 and len(warnings(err)) == 1, err
    state = Path(cw_env["XDG_STATE_HOME"]) / "cronwatch" / "spool"
    (path,) = spooled_files(state)
    assert str(path).encode() in err  # the warning says where the run went
    run = spool.decode_run(json.loads(path.read_bytes()))
    assert (run.job, run.exit_code, run.stdout) == ("nowhere", 5, b"out\n")

    blocker.unlink()
    blocker.mkdir()
    assert cw("run", "nowhere", "--", "true", env=env).rc == 0
    assert spooled_files(state) == []
    assert history_count(cw, "nowhere", env=env) == 2


def test_no_writable_spool_directory_warns_and_still_passes_the_exit_code(cw, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {
        "CRONWATCH_DB": str(blocker / "h.db"),
        "XDG_STATE_HOME": str(blocker / "state"),
        "TMPDIR": str(blocker / "tmp"),
    }
    rc, out, err = cw("run", "lost", "--", "sh", "-c", "echo out; exit 9", env=env)
    assert (rc, out) == (9, b"out\n")
    assert len(err.splitlines()) == 1 and b"could not be spooled" in err


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to us)."""
    d = Path(tempfile.mkdtemp(prefix="cronwatch-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(d)


def test_read_only_database_directory_spools_to_xdg_state(cw_env, shared_tmp):
    """chmod 0555 on the database directory; as root (where chmod does not stop writes)
    the wrapper runs as nobody."""
    as_user: list[str] = []
    uid = os.getuid()
    if uid == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot drop privileges")
        uid = 65534
        as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    command = [CRONWATCH]
    if as_user:
        # The checkout and its venv may sit in a directory only we can enter (a clone under
        # /root, a CI folder made 0700): nobody runs cronwatch's entry point from a copy of
        # the package and its dependencies that it can read, on the same interpreter.
        readable = shared_tmp / "lib"
        for module in (cronwatch, cronsim, oncalendar):
            shutil.copytree(Path(module.__file__).parent, readable / module.__name__,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for p in [readable, *readable.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        command = [os.path.realpath(sys.executable), "-s", "-c",
                   "import sys; from cronwatch.main import main; sys.exit(main())"]  # fmt: skip
    data, state, home = shared_tmp / "data", shared_tmp / "state", shared_tmp / "home"
    for d in (data, state, home):
        d.mkdir()
        os.chown(d, uid, -1)
    env = {**cw_env, "CRONWATCH_DB": str(data / "history.db"), "XDG_STATE_HOME": str(state),
           "HOME": str(home), "TMPDIR": str(home)}  # fmt: skip
    if as_user:
        env["PYTHONPATH"] = str(shared_tmp / "lib")

    def run(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([*as_user, *command, *args], env=env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
        assert b"Traceback" not in p.stderr
        return p

    assert run("run", "ro", "--", "true").returncode == 0  # creates the database
    data.chmod(0o555)
    (data / "history.db").chmod(0o444)
    p = run("run", "ro", "--", "sh", "-c", "echo out; exit 6")
    assert (p.returncode, p.stdout) == (6, b"out\n")
    assert len(p.stderr.splitlines()) == 1 and len(warnings(p.stderr)) == 1, p.stderr
    assert len(spooled_files(state)) == 1
    data.chmod(0o755)
    (data / "history.db").chmod(0o644)
    assert run("run", "ro", "--", "true").returncode == 0
    assert spooled_files(state) == []
    runs = json.loads(run("history", "ro", "--json").stdout)
    assert [r["exit_code"] for r in runs] == [0, 6, 0]


def test_bad_db_timeout_setting_does_not_lose_the_run(cw, db_path):
    rc, out, err = cw("run", "cfg", "--", "sh", "-c", "echo out; exit 4",
                      env={"CRONWATCH_DB_TIMEOUT": "soon"})  # fmt: skip
    assert (rc, out) == (4, b"out\n")
    assert b"CRONWATCH_DB_TIMEOUT" in err
    run = last_run(db_path, "cfg")
    assert (run.exit_code, run.stdout) == (4, b"out\n")


def test_database_url_never_spools_into_the_working_directory(cw, cw_env, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**cw_env, "CRONWATCH_DB": "nosuchdb://host/db"}
    p = subprocess.run([CRONWATCH, "run", "url", "--", "true"], cwd=cwd, env=env,
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert p.returncode == 0
    assert len(warnings(p.stderr)) == 1
    assert list(cwd.iterdir()) == []
    assert len(spooled_files(Path(cw_env["XDG_STATE_HOME"]))) == 1


# --- the spool itself -----------------------------------------------------------------------


@pytest.fixture
def spool_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp_path


def make_run(job: str = "backup", **kw) -> Run:
    fields = dict(started_at=1_700_000_000.25, status=Status.FAILED, ended_at=1_700_000_003.5,
                  duration=3.25, exit_code=2, stdout=ALL_BYTES, stderr=b"", host="h", user="u",
                  command="backup.sh --full", env="prod", message="m")  # fmt: skip
    fields.update(kw)
    return Run(job=job, **fields)


@pytest.mark.parametrize("merged", [False, True])
def test_spooled_run_round_trips_exactly(spool_env, merged):
    db = str(spool_env / "h.db")
    run = make_run(stderr=None, merged=merged)
    path = spool.spool_run(db, run)
    assert path == str(spool_env / "h.db.spool" / f"{run.id}.json")
    ((got_path, got, _owner),) = list(spool.spooled(db))
    assert got_path == path
    assert got == run


@pytest.mark.parametrize("blocked", [1, 2])
def test_spool_falls_back_to_the_next_writable_directory(spool_env, monkeypatch, blocked):
    blocker = spool_env / "blocker"
    blocker.write_text("")
    db = str(blocker / "h.db")
    if blocked == 2:
        monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    path = spool.spool_run(db, make_run())
    expected_base = spool.spool_dirs(db)[blocked]
    assert os.path.dirname(path) == expected_base
    assert spool.has_spooled(db)


def test_spool_with_no_writable_directory_says_why(spool_env, monkeypatch):
    blocker = spool_env / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    monkeypatch.setenv("TMPDIR", str(blocker))
    with pytest.raises(OSError, match="no writable spool directory") as e:
        spool.spool_run(str(blocker / "h.db"), make_run())
    assert str(e.value).count("Not a directory") == 3


def test_replay_merges_once_and_keeps_bad_files_aside(spool_env):
    db = str(spool_env / "h.db")
    runs = [make_run(started_at=1_700_000_000 + i) for i in range(3)]
    for r in runs:
        spool.spool_run(db, r)
    bad = Path(spool.spool_dirs(db)[0]) / "zzz.json"
    bad.write_text("{not json")
    with open_store(db) as store:
        store.record_run(runs[0], now=runs[0].started_at)  # already merged once
        assert spool.replay(store, db, now=1_700_000_010) == 3
        assert [r.id for r in store.list_runs(job="backup", oldest_first=True)] == [
            r.id for r in runs
        ]
        assert store.get_run(runs[1].id).stdout == ALL_BYTES
    assert not spool.has_spooled(db)
    assert bad.with_name("zzz.json.bad").exists()


@pytest.mark.parametrize("end_first", [False, True])
def test_an_open_run_and_its_end_replayed_in_either_order_leave_the_end(spool_env, end_first):
    """A wrapper on a database server spools its open run (``ID.open.json``, with its
    owner) and then its end (``ID.json``); whichever a post-run step merges first, the
    run ends up as its end says, once, and closed."""
    db = str(spool_env / "h.db")
    end = make_run(started_at=1_700_000_000.0)
    opened = make_run(id=end.id, started_at=end.started_at, status=Status.RUNNING,
                      ended_at=None, duration=None, exit_code=None, stdout=None)  # fmt: skip
    first, then = ((end, None), (opened, "host boot 1 2 -"))
    if not end_first:
        first, then = then, first
    with open_store(db) as store:
        for run, owner in (first, then):
            path = spool.spool_run(db, run, owner=owner)
            assert path.endswith(".open.json") == (owner is not None)
            assert spool.replay(store, db, now=1_700_000_010) == 1
        (got,) = store.list_runs(job="backup", output=True)
        assert (got.id, got.status, got.exit_code, got.stdout) == (end.id, Status.FAILED, 2,
                                                                   ALL_BYTES)  # fmt: skip
        assert store.open_runs_of("backup") == []
    assert not spool.has_spooled(db)


def test_has_spooled_ignores_temporary_files(spool_env):
    db = str(spool_env / "h.db")
    assert not spool.has_spooled(db)
    d = Path(spool.spool_dirs(db)[0])
    d.mkdir()
    (d / ".tmp-abc.json").write_text("{}")
    assert not spool.has_spooled(db)
    assert list(spool.spooled(db)) == []


def test_sqlite_url_spools_beside_the_file(spool_env):
    db = spool_env / "h.db"
    assert spool.spool_dirs(f"sqlite://{db}")[0] == f"{db}.spool"
    assert spool.spool_dirs(f"sqlite://{db}")[1:] == spool.spool_dirs(str(db))[1:]
    assert len(spool.spool_dirs("postgresql://u@host/db")) == 2
