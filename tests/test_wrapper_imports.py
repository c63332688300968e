"""The wrapper's recording path stays lean: every cron run pays for each module it imports
(benchmarks/README.md, "Total wall time"). A behavioural guard, not a timing: the real
script runs with Python's import log on, and the modules it loaded are checked."""

from __future__ import annotations

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


def test_a_steady_run_records_without_heavy_imports(cw, db_path: Path) -> None:
    page = db_path.parent / "dashboard.html"
    env = {"PYTHONPROFILEIMPORTTIME": "1", "CRONWATCH_DASHBOARD": str(page)}
    # The first run creates the job and its alert state; the second is the usual case.
    for _ in range(2):
        rc, _out, err = cw("run", "lean", "--", "true", env=env)
        assert rc == 0
    modules = imported(err)
    # it did record, evaluate and ask for the dashboard...
    assert {
        "cronwatch.store.sqlite.backend",
        "cronwatch.app.evaluate",
        "cronwatch.app.regen",
    } <= modules
    assert not modules & HEAVY  # ...with none of these
    assert "cronwatch.core.alerting" not in modules  # a steady success skips the state machine
    assert not [line for line in err.splitlines() if not line.startswith(b"import time:")]
    run = last_run(db_path, "lean")
    assert run.status == "success" and run.stdout == b"" and run.stderr == b""
    deadline = time.monotonic() + 60  # the detached renderer finishes on its own
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
# (an adapter, the server, the CLI's parser) costs every cron run. A bare job: the entry
# point, the wrapper, the store, the after-run evaluation and the dashboard trigger, and
# for a first run or a failure the alert state machine.
WRAPPER_BARE = {
    "cronwatch", "cronwatch._version", "cronwatch.main", "cronwatch.system",
    "cronwatch.wrapper", "cronwatch.wrapper.runner", "cronwatch.wrapper.options",
    "cronwatch.wrapper.record", "cronwatch.wrapper.spool",
    "cronwatch.core", "cronwatch.core.errors", "cronwatch.core.model", "cronwatch.core.values",
    "cronwatch.core.runs", "cronwatch.core.events",
    "cronwatch.store", "cronwatch.store.interface", "cronwatch.store.sqlite",
    "cronwatch.store.sqlite.backend", "cronwatch.store.sqlite.migrations",
    "cronwatch.store.base", "cronwatch.store.rollup", "cronwatch.store.sqlite.dialect",
    "cronwatch.app", "cronwatch.app.evaluate", "cronwatch.app.regen", "cronwatch.core.alerting",
}  # fmt: skip
# With a schedule, a webhook and an assertion: its deadline, the rules, and, only when a
# notification is due, delivery through that one channel (the registry loads a channel's
# module on first use; a webhook URL is checked for Slack's host, and Apprise is asked
# whether it is installed).
WRAPPER_STEADY = WRAPPER_BARE | {
    "cronwatch.core.schedule", "cronwatch.core.health", "cronwatch.core.assertions",
}  # fmt: skip
WRAPPER_FULL = WRAPPER_STEADY | {
    "cronwatch.notify", "cronwatch.notify._http", "cronwatch.notify.message",
    "cronwatch.notify.webhook", "cronwatch.notify.slack", "cronwatch.notify.apprise",
}  # fmt: skip


def loaded_modules(cw, name: str, *commands: str, env: dict[str, str]) -> set[str]:
    """The cronwatch modules loaded by runs of ``name``, one run per command."""
    loaded: set[str] = set()
    for command in commands:
        _rc, _out, err = cw("run", name, "--", command, env=env)
        loaded |= {m for m in imported(err) if m == "cronwatch" or m.startswith("cronwatch.")}
    return loaded


def test_a_run_loads_only_the_modules_of_its_path(cw, db_path: Path) -> None:
    env = {"PYTHONPROFILEIMPORTTIME": "1", "CRONWATCH_DASHBOARD": str(db_path.parent / "d.html")}
    bare = loaded_modules(cw, "bare", "true", "true", "false", env=env)
    assert {"cronwatch.wrapper.runner", "cronwatch.store.sqlite.backend"} <= bare
    assert not bare - WRAPPER_BARE, sorted(bare - WRAPPER_BARE)

    hook = "https://127.0.0.1:9/hook"  # refused: delivery fails fast and is retried later
    rc = cw("job", "set", "full", "--schedule", "*/5 * * * *", "--notify", hook,
            "--assert", "duration < 1h", "--alert-after", "1").rc  # fmt: skip
    assert rc == 0
    # a steady success: nothing to deliver, so no channel is loaded
    steady = loaded_modules(cw, "full", "true", env=env)
    assert not steady - WRAPPER_STEADY, sorted(steady - WRAPPER_STEADY)
    # failure (opens an incident: a notification to deliver), recovery
    full = loaded_modules(cw, "full", "false", "true", env=env)
    assert {"cronwatch.core.schedule", "cronwatch.core.assertions", "cronwatch.notify"} <= full
    assert not full - WRAPPER_FULL, sorted(full - WRAPPER_FULL)


def test_the_allow_list_catches_a_module_off_the_path(cw, db_path: Path) -> None:
    """The same check on a run that reports to a server: its modules are not on the local
    path, and the check names them."""
    env = {"PYTHONPROFILEIMPORTTIME": "1", "CRONWATCH_DASHBOARD": str(db_path.parent / "d.html")}
    server = {"CRONWATCH_URL": "http://127.0.0.1:9", "CRONWATCH_KEY": "k"}  # refused
    remote = loaded_modules(cw, "remote", "true", env={**env, **server})
    assert "cronwatch.remote.ping" in remote - WRAPPER_FULL
