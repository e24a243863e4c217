-- Cron schedules: declared in kiln's configuration (DECLARATIVE) or made
-- through the schedules API (IMPERATIVE). A due schedule is fired by
-- locking its row, recording its run and moving next_run_at forward in one
-- transaction, so each tick makes exactly one run however many kiln
-- processes look at the same time.
CREATE TABLE schedules (
    id                text PRIMARY KEY,
    environment       text NOT NULL CHECK (environment IN ('dev', 'prod')),
    kind              text NOT NULL CHECK (kind IN ('DECLARATIVE', 'IMPERATIVE')),
    task_identifier   text NOT NULL,
    cron              text NOT NULL,
    timezone          text NOT NULL,
    external_id       text,
    deduplication_key text,
    active            boolean NOT NULL DEFAULT true,
    next_run_at       timestamptz,
    last_run_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Creating a schedule again with the same key updates it (Trigger's upsert).
CREATE UNIQUE INDEX schedules_deduplication ON schedules (environment, deduplication_key)
    WHERE deduplication_key IS NOT NULL;

-- What the firing loop reads every second: only active schedules, by time.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE active;
