-- kiln's run history. Postgres is the source of truth for every run: the
-- Redis queue only carries run ids to workers, and anything it loses is
-- found again here.

-- Secret keys, encrypted under the server secret (KILN_SECRET) rather than
-- only hashed: SDKs sign public access tokens with the key itself, so kiln
-- must be able to recover it to verify them. `lookup_hash` is a keyed hash
-- of the key, so finding a key never needs it in the clear.
CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    environment   text NOT NULL CHECK (environment IN ('dev', 'prod')),
    lookup_hash   bytea NOT NULL UNIQUE,
    nonce         bytea NOT NULL,
    encrypted_key bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- Concurrency limits per queue. A queue without a row (or with a NULL
-- limit) is limited only by worker capacity.
CREATE TABLE queues (
    name              text PRIMARY KEY,
    concurrency_limit integer CHECK (concurrency_limit >= 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id                         text PRIMARY KEY,          -- run_<time-ordered>, so ORDER BY id = by creation
    environment                text NOT NULL CHECK (environment IN ('dev', 'prod')),
    task_identifier            text NOT NULL,
    queue                      text NOT NULL,
    concurrency_key            text,
    status                     text NOT NULL CHECK (status IN (
        'DELAYED', 'QUEUED', 'EXECUTING', 'COMPLETED', 'FAILED', 'CANCELED',
        'EXPIRED', 'TIMED_OUT', 'CRASHED', 'SYSTEM_FAILURE')),
    payload                    jsonb NOT NULL,
    payload_type               text NOT NULL,
    output                     jsonb,
    error                      jsonb,
    metadata                   jsonb,
    tags                       text[] NOT NULL DEFAULT '{}',
    idempotency_key            text,
    idempotency_key_expires_at timestamptz,
    max_attempts               integer NOT NULL CHECK (max_attempts >= 1),
    attempt_count              integer NOT NULL DEFAULT 0,
    max_duration_ms            bigint,
    ttl_ms                     bigint,
    -- An unstarted run past this instant ends EXPIRED.
    expires_at                 timestamptz,
    delay_until                timestamptz,
    -- When a DELAYED run, or a QUEUED run backing off, becomes ready: the
    -- end of its delay or back-off. NULL when nothing is pending.
    dispatch_at                timestamptz,
    -- When the run's id was last pushed to Redis. NULL for a ready run not
    -- in Redis (its queue's window was full, the push failed, Redis lost
    -- it): the scheduler pushes those as the window drains.
    enqueued_at                timestamptz,
    -- The executing worker's lease; a run whose lease lapses was lost with
    -- its worker and is run again (or ends CRASHED).
    lease_expires_at           timestamptz,
    worker_id                  text,
    replayed_from              text,
    parked                     boolean NOT NULL DEFAULT false,
    is_test                    boolean NOT NULL DEFAULT false,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    started_at                 timestamptz,
    completed_at               timestamptz
);

-- One live run per idempotency key, per environment and task.
CREATE UNIQUE INDEX runs_idempotency_key
    ON runs (environment, task_identifier, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing walks the primary key newest first (ids are time-ordered) and
-- filters by environment: a deployment has one or two, so a separate
-- (environment, id) index would cost every write for little gain.

-- Tags, one row per run and tag, written once when the run is recorded. A
-- tag filter reads this table; a GIN index on runs.tags would instead be
-- updated by every new version of the row (claim, outcome, …).
CREATE TABLE run_tags (
    tag    text NOT NULL,
    run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, run_id)
);
CREATE INDEX run_tags_run ON run_tags (run_id);

-- The scheduler's look-ups, each over a small partial index.
CREATE INDEX runs_dispatch_due ON runs (dispatch_at) WHERE dispatch_at IS NOT NULL;
CREATE INDEX runs_unstarted_expiry ON runs (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('QUEUED', 'DELAYED');
CREATE INDEX runs_leases ON runs (lease_expires_at) WHERE status = 'EXECUTING';
-- Concurrency limits count executing runs by queue and key; parked runs
-- wait for a slot in their queue.
CREATE INDEX runs_executing_by_queue ON runs (queue, concurrency_key) WHERE status = 'EXECUTING';
CREATE INDEX runs_parked ON runs (queue, concurrency_key, id) WHERE parked;
-- The backlog: ready runs not in Redis, oldest first per queue. Kept apart
-- from the next index so that topping up a queue reads only these rows.
CREATE INDEX runs_awaiting_push ON runs (queue, id)
    WHERE status = 'QUEUED' AND enqueued_at IS NULL AND dispatch_at IS NULL AND NOT parked;
-- Queued runs whose id was pushed, by time: those pushed long ago and never
-- claimed were lost on the way.
CREATE INDEX runs_pushed ON runs (queue, enqueued_at) WHERE status = 'QUEUED' AND enqueued_at IS NOT NULL;
