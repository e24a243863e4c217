-- Task hosts: processes outside kiln (`kiln task-host`) that run an app's
-- own Trigger.dev task files. A host registers the tasks it found; kiln
-- then accepts triggers of those ids in the host's environment, and its
-- own workers leave the host's queues alone. The latest registration of a
-- task id in an environment serves it. Runs are claimed by hosts through
-- the worker API with a lease, as kiln's own workers claim them.
CREATE TABLE task_hosts (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    hostname TEXT NOT NULL,
    pid INTEGER,
    slots INTEGER NOT NULL,
    sdk_version TEXT NOT NULL,
    content_hash TEXT,
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE host_tasks (
    environment TEXT NOT NULL,
    task_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    max_attempts INTEGER NOT NULL,
    max_duration_ms BIGINT,
    file_path TEXT NOT NULL,
    export_name TEXT,
    machine TEXT,
    host_id TEXT NOT NULL REFERENCES task_hosts (id) ON DELETE CASCADE,
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, task_id)
);
CREATE INDEX host_tasks_host_id ON host_tasks (host_id);
