"""CLI for schedules and alerts: job set/show/rm, apply, check, incidents, notify test."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from cronwatch.app.evaluate import check_all, deliver_outbox, describe
from cronwatch.cli.commands import add_common, emit_json, name_arg, open_db
from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Job
from cronwatch.core.settings import (
    LIST_KINDS,
    NUMBER_KINDS,
    SETTINGS,
    YEAR,
    Kind,
    Setting,
    apply_settings,
    normalize,
    notification_list,
    timed_pause,
)
from cronwatch.core.values import format_duration, format_time, parse_timestamp
from cronwatch.system import config_path


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

    s = command(jsub, "pause", cmd_job_pause, "pause a job (no missed runs, no alerts), for a while or until resumed",
                "cronwatch job pause backup --for 2h\ncronwatch job pause backup --until 2026-12-03T08:00:00Z")  # fmt: skip
    s.add_argument("name", type=name_arg, metavar="NAME")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--for", dest="for_", metavar="DUR", help="resume by itself after DUR (such as 2h, 30m, 1d)")  # fmt: skip
    g.add_argument("--until", metavar="TIME", help="resume by itself at TIME (ISO 8601, UTC if no offset)")  # fmt: skip
    add_common(s)

    s = command(jsub, "resume", cmd_job_resume, "resume a paused job (a timed pause too)",
                "cronwatch job resume backup")  # fmt: skip
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

    p = command(sub, "check", cmd_check, "evaluate every job now: record missed and timed-out runs, send due alerts "
                "(exit 1 when a job's stored settings cannot be read: the others are checked)",
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
    s.add_argument(
        "channel",
        metavar="CHANNEL",
        help="a channel URL, a shorthand (email:ADDRESS, slack:#CHANNEL, ...) or a notification list",
    )
    add_common(s, json_flag=False)

    p = command(sub, "notify-list", cmd_notify_list_help, "notification lists: a name for several channels, used in a job's notify",
                "cronwatch notify-list set on-call-team email:ops@example.com slack:#alerts\n"
                "cronwatch job set backup --notify on-call-team")  # fmt: skip
    lsub = p.add_subparsers(title="notify-list commands", metavar="ACTION")
    s = command(lsub, "set", cmd_notify_list_set, "create or replace a notification list",
                "cronwatch notify-list set on-call-team email:ops@example.com pagerduty:KEY")  # fmt: skip
    s.add_argument("name", metavar="NAME")
    s.add_argument("channels", nargs="+", metavar="CHANNEL", help="a channel URL or a shorthand (email:, slack:#, pagerduty:, sms:, webhook:)")  # fmt: skip
    add_common(s, json_flag=False)
    s = command(lsub, "show", cmd_notify_list_show, "the notification lists (channels redacted)",
                "cronwatch notify-list show --json")  # fmt: skip
    s.add_argument("name", nargs="?", metavar="NAME")
    add_common(s)
    s = command(lsub, "rm", cmd_notify_list_rm, "delete a notification list",
                "cronwatch notify-list rm on-call-team")  # fmt: skip
    s.add_argument("name", metavar="NAME")
    add_common(s, json_flag=False)

    p = command(sub, "integration", cmd_integration_help, "integrations configured once: email (SMTP), slack, pagerduty, sms",
                "cronwatch integration set email host=smtp.example.com port=587 username=cron \\\n"
                "    password=secret sender=cron@example.com\n"
                "cronwatch integration set slack '#alerts=https://hooks.slack.com/services/T0/B0/XX'")  # fmt: skip
    isub = p.add_subparsers(title="integration commands", metavar="ACTION")
    s = command(isub, "set", cmd_integration_set, "configure an integration (replaces its settings)",
                "cronwatch integration set pagerduty routing_key=R0UT1NGKEY")  # fmt: skip
    s.add_argument("name", metavar="NAME", help="email, slack, pagerduty or sms")
    s.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    add_common(s, json_flag=False)
    s = command(isub, "show", cmd_integration_show, "the integrations (secrets hidden unless --secrets)",
                "cronwatch integration show --json")  # fmt: skip
    s.add_argument("--secrets", action="store_true", help="show passwords, keys and webhook URLs")
    add_common(s)
    s = command(isub, "rm", cmd_integration_rm, "remove an integration",
                "cronwatch integration rm sms")  # fmt: skip
    s.add_argument("name", metavar="NAME")
    add_common(s, json_flag=False)


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


cmd_job_help = cmd_notify_help = cmd_notify_list_help = cmd_integration_help = _help


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
        ("paused", ("yes" + (f", until {format_time(job.paused_until)} UTC"
                             if job.paused_until is not None else "")) if job.paused else "no"),
        ("tolerance", ("misses count as failures" if job.schedule_tolerance is None
                       else f"{job.schedule_tolerance} missed run(s) before an alert")
                      + (f"; alerts pause past {job.surge_threshold} an hour"
                         if job.surge_threshold is not None else "")),
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
    from cronwatch.app.configfile import (
        load,  # tomllib and the file's rules: apply only
        load_alerting,
    )
    from cronwatch.notify.integrations import validate_integration

    wanted = load(args.config)
    lists, raw_integrations = load_alerting(args.config)
    integrations: dict[str, dict[str, str]] = {}
    for name, config in raw_integrations.items():
        try:
            integrations[name] = validate_integration(name, config)
        except ValidationError as e:
            where = os.path.basename(args.config or config_path())
            raise ValidationError(f"{where} [integrations.{name}]: {e}") from None
    now = time.time()
    changes: list[dict[str, Any]] = []
    with _store(args) as store:
        changes += _apply_alerting(store, lists, integrations, args.dry_run)
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
                    timed_pause(job, settings)
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
            what = c.get("job") or (f"list {c['list']}" if "list" in c else f"integration {c['integration']}")  # fmt: skip
            print(f"{'would ' if args.dry_run else ''}{c['action']} {what}")
            for k, d in c["changes"].items():
                print(f"    {k}: {d['from']!r} -> {d['to']!r}")
    return 0


def _apply_alerting(
    store: Any, lists: dict[str, list[str]], integrations: dict[str, dict[str, str]], dry: bool
) -> list[dict[str, Any]]:
    """The file's [lists] and [integrations.NAME]: set as written (others are left as
    they are: integrations hold secrets a file may not want to carry)."""
    from cronwatch.notify.integrations import redact_integration

    changes: list[dict[str, Any]] = []
    have_lists, have_integrations = store.notification_lists(), store.integrations()
    for name, channels in sorted(lists.items()):
        if have_lists.get(name) != channels:
            changes.append({"list": name, "action": "update" if name in have_lists else "create",
                            "changes": {"channels": {"from": have_lists.get(name),
                                                     "to": [_redact(c) for c in channels]}}})  # fmt: skip
            if not dry:
                store.set_notification_list(name, channels)
    for name, config in sorted(integrations.items()):
        if have_integrations.get(name) != config:
            changes.append({"integration": name, "action": "update" if name in have_integrations else "create",
                            "changes": {"settings": {"from": None, "to": redact_integration(name, config)}}})  # fmt: skip
            if not dry:
                store.set_integration(name, config)
    return changes


def cmd_job_pause(args: argparse.Namespace) -> int:
    from cronwatch.core.values import parse_duration

    now = time.time()
    until = None
    if args.for_ is not None:
        seconds = parse_duration(args.for_)
        if not 0 < seconds <= YEAR:
            raise ValidationError(f"--for {args.for_}: expected a duration from 1s to 366d")
        until = now + seconds
    elif args.until is not None:
        until = normalize("paused_until", args.until)
    with _store(args) as store:
        job = store.find_job(args.name) or Job(name=args.name, created_at=now)
        job.paused, job.paused_until = True, until
        job = store.save_job(job, now=now)
        _print_job(store, job, args, now)
    return 0


def cmd_job_resume(args: argparse.Namespace) -> int:
    now = time.time()
    with _store(args, create=False) as store:
        job = store.get_job(args.name)
        job.paused, job.paused_until = False, None
        job = store.save_job(job, now=now)
        _print_job(store, job, args, now)
    return 0


def cmd_notify_list_set(args: argparse.Namespace) -> int:
    name = args.name
    channels = notification_list(name, args.channels)
    with _store(args) as store:
        store.set_notification_list(name, channels)
    print(f"notification list {name}: {', '.join(_redact(c) for c in channels)}")
    return 0


def cmd_notify_list_show(args: argparse.Namespace) -> int:
    from cronwatch.core.errors import NotFound

    with _store(args, create=False) as store:
        lists = {k: [_redact(c) for c in v] for k, v in store.notification_lists().items()}
    if args.name is not None:
        if args.name not in lists:
            raise NotFound(f"no notification list named {args.name!r}")
        lists = {args.name: lists[args.name]}
    if args.json:
        emit_json(lists)
    else:
        for name, channels in lists.items():
            print(f"{name}\t{', '.join(channels)}")
        if not lists:
            print("no notification lists")
    return 0


def cmd_notify_list_rm(args: argparse.Namespace) -> int:
    with _store(args, create=False) as store:
        store.delete_notification_list(args.name)
    print(f"deleted notification list {args.name}")
    return 0


def cmd_integration_set(args: argparse.Namespace) -> int:
    from cronwatch.notify.integrations import redact_integration, validate_integration

    pairs: dict[str, str] = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"integration {args.name}: expected KEY=VALUE, not {pair[:60]!r}")
        pairs[key] = value
    config = validate_integration(args.name, pairs)
    with _store(args) as store:
        store.set_integration(args.name, config)
    shown = redact_integration(args.name, config)
    print(f"integration {args.name}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


def cmd_integration_show(args: argparse.Namespace) -> int:
    from cronwatch.notify.integrations import redact_integration

    with _store(args, create=False) as store:
        found = store.integrations()
    if not args.secrets:
        found = {k: redact_integration(k, v) for k, v in found.items()}
    if args.json:
        emit_json(found)
    else:
        for name, config in found.items():
            print(f"{name}\t" + ", ".join(f"{k}={v}" for k, v in config.items()))
        if not found:
            print("no integrations")
    return 0


def cmd_integration_rm(args: argparse.Namespace) -> int:
    with _store(args, create=False) as store:
        store.delete_integration(args.name)
    print(f"removed integration {args.name}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    now = parse_timestamp(args.at) if args.at else time.time()
    unchecked: list[str] = []  # jobs it could not check: reported, and the exit is 1
    with _store(args) as store:
        _merge_spool(store, now)
        events = check_all(store, now=now, unchecked=unchecked)
        sent = deliver_outbox(store, now=now)
    if args.json:
        emit_json({"at": now, "events": events, "notifications_sent": sent, "unchecked": unchecked})
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
    for why in unchecked:
        sys.stderr.write(f"cronwatch: {why}\n")
    return 1 if unchecked else 0


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
    integrations: dict[str, dict[str, str]] = {}
    channels = [url]
    if "://" not in url:  # a shorthand or a list: resolved with what is configured
        with _store(args, create=False) as store:
            integrations = store.integrations()
            if ":" not in url:
                from cronwatch.core.errors import NotFound

                found = store.notification_lists().get(url)
                if found is None:
                    raise NotFound(f"no notification list named {url!r}")
                channels = found
    msg = Message(kind="test", job="cronwatch-test", status="success",
                  cause="this is a test message from cronwatch", run=None, output_tail="",
                  at=time.time())  # fmt: skip
    for channel in channels:
        send(channel, msg, timeout=10.0, integrations=integrations)
        print(f"sent a test message to {_redact(channel)}")
    return 0
