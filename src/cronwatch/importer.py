"""`cronwatch import`: JSON Lines of runs (as `export` writes them) into the store, fast.

Lines are read and parsed in batches by the calling thread while a second thread writes
the previous batch: sqlite3 releases the GIL while SQLite works, so parsing and writing
overlap on two cores. A line of the usual shape (what `export` writes) is turned straight
into a row; anything else (ISO times, numbers in strings, a missing id, ...) goes through
``Run.from_dict``, which accepts exactly the same values and words the errors. Each batch
is one write transaction (``Store.import_rows``), so wrappers writing to the same database
wait for at most one batch.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterable
from typing import Any

from ._utils import compress
from .errors import ValidationError
from .models import STATUSES, Run, validate_name

BATCH = 20_000  # lines per parse and per write transaction

_RUN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_TIME = 253402300800  # what Run.from_dict accepts: [0, year 10000)
_TEXT = ("host", "user", "command", "env", "message")
_FAILED = frozenset(("failed", "timeout", "missed"))

# A row for Store.import_rows: (id, job, env, status, started_at, ended_at, duration,
# exit_code, signal, host, user, command, message, source, failed, stdout, stderr), where
# stdout/stderr are already compressed (None: not captured).
Row = tuple[Any, ...]


def _slow_row(d: Any) -> Row:
    r = Run.from_dict(d)
    return (
        r.id, r.job, r.env, r.status.value, r.started_at, r.ended_at, r.duration, r.exit_code,
        r.signal, r.host, r.user, r.command, r.message, r.source, r.status.is_failure,
        compress(r.stdout), compress(r.stderr),
    )  # fmt: skip


class _Rows:
    """dict -> row. The fast path takes only values Run.from_dict would take unchanged."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __call__(self, d: Any) -> Row:
        if type(d) is not dict:
            return _slow_row(d)
        get = d.get
        job = get("job")
        started = get("started_at")
        status = get("status", "success")
        rid = get("id")
        ended = get("ended_at")
        duration = get("duration")
        exit_code = get("exit_code")
        signal = get("signal")
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
        ):
            if type(job) is str and job not in self.names:
                try:
                    self.names.add(validate_name(job))
                except ValidationError:
                    pass
                else:
                    return self(d)
            return _slow_row(d)
        text = []
        for key in _TEXT:
            v = get(key)
            if v is None:
                v = ""
            elif type(v) is not str:
                return _slow_row(d)
            text.append(v)
        source = get("source")
        if source is None or source == "":
            source = "import"
        elif type(source) is not str:
            return _slow_row(d)
        out = get("stdout")
        err = get("stderr")
        if out is not None or err is not None:
            if (out is not None and type(out) is not str) or (
                err is not None and type(err) is not str
            ):
                return _slow_row(d)
            try:
                out = None if out is None else compress(out.encode("utf-8", "surrogateescape"))
                err = None if err is None else compress(err.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                return _slow_row(d)
        host, user, command, env, message = text
        return (
            rid, job, env, status, started, ended, duration, exit_code, signal, host, user,
            command, message, source, status in _FAILED, out, err,
        )  # fmt: skip


def _parse(lines: list[tuple[int, str]], to_row: _Rows, bad: list[str]) -> list[Row]:
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
            bad.append(f"line {lineno}: {e}" if len(bad) < 5 else "")  # the first few are shown
    return rows


def _batches(src: Iterable[str]) -> Iterable[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for lineno, line in enumerate(src, 1):
        if line.strip():
            batch.append((lineno, line))
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def import_lines(store: Any, src: Iterable[str], *, now: float) -> tuple[int, int, list[str]]:
    """Import JSON Lines; returns (inserted, already present, error messages of bad lines)."""
    bad: list[str] = []
    to_row = _Rows()
    todo: queue.Queue[list[Row] | None] = queue.Queue(maxsize=2)
    counts = [0, 0]
    failure: list[BaseException] = []

    def write() -> None:
        while (rows := todo.get()) is not None:
            if failure:
                continue  # drain: the reader must never block on a dead writer
            try:
                inserted = store.import_rows(rows, now=now)
            except BaseException as e:  # noqa: BLE001 (re-raised in the calling thread)
                failure.append(e)
                continue
            counts[0] += inserted
            counts[1] += len(rows) - inserted

    writer = threading.Thread(target=write, name="cronwatch-import", daemon=True)
    writer.start()
    try:
        for lines in _batches(src):
            if failure:
                break
            rows = _parse(lines, to_row, bad)
            if rows:
                todo.put(rows)
    finally:
        todo.put(None)
        writer.join()
    if failure:
        raise failure[0]
    return counts[0], counts[1], bad
