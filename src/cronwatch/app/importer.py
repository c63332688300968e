"""`cronwatch import`: JSON Lines of runs (as `export` writes them) into the store, fast.

Lines are parsed in batches by a forked child process and written by the calling one, so
that parsing (the C JSON parser and the row checks, under the GIL) and writing (SQLite,
which this Python's sqlite3 runs under the GIL too) use two cores. A line of the shape
`export` writes is turned straight into a row; anything else (ISO times, numbers in
strings, a missing id, ...) goes through ``Run.from_dict``, which accepts exactly the same
values and words the errors. Each batch is one write transaction (``Store.import_rows``),
so wrappers writing to the same database wait for at most one batch.
"""

from __future__ import annotations

import contextlib
import datetime  # noqa: F401 (for the forked child: _parse_in_child)
import json
import math  # noqa: F401 (for the forked child)
import operator
import os
import pickle
import queue
import re
import signal
import threading
import zlib  # noqa: F401 (for the forked child)
from collections.abc import Iterable, Iterator
from typing import Any

from cronwatch.core.errors import CronwatchError, ValidationError
from cronwatch.core.model import FAILURES, RUN_ID_PATTERN, STATUSES, Run, validate_name
from cronwatch.core.values import compress
from cronwatch.store.interface import run_row

BATCH = 50_000  # lines per parse and per write transaction (fewer commits: import_rows)
FIRST_BATCH = 2_000

_RUN_ID = re.compile(RUN_ID_PATTERN)
_MAX_TIME = 253402300800  # what Run.from_dict accepts: [0, year 10000)

Row = tuple[Any, ...]  # a row for Store.import_rows, as store.base.run_row makes it


def _slow_row(d: Any) -> Row:
    return run_row(Run.from_dict(d))


_FIELDS = ("id", "job", "env", "status", "started_at", "ended_at", "duration", "exit_code",
           "signal", "host", "user", "command", "message", "source")  # fmt: skip
_ALL = operator.itemgetter(*_FIELDS, "stdout", "stderr")  # what `export` writes
_NO_OUTPUT = operator.itemgetter(*_FIELDS)  # ... and `export --no-output`


class _Rows:
    """dict -> row. The fast path takes only lines of the shape `export` writes, with
    values that Run.from_dict would take unchanged; anything else goes through it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __call__(self, d: Any) -> Row:
        try:
            (rid, job, env, status, started, ended, duration, exit_code, signal, host, user,
             command, message, source, out, err) = _ALL(d)  # fmt: skip
        except KeyError:
            if "stdout" in d or "stderr" in d:
                return _slow_row(d)
            try:
                (rid, job, env, status, started, ended, duration, exit_code, signal, host, user,
                 command, message, source) = _NO_OUTPUT(d)  # fmt: skip
            except KeyError:
                return _slow_row(d)
            out = err = None
        except TypeError:  # not an object
            return _slow_row(d)
        merged = d.get("merged", False)
        if not (
            type(job) is str
            and job in self.names
            and type(started) is float
            and 0 <= started < _MAX_TIME
            and status in STATUSES
            and type(rid) is str
            and _RUN_ID.fullmatch(rid)
            and (ended is None or (type(ended) is float and 0 <= ended < _MAX_TIME))
            and (duration is None or (type(duration) is float and -1e300 < duration < 1e300))
            and (exit_code is None or type(exit_code) is int)
            and (signal is None or type(signal) is int)
            and type(env) is str
            and type(host) is str
            and type(user) is str
            and type(command) is str
            and type(message) is str
            and type(source) is str
            and (out is None or type(out) is str)
            and (err is None or type(err) is str)
            and type(merged) is bool
        ):
            if type(job) is str and job not in self.names:
                try:
                    self.names.add(validate_name(job))
                except ValidationError:
                    pass
                else:
                    return self(d)
            return _slow_row(d)
        if out is not None or err is not None:
            try:
                out = None if out is None else compress(out.encode("utf-8", "surrogateescape"))
                err = None if err is None else compress(err.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                return _slow_row(d)
        return (
            rid, job, env, status, started, ended, duration, exit_code, signal, host, user,
            command, message, source or "import", status in FAILURES, out, err, merged,
        )  # fmt: skip


def _parse(lines: list[tuple[int, str]], to_row: _Rows, bad: list[str], shown: int) -> list[Row]:
    """Rows of the valid lines; a message for each bad line in ``bad`` (worded for the
    first few of the whole input, ``shown`` of which were worded before, else "")."""
    try:  # the whole batch at once: one call into the C parser
        dicts = json.loads("[" + ",".join(text for _, text in lines) + "]")
    except ValueError:
        dicts = None
    rows: list[Row] = []
    for i, (lineno, text) in enumerate(lines):
        try:
            d = dicts[i] if dicts is not None else json.loads(text)
            rows.append(to_row(d))
        except (ValueError, ValidationError) as e:
            bad.append(f"line {lineno}: {e}" if shown + len(bad) < 5 else "")
    return rows


def _batches(src: Iterable[str]) -> Iterable[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    size = FIRST_BATCH  # a small first batch: the writer starts while the rest is parsed
    for lineno, line in enumerate(src, 1):
        if line.strip():
            batch.append((lineno, line))
            if len(batch) >= size:
                yield batch
                batch, size = [], BATCH
    if batch:
        yield batch


Batch = tuple[list[Row], list[str], dict[str, set[int]]]


def _parsed(src: Iterable[str]) -> Iterator[Batch]:
    """(rows, messages of the bad lines, the days the rows start on by job) per batch."""
    to_row = _Rows()
    shown = 0
    for lines in _batches(src):
        bad: list[str] = []
        rows = _parse(lines, to_row, bad, shown)
        days: dict[str, set[int]] = {}
        for r in rows:  # what the store's day rollup must recompute, worked out here
            days.setdefault(r[1], set()).add(int(r[4] / 86400))
        yield rows, bad, days
        shown += len(bad)


def _parse_in_child(src: Iterable[str]) -> Iterator[Batch]:
    """``_parsed``, run in a forked child that sends the batches through a pipe. The child
    touches nothing of the parent's but the input and the pipe, and leaves with _exit."""
    # What the child may import lazily (compressing output, Run.from_dict's checks) is
    # imported at the top, before the fork: a child must not take the import lock of a
    # process that had other threads.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child's coverage is its output)
        code = 0
        try:
            os.close(r)
            out = open(w, "wb", buffering=1 << 20)  # noqa: SIM115 (closed by _exit)
            try:
                for batch in _parsed(src):
                    pickle.dump(("rows", *batch), out, protocol=pickle.HIGHEST_PROTOCOL)
            except BrokenPipeError:
                code = 1  # the parent stopped reading (an error on its side)
            except BaseException as e:  # noqa: BLE001 (reported by the parent)
                code = 1
                pickle.dump(("error", f"{type(e).__name__}: {e}", [], {}), out)
            out.flush()
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    # A thread drains the pipe while this one writes to the database, so the child is
    # never held up by a full pipe; at most a few batches wait in memory.
    ready: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=3)
    stop = threading.Event()

    def drain() -> None:
        with open(r, "rb", buffering=1 << 20) as inp:
            while not stop.is_set():
                try:
                    ready.put(pickle.load(inp))
                except (EOFError, pickle.UnpicklingError, OSError):
                    break
        ready.put(None)

    reader = threading.Thread(target=drain, name="cronwatch-import-reader", daemon=True)
    reader.start()
    done = False
    try:
        while (item := ready.get()) is not None:
            kind, payload, bad, days = item
            if kind == "error":
                raise CronwatchError(f"import: cannot read the input: {payload}")
            yield payload, bad, days
        done = True
    finally:
        if not done:
            stop.set()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            while ready.get() is not None:  # unblock the reader; it ends at EOF
                pass
        reader.join()
        _, status = os.waitpid(pid, 0)
    if status != 0:
        raise CronwatchError("import: the reader process failed")


def import_lines(store: Any, src: Iterable[str], *, now: float) -> tuple[int, int, list[str]]:
    """Import JSON Lines; returns (inserted, already present, error messages of bad lines)."""
    batches = _parse_in_child(src) if hasattr(os, "fork") else _parsed(src)
    inserted = skipped = 0
    bad: list[str] = []
    for rows, bad_part, days in batches:
        bad += bad_part
        if rows:
            n = store.import_rows(rows, now=now, days=days)
            inserted, skipped = inserted + n, skipped + len(rows) - n
    return inserted, skipped, bad
