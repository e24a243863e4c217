-- Log lines a run's task wrote (`logger.*`, `console.*` through the task
-- host), as the SDK exports them over OTLP/HTTP JSON to kiln. Kept with
-- their run and deleted with it.
CREATE TABLE run_logs (
    id BIGSERIAL PRIMARY KEY,
    environment TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    logged_at TIMESTAMPTZ NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    attributes JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX run_logs_run_id ON run_logs (run_id, id);
