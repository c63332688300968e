"""The argparse CLI: every command but the wrapper's fast path.

Each command has help text with an example (a test fails when one is missing). Command
groups that grow with later features register themselves from their own modules listed
in ``EXTENSIONS``; each exposes ``register(subparsers, common)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from cronwatch import __version__
from cronwatch.app.evaluate import describe
from cronwatch.cli.report import STATUS_WORD, ago, run_detail, runs_table, stats_block, table
from cronwatch.core.errors import CronwatchError, NotFound, StoreError
from cronwatch.core.model import (
    DEFAULT_ENV,
    FAILURES,
    Run,
    env_key,
    env_label,
    parse_status,
    validate_env,
    validate_name,
)
from cronwatch.core.text import percent
from cronwatch.core.values import DURATION_HELP, format_duration, format_time, iso, parse_duration
from cronwatch.store import open_store
from cronwatch.system import default_db_path

EXTENSIONS = (
    "cronwatch.cli.jobs",
    "cronwatch.cli.server",
    "cronwatch.cli.remote",
    "cronwatch.cli.users",
    "cronwatch.cli.migrate",
)
# Which extension defines which command: a query like `cronwatch stats` then imports and
# builds only what it needs (every command's parser and module would add to every command's start-up).
EXTENSION_COMMANDS = {
    "cronwatch.cli.jobs": frozenset({"job", "apply", "check", "incidents", "notify"}),
    "cronwatch.cli.server": frozenset({"serve", "token", "ping-key"}),
    "cronwatch.cli.remote": frozenset({"ping", "flush"}),
    "cronwatch.cli.users": frozenset({"user"}),
    "cronwatch.cli.migrate": frozenset({"migrate-db"}),
}
CORE_COMMANDS = frozenset(
    {
        "run",
        "history",
        "stats",
        "last-failure",
        "show",
        "runs",
        "jobs",
        "export",
        "import",
        "dashboard",
    }
)

DESCRIPTION = """\
cronwatch makes scheduled and one-off jobs observable. Wrap a command and every run
(exit code, duration, stdout/stderr) is kept in a local SQLite database; ask whether a
job is healthy in one command.

examples:
  cronwatch run backup -- /usr/local/bin/backup.sh --full
  job-watch --name backup /usr/local/bin/backup.sh        (the same, brief's form)
  cronwatch history backup
  cronwatch stats backup --since 7d
  cronwatch --since 24h
"""


class Formatter(argparse.RawDescriptionHelpFormatter):
    pass


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        sys.stderr.write(f"cronwatch: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except CronwatchError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def name_arg(text: str) -> str:
    try:
        return validate_name(text)
    except CronwatchError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def env_arg(text: str) -> str:
    """An environment to query, as stored: "production" (or "") is the default one."""
    if text == "":
        return ""
    try:
        return env_key(validate_env(text))
    except CronwatchError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


ENV_HELP = f"only this environment's runs ('{DEFAULT_ENV}': runs that name none)"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_common(p: argparse.ArgumentParser, *, json_flag: bool = True, top: bool = False) -> None:
    """--db and --json, accepted before the command (top=True) and after it.

    A subcommand's own default would overwrite what was given before the command name
    (`cronwatch --db x.db import f`), so below the top level the defaults are SUPPRESS.
    """
    keep: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--db", metavar="PATH|URL", help="database file or postgresql:// URL "
                   "(default: $CRONWATCH_DB or $XDG_DATA_HOME/cronwatch/history.db)", **keep)  # fmt: skip
    if json_flag:
        p.add_argument("--json", action="store_true",
                       help="machine-readable output (docs/json.md)", **keep)  # fmt: skip


def command(
    sub: argparse._SubParsersAction[ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str,
    example: str,
    **kw: Any,
) -> ArgumentParser:
    """Add a subcommand whose --help ends with an example."""
    p = sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog="example:\n  " + example.strip().replace("\n", "\n  "),
        formatter_class=Formatter,
        **kw,
    )
    p.set_defaults(func=func, example=example)
    return p


def build_parser(command_name: str | None = None) -> ArgumentParser:
    """The whole CLI, or (``command_name``) just enough of it to run that one command."""
    parser = ArgumentParser(
        prog="cronwatch",
        description=DESCRIPTION,
        formatter_class=Formatter,
        epilog="Run 'cronwatch COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"cronwatch {__version__}")
    parser.add_argument("--since", type=duration_arg, metavar="DUR",
                        help=f"with no command: all runs of all jobs in the window ({DURATION_HELP})")  # fmt: skip
    parser.add_argument("--name", metavar="NAME", help="wrap a command: --name NAME CMD [ARGS...]")
    add_common(parser, top=True)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = command(sub, "run", cmd_run_help, "run a command and record the run",
                "cronwatch run backup --timeout 2h -- /usr/local/bin/backup.sh --full\n"
                "job-watch --name backup --timeout 2h /usr/local/bin/backup.sh --full")  # fmt: skip
    p.description = (
        "Run a command and record the run. The command runs whatever else is wrong: an "
        "unknown option or a bad value before it is ignored and a name outside the rule is "
        "made to fit it, each with a warning line. -h and --help after the command are the "
        "command's own."
    )
    p.add_argument("name", metavar="NAME", help="job name (a-z, 0-9, '-', '_', '.'; max 64); "
                   "with a server (CRONWATCH_URL) a job's ping key works too, as in "
                   "'simob run Vp4s8S0SsnMo -- CMD'")  # fmt: skip
    p.add_argument("--db", metavar="PATH", help="database file")
    p.add_argument("--timeout", metavar="DUR", help="kill the command (TERM, then KILL) after DUR; the run is recorded as timeout")  # fmt: skip
    p.add_argument("--kill-grace", metavar="DUR", help="time between TERM and KILL on timeout (default 5s)")  # fmt: skip
    p.add_argument("--no-capture", action="store_true", help="record everything but the output")
    p.add_argument("--max-output", metavar="SIZE", help="bytes kept per stream, head and tail (default 1M)")  # fmt: skip
    p.add_argument("--dashboard", metavar="PATH", help="where to regenerate the HTML dashboard (default: beside the database)")  # fmt: skip
    p.add_argument("--no-dashboard", action="store_true", help="do not regenerate the dashboard")
    p.add_argument("--env", metavar="ENV", help="environment label for the run (e.g. staging)")
    p.add_argument("--config", metavar="PATH", help="config file (default $XDG_CONFIG_HOME/cronwatch/config.toml)")  # fmt: skip
    p.add_argument("--server", metavar="URL", help="also report to this cronwatch (or simob-style) server; or $CRONWATCH_URL")  # fmt: skip
    p.add_argument("--key", metavar="KEY", help="the job's ping key, or the project ping key (NAME picks the job); or $CRONWATCH_KEY")  # fmt: skip
    p.add_argument("--capture-output", action="store_true", help="send the captured output with the finishing ping")  # fmt: skip
    p.add_argument("--no-local", action="store_true", help="report to the server only, keep no local record")  # fmt: skip
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    p = command(sub, "history", cmd_history, "show the last runs of a job, newest first",
                "cronwatch history backup -n 50")  # fmt: skip
    p.add_argument("name", type=name_arg, metavar="NAME")
    p.add_argument(
        "-n", "--limit", type=positive_int, default=20, help="number of runs (default 20)"
    )
    p.add_argument("--env", type=env_arg, metavar="ENV", help=ENV_HELP)
    add_common(p)

    p = command(sub, "stats", cmd_stats,
                "success rate, p50/p95/max duration, last success and failure, current streak",
                "cronwatch stats backup --since 7d")  # fmt: skip
    p.add_argument("name", type=name_arg, metavar="NAME")
    p.add_argument("--since", type=duration_arg, metavar="DUR", help=f"only runs in this window ({DURATION_HELP}); default all history")  # fmt: skip
    p.add_argument("--env", type=env_arg, metavar="ENV", help=ENV_HELP)
    add_common(p)

    p = command(sub, "last-failure", cmd_last_failure,
                "the full stdout and stderr of the most recent failed run",
                "cronwatch last-failure backup")  # fmt: skip
    p.add_argument("name", type=name_arg, metavar="NAME")
    p.add_argument("--env", type=env_arg, metavar="ENV", help=ENV_HELP)
    add_common(p)

    p = command(sub, "show", cmd_show, "one run in full, by run id",
                "cronwatch show 01jd3k9x7q2m4n5p6r7s8t9v0w")  # fmt: skip
    p.add_argument("run_id", metavar="RUN_ID")
    add_common(p)

    p = command(sub, "runs", cmd_runs, "all runs of all jobs in a window, newest first",
                "cronwatch runs --since 24h --status failed")  # fmt: skip
    p.add_argument("--since", type=duration_arg, default=86400.0, metavar="DUR", help="window (default 24h)")  # fmt: skip
    p.add_argument("--job", type=name_arg, metavar="NAME", help="only this job")
    p.add_argument("--status", metavar="STATUS", help="success, failed, timeout, missed or running")  # fmt: skip
    p.add_argument("-n", "--limit", type=positive_int, help="at most this many runs")
    p.add_argument("--env", type=env_arg, metavar="ENV", help=ENV_HELP)
    add_common(p)

    p = command(sub, "jobs", cmd_jobs, "every job with its last run, status, success rate and p95",
                "cronwatch jobs --since 30d")  # fmt: skip
    p.add_argument("--since", type=duration_arg, default=7 * 86400.0, metavar="DUR", help="window for success rate and p95 (default 7d)")  # fmt: skip
    p.add_argument("--env", type=env_arg, metavar="ENV", help="health, runs and rates of this environment only ('production': runs that name none)")  # fmt: skip
    add_common(p)

    p = command(sub, "export", cmd_export, "write runs as JSON Lines (one run per line)",
                "cronwatch export --since 30d --job backup > backup.jsonl")  # fmt: skip
    p.add_argument("--since", type=duration_arg, metavar="DUR", help="only runs in this window")
    p.add_argument("--job", type=name_arg, metavar="NAME", help="only this job")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--no-output", action="store_true", help="leave captured stdout/stderr out")
    add_common(p, json_flag=False)

    p = command(sub, "import", cmd_import, "read runs from JSON Lines (idempotent by run id)",
                "cronwatch import backup.jsonl\nssh host cronwatch export | cronwatch import -")  # fmt: skip
    p.add_argument("file", metavar="FILE|-")
    add_common(p)

    p = command(sub, "dashboard", cmd_dashboard, "write the self-contained HTML dashboard",
                "cronwatch dashboard --out /var/www/html/jobs.html")  # fmt: skip
    p.add_argument("--out", metavar="PATH", help="output file (default: dashboard.html beside the database)")  # fmt: skip
    add_common(p, json_flag=False)

    for modname in EXTENSIONS:
        if command_name is not None and command_name not in EXTENSION_COMMANDS[modname]:
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        mod.register(sub, command)
    return parser


def _command_name(argv: list[str]) -> str | None:
    """The command argv names, when it is a known one and no help was asked for."""
    if any(a in ("-h", "--help") for a in argv):
        return None
    valued = {"--db", "--since", "--name"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in valued:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        known = a in CORE_COMMANDS or any(a in c for c in EXTENSION_COMMANDS.values())
        return a if known else None
    return None


def dispatch(argv: list[str]) -> int:
    name = _command_name(argv)
    # a core command needs no extension; an extension's command only its own; else all
    parser = build_parser(None if name is None else ("" if name in CORE_COMMANDS else name))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        if args.since is not None:  # `cronwatch --since 24h`
            args.job = args.status = args.limit = None
            func = cmd_runs
        else:
            parser.print_help()
            return 0
    try:
        return int(func(args) or 0)
    except CronwatchError as e:
        sys.stderr.write(f"cronwatch: {e}\n")
        return e.exit_code
    except Exception as e:
        # A damaged or unreadable database ("database disk image is malformed") is the
        # user's problem to fix, not our bug: one line, no traceback.
        if not type(e).__module__.startswith(("sqlite3", "psycopg")):
            raise
        sys.stderr.write(f"cronwatch: database error: {e}\n")
        return 1


# --- helpers --------------------------------------------------------------------------


def open_db(args: argparse.Namespace, *, create: bool = False) -> Any:
    return open_store(getattr(args, "db", None), create=create)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def run_json(run: Run, *, output: bool = False) -> dict[str, Any]:
    d = run.to_dict(output=output)
    d["started"] = iso(run.started_at)
    d["ended"] = iso(run.ended_at)
    return d


# --- commands ---------------------------------------------------------------------------


def cmd_run_help(args: argparse.Namespace) -> int:  # reached only via `run --help`
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with open_db(args) as store:
        store.get_job(args.name)
        runs = store.list_runs(job=args.name, limit=args.limit, output=not args.json,
                               env=args.env)  # fmt: skip
    if args.json:
        emit_json([run_json(r) for r in runs])
    elif runs:
        print(runs_table(runs))
    else:
        print(f"{args.name}: no runs yet")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    now = time.time()
    since = None if args.since is None else now - args.since
    with open_db(args) as store:
        store.get_job(args.name)
        s = store.job_stats(args.name, since=since, env=args.env)
        _enrich_stats(store, args.name, s, now, args.env)
        if args.env is not None:
            s["env"] = env_label(args.env)
    if args.json:
        emit_json(s)
    else:
        print(stats_block(s, now))
    return 0


def _enrich_stats(
    store: Any, name: str, s: dict[str, Any], now: float, env: str | None = None
) -> None:
    """Add the health and slow-down findings (the same as `job show` and the dashboard)."""
    s.update(describe(store, name, now=now, env=env))


def cmd_last_failure(args: argparse.Namespace) -> int:
    with open_db(args) as store:
        store.get_job(args.name)
        last = store.last_run(args.name, statuses=sorted(FAILURES), env=args.env)
        if last is None:
            if args.json:
                emit_json(None)
            else:
                print(f"{args.name}: no failed runs")
            return 0
        run = store.get_run(last.id, output=True)
    _print_run(args, run)
    return 0


def _print_run(args: argparse.Namespace, run: Run) -> None:
    if args.json:
        emit_json(run_json(run, output=True))
    else:
        print(run_detail(run))


def cmd_show(args: argparse.Namespace) -> int:
    with open_db(args) as store:
        run = store.get_run(args.run_id, output=True)
    _print_run(args, run)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    status = parse_status(args.status) if args.status else None
    since = time.time() - args.since
    with open_db(args) as store:
        if args.job:
            store.get_job(args.job)
        runs = store.list_runs(
            job=args.job,
            since=since,
            status=status,
            limit=args.limit,
            output=not args.json,
            env=getattr(args, "env", None),  # `cronwatch --since 24h`: the top-level form
        )
    if args.json:
        emit_json([run_json(r) for r in runs])
    elif runs:
        print(runs_table(runs, with_job=True))
    else:
        print(f"no runs since {format_time(since)} UTC")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    now = time.time()
    since = now - args.since
    items = []
    with open_db(args) as store:
        for job in store.list_jobs():
            s = store.job_stats(job.name, since=since, env=args.env)
            _enrich_stats(store, job.name, s, now, args.env)
            last = store.last_run(job.name, env=args.env)
            items.append(
                {
                    "name": job.name,
                    "health": s.get("health"),
                    "last_run": None if last is None else run_json(last),
                    "runs": s["runs"],
                    "success_rate": s["success_rate"],
                    "duration_p50": s["duration_p50"],
                    "duration_p95": s["duration_p95"],
                    "paused": job.paused,
                }
            )
    if args.json:
        emit_json(items)
        return 0
    if not items:
        print("no jobs yet: wrap a command with  cronwatch run NAME -- CMD")
        return 0
    rows = []
    for it in items:
        last = it["last_run"]
        rows.append(
            [
                it["name"],
                it["health"] or "-",
                "-" if last is None else STATUS_WORD.get(last["status"], last["status"]),
                "-" if last is None else ago(last["started_at"], now),
                str(it["runs"]),
                percent(it["success_rate"]),
                format_duration(it["duration_p95"]),
            ]
        )
    headers = ["JOB", "HEALTH", "LAST", "LAST RUN (UTC)", "RUNS", "SUCCESS", "P95"]
    if all(it["health"] is None for it in items):
        headers.pop(1)
        rows = [r[:1] + r[2:] for r in rows]
    print(table(headers, rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    since = None if args.since is None else time.time() - args.since
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115 (closed below)
    except OSError as e:
        raise CronwatchError(f"cannot write {args.output}: {e.strerror or e}") from None
    count = 0
    try:
        with open_db(args) as store:
            if args.job:
                store.get_job(args.job)
            dumps = json.JSONEncoder(ensure_ascii=True).encode
            for run in store.iter_runs(job=args.job, since=since, output=not args.no_output):
                out.write(dumps(run.to_dict(output=not args.no_output, exact=True)) + "\n")
                count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        sys.stderr.write(f"exported {count} runs to {args.output}\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    # its forked parser brings threading, pickle and queue, which no other command needs
    from cronwatch.app.importer import import_lines

    src = sys.stdin if args.file == "-" else _open_text(args.file)
    with open_db(args, create=True) as store:
        inserted, skipped, bad = import_lines(store, src, now=time.time())
    result = {"imported": inserted, "skipped": skipped, "invalid": len(bad)}
    if args.json:
        emit_json(result)
    else:
        print(f"imported {inserted} runs, skipped {skipped} already present"
              + (f", {len(bad)} invalid lines" if bad else ""))  # fmt: skip
    for msg in bad[:5]:
        sys.stderr.write(f"cronwatch: {msg}\n")
    if len(bad) > 5:
        sys.stderr.write(f"cronwatch: ... and {len(bad) - 5} more invalid lines\n")
    return 1 if bad else 0


def _open_text(path: str) -> Any:
    try:
        return open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise NotFound(f"cannot read {path}: {e.strerror}") from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    # the renderer and the wrapper's page rule: only this command writes the page
    from cronwatch.app.dashboard import write_dashboard
    from cronwatch.wrapper.record import dashboard_path

    path = args.out or dashboard_path(None, args.db or default_db_path())
    if path is None:
        raise StoreError("the dashboard is turned off by CRONWATCH_DASHBOARD; give --out PATH")
    with open_db(args) as store:
        write_dashboard(store, path, now=time.time(), fresh=True)
    print(path)
    return 0
