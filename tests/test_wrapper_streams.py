"""Where the job's output goes: merged streams stay merged, and what the job leaves running
keeps its output path after the wrapper has gone.

Every test runs the installed ``cronwatch`` script around a real child, with its stdout
and stderr pointed the way a crontab line or a shell points them.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import CRONWATCH

TRIALS = 30
PAIRS = 40
# One write(2) per line, stdout and stderr in turn: two pipes read by poll() would give
# them back in whatever order the reader takes them.
INTERLEAVE = f'i=0; while [ $i -lt {PAIRS} ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done'
IN_ORDER = "".join(f"out {i}\nerr {i}\n" for i in range(PAIRS)).encode()


def runs_of(db_path: Path, job: str) -> list[Any]:
    from cronwatch.store import open_store

    with open_store(str(db_path), create=False) as s:
        return s.list_runs(job=job, output=True, oldest_first=True)


def wrap(job: str, *command: str) -> list[str]:
    return [CRONWATCH, "run", job, "--", *command]


def test_merged_into_a_file_stays_in_order(cw_env, db_path, tmp_path):
    """`cronwatch run x -- cmd >f 2>&1`: the file gets the lines in the order written."""
    for trial in range(TRIALS):
        path = tmp_path / f"out{trial}"
        with open(path, "wb") as f:
            rc = subprocess.run(wrap("file", "sh", "-c", INTERLEAVE), env=cw_env,
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                timeout=60).returncode  # fmt: skip
        assert rc == 0
        assert path.read_bytes() == IN_ORDER, f"trial {trial}"
    runs = runs_of(db_path, "file")
    assert len(runs) == TRIALS
    assert all((r.merged, r.stdout, r.stderr) == (True, IN_ORDER, None) for r in runs)


def test_merged_into_a_log_appended_to_stays_in_order(cw_env, db_path, tmp_path):
    """`>>log 2>&1` and `>>log 2>>log` (two descriptions, both appending): in order, and
    after what the log held."""
    log = tmp_path / "log"
    log.write_bytes(b"before\n")
    for shared in (True, False):
        with open(log, "ab") as out, open(log, "ab") as err:
            rc = subprocess.run(wrap("log", "sh", "-c", INTERLEAVE), env=cw_env,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if shared else err,
                                timeout=60).returncode  # fmt: skip
        assert rc == 0
    assert log.read_bytes() == b"before\n" + IN_ORDER + IN_ORDER
    assert [(r.merged, r.stdout) for r in runs_of(db_path, "log")] == [(True, IN_ORDER)] * 2


def test_merged_into_a_pipe_stays_in_order(cw_env, db_path):
    """`cronwatch run x -- cmd 2>&1 | cat`."""
    for trial in range(TRIALS):
        p = subprocess.run(wrap("pipe", "sh", "-c", INTERLEAVE), env=cw_env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)  # fmt: skip
        assert (p.returncode, p.stdout) == (0, IN_ORDER), f"trial {trial}"
    runs = runs_of(db_path, "pipe")
    assert len(runs) == TRIALS
    assert all((r.merged, r.stdout, r.stderr) == (True, IN_ORDER, None) for r in runs)


def test_merged_into_a_terminal_stays_in_order(cw_env, db_path):
    """stdout and stderr on one terminal: the child gets one pty for both."""
    script = 'a=-; b=-; [ -t 1 ] && a=tty; [ -t 2 ] && b=tty; echo "$a $b"; ' + INTERLEAVE
    for trial in range(TRIALS):
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(wrap("tty", "sh", "-c", script), env=cw_env,
                                    stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)  # fmt: skip
            os.close(slave)
            seen = read_terminal(master, proc)
        finally:
            os.close(master)
        # Our terminal turns each "\n" into "\r\n"; the child's pty passes bytes unchanged.
        assert seen == (b"tty tty\n" + IN_ORDER).replace(b"\n", b"\r\n"), f"trial {trial}"
    runs = runs_of(db_path, "tty")
    assert len(runs) == TRIALS
    assert all((r.merged, r.stdout) == (True, b"tty tty\n" + IN_ORDER) for r in runs)


def read_terminal(master: int, proc: subprocess.Popen[bytes]) -> bytes:
    """What reaches the terminal until the wrapper has exited and it has nothing more."""
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None and not select.select([master], [], [], 0.2)[0]:
            break
    assert proc.wait(timeout=30) == 0
    return seen


def test_separate_places_keep_separate_capture(cw_env, db_path, tmp_path):
    """`>out 2>err`, and `>f 2>f` (two descriptions of one file, each at its own offset):
    two streams, captured apart, as before."""
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        rc = subprocess.run(wrap("apart", "sh", "-c", INTERLEAVE), env=cw_env,
                            stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                            timeout=60).returncode  # fmt: skip
    assert rc == 0
    want_out = "".join(f"out {i}\n" for i in range(PAIRS)).encode()
    want_err = "".join(f"err {i}\n" for i in range(PAIRS)).encode()
    assert (out.read_bytes(), err.read_bytes()) == (want_out, want_err)
    same = tmp_path / "same"
    with open(same, "wb") as o, open(same, "wb") as e:
        rc = subprocess.run(wrap("apart", "sh", "-c", "echo one; echo two >&2"),
                            env=cw_env, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                            timeout=60).returncode  # fmt: skip
    assert rc == 0
    first, second = runs_of(db_path, "apart")
    assert (first.merged, first.stdout, first.stderr) == (False, want_out, want_err)
    assert (second.merged, second.stdout, second.stderr) == (False, b"one\n", b"two\n")


def test_show_and_json_say_the_capture_is_one_stream(cw, cw_env, tmp_path):
    with open(tmp_path / "f", "wb") as f:
        rc = subprocess.run(wrap("one", "sh", "-c", "echo 1; echo 2 >&2; echo 3"),
                            env=cw_env, stdin=subprocess.DEVNULL, stdout=f,
                            stderr=subprocess.STDOUT, timeout=60).returncode  # fmt: skip
    assert rc == 0
    rc, out, _ = cw("history", "one", "--json")
    assert rc == 0
    run_id = json.loads(out)[0]["id"]
    rc, out, _ = cw("show", run_id, "--json")
    d = json.loads(out)
    assert (rc, d["merged"], d["stdout"], d["stderr"]) == (0, True, "1\n2\n3\n", None)
    rc, out, _ = cw("show", run_id)
    assert rc == 0
    assert out.endswith(b"--- stdout and stderr, as one stream (6 bytes) ---\n1\n2\n3\n")
    assert b"--- stderr" not in out
    # a run whose streams went apart says so too
    assert cw("run", "two", "--", "sh", "-c", "echo a; echo b >&2").rc == 0
    rc, out, _ = cw("history", "two", "--json")
    d = json.loads(cw("show", json.loads(out)[0]["id"], "--json").out)
    assert (d["merged"], d["stdout"], d["stderr"]) == (False, "a\n", "b\n")


def test_merged_reader_going_away_reaches_the_job(cw_env, db_path):
    """`cronwatch run x -- yes 2>&1 | head -1`: `yes` gets SIGPIPE as it would unwrapped."""
    proc = subprocess.Popen(wrap("yes", "yes"), env=cw_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert select.select([proc.stdout], [], [], 30)[0], "no output for 30 s"
        assert os.read(proc.stdout.fileno(), 2) == b"y\n"
        proc.stdout.close()  # like head exiting
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 128 + signal.SIGPIPE
    run = runs_of(db_path, "yes")[-1]
    assert (run.signal, run.merged) == (signal.SIGPIPE, True)
    assert run.stdout.startswith(b"y\ny\n")


def test_merged_command_not_found_is_one_stream(cw_env, db_path, tmp_path):
    with open(tmp_path / "f", "wb") as f:
        rc = subprocess.run(wrap("gone", "no-such-command-here"), env=cw_env,
                            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                            timeout=60).returncode  # fmt: skip
    said = b"cronwatch: no-such-command-here: command not found\n"
    assert (rc, (tmp_path / "f").read_bytes()) == (127, said)
    run = runs_of(db_path, "gone")[-1]
    assert (run.merged, run.stdout, run.stderr) == (True, said, None)


# --- what the job leaves running ------------------------------------------------------

LINES = 20
# The job starts a background writer and exits at once. The writer waits for the test's
# go (a file), so the wrapper cannot finish after it by luck; then it writes to both
# streams and leaves a mark if it was not killed (SIGPIPE, default in the job's shell).
LEAVER = (
    f"( while [ ! -e go ]; do sleep 0.05; done; i=0; while [ $i -lt {LINES} ]; do "
    'echo "line $i"; echo "warn $i" >&2; sleep 0.05; i=$((i+1)); done; echo ok > survived ) '
    '& echo "job done"'
)


@pytest.mark.parametrize("merged", [False, True], ids=["separate", "merged"])
def test_a_background_writer_keeps_its_output_after_the_wrapper_exits(
    cw_env, db_path, tmp_path, merged
):
    proc = subprocess.Popen(wrap("leaver", "sh", "-c", LEAVER), env=cw_env,
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merged else subprocess.PIPE)  # fmt: skip
    try:
        # The writer cannot finish before the go: a wrapper that waited for it would hang.
        assert proc.wait(timeout=30) == 0
        assert not (tmp_path / "survived").exists()
        (tmp_path / "go").touch()
        out, err = read_to_eof(proc.stdout, None if merged else proc.stderr)
    finally:
        proc.kill()
        proc.wait()
    lines = [f"line {i}\n".encode() for i in range(LINES)]
    warns = [f"warn {i}\n".encode() for i in range(LINES)]
    if merged:
        assert out == b"job done\n" + b"".join(
            x for pair in zip(lines, warns, strict=True) for x in pair
        )
    else:
        assert (out, err) == (b"job done\n" + b"".join(lines), b"".join(warns))
    assert (tmp_path / "survived").read_text() == "ok\n"  # not killed on the way
    run = runs_of(db_path, "leaver")[-1]
    assert (run.status, run.stdout, run.merged) == ("success", b"job done\n", merged)


def read_to_eof(*pipes: Any) -> list[bytes]:
    """Everything written to each pipe (None: b""), once every writer has closed it."""
    got = {p: b"" for p in pipes if p is not None}
    left = set(got)
    deadline = time.monotonic() + 60
    while left:
        assert time.monotonic() < deadline, "the output path was never closed"
        for p in select.select(list(left), [], [], 1)[0]:
            chunk = os.read(p.fileno(), 65536)
            if chunk:
                got[p] += chunk
            else:
                left.discard(p)
    return [b"" if p is None else got[p] for p in pipes]


def test_the_relay_holds_only_what_the_leftover_writes_to(cw_env, db_path, tmp_path):
    """A leftover that closed its stderr: our stderr reaches EOF when the wrapper exits
    (whoever reads it is not kept waiting), while its stdout is still passed on."""
    leaver = ('( exec 2>&-; while [ ! -e go ]; do sleep 0.05; done; echo late; echo ok > '
              'survived ) & echo "job done"')  # fmt: skip
    proc = subprocess.Popen(wrap("closer", "sh", "-c", leaver), env=cw_env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.wait(timeout=30) == 0
        (err,) = read_to_eof(proc.stderr)  # before the go: nobody holds it any more
        assert b"Traceback" not in err
        (tmp_path / "go").touch()
        (out,) = read_to_eof(proc.stdout)
    finally:
        proc.kill()
        proc.wait()
    assert out == b"job done\nlate\n"
    assert (tmp_path / "survived").read_text() == "ok\n"
