"""CLI for remote reporting: ``ping`` (for shell scripts) and ``flush`` (the outbox)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cronwatch.cli.commands import name_arg
from cronwatch.core.errors import CronwatchError, ValidationError
from cronwatch.core.model import new_run_id, validate_run_id
from cronwatch.core.values import cap_bytes, format_time

# cronwatch.remote (the outbox, base64, struct) is imported inside the commands that
# use it: every `cronwatch --help` loads this module to list its commands.


def register(sub: Any, command: Any) -> None:
    p = command(sub, "ping", cmd_ping,
                "send one ping to a server, for scripts that do not use the wrapper",
                'rid=$(cronwatch ping "$KEY" run --print-run-id --server https://cron.example.com)\n'
                'cronwatch ping "$KEY" complete --run-id "$rid" --output log.txt\n'
                "cronwatch ping PROJECT_KEY fail --job backup --exit-code 3 --message 'disk full'")  # fmt: skip
    p.add_argument("key", metavar="KEY", help="the job's ping key (or the project key with --job)")
    p.add_argument(
        "state", choices=["run", "complete", "fail"], help="run (start), complete or fail"
    )
    p.add_argument("--server", metavar="URL", help="server URL (default $CRONWATCH_URL or [server] url in the config); a URL ending in /jobs/p speaks simob")  # fmt: skip
    p.add_argument("--job", type=name_arg, metavar="NAME", help="KEY is the project key; NAME picks the job (created on first use)")  # fmt: skip
    p.add_argument("--message", metavar="TEXT", help="a short message stored with the run")
    p.add_argument("--exit-code", type=int, metavar="N", help="the job's exit code (0-255)")
    p.add_argument("--run-id", metavar="ID", help="pair a finish with its start (and make a replay count once)")  # fmt: skip
    p.add_argument("--print-run-id", action="store_true", help="with run: make a run id (unless --run-id) and print it")  # fmt: skip
    p.add_argument("--output", metavar="FILE|-", help="send this file (or stdin) as the run's output")  # fmt: skip
    p.add_argument("--env", metavar="ENV", help="environment label (e.g. staging)")
    p.add_argument("--dialect", choices=["healthchecks", "simob"], help="URL style (default: simob if the URL ends in /jobs/p, else healthchecks)")  # fmt: skip
    p.add_argument("--timeout", metavar="SECONDS", help="wait at most this long for the server (default 3, $CRONWATCH_TIMEOUT)")  # fmt: skip
    p.add_argument("--config", metavar="PATH", help="config file with a [server] table")

    p = command(sub, "flush", cmd_flush,
                "deliver the pings waiting in the outbox (the server was away), in order",
                "cronwatch flush\n*/10 * * * * cronwatch flush --quiet   (in crontab)")  # fmt: skip
    p.add_argument("--timeout", metavar="SECONDS", help="per request (default 3, $CRONWATCH_TIMEOUT)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="show the waiting pings, send nothing")
    p.add_argument("--quiet", action="store_true", help="print nothing when nothing is wrong")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_ping(args: argparse.Namespace) -> int:
    from cronwatch.remote import outbox
    from cronwatch.remote.ping import Ping, endpoint
    from cronwatch.remote.transport import Settings

    s = Settings.resolve(server=args.server, key=args.key, timeout=args.timeout,
                         dialect=args.dialect, config=args.config)  # fmt: skip
    if not s.server:
        raise ValidationError("no server: give --server URL or set CRONWATCH_URL")
    try:
        endpoint(s.server, s.dialect)  # a usage error here, not something to keep in the outbox
    except ValueError as e:
        raise ValidationError(str(e)) from None
    if args.exit_code is not None and not 0 <= args.exit_code <= 255:
        raise ValidationError(f"invalid exit code {args.exit_code}: expected 0-255")
    if args.state == "run" and (args.exit_code is not None or args.output):
        raise ValidationError("--exit-code and --output go with complete or fail, not run")
    if args.print_run_id and args.state != "run":
        raise ValidationError("--print-run-id goes with run")
    rid = validate_run_id(args.run_id) if args.run_id else ""
    if args.print_run_id and not rid:
        rid = new_run_id()
    p = Ping(server=s.server, key=args.key, state=args.state, rid=rid, slug=args.job or "",
             kind="project" if args.job else "job", dialect=s.dialect, exit_code=args.exit_code,
             message=args.message or "", env=args.env or "", body=_read_output(args.output),
             at=time.time())  # fmt: skip
    outcome, detail = outbox.submit(p, timeout=s.timeout)
    if args.print_run_id:
        print(rid)
    if outcome == "rejected":
        raise CronwatchError(f"{s.server} refused the ping ({detail}): check the key and "
                             f"--job; kept aside in {outbox.directory()}")  # fmt: skip
    if outcome != "sent":
        sys.stderr.write(f"cronwatch: warning: could not reach {s.server} ({detail}); the ping "
                         f"waits in {outbox.directory()} for `cronwatch flush`\n")  # fmt: skip
    return 0


def _read_output(path: str | None) -> bytes | None:
    from cronwatch.remote.ping import BODY_LIMIT

    if path is None:
        return None
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        raise CronwatchError(f"cannot read {path}: {e.strerror or e}") from None
    return cap_bytes(data, BODY_LIMIT)


def cmd_flush(args: argparse.Namespace) -> int:
    from cronwatch.remote import outbox
    from cronwatch.remote.transport import Settings

    if args.list:
        return _list(args)
    timeout = Settings.resolve(timeout=args.timeout).timeout
    r = outbox.flush(timeout=timeout, deadline=None)
    if args.json:
        print(json.dumps({"delivered": r.delivered, "refused": r.refused, "pending": r.pending,
                          "busy": r.busy, "errors": r.errors}, indent=2))  # fmt: skip
    elif r.pending or r.refused or not args.quiet:
        refused = f", refused {r.refused}" if r.refused else ""
        print(f"delivered {r.delivered}, still waiting {r.pending}{refused}")
    for origin, why in sorted(r.errors.items()):
        sys.stderr.write(f"cronwatch: {origin}: {why}\n")
    if r.refused:
        sys.stderr.write(f"cronwatch: warning: {r.refused} pings refused for good (unknown key?), "
                         f"kept aside as *.failed in {outbox.directory()}\n")  # fmt: skip
    if r.busy:
        sys.stderr.write("cronwatch: another flush is running\n")
    return 1 if r.pending else 0


def _list(args: argparse.Namespace) -> int:
    from cronwatch.remote import outbox

    items: list[dict[str, Any]] = []
    for path in outbox.entries():
        p = outbox.load(path)
        if p is not None:
            items.append({"file": path, "server": p.server, "job": p.slug, "state": p.state,
                          "run_id": p.rid, "at": p.at})  # fmt: skip
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        for it in items:
            print(f"{format_time(it['at'])}  {it['state']:<8} {it['job'] or '-':<20} "
                  f"{it['run_id'] or '-':<26}  {it['server']}")  # fmt: skip
        if not items and not args.quiet:
            print("the outbox is empty")
    return 0
