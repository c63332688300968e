"""/metrics in the Prometheus text format: per job health and server counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cronwatch.store.interface import StatsStore


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(server: Any) -> str:
    reader: StatsStore = server.reader
    lines = [
        "# HELP cronwatch_job_up 1 if the job's last finished run succeeded, 0 if it failed.",
        "# TYPE cronwatch_job_up gauge",
    ]
    up: list[str] = []
    last_time: list[str] = []
    last_dur: list[str] = []
    by_status: list[str] = []
    counts = reader.run_counts()  # the day rollup plus today's runs, not a scan of all
    for name, last in reader.jobs_last_finished():
        lab = f'job="{_label(name)}"'
        if last is not None:
            status, started, duration = last
            up.append(f"cronwatch_job_up{{{lab}}} {1 if status == 'success' else 0}")
            last_time.append(f"cronwatch_job_last_run_timestamp_seconds{{{lab}}} {started!r}")
            dur = "NaN" if duration is None else repr(duration)
            last_dur.append(f"cronwatch_job_last_duration_seconds{{{lab}}} {dur}")
        for status, n in sorted(counts.get(name, {}).items()):
            by_status.append(f'cronwatch_job_runs_total{{{lab},status="{status}"}} {n}')
    lines += up
    lines += ["# HELP cronwatch_job_last_run_timestamp_seconds Start of the last finished run.",
              "# TYPE cronwatch_job_last_run_timestamp_seconds gauge", *last_time,
              "# HELP cronwatch_job_last_duration_seconds Duration of the last finished run.",
              "# TYPE cronwatch_job_last_duration_seconds gauge", *last_dur,
              "# HELP cronwatch_job_runs_total Stored runs by status.",
              "# TYPE cronwatch_job_runs_total gauge", *by_status]  # fmt: skip
    c = server.counters
    lines += [
        "# HELP cronwatch_pings_received_total Ping requests received.",
        "# TYPE cronwatch_pings_received_total counter",
        f"cronwatch_pings_received_total {c['pings_received']}",
        "# HELP cronwatch_pings_total Well-formed pings by dialect.",
        "# TYPE cronwatch_pings_total counter",
    ]
    for d in ("healthchecks", "simob", "cronitor"):
        lines.append(f'cronwatch_pings_total{{dialect="{d}"}} {c["pings_" + d]}')
    lines += [
        "# HELP cronwatch_ping_errors_total Pings answered with an error (4xx/5xx).",
        "# TYPE cronwatch_ping_errors_total counter",
        f"cronwatch_ping_errors_total {c['ping_errors']}",
        "# HELP cronwatch_api_errors_total Management API requests answered with an error.",
        "# TYPE cronwatch_api_errors_total counter",
        f"cronwatch_api_errors_total {c['api_errors']}",
    ]
    hub = server.hub
    if hub is not None:
        lines += ["# HELP cronwatch_event_streams Event streams (/api/v1/stream) open now.",
                  "# TYPE cronwatch_event_streams gauge",
                  f"cronwatch_event_streams {len(hub.subscribers)}",
                  "# HELP cronwatch_event_streams_dropped_total Event streams closed because "
                  "their client fell behind.",
                  "# TYPE cronwatch_event_streams_dropped_total counter",
                  f"cronwatch_event_streams_dropped_total {hub.dropped}"]  # fmt: skip
    replica = _label(str(getattr(server, "replica", "")))
    scheduler = server.scheduler
    lines += ["# HELP cronwatch_replica_info This replica (several may share one database).",
              "# TYPE cronwatch_replica_info gauge", f'cronwatch_replica_info{{replica="{replica}"}} 1',
              "# HELP cronwatch_scheduler_leader 1 if this replica runs the scheduler (missed "
              "and timed-out runs) now, else 0.",
              "# TYPE cronwatch_scheduler_leader gauge",
              f'cronwatch_scheduler_leader{{replica="{replica}"}} {int(server.leads())}',
              "# HELP cronwatch_scheduler_leaderships_total Times this replica became the "
              "scheduler's leader.",
              "# TYPE cronwatch_scheduler_leaderships_total counter",
              f"cronwatch_scheduler_leaderships_total "
              f"{0 if scheduler is None else scheduler.leaderships}"]  # fmt: skip
    w = server.writer
    if w is not None:
        lines += ["# HELP cronwatch_commits_total Group commits by the writer.",
                  "# TYPE cronwatch_commits_total counter", f"cronwatch_commits_total {w.batches}",
                  "# HELP cronwatch_writes_total Operations committed by the writer.",
                  "# TYPE cronwatch_writes_total counter", f"cronwatch_writes_total {w.ops}"]  # fmt: skip
    return "\n".join(lines) + "\n"
