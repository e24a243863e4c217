-- Waits a task asks for from inside a run (`wait.for`, `wait.until` on
-- SDK 4.x): a DATETIME waitpoint, recorded against its run. The process
-- running the task keeps the run (and its lease) while it waits, and goes
-- on at `complete_after`; the row lets an idempotency key give the same
-- wait back to a retried attempt. Deleted with their run.
CREATE TABLE waitpoints (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    complete_after TIMESTAMPTZ NOT NULL,
    idempotency_key TEXT,
    idempotency_key_expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX waitpoints_run_id ON waitpoints (run_id);
CREATE UNIQUE INDEX waitpoints_idempotency_key ON waitpoints (environment, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
