"""Loom's event stream (``/api/crons/stream``): the event log in Loom's names and fields.

    run.started  -> checkin.started     job.missed   -> monitor.missed
    run.ok       -> checkin.ok          job.timeout  -> monitor.timeout
    run.error    -> checkin.error       job.healthy  -> monitor.healthy

Each frame's data: ``monitor_id``, ``monitor_slug``, ``monitor_name``, ``checkin_id``,
``status`` (the check-in's, in Loom's words), ``environment``, ``started_at``,
``finished_at`` (ISO 8601), ``duration_ms``, ``exit_code``, ``expected_at`` (a missed
run's), ``timestamp`` (when it was recorded). Other events (incidents, output appended)
have no Loom name and are left out. The broadcaster (server/events.py) calls ``frames``
once per batch of events for all of Loom's streams.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cronwatch.core.model import env_label
from cronwatch.core.values import iso
from cronwatch.store.interface import JobStore

NAMES = {"run.started": "checkin.started", "run.ok": "checkin.ok", "run.error": "checkin.error",
         "job.missed": "monitor.missed", "job.timeout": "monitor.timeout",
         "job.healthy": "monitor.healthy"}  # fmt: skip
_STATUS = {"running": "in_progress", "success": "ok", "failed": "error", "missed": "missed",
           "timeout": "timeout"}  # fmt: skip


def dialect(store: JobStore) -> Callable[[list[tuple[int, float, str, str]]], list[str]]:
    """The broadcaster's encoder for Loom's streams, reading monitor names from ``store``."""

    def frames(rows: list[tuple[int, float, str, str]]) -> list[str]:
        titles: dict[str, str] = {}  # one read per job per batch

        def title(job: str) -> str:
            if job not in titles:
                try:
                    found = store.find_job(job)
                except Exception:  # a deleted job, a busy database: the slug will do
                    found = None
                titles[job] = (found.title if found is not None else "") or job
            return titles[job]

        out = []
        for eid, at, type_, data in rows:
            name = NAMES.get(type_)
            if name is None:
                out.append("")
                continue
            try:
                event = json.loads(data)
            except ValueError:
                out.append("")
                continue
            payload = payload_of(event, at, title)
            out.append(f"id: {eid}\nevent: {name}\ndata: {json.dumps(payload)}\n\n")
        return out

    return frames


def payload_of(event: dict[str, Any], at: float, title: Callable[[str], str]) -> dict[str, Any]:
    job = str(event.get("job", ""))
    duration = event.get("duration")
    return {
        "monitor_id": "mon_" + job,
        "monitor_slug": job,
        "monitor_name": title(job),
        "checkin_id": event.get("run"),
        "status": _STATUS.get(str(event.get("status")), event.get("status")),
        "environment": env_label(str(event.get("env") or "")),
        "started_at": iso(event.get("started_at")),
        "finished_at": iso(event.get("ended_at")),
        "duration_ms": None if duration is None else round(float(duration) * 1000),
        "exit_code": event.get("exit_code"),
        "expected_at": event.get("expected"),
        "timestamp": iso(at),
    }
