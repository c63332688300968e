"""Numbered schema migrations per dialect. Append, never edit a released step.

The schema version lives in the ``meta`` table (key ``schema_version``).
Times are REAL seconds since the epoch (UTC) in SQLite, DOUBLE PRECISION in PostgreSQL.
Captured output lives apart from run records (``outputs``) so that the run table stays
small and its covering indexes make stats over a year of minutely runs fast.
"""

from __future__ import annotations

SQLITE: list[str] = [
    # 1: jobs, runs, outputs
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        ping_key TEXT UNIQUE,
        paused INTEGER NOT NULL DEFAULT 0,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        job_id INTEGER NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        duration REAL,
        exit_code INTEGER,
        signal INTEGER,
        client_rid INTEGER NOT NULL DEFAULT 0,
        host TEXT NOT NULL DEFAULT '',
        user TEXT NOT NULL DEFAULT '',
        command TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX runs_job_started ON runs (job_id, started_at, status, duration);
    CREATE INDEX runs_job_duration ON runs (job_id, duration, started_at);
    CREATE INDEX runs_started ON runs (started_at);
    CREATE INDEX runs_open ON runs (job_id, env) WHERE status = 'running';
    CREATE TABLE outputs (
        run_id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL,
        started_at REAL NOT NULL,
        failed INTEGER NOT NULL,
        stdout BLOB,
        stderr BLOB
    );
    CREATE INDEX outputs_job ON outputs (job_id, started_at);
    CREATE INDEX outputs_job_failed ON outputs (job_id, failed, started_at);
    """,
    # 2: alert state, incidents, the notification outbox, API tokens, the event log (SSE)
    """
    CREATE TABLE alert_state (
        job_id INTEGER NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        PRIMARY KEY (job_id, env)
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        opened_at REAL NOT NULL,
        closed_at REAL,
        cause TEXT NOT NULL DEFAULT '',
        open_run TEXT,
        close_run TEXT
    );
    CREATE INDEX incidents_job ON incidents (job_id, opened_at);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER,
        job_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        sent_at REAL
    );
    CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
    CREATE INDEX notifications_incident ON notifications (incident_id);
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        read_only INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL
    );
    """,
    # 3: when each job next needs a look by `check` (NULL: changed, look now). An early
    # development build put this in step 2; the runner tolerates the column existing.
    """
    ALTER TABLE jobs ADD COLUMN next_check REAL;
    CREATE INDEX IF NOT EXISTS jobs_next_check ON jobs (next_check);
    """,
]

POSTGRES: list[str] = []
