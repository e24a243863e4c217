-- Batches of runs triggered together (`batch.trigger` in the SDK). A batch
-- lists its runs in item order; a run that an item's idempotency key
-- matched belongs to an earlier trigger and is listed here too.
CREATE TABLE batches (
    id                         text PRIMARY KEY,
    environment                text NOT NULL CHECK (environment IN ('dev', 'prod')),
    run_ids                    text[] NOT NULL,
    idempotency_key            text,
    idempotency_key_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now()
);

-- A batch-level idempotency key (SDK 3.x's `idempotency-key` header) finds
-- the batch it made.
CREATE UNIQUE INDEX batches_idempotency ON batches (environment, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
