"""Text output for the CLI: run tables, stats blocks, job lists. (HTML lives in dashboard.py.)"""

from __future__ import annotations

import time
from typing import Any

from cronwatch.core.model import Run
from cronwatch.core.text import exit_text, first_line, percent, streams
from cronwatch.core.values import format_duration, format_time

STATUS_WORD = {
    "success": "ok",
    "failed": "FAILED",
    "timeout": "TIMEOUT",
    "missed": "MISSED",
    "running": "running",
}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def runs_table(runs: list[Run], *, with_job: bool = False) -> str:
    headers = (["JOB"] if with_job else []) + [
        "STARTED (UTC)",
        "STATUS",
        "EXIT",
        "DURATION",
        "OUTPUT",
    ]
    rows = []
    for r in runs:
        row = [r.job] if with_job else []
        row += [
            format_time(r.started_at),
            STATUS_WORD.get(r.status.value, r.status.value),
            exit_text(r),
            format_duration(r.duration),
            first_line(r),
        ]
        rows.append(row)
    return table(headers, rows)


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    delta = (time.time() if now is None else now) - ts
    if delta < 0:
        return f"{format_time(ts)} (in {format_duration(-delta)})"
    return f"{format_time(ts)} ({format_duration(delta)} ago)"


def stats_block(s: dict[str, Any], now: float) -> str:
    window = "all history" if s["since"] is None else f"since {format_time(s['since'])}"
    counts = ", ".join(
        f"{s[k]} {k}" for k in ("success", "failed", "timeout", "missed", "running") if s[k]
    )
    streak = s["streak"]
    streak_text = "-"
    if streak["status"]:
        word = "success" if streak["status"] == "success" else "failure"
        streak_text = f"{streak['count']} {word}{'es' if word == 'success' and streak['count'] != 1 else ''}{'s' if word == 'failure' and streak['count'] != 1 else ''} in a row"
    lines = [
        ("job", s["job"]),
        ("health", s.get("health", "")),
        ("runs", f"{s['runs']} ({window})" + (f": {counts}" if counts else "")),
        ("success rate", percent(s["success_rate"])),
        (
            "duration",
            f"p50 {format_duration(s['duration_p50'])}  p95 {format_duration(s['duration_p95'])}  "
            f"max {format_duration(s['duration_max'])}  avg {format_duration(s['duration_avg'])}",
        ),
        ("last success", ago(s["last_success"], now)),
        ("last failure", ago(s["last_failure"], now)),
        ("streak", streak_text),
    ]
    if s.get("slowdown"):
        lines.append(("slowdown", s["slowdown"]))
    return "\n".join(f"{k:<13} {v}" for k, v in lines if v != "")


def run_detail(run: Run) -> str:
    head = [
        ("run", run.id),
        ("job", run.job + (f" (env {run.env})" if run.env else "")),
        ("status", run.status.value),
        ("exit", exit_text(run)),
        ("started", format_time(run.started_at) + " UTC"),
        ("ended", format_time(run.ended_at) + (" UTC" if run.ended_at else "")),
        ("duration", format_duration(run.duration)),
        ("host", run.host or "-"),
        ("user", run.user or "-"),
        ("command", run.command or "-"),
    ]
    if run.message:
        head.append(("message", run.message))
    out = "\n".join(f"{k:<9} {v}" for k, v in head)
    for label, data in streams(run):
        if data is None:
            out += f"\n\n--- {label}: not captured or expired ---"
        elif not data:
            out += f"\n\n--- {label}: empty ---"
        else:
            text = data.decode("utf-8", "replace")
            out += f"\n\n--- {label} ({len(data)} bytes) ---\n{text}"
            if text and not text.endswith("\n"):
                out += "\n"
    return out.rstrip("\n")
