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
