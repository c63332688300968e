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
    # 4: a per-day rollup of runs, so that stats over a long history read a few hundred
    # rows instead of every run. Days are UTC (day = started_at / 86400). Runs that
    # started before `rollup.sealed` are counted in `run_days`; newer runs are read from
    # `runs` directly and are folded in by the store once a day (SQLiteStore._seal).
    # Updates and deletes of sealed runs (a run finished after midnight, retention) are
    # applied by the triggers below. Inserts are not: a trigger costs a few µs on every
    # insert even when its WHEN clause is false, and the hot paths (the wrapper, the ping
    # writer) insert today's runs; the store recomputes the days of the rare late insert
    # (an import, a replayed spool, a run that started before midnight) instead.
    """
    CREATE TABLE run_days (
        job_id INTEGER NOT NULL,
        day INTEGER NOT NULL,
        runs INTEGER NOT NULL DEFAULT 0,
        running INTEGER NOT NULL DEFAULT 0,
        success INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        timeout INTEGER NOT NULL DEFAULT 0,
        missed INTEGER NOT NULL DEFAULT 0,
        n_dur INTEGER NOT NULL DEFAULT 0,
        sum_dur REAL NOT NULL DEFAULT 0,
        max_dur REAL,
        PRIMARY KEY (job_id, day)
    ) WITHOUT ROWID;
    CREATE TABLE rollup (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        sealed REAL NOT NULL
    );
    INSERT INTO rollup (id, sealed) VALUES (1, CAST(strftime('%s', 'now') AS INTEGER) / 86400 * 86400);
    INSERT INTO run_days
        SELECT job_id, CAST(started_at / 86400 AS INTEGER) AS d, count(*), sum(status = 'running'),
            sum(status = 'success'), sum(status = 'failed'), sum(status = 'timeout'),
            sum(status = 'missed'), count(duration), coalesce(sum(duration), 0), max(duration)
        FROM runs WHERE started_at < (SELECT sealed FROM rollup) GROUP BY job_id, d;
    CREATE TRIGGER run_days_delete AFTER DELETE ON runs
    WHEN OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1)
    BEGIN
        UPDATE run_days SET
            runs = runs - 1, running = running - (OLD.status = 'running'),
            success = success - (OLD.status = 'success'), failed = failed - (OLD.status = 'failed'),
            timeout = timeout - (OLD.status = 'timeout'), missed = missed - (OLD.status = 'missed'),
            n_dur = n_dur - (OLD.duration IS NOT NULL),
            sum_dur = sum_dur - coalesce(OLD.duration, 0)
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER);
        -- the longest run of the day went: find the day's new longest
        UPDATE run_days SET max_dur = (
            SELECT max(duration) FROM runs
            WHERE job_id = OLD.job_id AND started_at >= day * 86400 - 1
              AND started_at < day * 86400 + 86401
              AND CAST(started_at / 86400 AS INTEGER) = day
              AND started_at < (SELECT sealed FROM rollup WHERE id = 1))
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER)
          AND OLD.duration >= max_dur;
    END;
    CREATE TRIGGER run_days_update AFTER UPDATE OF job_id, status, started_at, duration ON runs
    WHEN OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1)
      OR NEW.started_at < (SELECT sealed FROM rollup WHERE id = 1)
    BEGIN
        UPDATE run_days SET
            runs = runs - 1, running = running - (OLD.status = 'running'),
            success = success - (OLD.status = 'success'), failed = failed - (OLD.status = 'failed'),
            timeout = timeout - (OLD.status = 'timeout'), missed = missed - (OLD.status = 'missed'),
            n_dur = n_dur - (OLD.duration IS NOT NULL),
            sum_dur = sum_dur - coalesce(OLD.duration, 0)
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER)
          AND OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1);
        INSERT INTO run_days (job_id, day, runs, running, success, failed, timeout, missed,
                              n_dur, sum_dur, max_dur)
        SELECT NEW.job_id, CAST(NEW.started_at / 86400 AS INTEGER), 1, NEW.status = 'running',
               NEW.status = 'success', NEW.status = 'failed', NEW.status = 'timeout',
               NEW.status = 'missed', NEW.duration IS NOT NULL, coalesce(NEW.duration, 0),
               NEW.duration
        WHERE NEW.started_at < (SELECT sealed FROM rollup WHERE id = 1)
        ON CONFLICT (job_id, day) DO UPDATE SET
            runs = runs + 1, running = running + excluded.running,
            success = success + excluded.success, failed = failed + excluded.failed,
            timeout = timeout + excluded.timeout, missed = missed + excluded.missed,
            n_dur = n_dur + excluded.n_dur, sum_dur = sum_dur + excluded.sum_dur,
            max_dur = CASE WHEN max_dur IS NULL OR excluded.max_dur > max_dur
                           THEN excluded.max_dur ELSE max_dur END;
        UPDATE run_days SET max_dur = (
            SELECT max(duration) FROM runs
            WHERE job_id = OLD.job_id AND started_at >= day * 86400 - 1
              AND started_at < day * 86400 + 86401
              AND CAST(started_at / 86400 AS INTEGER) = day
              AND started_at < (SELECT sealed FROM rollup WHERE id = 1))
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER)
          AND OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1)
          AND OLD.duration >= max_dur;
    END;
    """,
    # 5: exact all-history percentiles from the rollup instead of an index. The index
    # (job_id, duration, started_at) cost every insert ~7 µs (a third of an import's
    # write, ~13 µs of CPU a ping) to serve one query. Each sealed day now keeps its
    # finished runs' durations, sorted, as little-endian float64 (`durs`), written once
    # a day when the day is sealed; stats select p50/p95 across the days (stats.py,
    # kth_smallest). NULL means "not known: read the day's runs": the triggers, now
    # recreated with that one change, set it when a sealed run changes or goes, and the
    # store fills it in again (SQLiteStore._fill_durs, also right after this step).
    """
    ALTER TABLE run_days ADD COLUMN durs BLOB;
    CREATE INDEX run_days_stale ON run_days (job_id, day) WHERE durs IS NULL;
    DROP INDEX IF EXISTS runs_job_duration;
    DROP TRIGGER run_days_delete;
    DROP TRIGGER run_days_update;
    CREATE TRIGGER run_days_delete AFTER DELETE ON runs
    WHEN OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1)
    BEGIN
        UPDATE run_days SET
            runs = runs - 1, running = running - (OLD.status = 'running'),
            success = success - (OLD.status = 'success'), failed = failed - (OLD.status = 'failed'),
            timeout = timeout - (OLD.status = 'timeout'), missed = missed - (OLD.status = 'missed'),
            n_dur = n_dur - (OLD.duration IS NOT NULL),
            sum_dur = sum_dur - coalesce(OLD.duration, 0),
            durs = NULL
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER);
        -- the longest run of the day went: find the day's new longest
        UPDATE run_days SET max_dur = (
            SELECT max(duration) FROM runs
            WHERE job_id = OLD.job_id AND started_at >= day * 86400 - 1
              AND started_at < day * 86400 + 86401
              AND CAST(started_at / 86400 AS INTEGER) = day
              AND started_at < (SELECT sealed FROM rollup WHERE id = 1))
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER)
          AND OLD.duration >= max_dur;
    END;
    CREATE TRIGGER run_days_update AFTER UPDATE OF job_id, status, started_at, duration ON runs
    WHEN OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1)
      OR NEW.started_at < (SELECT sealed FROM rollup WHERE id = 1)
    BEGIN
        UPDATE run_days SET
            runs = runs - 1, running = running - (OLD.status = 'running'),
            success = success - (OLD.status = 'success'), failed = failed - (OLD.status = 'failed'),
            timeout = timeout - (OLD.status = 'timeout'), missed = missed - (OLD.status = 'missed'),
            n_dur = n_dur - (OLD.duration IS NOT NULL),
            sum_dur = sum_dur - coalesce(OLD.duration, 0),
            durs = NULL
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER)
          AND OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1);
        INSERT INTO run_days (job_id, day, runs, running, success, failed, timeout, missed,
                              n_dur, sum_dur, max_dur)
        SELECT NEW.job_id, CAST(NEW.started_at / 86400 AS INTEGER), 1, NEW.status = 'running',
               NEW.status = 'success', NEW.status = 'failed', NEW.status = 'timeout',
               NEW.status = 'missed', NEW.duration IS NOT NULL, coalesce(NEW.duration, 0),
               NEW.duration
        WHERE NEW.started_at < (SELECT sealed FROM rollup WHERE id = 1)
        ON CONFLICT (job_id, day) DO UPDATE SET
            runs = runs + 1, running = running + excluded.running,
            success = success + excluded.success, failed = failed + excluded.failed,
            timeout = timeout + excluded.timeout, missed = missed + excluded.missed,
            n_dur = n_dur + excluded.n_dur, sum_dur = sum_dur + excluded.sum_dur,
            max_dur = CASE WHEN max_dur IS NULL OR excluded.max_dur > max_dur
                           THEN excluded.max_dur ELSE max_dur END,
            durs = NULL;
        UPDATE run_days SET max_dur = (
            SELECT max(duration) FROM runs
            WHERE job_id = OLD.job_id AND started_at >= day * 86400 - 1
              AND started_at < day * 86400 + 86401
              AND CAST(started_at / 86400 AS INTEGER) = day
              AND started_at < (SELECT sealed FROM rollup WHERE id = 1))
        WHERE job_id = OLD.job_id AND day = CAST(OLD.started_at / 86400 AS INTEGER)
          AND OLD.started_at < (SELECT sealed FROM rollup WHERE id = 1)
          AND OLD.duration >= max_dur;
    END;
    """,
    # 6: no triggers. Every write that touches runs of sealed days calls the rollup's
    # Python path instead (store/rollup.py: fold after a late insert or an update,
    # unfold before retention deletes), the one a PostgreSQL backend uses as well. The
    # days the triggers kept are exact, so they stay as they are.
    """
    DROP TRIGGER IF EXISTS run_days_delete;
    DROP TRIGGER IF EXISTS run_days_update;
    """,
    # 7: a client's run id (``?rid=``, the API's run_id) names a run within its job and
    # environment only, and may be reused once its run is over (core/runs.py): it gets a
    # column of its own instead of being the run's global id (``uid``), which stays what
    # the API and the CLI name a run by. Runs recorded with a client rid so far had it as
    # their uid. The index is partial: most runs have no rid, and inserting them (the
    # ping writer's common case) must not pay for it.
    """
    ALTER TABLE runs ADD COLUMN rid TEXT;
    UPDATE runs SET rid = uid WHERE client_rid = 1;
    CREATE INDEX runs_rid ON runs (rid, job_id, env) WHERE rid IS NOT NULL;
    """,
    # 8: output captured as one stream: the job's stdout and stderr went to the same
    # place (``>log 2>&1``, a pipe, a terminal), so the wrapper gave it one pipe for both
    # and ``stdout`` holds them in the order written (``stderr`` is NULL).
    """
    ALTER TABLE outputs ADD COLUMN merged INTEGER NOT NULL DEFAULT 0;
    """,
    # 9: when a job was last resumed. Missed runs are counted from the newest run or from
    # here, whichever is later: the slots that passed while it was paused are never missed.
    """
    ALTER TABLE jobs ADD COLUMN resumed_at REAL;
    """,
    # 10: a wrapped run is on record from its start.
    # ``owner`` names the wrapper process holding an open run (host, boot id, pid, process
    # start time: see system.process_token), so that `check` can tell it was killed; it
    # stays set on a run its wrapper never closed. ``pending`` marks a finished run whose
    # evaluation (assertions, alerts) the post-run step has not done yet; the partial index
    # keeps finding them cheap, and every other insert leaves it 0.
    """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS runs_pending ON runs (started_at) WHERE pending = 1;
    """,
    # 11: a run's link to a crash report (Loom's check-in ``crash_event_id``): few runs
    # have one, so it lives apart from ``runs`` (no column every insert pays for). Keyed by
    # the run's uid; job_id lets a job's deletion take its links along.
    """
    CREATE TABLE IF NOT EXISTS run_links (
        uid TEXT PRIMARY KEY,
        job_id INTEGER NOT NULL,
        crash_event_id TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS run_links_job ON run_links (job_id);
    """,
    # 12: alerting configured once (Cronitor's notification lists and integrations), and
    # the key a job has in another system's spelling (a Cronitor monitor key: mixed case,
    # longer than a job name) with that system's attributes (display name, note, type).
    """
    CREATE TABLE IF NOT EXISTS notify_lists (name TEXT PRIMARY KEY, channels TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS integrations (name TEXT PRIMARY KEY, config TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS job_keys (
        job_id INTEGER PRIMARY KEY,
        ext_key TEXT NOT NULL UNIQUE,
        attrs TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 13: the console: people who sign in (a password hash with its scrypt parameters;
    # role admin or viewer) and their sessions (only the sha256 of a session id is kept,
    # like API tokens: a copy of the database signs no one in). IF NOT EXISTS: a merge
    # that renumbers this step must not fail on a database a development build made.
    """
    CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL DEFAULT 'viewer',
        password TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_login_at REAL
    );
    CREATE TABLE IF NOT EXISTS sessions (
        hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
    CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
    """,
    # 14: several server replicas on one database.
    # ``alert_state.version`` is bumped by every write of a state, which is conditional on
    # the version read (``claim_alert_state``): of two processes that evaluated the same
    # job at once, one stores its transition and the other retries, so an alert is queued
    # once. One open incident per job and environment, enforced by the database (older
    # duplicates, which no version made on purpose, are closed first). ``leases``: the
    # scheduler's leader lease (``try_lead``), one row per role.
    """
    ALTER TABLE alert_state ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    UPDATE incidents SET closed_at = opened_at
     WHERE closed_at IS NULL AND id NOT IN
           (SELECT max(id) FROM incidents WHERE closed_at IS NULL GROUP BY job_id, env);
    CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (job_id, env)
     WHERE closed_at IS NULL;
    CREATE TABLE IF NOT EXISTS leases (
        role TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL,
        since REAL NOT NULL
    );
    """,
    # 15: PostgreSQL's event notifications (its step below); nothing to do on SQLite,
    # whose replicas share one host and poll the file.
    "",
    # 16: PostgreSQL's count of changes to what the ping writer remembers (its step
    # below); SQLite's writer asks the file's data_version instead.
    "",
    # 17: failed console sign-ins, by user name and by address, for the sign-in limit:
    # in the database, so that every replica counts the same failures and a restart
    # forgets none (server/session.py). Rows older than the limit's window go.
    """
    CREATE TABLE IF NOT EXISTS sign_in_failures (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sign_in_failures_key ON sign_in_failures (kind, value, at);
    CREATE INDEX IF NOT EXISTS sign_in_failures_at ON sign_in_failures (at);
    """,
]

# PostgreSQL's steps mirror SQLite's one for one: after step N both schemas are version
# N (the same ``schema_version`` in ``meta``), so a column SQLite gains in step N is
# PostgreSQL's step N too. Differences are of the dialect only: identity ids, DOUBLE
# PRECISION times, BYTEA output, "user" quoted (a reserved word), names sorted bytewise
# (COLLATE "C", SQLite's order), no rollup triggers (the rollup's Python path, migration
# 6). Steps 15 and 16 are PostgreSQL's alone (its replicas on several hosts: event
# notifications, the ping writers' change count); SQLite's are empty. An empty step has
# nothing to do on PostgreSQL.
POSTGRES: list[str] = [
    # 1
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL,
        ping_key TEXT UNIQUE,
        paused INTEGER NOT NULL DEFAULT 0,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE runs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        job_id BIGINT NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        duration DOUBLE PRECISION,
        exit_code INTEGER,
        signal INTEGER,
        client_rid INTEGER NOT NULL DEFAULT 0,
        host TEXT NOT NULL DEFAULT '',
        "user" TEXT NOT NULL DEFAULT '',
        command TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX runs_job_started ON runs (job_id, started_at, status, duration);
    CREATE INDEX runs_job_duration ON runs (job_id, duration, started_at);
    CREATE INDEX runs_started ON runs (started_at);
    CREATE INDEX runs_open ON runs (job_id, env) WHERE status = 'running';
    CREATE TABLE outputs (
        run_id BIGINT PRIMARY KEY,
        job_id BIGINT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        failed INTEGER NOT NULL,
        stdout BYTEA,
        stderr BYTEA
    );
    CREATE INDEX outputs_job ON outputs (job_id, started_at);
    CREATE INDEX outputs_job_failed ON outputs (job_id, failed, started_at);
    """,
    # 2
    """
    CREATE TABLE alert_state (
        job_id BIGINT NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        PRIMARY KEY (job_id, env)
    );
    CREATE TABLE incidents (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        job_id BIGINT NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        opened_at DOUBLE PRECISION NOT NULL,
        closed_at DOUBLE PRECISION,
        cause TEXT NOT NULL DEFAULT '',
        open_run TEXT,
        close_run TEXT
    );
    CREATE INDEX incidents_job ON incidents (job_id, opened_at);
    CREATE TABLE notifications (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        incident_id BIGINT,
        job_id BIGINT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        sent_at DOUBLE PRECISION
    );
    CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
    CREATE INDEX notifications_incident ON notifications (incident_id);
    CREATE TABLE tokens (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        read_only INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION
    );
    CREATE TABLE events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL
    );
    """,
    # 3
    """
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS next_check DOUBLE PRECISION;
    CREATE INDEX IF NOT EXISTS jobs_next_check ON jobs (next_check);
    """,
    # 4: counts are INTEGER so that their sums are BIGINT (a BIGINT's sum is NUMERIC)
    """
    CREATE TABLE run_days (
        job_id BIGINT NOT NULL,
        day INTEGER NOT NULL,
        runs INTEGER NOT NULL DEFAULT 0,
        running INTEGER NOT NULL DEFAULT 0,
        success INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        timeout INTEGER NOT NULL DEFAULT 0,
        missed INTEGER NOT NULL DEFAULT 0,
        n_dur INTEGER NOT NULL DEFAULT 0,
        sum_dur DOUBLE PRECISION NOT NULL DEFAULT 0,
        max_dur DOUBLE PRECISION,
        PRIMARY KEY (job_id, day)
    );
    CREATE TABLE rollup (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        sealed DOUBLE PRECISION NOT NULL
    );
    INSERT INTO rollup (id, sealed)
        VALUES (1, floor(extract(epoch FROM now()) / 86400) * 86400);
    INSERT INTO run_days
        SELECT job_id, trunc(started_at / 86400) AS d, count(*),
            count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'success'),
            count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'timeout'),
            count(*) FILTER (WHERE status = 'missed'), count(duration),
            coalesce(sum(duration), 0), max(duration)
        FROM runs WHERE started_at < (SELECT sealed FROM rollup) GROUP BY job_id, d;
    """,
    # 5
    """
    ALTER TABLE run_days ADD COLUMN durs BYTEA;
    CREATE INDEX run_days_stale ON run_days (job_id, day) WHERE durs IS NULL;
    DROP INDEX IF EXISTS runs_job_duration;
    """,
    # 6: SQLite drops its triggers here; PostgreSQL never had any
    "",
    # 7
    """
    ALTER TABLE runs ADD COLUMN rid TEXT;
    UPDATE runs SET rid = uid WHERE client_rid = 1;
    CREATE INDEX runs_rid ON runs (rid, job_id, env) WHERE rid IS NOT NULL;
    """,
    # 8
    """
    ALTER TABLE outputs ADD COLUMN merged INTEGER NOT NULL DEFAULT 0;
    """,
    # 9
    """
    ALTER TABLE jobs ADD COLUMN resumed_at DOUBLE PRECISION;
    """,
    # 10
    """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS runs_pending ON runs (started_at) WHERE pending = 1;
    """,
    # 11
    """
    CREATE TABLE IF NOT EXISTS run_links (
        uid TEXT PRIMARY KEY,
        job_id BIGINT NOT NULL,
        crash_event_id TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS run_links_job ON run_links (job_id);
    """,
    # 12
    """
    CREATE TABLE IF NOT EXISTS notify_lists (
        name TEXT COLLATE "C" PRIMARY KEY, channels TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS integrations (
        name TEXT COLLATE "C" PRIMARY KEY, config TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS job_keys (
        job_id BIGINT PRIMARY KEY,
        ext_key TEXT NOT NULL UNIQUE,
        attrs TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 13
    """
    CREATE TABLE IF NOT EXISTS users (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        role TEXT NOT NULL DEFAULT 'viewer',
        password TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        last_login_at DOUBLE PRECISION
    );
    CREATE TABLE IF NOT EXISTS sessions (
        hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        csrf TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
    CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
    """,
    # 14
    """
    ALTER TABLE alert_state ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    UPDATE incidents SET closed_at = opened_at
     WHERE closed_at IS NULL AND id NOT IN
           (SELECT max(id) FROM incidents WHERE closed_at IS NULL GROUP BY job_id, env);
    CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (job_id, env)
     WHERE closed_at IS NULL;
    CREATE TABLE IF NOT EXISTS leases (
        role TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        since DOUBLE PRECISION NOT NULL
    );
    """,
    # 15: every transaction that inserts events notifies ``cronwatch_events`` (the event
    # streams of every replica listen: store/postgres/eventlog.py). Once a statement, not
    # a row, and PostgreSQL delivers equal notifications of a transaction once.
    """
    CREATE OR REPLACE FUNCTION cronwatch_events_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('cronwatch_events', ''); RETURN NULL; END $$;
    DROP TRIGGER IF EXISTS events_notify ON events;
    CREATE TRIGGER events_notify AFTER INSERT ON events
        FOR EACH STATEMENT EXECUTE FUNCTION cronwatch_events_notify();
    """,
    # 16: ``cache_epoch`` counts the changes to what a ping writer remembers between its
    # batches (jobs but their next check, alert states, open runs, the meta keys, keys and
    # lists), whoever makes them, so that a replica's writer forgets only when one of
    # them changed, not at every commit of another replica (store/postgres/backend.py,
    # data_version). ``by_xid``/``bumps``: how many of the count the last transaction to
    # move it made, so that a writer tells its own changes from others'. Counted once a
    # statement, or once a row of ``runs`` that is or was running (a success inserted by
    # a ping costs nothing).
    """
    CREATE TABLE IF NOT EXISTS cache_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n BIGINT NOT NULL,
        by_xid xid8,
        bumps BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO cache_epoch (id, n) VALUES (1, 0) ON CONFLICT DO NOTHING;
    CREATE OR REPLACE FUNCTION cronwatch_cache_epoch() RETURNS trigger
    LANGUAGE plpgsql AS $$ BEGIN
        UPDATE cache_epoch SET n = n + 1,
            bumps = CASE WHEN by_xid = pg_current_xact_id() THEN bumps + 1 ELSE 1 END,
            by_xid = pg_current_xact_id()
         WHERE id = 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER jobs_epoch AFTER INSERT OR DELETE
        OR UPDATE OF name, created_at, ping_key, settings, paused, resumed_at ON jobs
        FOR EACH STATEMENT EXECUTE FUNCTION cronwatch_cache_epoch();
    CREATE TRIGGER alert_state_epoch AFTER INSERT OR UPDATE OR DELETE ON alert_state
        FOR EACH STATEMENT EXECUTE FUNCTION cronwatch_cache_epoch();
    CREATE TRIGGER meta_epoch AFTER INSERT OR UPDATE OR DELETE ON meta
        FOR EACH STATEMENT EXECUTE FUNCTION cronwatch_cache_epoch();
    CREATE TRIGGER job_keys_epoch AFTER INSERT OR UPDATE OR DELETE ON job_keys
        FOR EACH STATEMENT EXECUTE FUNCTION cronwatch_cache_epoch();
    CREATE TRIGGER notify_lists_epoch AFTER INSERT OR UPDATE OR DELETE ON notify_lists
        FOR EACH STATEMENT EXECUTE FUNCTION cronwatch_cache_epoch();
    CREATE TRIGGER runs_open_epoch AFTER INSERT ON runs FOR EACH ROW
        WHEN (NEW.status = 'running') EXECUTE FUNCTION cronwatch_cache_epoch();
    CREATE TRIGGER runs_closed_epoch AFTER UPDATE ON runs FOR EACH ROW
        WHEN (OLD.status = 'running' OR NEW.status = 'running')
        EXECUTE FUNCTION cronwatch_cache_epoch();
    CREATE TRIGGER runs_gone_epoch AFTER DELETE ON runs FOR EACH ROW
        WHEN (OLD.status = 'running') EXECUTE FUNCTION cronwatch_cache_epoch();
    """,
    # 17: failed console sign-ins (SQLite's step 17)
    """
    CREATE TABLE IF NOT EXISTS sign_in_failures (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sign_in_failures_key ON sign_in_failures (kind, value, at);
    CREATE INDEX IF NOT EXISTS sign_in_failures_at ON sign_in_failures (at);
    """,
]


def statements(step: str) -> list[str]:
    """Split a step into statements; a trigger body's own semicolons stay inside it."""
    import sqlite3  # here, not at the top: the wrapper imports this module on every run

    out: list[str] = []
    buf = ""
    for line in step.splitlines(keepends=True):
        if not buf and line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
