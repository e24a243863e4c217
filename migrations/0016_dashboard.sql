-- The dashboard's sign-in sessions: only a hash of the cookie's token is
-- kept, so a leaked table signs nobody in. Each session has its own CSRF
-- token, sent back with every form.
CREATE TABLE dashboard_sessions (
    token_hash BYTEA PRIMARY KEY,
    csrf_token TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- A paused queue starts no run: its runs wait (parked) as runs of a full
-- queue do, and resuming it releases them.
ALTER TABLE queues ADD COLUMN paused BOOLEAN NOT NULL DEFAULT false;

-- Runs finished per queue and minute, for the dashboard's throughput
-- chart: written by the statement that records outcomes, so every worker
-- and task host counts. `shard` (the writing connection's pid, modulo 16)
-- keeps two outcome writers from waiting on one row's lock. Kept a day.
CREATE TABLE queue_minutes (
    environment TEXT NOT NULL,
    queue TEXT NOT NULL,
    minute TIMESTAMPTZ NOT NULL,
    shard SMALLINT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment, queue, minute, shard)
);
CREATE INDEX queue_minutes_minute ON queue_minutes (minute);

-- Listing runs by a status most runs never end in (FAILED, CANCELED…)
-- reads this index instead of walking the whole history newest first. A
-- run that is queued, executes and completes never enters it, so the
-- common path writes nothing more.
CREATE INDEX runs_by_unusual_status ON runs (environment, status, id)
    WHERE status IN ('DELAYED', 'FAILED', 'CANCELED', 'EXPIRED', 'TIMED_OUT', 'CRASHED', 'SYSTEM_FAILURE');

-- The runs a schedule fired carry its id in their payload (Trigger's
-- scheduled payload): listing them by schedule reads this index. Only
-- those runs enter it.
CREATE INDEX runs_by_schedule ON runs ((payload->>'scheduleId'), id) WHERE payload ? 'scheduleId';

-- The error of each failed attempt of a run: `runs.error` keeps only the
-- last. Written by the statement that records outcomes, for failed
-- attempts only; deleted with the run.
CREATE TABLE run_attempts (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    error JSONB NOT NULL,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt)
);
