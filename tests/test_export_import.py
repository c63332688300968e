"""Export to JSON Lines and import back: exact, idempotent, forgiving of bad lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cronwatch.core.model import Run, Status
from cronwatch.store import open_store

T0 = time.time() - 86400  # recent: the default retention keeps a year
# Every byte value, invalid UTF-8, valid multi-byte UTF-8 (including outside the BMP), NUL.
ODD_BYTES = bytes(range(256)) + b"\xff\xfe\xc3(" + "é€😀".encode() + b"\x00\xed\xa0\x80"


def sample_runs() -> list[Run]:
    return [
        Run(job="backup", started_at=T0, status=Status.SUCCESS, ended_at=T0 + 1.5, duration=1.5,
            exit_code=0, stdout=ODD_BYTES, stderr=None, host="h1", user="u", command="b.sh --x",
            env="prod", message="", source="wrapper", merged=True),  # stdout and stderr as one
        Run(job="backup", started_at=T0 + 60, status=Status.FAILED, ended_at=T0 + 61,
            duration=1.0, signal=9, stdout=b"partial", stderr=ODD_BYTES[::-1],
            message="killed by signal 9"),
        Run(job="report", started_at=T0 + 120, status=Status.TIMEOUT, ended_at=T0 + 180,
            duration=60.0, exit_code=None, stdout=None, stderr=None, source="ping"),
        Run(job="report", started_at=T0 + 240, status=Status.RUNNING),
    ]  # fmt: skip


@pytest.fixture
def exported(cw, store, tmp_path) -> tuple[Path, list[Run]]:
    runs = sample_runs()
    store.record_runs(runs, now=T0 + 300)
    path = tmp_path / "runs.jsonl"
    rc, out, err = cw("export", "-o", path)
    assert (rc, out) == (0, b"")
    assert err == f"exported 4 runs to {path}\n".encode()
    return path, runs


def stored(db: Path) -> list[Run]:
    with open_store(str(db), create=False) as s:
        return s.list_runs(output=True, oldest_first=True)


def test_export_is_one_ascii_json_object_a_line(exported):
    path, runs = exported
    data = path.read_bytes()
    assert data.isascii()
    lines = data.decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [r.id for r in runs]  # oldest first


def test_round_trip_into_a_fresh_database_is_exact(cw, exported, tmp_path):
    path, runs = exported
    fresh = tmp_path / "fresh" / "history.db"
    rc, out, err = cw("import", path, "--db", fresh)
    assert (rc, out, err) == (0, b"imported 4 runs, skipped 0 already present\n", b"")
    assert stored(fresh) == runs  # every field, output bytes included


def test_export_to_stdout_and_import_from_stdin(cw, exported, tmp_path):
    _, runs = exported
    rc, out, _ = cw("export")
    assert rc == 0
    fresh = tmp_path / "fresh.db"
    rc, out, err = cw("import", "-", "--db", fresh, "--json", input=out)
    assert rc == 0
    assert json.loads(out) == {"imported": 4, "skipped": 0, "invalid": 0}
    assert stored(fresh) == runs


def test_reimport_is_idempotent(cw, exported, tmp_path):
    path, runs = exported
    fresh = tmp_path / "fresh.db"
    assert cw("import", path, "--db", fresh).rc == 0
    rc, out, _ = cw("import", path, "--db", fresh, "--json")
    assert rc == 0
    assert json.loads(out) == {"imported": 0, "skipped": 4, "invalid": 0}
    assert stored(fresh) == runs
    # ...and importing into the database the runs came from changes nothing either.
    rc, out, _ = cw("import", path)
    assert (rc, out) == (0, b"imported 0 runs, skipped 4 already present\n")


def test_export_without_output(cw, exported, tmp_path):
    _, runs = exported
    rc, out, _ = cw("export", "--no-output")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(lines) == 4
    assert all("stdout" not in d and "stderr" not in d for d in lines)
    fresh = tmp_path / "fresh.db"
    assert cw("import", "-", "--db", fresh, input=out).rc == 0
    got = stored(fresh)
    assert [r.id for r in got] == [r.id for r in runs]
    assert all(r.stdout is None and r.stderr is None for r in got)


@pytest.mark.parametrize(
    ("args", "jobs"),
    [(["--job", "report"], ["report", "report"]), (["--job", "backup"], ["backup", "backup"])],
)
def test_export_filters(cw, exported, args, jobs):
    rc, out, _ = cw("export", *args)
    assert rc == 0
    assert [json.loads(line)["job"] for line in out.splitlines()] == jobs


def test_export_since(cw, store):
    now = time.time()
    store.record_runs([Run(job="j", started_at=now - 7200, status=Status.SUCCESS),
                       Run(job="j", started_at=now - 60, status=Status.SUCCESS)], now=now)  # fmt: skip
    rc, out, _ = cw("export", "--since", "1h")
    assert rc == 0 and len(out.splitlines()) == 1


def test_invalid_lines_are_reported_and_valid_lines_imported(cw, tmp_path):
    good = [
        Run(job="good", started_at=T0 + i, status=Status.SUCCESS, stdout=b"ok") for i in range(3)
    ]
    lines = [
        json.dumps(good[0].to_dict(exact=True)),                 # 1
        "{not json",                                             # 2
        json.dumps(good[1].to_dict(exact=True)),                 # 3
        json.dumps({"job": "Bad Name", "started_at": T0}),      # 4
        "",                                                      # 5: blank lines are skipped
        json.dumps({"job": "x", "started_at": T0, "status": "bogus"}),  # 6
        json.dumps({"job": "x"}),                                # 7
        json.dumps(good[2].to_dict(exact=True)),                 # 8
    ]  # fmt: skip
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    fresh = tmp_path / "fresh.db"
    rc, out, err = cw("import", path, "--db", fresh)
    assert rc == 1
    assert out == b"imported 3 runs, skipped 0 already present, 4 invalid lines\n"
    messages = err.decode().splitlines()
    assert [m.split(":")[1].strip() for m in messages] == ["line 2", "line 4", "line 6", "line 7"]
    assert "invalid job name 'Bad Name'" in messages[1]
    assert "invalid status 'bogus'" in messages[2]
    assert "missing the field 'started_at'" in messages[3]
    assert [r.id for r in stored(fresh)] == [r.id for r in good]


@pytest.mark.parametrize(
    "line",
    [
        "[1, 2]",
        '"a string"',
        '{"job": "x", "started_at": 1, "exit_code": [1]}',
        '{"job": "x", "started_at": 1, "duration": {}}',
        '{"job": "x", "started_at": "yesterday"}',
        '{"job": "x", "started_at": NaN}',
        '{"job": "x", "started_at": 1, "ended_at": Infinity}',
        '{"job": "x", "started_at": 1, "stdout": 5}',
        '{"job": "x", "started_at": 1, "id": "has space"}',
        '{"job": "x", "started_at": 1e400}',
    ],
)
def test_each_kind_of_bad_line_is_reported_not_fatal(cw, tmp_path, line):
    good = Run(job="good", started_at=T0, status=Status.SUCCESS)
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n" + json.dumps(good.to_dict()) + "\n")
    fresh = tmp_path / "fresh.db"
    rc, out, err = cw("import", path, "--db", fresh)
    assert rc == 1
    assert err.startswith(b"cronwatch: line 1: ") and len(err.splitlines()) == 1, err
    assert [r.id for r in stored(fresh)] == [good.id]


def test_only_the_first_invalid_lines_are_listed(cw, tmp_path):
    path = tmp_path / "junk.jsonl"
    path.write_text("junk\n" * 50)
    rc, out, err = cw("import", path, "--db", tmp_path / "fresh.db")
    assert rc == 1
    assert b"50 invalid lines" in out
    assert len(err.splitlines()) <= 6


def test_import_of_a_missing_file(cw, tmp_path):
    rc, out, err = cw("import", tmp_path / "nope.jsonl")
    assert (rc, out) == (1, b"")
    assert err.startswith(b"cronwatch: cannot read") and len(err.splitlines()) == 1


def test_export_to_an_unwritable_place(cw, exported, tmp_path):
    rc, out, err = cw("export", "-o", tmp_path / "no" / "such" / "dir.jsonl")
    assert (rc, out) == (1, b"")
    assert err.startswith(b"cronwatch: cannot write") and len(err.splitlines()) == 1


# --- the bulk path: thousands of lines, the parse fast path, the rollup ------------------------

FIELD_VALUES = {
    "id": ["01abc", "", None, 5, "bad id!", "x" * 129, "A.b_c:d-1"],
    "job": ["backup", "Backup", "", None, 7, ["x"], "a" * 65, "ok.job_1"],
    "started_at": [T0, int(T0), str(T0), "2026-01-02T03:04:05Z", -1.0, float("nan"), None, True],
    "status": ["success", "FAILED", "running", "bogus", None, 1, "missed"],
    "ended_at": [None, T0 + 1, int(T0), "x", 1e20],
    "duration": [None, 1.5, 3, "2.5", float("inf"), True, 1e301, -2.0],
    "exit_code": [None, 0, 255, "3", 1.5, True, "x"],
    "signal": [None, 9, "15", -1.0],
    "env": ["", None, "prod", 1],
    "host": ["", None, "h", 5, False],
    "user": ["u", None, 0],
    "command": ["a.sh --x", None, ""],
    "message": ["", None, "m", 0, ["x"]],
    "source": ["wrapper", None, "", 3],
    "stdout": [None, "", "out\udcff", "\ud800", 5],
    "stderr": [None, "err"],
    "merged": [False, True, None, "yes", 1],
}


def test_the_parse_fast_path_agrees_with_run_from_dict(monkeypatch):
    """Every line gives the same row, or the same error, through the fast path as through
    Run.from_dict (the one definition of what a run line may hold)."""
    import random

    from cronwatch.app import importer

    slow = importer._slow_row
    calls = []
    monkeypatch.setattr(importer, "_slow_row", lambda d: calls.append(1) or slow(d))
    rng = random.Random(5)
    to_row = importer._Rows()
    fast_rows = 0
    for _ in range(3000):
        # mostly the shape export writes (the first value of each list, every field, or
        # all but the output with --no-output), then odd values and missing fields
        d = {k: v[0] if rng.random() < 0.85 else rng.choice(v) for k, v in FIELD_VALUES.items()}
        if rng.random() < 0.2:
            del d["stdout"], d["stderr"]
        if rng.random() < 0.2:
            del d[rng.choice(list(d))]
        try:
            want: object = slow(d)
        except Exception as e:  # noqa: BLE001
            want = (type(e), str(e))
        calls.clear()
        try:
            got: object = to_row(d)
        except Exception as e:  # noqa: BLE001
            got = (type(e), str(e))
        if isinstance(want, tuple) and isinstance(want[0], str) and not d.get("id"):
            want, got = want[1:], got[1:]  # type: ignore[index]  # a fresh id each time
        fast_rows += not calls
        assert got == want, d
    assert fast_rows > 500  # the fast path was really exercised


def big_export(tmp_path: Path, n: int, *, start: float, every: float) -> tuple[Path, list[Run]]:
    runs = []
    for i in range(n):
        t = start + i * every
        status = (Status.SUCCESS, Status.FAILED, Status.TIMEOUT, Status.RUNNING)[i % 7 % 4]
        runs.append(Run(job=f"job-{i % 3}", started_at=t, status=status, ended_at=t + i % 13,
                        duration=None if status is Status.RUNNING else float(i % 13),
                        exit_code=1 if status is Status.FAILED else 0,
                        stdout=b"line %d\n" % i if i % 5 == 0 else None))  # fmt: skip
    path = tmp_path / f"big-{n}.jsonl"
    path.write_text("".join(json.dumps(r.to_dict(exact=True)) + "\n" for r in runs))
    return path, runs


def test_a_large_import_keeps_every_run_and_stats_agree(cw, db_path, tmp_path):
    """Two batches, runs spread over months (mostly in days the rollup already sealed),
    re-imported on top of itself: every run arrives once, and stats read through the rollup
    match the runs themselves."""
    from cronwatch.app.importer import BATCH
    from test_store import reference_stats

    n = BATCH + 5000
    path, runs = big_export(tmp_path, n, start=T0 - 120 * 86400, every=300.0)
    rc, out, _ = cw("import", path, "--json")
    assert rc == 0 and json.loads(out) == {"imported": n, "skipped": 0, "invalid": 0}
    rc, out, _ = cw("import", path, "--json")
    assert json.loads(out) == {"imported": 0, "skipped": n, "invalid": 0}
    with open_store(str(db_path), create=False) as s:
        got = s.list_runs(output=True, oldest_first=True)
        assert [(r.id, r.status) for r in got] == [(r.id, r.status) for r in runs]
        # output: kept for the newest 1,000 runs of each job (retention), exact
        assert [r.stdout for r in got[-3000:]] == [r.stdout for r in runs[-3000:]]
        for job in ("job-0", "job-1", "job-2"):
            mine = [r for r in runs if r.job == job]
            for since in (None, T0 - 30 * 86400, T0 - 100.5 * 86400):
                stats = s.job_stats(job, since=since)
                want = reference_stats(mine, since)
                assert stats["duration_avg"] == pytest.approx(want.pop("duration_avg"))
                assert {k: stats[k] for k in want} == want


def _lines(n: int) -> list[str]:
    return [
        json.dumps({"id": f"r{i}", "job": "j", "started_at": T0 + i, "status": "success"}) + "\n"
        for i in range(n)
    ]


def test_a_store_failure_mid_import_stops_the_reader_and_is_reported(monkeypatch):
    """The parsing child is stopped and reaped when writing fails; the error is the
    store's, as it would be without the child."""
    from cronwatch.app.importer import BATCH, import_lines
    from cronwatch.core.errors import StoreError

    children = []
    fork = os.fork

    def recording_fork() -> int:
        pid = fork()
        if pid:
            children.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)

    class Failing:
        calls = 0

        def import_rows(self, rows, *, now, days=None):
            self.calls += 1
            if self.calls == 2:
                raise StoreError("database is locked")
            return len(rows)

    store = Failing()
    with pytest.raises(StoreError, match="locked"):
        import_lines(store, _lines(BATCH * 4), now=T0)
    assert store.calls == 2
    assert len(children) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(children[0], os.WNOHANG)  # already reaped: no child left behind


def test_an_input_that_fails_while_read_is_a_clear_error():
    from cronwatch.app.importer import BATCH, FIRST_BATCH, import_lines
    from cronwatch.core.errors import CronwatchError

    def src():
        yield from _lines(FIRST_BATCH + BATCH + 10)
        raise OSError(5, "Input/output error")

    got = []

    class Store:
        def import_rows(self, rows, *, now, days=None):
            got.append(len(rows))
            return len(rows)

    with pytest.raises(CronwatchError, match="cannot read the input: OSError"):
        import_lines(Store(), src(), now=T0)
    assert got == [FIRST_BATCH, BATCH]  # what was read before the failure was written
