"""CLI command ``migrate-db``: copy a SQLite history into PostgreSQL."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cronwatch.core.errors import ValidationError
from cronwatch.system import default_db_path


def register(sub: Any, command: Any) -> None:
    p = command(sub, "migrate-db", cmd_migrate_db,
                "copy a SQLite history (jobs, runs with output, incidents, tokens, alert "
                "state, events) into PostgreSQL; resumable, verified by counts",
                "cronwatch migrate-db --to postgresql://cronwatch@db.example:5432/cronwatch")  # fmt: skip
    p.add_argument("--to", required=True, metavar="URL",
                   help="the PostgreSQL database (postgresql://user@host:port/dbname), "
                        "empty or holding an interrupted copy of the same file")  # fmt: skip
    # SUPPRESS: a default here would overwrite `cronwatch --db FILE migrate-db`'s
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help="the SQLite file (default: $CRONWATCH_DB or "
                        "$XDG_DATA_HOME/cronwatch/history.db)")  # fmt: skip
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="the counts as JSON"
    )


def cmd_migrate_db(args: argparse.Namespace) -> int:
    from cronwatch.store import is_server_url, open_store

    source = getattr(args, "db", None) or default_db_path()
    if source.startswith("sqlite://"):
        source = source[len("sqlite://") :]
    if is_server_url(source) or "://" in source:
        raise ValidationError(f"--db must be a SQLite file to copy from, not {source!r}")
    if not is_server_url(args.to):
        raise ValidationError(f"--to must be a postgresql:// URL, not {args.to!r}")
    bar = _Bar() if sys.stderr.isatty() and not args.json else None
    t0 = time.monotonic()
    with open_store(args.to) as target:
        # after open_store, which says in one line that the driver is missing
        from cronwatch.store.postgres.transfer import migrate

        counts = migrate(source, target, progress=bar)  # type: ignore[arg-type]
    if bar is not None:
        bar.done()
    elapsed = time.monotonic() - t0
    if args.json:
        import json

        out = {t: {"sqlite": a, "postgresql": b} for t, (a, b) in counts.items()}
        sys.stdout.write(json.dumps({"tables": out, "seconds": round(elapsed, 3)}) + "\n")
    else:
        runs = counts["runs"][1]
        print(f"copied and verified: {runs} runs, {counts['jobs'][1]} jobs, "
              f"{counts['incidents'][1]} incidents, {counts['tokens'][1]} tokens, "
              f"{counts['events'][1]} events in {elapsed:.1f}s")  # fmt: skip
    return 0


class _Bar:
    """One line on stderr, redrawn: table, a bar, rows done of total."""

    WIDTH = 30

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        frac = done / total if total else 1.0
        fill = int(frac * self.WIDTH)
        sys.stderr.write(
            f"\r{table:<14} [{'#' * fill}{'.' * (self.WIDTH - fill)}] {done:>10,}/{total:,}"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.flush()
