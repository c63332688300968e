"""The wrapper's recording path stays lean: every cron run pays for each module it imports
(benchmarks/README.md, "Total wall time"). A behavioural guard, not a timing: the real
script runs with Python's import log on, and the modules it loaded are checked."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from conftest import last_run

# Each costs milliseconds on every wrapped run (dataclasses alone ~30 ms), directly or
# through what it imports; the recording path needs none of them for a steady job.
HEAVY = {
    "argparse", "base64", "dataclasses", "datetime", "enum", "getpass", "hashlib", "inspect",
    "json", "re", "shlex", "socket", "sqlite3", "tempfile", "typing", "zlib",
    # what _sqlite3 imports for its statement cache, which the wrapper goes without
    "functools", "collections",
}  # fmt: skip


def imported(err: bytes) -> set[str]:
    """The modules named in a ``PYTHONPROFILEIMPORTTIME`` log."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in err.decode(errors="replace").splitlines()
        if line.startswith("import time:") and "|" in line
    }


# The wrapper itself runs detached from its post-run step (the default outside systemd):
# these tests pin what the wrapper's own process loads, which is what cron waits for.
DETACHED = {"CRONWATCH_POSTRUN": "detached"}


def test_a_steady_run_records_without_heavy_imports(cw, db_path: Path) -> None:
    page = db_path.parent / "dashboard.html"
    env = {"PYTHONPROFILEIMPORTTIME": "1", "CRONWATCH_DASHBOARD": str(page), **DETACHED}
    # The first run creates the job and its alert state; the second is the usual case.
    for _ in range(2):
        rc, _out, err = cw("run", "lean", "--", "true", env=env)
        assert rc == 0
    modules = imported(err)
    assert "cronwatch.store.sqlite.backend" in modules  # it did record...
    assert not modules & HEAVY  # ...with none of these
    # evaluation and the page are the post-run step's, in another process
    assert not {m for m in modules if m.startswith("cronwatch.app")}
    assert not [line for line in err.splitlines() if not line.startswith(b"import time:")]
    run = last_run(db_path, "lean")
    assert run.status == "success" and run.stdout == b"" and run.stderr == b""
    deadline = time.monotonic() + 60  # the detached post-run step renders the page
    while not page.exists() or Path(str(page) + ".pending").exists():
        assert time.monotonic() < deadline, "the dashboard was not regenerated"
        time.sleep(0.05)


def test_output_and_settings_bring_only_what_they_need(cw, store) -> None:
    """Output is compressed (zlib) and a job with settings has them decoded (json) only
    when there is some: both still work from the wrapper, retention included."""
    assert cw("job", "set", "tuned", "--keep-output", "2").rc == 0
    for i in range(4):
        rc, out, _err = cw("run", "tuned", "--", "echo", f"hello {i}")
        assert rc == 0 and out == f"hello {i}\n".encode()
    runs = store.list_runs(job="tuned", output=True)
    assert [r.stdout for r in runs] == [b"hello 3\n", b"hello 2\n", None, None]


# The cronwatch modules a wrapped run may load, and no others: a new import on this path
# (an adapter, the server, the CLI's parser) costs every cron run. The entry point, the
# wrapper, and the store to write the run, open and then closed. It is the same list
# whatever the job's configuration: a schedule, assertions, channels, an alert that fires,
# a channel that never answers are all the post-run step's (app.evaluate, core.schedule,
# core.alerting, core.assertions, notify: another process).
WRAPPER = {
    "cronwatch", "cronwatch._version", "cronwatch.main", "cronwatch.system",
    "cronwatch.wrapper", "cronwatch.wrapper.runner", "cronwatch.wrapper.options",
    "cronwatch.wrapper.record",
    "cronwatch.core", "cronwatch.core.errors", "cronwatch.core.model", "cronwatch.core.values",
    "cronwatch.core.runs",
    "cronwatch.store", "cronwatch.store.sqlite", "cronwatch.store.sqlite.backend",
    "cronwatch.store.sqlite.migrations", "cronwatch.store.base", "cronwatch.store.rollup",
    "cronwatch.store.sqlite.dialect",
}  # fmt: skip


def loaded_modules(cw, name: str, *commands: str, env: dict[str, str]) -> set[str]:
    """The cronwatch modules loaded by runs of ``name``, one run per command."""
    loaded: set[str] = set()
    for command in commands:
        _rc, _out, err = cw("run", name, "--", command, env=env)
        loaded |= {m for m in imported(err) if m == "cronwatch" or m.startswith("cronwatch.")}
    return loaded


def test_a_run_loads_only_the_modules_of_its_path(cw, db_path: Path, store) -> None:
    env = {"PYTHONPROFILEIMPORTTIME": "1", "CRONWATCH_DASHBOARD": str(db_path.parent / "d.html"),
           **DETACHED}  # fmt: skip
    bare = loaded_modules(cw, "bare", "true", "true", "false", env=env)
    assert {"cronwatch.wrapper.runner", "cronwatch.store.sqlite.backend"} <= bare
    assert not bare - WRAPPER, sorted(bare - WRAPPER)

    with socket.socket() as silent:  # a channel that accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hook = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        rc = cw("job", "set", "full", "--schedule", "*/5 * * * *", "--grace", "5m",
                "--notify", hook, "--assert", "duration < 1h", "--alert-after", "1").rc  # fmt: skip
        assert rc == 0
        steady = loaded_modules(cw, "full", "true", env=env)  # healthy: nothing to send
        assert not steady - WRAPPER, sorted(steady - WRAPPER)
        _rc, _out, err = cw("run", "full", "--", "true", env=env)
        assert not imported(err) & HEAVY, sorted(imported(err) & HEAVY)  # its settings unread
        # a failure opens an incident whose alert goes to the silent channel; then recovery
        alerting = loaded_modules(cw, "full", "false", "true", env=env)
        assert not alerting - WRAPPER, sorted(alerting - WRAPPER)
        # ...and the alert was decided all the same, by the detached post-run step
        deadline = time.monotonic() + 60
        while not store.list_incidents(job="full"):
            assert time.monotonic() < deadline, "the failure never opened an incident"
            time.sleep(0.1)


def test_the_allow_list_catches_a_module_off_the_path(cw, db_path: Path) -> None:
    """The same check on a run that reports to a server: its modules are not on the local
    path, and the check names them."""
    env = {"PYTHONPROFILEIMPORTTIME": "1", "CRONWATCH_DASHBOARD": str(db_path.parent / "d.html"),
           **DETACHED}  # fmt: skip
    server = {"CRONWATCH_URL": "http://127.0.0.1:9", "CRONWATCH_KEY": "k"}  # refused
    remote = loaded_modules(cw, "remote", "true", env={**env, **server})
    assert "cronwatch.remote.ping" in remote - WRAPPER
