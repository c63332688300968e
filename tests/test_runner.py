"""The wrapper is invisible to the job: exit codes, signals, output, stdin and terminals.

Every test runs the installed ``cronwatch`` (or ``job-watch``) script around a real child.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import CRONWATCH, JOB_WATCH, PY, last_run, warnings
from cronwatch.core.model import Status


def test_output_and_run_recorded(cw, db_path):
    rc, out, err = cw("run", "hello", "--", "sh", "-c", "echo out; echo err >&2")
    assert (rc, out, err) == (0, b"out\n", b"err\n")
    run = last_run(db_path, "hello")
    assert run.status is Status.SUCCESS
    assert (run.exit_code, run.signal) == (0, None)
    assert (run.stdout, run.stderr) == (b"out\n", b"err\n")
    assert run.command == "sh -c 'echo out; echo err >&2'"
    assert run.duration is not None and run.duration >= 0
    assert run.ended_at >= run.started_at


@pytest.mark.parametrize(
    ("form", "code"), [("run", 0), ("run", 1), ("run", 3), ("run", 255), ("name", 255)]
)
def test_exit_code_passes_through(cw, db_path, code, form):
    child = ["sh", "-c", f"exit {code}"]
    if form == "run":
        rc, _, err = cw("run", "codes", "--", *child)
    else:
        rc, _, err = cw("--name", "codes", *child, prog=JOB_WATCH)
    assert rc == code
    run = last_run(db_path, "codes")
    assert run.exit_code == code
    assert run.status is (Status.SUCCESS if code == 0 else Status.FAILED)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1])
def test_child_killed_by_signal(cw, db_path, sig):
    rc, _, _ = cw("run", "killed", "--", "sh", "-c", f"kill -{sig.name[3:]} $$")
    assert rc == 128 + sig
    run = last_run(db_path, "killed")
    assert run.signal == sig
    assert run.exit_code is None
    assert run.status is Status.FAILED
    assert str(int(sig)) in run.message


TRAP = """
import signal, sys, time
def handler(signum, frame):
    with open(sys.argv[1], "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(40 + signum)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, handler)
print("ready", flush=True)
time.sleep(30)
sys.exit(99)
"""


def wait_for_line(proc: subprocess.Popen, expected: bytes, timeout: float = 20) -> None:
    """Read the wrapper's stdout until ``expected`` arrives (proves the child is up)."""
    deadline = time.monotonic() + timeout
    got = b""
    while expected not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"child never printed {expected!r}; got {got!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"wrapper closed stdout early; got {got!r}"
            got += chunk


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_signals_are_forwarded_to_the_child(cw_env, db_path, tmp_path, sig):
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [CRONWATCH, "run", "trap", "--", PY, "-c", TRAP, str(marker)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cw_env,
        start_new_session=True,  # a signal for the wrapper alone, not for its group
    )
    try:
        wait_for_line(proc, b"ready")
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert b"Traceback" not in proc.stderr.read()
    assert marker.read_text() == sig.name
    assert rc == 40 + sig
    run = last_run(db_path, "trap")
    assert (run.exit_code, run.status) == (40 + sig, Status.FAILED)


COUNT_SIGINT = """
import signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda s, f: got.append(s))
print("ready", flush=True)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    time.sleep(0.02)
print("got", len(got), flush=True)
sys.exit(len(got))
"""


def read_terminal(master: int, proc: subprocess.Popen, until: bytes = b"") -> bytes:
    """What the wrapper writes to our terminal: up to ``until``, or until it is closed."""
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (until and until in seen):
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    return seen


def test_ctrl_c_in_a_terminal_reaches_the_job_once(cw_env, db_path):
    """The terminal sends SIGINT to the whole foreground group; the wrapper must not
    forward a second one."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [CRONWATCH, "run", "ctrl-c", "--", PY, "-c", COUNT_SIGINT],
        stdin=slave, stdout=slave, stderr=slave, env=cw_env,
        start_new_session=True,  # a session whose controlling terminal is ours
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )  # fmt: skip
    os.close(slave)
    try:
        assert b"ready" in read_terminal(master, proc, until=b"ready")
        os.write(master, b"\x03")  # Ctrl-C
        rest = read_terminal(master, proc)
        assert proc.wait(timeout=20) == 1
    finally:
        os.close(master)
        proc.kill()
        proc.wait()
    assert b"got 1" in rest
    assert last_run(db_path, "ctrl-c").exit_code == 1


def test_the_job_gets_our_signal_dispositions_and_mask(cw_env):
    """Under nohup (SIGHUP ignored) the job ignores SIGHUP too, and no signal is blocked."""
    script = (
        "import signal; print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN,"
        " signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,"
        " sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))"
    )
    nohup = ["sh", "-c", 'trap "" HUP; exec "$@"', "sh"]
    p = subprocess.run([*nohup, CRONWATCH, "run", "nohup", "--", PY, "-c", script],
                       env=cw_env, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert (p.returncode, p.stdout) == (0, b"True True []\n")


def test_command_not_found(cw, db_path):
    rc, out, err = cw("run", "missing", "--", "no-such-command-cw")
    assert rc == 127
    assert b"no-such-command-cw: command not found" in err
    run = last_run(db_path, "missing")
    assert (run.exit_code, run.status) == (127, Status.FAILED)
    assert "command not found" in run.message


def test_command_not_executable(cw, db_path, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    rc, out, err = cw("run", "noexec", "--", script)
    assert rc == 126
    assert out == b""
    assert str(script).encode() in err
    run = last_run(db_path, "noexec")
    assert (run.exit_code, run.status) == (126, Status.FAILED)


ALL_BYTES = bytes(range(256))


def test_binary_output_passes_through_exactly(cw, db_path):
    script = (
        "import sys;"
        "sys.stdout.buffer.write(bytes(range(256)) * 3);"
        "sys.stderr.buffer.write(bytes(range(255, -1, -1)) * 2)"
    )
    rc, out, err = cw("run", "binary", "--", PY, "-c", script)
    assert rc == 0
    assert out == ALL_BYTES * 3  # no trailing newline added
    assert err == ALL_BYTES[::-1] * 2
    run = last_run(db_path, "binary")
    assert run.stdout == ALL_BYTES * 3
    assert run.stderr == ALL_BYTES[::-1] * 2


BIG = """
import sys
out = sys.stdout.buffer
lines = b"".join(b"%08d\\n" % i for i in range(int(sys.argv[1])))
sizes = [1, 7, 4096, 65537, 1 << 20]
i = k = 0
while i < len(lines):
    n = sizes[k % len(sizes)]
    out.write(lines[i:i + n])
    i, k = i + n, k + 1
out.flush()
sys.stderr.buffer.write(b"done\\n")
"""


def test_large_output_passes_through_and_capture_is_capped(cw, db_path):
    n_lines = 20 * 1024 * 1024 // 9  # 20 MB
    expected = b"".join(b"%08d\n" % i for i in range(n_lines))
    rc, out, err = cw("run", "big", "--max-output", "64k", "--", PY, "-c", BIG, n_lines)
    assert rc == 0
    assert len(out) == len(expected)
    assert out == expected
    assert err == b"done\n"
    run = last_run(db_path, "big")
    half = 64 * 1024 // 2
    cut = len(expected) - 2 * half
    assert run.stdout == (
        expected[:half] + b"\n[... cronwatch: %d bytes cut ...]\n" % cut + expected[-half:]
    )
    assert run.stderr == b"done\n"  # the cap is per stream


@pytest.mark.parametrize(("size", "head", "tail"), [("10", 5, 5), ("11", 5, 6), ("0", 0, 0)])
def test_max_output_keeps_head_and_tail(cw, db_path, size, head, tail):
    data = bytes(range(100))
    script = "import sys; sys.stdout.buffer.write(bytes(range(100)))"
    rc, out, _ = cw("run", "cap", "--max-output", size, "--", PY, "-c", script)
    assert (rc, out) == (0, data)
    cut = 100 - head - tail
    assert last_run(db_path, "cap").stdout == (
        data[:head] + b"\n[... cronwatch: %d bytes cut ...]\n" % cut + data[100 - tail :]
    )


@pytest.mark.parametrize("size", ["100", "1MiB"])
def test_output_within_the_cap_is_kept_whole(cw, db_path, size):
    script = "import sys; sys.stdout.buffer.write(bytes(range(100)))"
    assert cw("run", "cap", "--max-output", size, "--", PY, "-c", script).rc == 0
    assert last_run(db_path, "cap").stdout == bytes(range(100))


def test_streams_keep_their_order_and_stay_separate(cw, db_path):
    script = (
        "import sys\n"
        "for i in range(2000):\n"
        "    sys.stdout.write(f'out {i}\\n'); sys.stdout.flush()\n"
        "    sys.stderr.write(f'err {i}\\n'); sys.stderr.flush()\n"
    )
    rc, out, err = cw("run", "order", "--", PY, "-c", script)
    want_out = "".join(f"out {i}\n" for i in range(2000)).encode()
    want_err = "".join(f"err {i}\n" for i in range(2000)).encode()
    assert (rc, out, err) == (0, want_out, want_err)
    run = last_run(db_path, "order")
    assert (run.stdout, run.stderr) == (want_out, want_err)


def yes_until(cw_env, db_path, nbytes: int) -> bytes:
    """`cronwatch run yes -- yes | head -c NBYTES`: read that much, then close the pipe.
    `yes` must get SIGPIPE as it would unwrapped; returns the captured stdout."""
    proc = subprocess.Popen([CRONWATCH, "run", "yes", "--", "yes"], env=cw_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        head, count = b"", 0
        while count < nbytes:
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            assert ready, "no output for 20 s"
            chunk = proc.stdout.read1(min(1 << 20, nbytes - count))
            assert chunk
            head = (head + chunk[:16])[:16]
            count += len(chunk)
        assert head.startswith(b"y\n")
        proc.stdout.close()  # like head exiting
        rc = proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 128 + signal.SIGPIPE
    assert b"Traceback" not in proc.stderr.read()
    run = last_run(db_path, "yes")
    assert (run.signal, run.status) == (signal.SIGPIPE, Status.FAILED)
    return run.stdout


def test_reader_going_away_reaches_the_job(cw_env, db_path):
    """`cronwatch run x -- yes | head -1`: `yes` gets SIGPIPE as it would unwrapped."""
    assert yes_until(cw_env, db_path, 2).startswith(b"y\ny\n")


def test_stdin_is_inherited(cw, db_path):
    rc, out, _ = cw("run", "cat", "--", "cat", input=b"hi\n")
    assert (rc, out) == (0, b"hi\n")
    assert last_run(db_path, "cat").stdout == b"hi\n"


def test_stdin_is_not_read_by_the_wrapper(cw):
    data = os.urandom(256 * 1024)
    rc, out, _ = cw("run", "cat", "--", "cat", input=data)
    assert (rc, out) == (0, data)


def test_a_terminal_stays_a_terminal(cw_env, db_path):
    script = "import sys; print(sys.stdout.isatty(), sys.stderr.isatty()); print('two')"
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [CRONWATCH, "run", "tty", "--", PY, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=cw_env,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None and not select.select([master], [], [], 0.2)[0]:
            break
    os.close(master)
    assert proc.wait(timeout=10) == 0
    # Our terminal turns "\n" into "\r\n" once; the wrapper must not add a second "\r".
    assert seen.startswith(b"True True\r\ntwo\r\n"), seen
    run = last_run(db_path, "tty")
    assert run.stdout == b"True True\ntwo\n"


def test_no_capture_records_the_run_without_output(cw, db_path):
    rc, out, err = cw(
        "run", "quiet", "--no-capture", "--", "sh", "-c", "echo out; echo err >&2; exit 4"
    )
    assert (rc, out, err) == (4, b"out\n", b"err\n")
    run = last_run(db_path, "quiet")
    assert (run.exit_code, run.status) == (4, Status.FAILED)
    assert (run.stdout, run.stderr) == (None, None)


def test_timeout_kills_the_child(cw, db_path):
    t0 = time.monotonic()
    rc, _, _ = cw("run", "slow", "--timeout", "1s", "--", "sleep", "30")
    elapsed = time.monotonic() - t0
    assert rc == 128 + signal.SIGTERM
    assert elapsed < 15  # not the 30 s the child wanted
    run = last_run(db_path, "slow")
    assert run.status is Status.TIMEOUT
    assert run.signal == signal.SIGTERM
    assert "timeout" in run.message


# A shell starts in milliseconds, so its trap is set long before the 1 s timeout.
STUBBORN = 'trap "echo TERM > $0" TERM; echo ready; while :; do sleep 0.1; done'


def test_timeout_kills_a_child_that_ignores_term(cw, db_path, tmp_path):
    marker = tmp_path / "got-term"
    t0 = time.monotonic()
    rc, out, _ = cw(
        "run", "stubborn", "--timeout", "1s", "--kill-grace", "1s", "--",
        "sh", "-c", STUBBORN, marker,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert rc == 128 + signal.SIGKILL
    assert marker.read_text() == "TERM\n"  # asked politely first
    assert 1.9 <= elapsed < 20  # TERM at 1 s, KILL one grace later; not the child's 30 s
    run = last_run(db_path, "stubborn")
    assert run.status is Status.TIMEOUT
    assert run.signal == signal.SIGKILL
    assert run.stdout == b"ready\n"


# A bad value of our own option used to cost the job (exit 2, nothing run); since issue 11
# it costs one warning line and the option keeps its default.
@pytest.mark.parametrize("option", ["--timeout", "--kill-grace"])
@pytest.mark.parametrize("value", ["soon", "-5", "inf", "nan", ""])
def test_bad_durations_cost_a_warning_not_the_job(cw, db_path, tmp_path, option, value):
    marker = tmp_path / "ran"
    rc, _, err = cw("run", "x", option, value, "--", "sh", "-c", 'touch "$0"; exit 4', marker)
    assert rc == 4 and marker.exists()
    assert len(err.splitlines()) == 1 and len(warnings(err)) == 1, err
    assert f"ignoring {option}: invalid duration".encode() in err
    assert last_run(db_path, "x").exit_code == 4


@pytest.mark.parametrize("value", ["lots", "-1", "inf", "1e400", "nan"])
def test_bad_sizes_cost_a_warning_not_the_job(cw, db_path, tmp_path, value):
    marker = tmp_path / "ran"
    rc, out, err = cw("run", "x", "--max-output", value, "--", "sh", "-c", 'touch "$0"; echo out',
                      marker)  # fmt: skip
    assert (rc, out) == (0, b"out\n") and marker.exists()
    assert len(err.splitlines()) == 1 and len(warnings(err)) == 1, err
    assert b"ignoring --max-output: invalid size" in err
    assert last_run(db_path, "x").stdout == b"out\n"  # the default cap: all of it kept


def test_environment_and_cwd_are_inherited(cw, tmp_path):
    rc, out, _ = cw("run", "env", "--", "sh", "-c", 'echo "$CW_TEST_VAR"; pwd',
                    env={"CW_TEST_VAR": "héllo"})  # fmt: skip
    assert rc == 0
    assert out.splitlines()[0] == "héllo".encode()
    assert Path(out.splitlines()[1].decode()) == Path.cwd()


# --- bulk output: past 8 MiB a stream moves in the kernel (teepipe) -----------------------

BULK = r"""
import os, sys
n, fds = int(sys.argv[1]), [int(f) for f in sys.argv[2].split(",")]
for i in range(n):  # 1 KiB blocks, each naming its stream and number: order shows
    for fd in fds:
        block = (b"%d:%09d|" % (fd, i)).ljust(1023, b".") + b"\n"
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view):]
"""


def bulk_expected(fd: int, n: int) -> bytes:
    return b"".join((b"%d:%09d|" % (fd, i)).ljust(1023, b".") + b"\n" for i in range(n))


def capped(data: bytes, limit: int = 1 << 20) -> bytes:
    head, rest = data[: limit // 2], data[limit // 2 :]
    keep = limit - limit // 2
    if len(rest) <= keep:
        return data
    return head + b"\n[... cronwatch: %d bytes cut ...]\n" % (len(rest) - keep) + rest[-keep:]


def test_bulk_output_to_a_pipe_is_byte_exact_and_captured(cw, db_path):
    n = 24 * 1024  # 24 MiB: well past the switch to zero-copy
    rc, out, err = cw("run", "bulk", "--", PY, "-c", BULK, str(n), "1", timeout=120)
    want = bulk_expected(1, n)
    assert rc == 0 and err == b""
    assert len(out) == len(want) and out == want
    run = last_run(db_path, "bulk")
    assert run.stdout == capped(want)


def test_bulk_output_of_both_streams_to_files(cw_env, db_path, tmp_path):
    n = 12 * 1024
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        rc = subprocess.run([CRONWATCH, "run", "both", "--max-output", "256k", "--", PY, "-c",
                             BULK, str(n), "1,2"], env=cw_env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, timeout=120).returncode  # fmt: skip
    assert rc == 0
    assert out_path.read_bytes() == bulk_expected(1, n)
    assert err_path.read_bytes() == bulk_expected(2, n)
    run = last_run(db_path, "both")
    assert run.stdout == capped(bulk_expected(1, n), 256 * 1024)
    assert run.stderr == capped(bulk_expected(2, n), 256 * 1024)


def test_reader_going_away_after_bulk_output_reaches_the_job(cw_env, db_path):
    """`cronwatch run x -- yes | head -c 20M`: the job still gets SIGPIPE once the stream
    moves in the kernel."""
    stdout = yes_until(cw_env, db_path, 20 << 20)
    assert stdout.startswith(b"y\ny\n") and stdout.endswith(b"y\n")


def test_tail_pipe_gives_up_cleanly_where_tee_cannot_work(tmp_path):
    """tee(2) needs pipes: on a regular file it fails, and the caller reads instead."""
    from cronwatch.wrapper.teepipe import TailPipe, Unavailable

    tp = TailPipe(1000, b"x" * 1500)
    try:
        with open(tmp_path / "f", "wb+") as f:
            f.write(b"data")
            f.seek(0)
            with pytest.raises(Unavailable):
                tp.step(f.fileno(), None)
        assert tp.take() == b"x" * 1000  # what it kept is still there
    finally:
        tp.close()
