"""CLI for schedules and alerts: job set/show/rm, apply, check, incidents, notify test."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cronwatch.app.evaluate import check_all, deliver_outbox, describe
from cronwatch.cli.commands import add_common, emit_json, name_arg, open_db
from cronwatch.core.model import Job
from cronwatch.core.settings import (
    LIST_KINDS,
    NUMBER_KINDS,
    SETTINGS,
    Kind,
    Setting,
    apply_settings,
    normalize,
)
from cronwatch.core.values import format_duration, format_time, parse_timestamp


def register(sub: Any, command: Any) -> None:
    p = command(sub, "job", cmd_job_help, "configure a job: schedule, grace, alerts, assertions",
                "cronwatch job set backup --schedule '30 2 * * *' --tz Europe/Berlin --grace 15m \\\n"
                "    --notify https://hooks.example.com/cron --assert 'output contains done'\n"
                "cronwatch job show backup")  # fmt: skip
    jsub = p.add_subparsers(title="job commands", metavar="ACTION")

    s = command(jsub, "set", cmd_job_set, "create or change a job's settings (before its first run too)",
                "cronwatch job set backup --schedule '@daily' --grace 1h --max-runtime 2h")  # fmt: skip
    s.add_argument("name", type=name_arg, metavar="NAME")
    add_setting_flags(s)
    add_common(s)

    s = command(jsub, "show", cmd_job_show, "a job's settings, ping key, health and next expected run",
                "cronwatch job show backup --json")  # fmt: skip
    s.add_argument("name", type=name_arg, metavar="NAME")
    add_common(s)

    s = command(jsub, "rm", cmd_job_rm, "delete a job with its runs and incidents",
                "cronwatch job rm old-backup")  # fmt: skip
    s.add_argument("name", type=name_arg, metavar="NAME")
    add_common(s, json_flag=False)

    p = command(sub, "apply", cmd_apply, "make the database match the config file (monitors as code)",
                "cronwatch apply --config /etc/cronwatch.toml --dry-run")  # fmt: skip
    p.add_argument("--config", metavar="PATH", help="TOML file (default $XDG_CONFIG_HOME/cronwatch/config.toml)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    add_common(p)

    p = command(sub, "check", cmd_check, "evaluate every job now: record missed and timed-out runs, send due alerts",
                "* * * * * cronwatch check          (in crontab, when no server runs)\n"
                "cronwatch check --at 2026-03-29T02:30:00Z")  # fmt: skip
    p.add_argument("--at", metavar="TIME", help="evaluate as of this instant (ISO 8601, UTC if no offset)")  # fmt: skip
    add_common(p)

    p = command(sub, "incidents", cmd_incidents, "incidents with every notification sent and its result",
                "cronwatch incidents backup --json")  # fmt: skip
    p.add_argument("name", nargs="?", type=name_arg, metavar="NAME")
    p.add_argument("-n", "--limit", type=int, default=20, help="at most this many (default 20)")
    add_common(p)

    p = command(sub, "notify", cmd_notify_help, "notification channels",
                "cronwatch notify test tgram://123456:ABC/987654")  # fmt: skip
    nsub = p.add_subparsers(title="notify commands", metavar="ACTION")
    s = command(nsub, "test", cmd_notify_test, "send a test message to a channel",
                "cronwatch notify test https://hooks.example.com/cron")  # fmt: skip
    s.add_argument("channel", metavar="CHANNEL")


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One option per job setting, made from the schema (core/settings.py)."""
    for st in SETTINGS:
        if st.kind is Kind.BOOL and st.off_flag:
            g = p.add_mutually_exclusive_group()
            g.add_argument(st.flag, dest=st.name, action="store_const", const=True, help=st.help)
            g.add_argument(st.off_flag, dest=st.name, action="store_const", const=False,
                           help=f"undo {st.flag}")  # fmt: skip
        elif st.kind in LIST_KINDS:
            g = p.add_mutually_exclusive_group()
            g.add_argument(st.flag, dest=st.name, metavar=st.metavar, action="append",
                           help=st.help)  # fmt: skip
            g.add_argument(st.no_flag, dest=st.name, action="store_const", const=[],
                           help=f"empty the list of {st.flag}")  # fmt: skip
        else:
            p.add_argument(st.flag, dest=st.name, metavar=st.metavar, help=_flag_help(st))


def _flag_help(st: Setting) -> str:
    if st.kind in NUMBER_KINDS:
        return f"{st.help}: {st.accepted()}"
    return st.help


def _help(args: argparse.Namespace) -> int:
    sys.stderr.write(
        f"cronwatch: give an action (see cronwatch {args.example.split()[1]} --help)\n"
    )
    return 2


cmd_job_help = cmd_notify_help = _help


def _store(args: argparse.Namespace, create: bool = True) -> Any:
    return open_db(args, create=create)  # commands that configure jobs may create the database


def cmd_job_set(args: argparse.Namespace) -> int:
    raw = {st.name: getattr(args, st.name) for st in SETTINGS if st.stored}
    raw = {k: v for k, v in raw.items() if v is not None}
    # Checked before the database is opened: a bad key must not leave a new job behind.
    key = None if args.ping_key is None else normalize("ping_key", args.ping_key)
    now = time.time()
    with _store(args) as store:
        job = store.find_job(args.name) or Job(name=args.name, created_at=now)
        apply_settings(job, raw)
        with store.transaction():
            job = store.save_job(job, now=now)
            if key is not None:
                store.set_ping_key(job.name, key)
                job.ping_key = key
        _print_job(store, job, args, now)
    return 0


def _print_job(store: Any, job: Any, args: argparse.Namespace, now: float) -> None:
    info = job.to_dict()
    ensure = getattr(store, "ensure_ping_key", None)
    if ensure is not None and not info.get("ping_key"):
        info["ping_key"] = ensure(job.name, now=now)
    info.update(describe(store, job.name, now=now))
    if getattr(args, "json", False):
        emit_json(info)
        return
    lines = [
        ("job", job.name),
        ("health", f"{info['health']}" + (f" ({info['health_reason']})" if info.get("health_reason") else "")),
        ("schedule", (job.schedule or "-") + (f"  (tz {job.tz})" if job.schedule else "")),
        ("next expected", format_time(info["next_expected"]) + " UTC" if info.get("next_expected") else "-"),
        ("grace", format_duration(job.grace)),
        ("max runtime", format_duration(job.max_runtime) if job.max_runtime else "-"),
        ("alerts", f"after {job.alert_after} failure{'s' if job.alert_after != 1 else ''}, "
                   f"recover after {job.recover_after} success{'es' if job.recover_after != 1 else ''}"
                   + (f", remind every {format_duration(job.realert)}" if job.realert else "")),
        ("notify", ", ".join(_redact(c) for c in job.notify) or "-"),
        ("assertions", "; ".join(job.asserts) or "-"),
        ("tags", ", ".join(job.tags) or "-"),
        ("paused", "yes" if job.paused else "no"),
        ("disabled", "yes (records nothing, alerts nothing)" if job.disabled else "no"),
        ("title", job.title or "-"),
        ("environments", ", ".join(job.environments) or "-"),
        ("muted envs", ", ".join(job.mute_envs) or "-"),
        ("ping key", info.get("ping_key") or "-"),
        ("retention", f"{job.keep_days:g} days of runs, output of the last {job.keep_output} runs"
                      f" and {job.keep_failed_output} failed runs"),
    ]  # fmt: skip
    if info.get("slowdown"):
        lines.append(("slowdown", info["slowdown"]))
    print("\n".join(f"{k:<14} {v}" for k, v in lines))


def _redact(url: str) -> str:
    from cronwatch.notify import redact  # not at the top: --help loads this module

    return redact(url)


def cmd_job_show(args: argparse.Namespace) -> int:
    with _store(args, create=False) as store:
        job = store.get_job(args.name)
        _print_job(store, job, args, time.time())
    return 0


def cmd_job_rm(args: argparse.Namespace) -> int:
    with _store(args, create=False) as store:
        store.delete_job(args.name)
    print(f"deleted job {args.name} and its history")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from cronwatch.app.configfile import load  # tomllib and the file's rules: apply only

    wanted = load(args.config)
    now = time.time()
    changes: list[dict[str, Any]] = []
    with _store(args) as store:
        for name, settings in sorted(wanted.items()):
            current = store.find_job(name)
            job = current or Job(name=name, created_at=now)
            before = {**job.settings(), "ping_key": job.ping_key or None}
            desired = {**Job(name=name).settings(), "ping_key": before["ping_key"], **settings}
            diff = {k: (before.get(k), v) for k, v in desired.items() if before.get(k) != v}
            if current is None or diff:
                changes.append({"job": name, "action": "create" if current is None else "update",
                                "changes": {k: {"from": a, "to": b} for k, (a, b) in diff.items()}})  # fmt: skip
                if not args.dry_run:
                    key = desired.pop("ping_key")
                    for k, v in desired.items():
                        setattr(job, k, v)
                    with store.transaction():
                        store.save_job(job, now=now)
                        if key and key != before["ping_key"]:
                            store.set_ping_key(name, key)
    if args.json:
        emit_json(changes)
    elif not changes:
        print("nothing to change: the database matches the config")
    else:
        for c in changes:
            print(f"{'would ' if args.dry_run else ''}{c['action']} {c['job']}")
            for k, d in c["changes"].items():
                print(f"    {k}: {d['from']!r} -> {d['to']!r}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    now = parse_timestamp(args.at) if args.at else time.time()
    with _store(args) as store:
        _merge_spool(store, now)
        events = check_all(store, now=now)
        sent = deliver_outbox(store, now=now)
    if args.json:
        emit_json({"at": now, "events": events, "notifications_sent": sent})
    else:
        # Consecutive events of one kind for one job (say, 30 missed runs after a machine
        # was off for a month) print as one line with a count.
        groups: list[tuple[dict[str, Any], int]] = []
        # A success that `check` evaluated for a wrapper (its post-run step had not yet)
        # is no news: cron mails whatever `check` prints.
        for e in (e for e in events if e["type"] != "run.ok"):
            if groups and (groups[-1][0]["type"], groups[-1][0]["job"], groups[-1][0].get("env"),
                           groups[-1][0].get("cause")) == (e["type"], e["job"], e.get("env"), e.get("cause")):  # fmt: skip
                groups[-1] = (groups[-1][0], groups[-1][1] + 1)
            else:
                groups.append((e, 1))
        for e, n in groups:
            print(f"{e['type']:<16} {e['job']}" + (f" ({e['env']})" if e.get("env") else "")
                  + (f" x{n}" if n > 1 else "")
                  + (f"  {e['cause']}" if e.get("cause") else ""))  # fmt: skip
        if not groups:
            print("checked: nothing new")

        if sent:
            print(f"{sent} notification(s) sent")
    return 0


def _merge_spool(store: Any, now: float) -> None:
    """Runs spooled while the database was unusable, before anything is judged: the real
    end of a run whose open record would otherwise be closed as abandoned."""
    from cronwatch.system import warn
    from cronwatch.wrapper import spool

    try:
        if spool.has_spooled(store.url):
            spool.replay(store, store.url, now)
    except Exception as e:  # they stay in the spool for the next run or check
        warn(f"spooled runs not merged yet: {e}")


def cmd_incidents(args: argparse.Namespace) -> int:
    with _store(args, create=False) as store:
        if args.name:
            store.get_job(args.name)
        items = store.list_incidents(job=args.name, limit=args.limit)
    if args.json:
        emit_json(items)
        return 0
    if not items:
        print("no incidents")
        return 0
    for it in items:
        state = "open" if it["closed_at"] is None else f"closed {format_time(it['closed_at'])}"
        print(f"#{it['id']} {it['job']}{' (' + it['env'] + ')' if it['env'] else ''}: "
              f"opened {format_time(it['opened_at'])}, {state} — {it['cause']}")  # fmt: skip
        for n in it["notifications"]:
            result = n["status"] + (f" ({n['last_error']})" if n["last_error"] else "")
            print(
                f"    {n['kind']:<9} {_redact(n['channel'])}: {result}, {n['attempts']} attempt(s)"
            )
    return 0


def cmd_notify_test(args: argparse.Namespace) -> int:
    from cronwatch.notify import Message, send, validate_channel  # as in _redact

    url = validate_channel(args.channel)
    msg = Message(kind="test", job="cronwatch-test", status="success",
                  cause="this is a test message from cronwatch", run=None, output_tail="",
                  at=time.time())  # fmt: skip
    send(url, msg, timeout=10.0)
    print(f"sent a test message to {_redact(url)}")
    return 0
