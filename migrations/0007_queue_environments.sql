-- Queues belong to an environment: a dev key can neither change a prod
-- queue's limit nor take its slots. Limits that were set apply to both
-- environments from now on, as they did. A limit the operator declares
-- (KILN_TASKS_FILE, Supermark's plan queues) is marked `declared`, and a
-- trigger's `queue.concurrencyLimit` no longer changes it.
ALTER TABLE queues DROP CONSTRAINT queues_pkey;
ALTER TABLE queues ADD COLUMN environment text NOT NULL DEFAULT 'prod'
    CHECK (environment IN ('dev', 'prod'));
ALTER TABLE queues ADD COLUMN declared boolean NOT NULL DEFAULT false;
INSERT INTO queues (environment, name, concurrency_limit, declared, updated_at)
    SELECT 'dev', name, concurrency_limit, declared, updated_at FROM queues;
ALTER TABLE queues ADD PRIMARY KEY (environment, name);
ALTER TABLE queues ALTER COLUMN environment DROP DEFAULT;
-- A limit of 0 held every run of its queue forever; triggers now need at
-- least 1, and what an earlier trigger set to 0 is forgotten.
UPDATE queues SET concurrency_limit = NULL WHERE concurrency_limit = 0 AND NOT declared;
