-- The run change feed (crates/kiln-store/src/changes.rs): while a kiln
-- process has live realtime subscribers, each statement that writes runs
-- sends, per environment it touched, one notification naming the runs it
-- wrote, so subscriptions read again only when one of theirs changed.
--
-- Per statement, not per row: a batch of a thousand triggers costs one
-- notification, not a thousand. Only while someone listens: a NOTIFY
-- serializes the commits that send one (measured: half the commits per
-- second of plain updates), so with no process registered here, the
-- trigger costs a look at this small table and nothing more.
--
-- A notification is JSON: {"e": environment, "runs": [[id, tags], ...]},
-- the tags sent so that a process can tell which tag subscribers to wake
-- without a query. A payload is limited to 8000 bytes; past 7000 it says
-- {"e": environment, "all": true} (every run of the environment) instead.
CREATE TABLE run_change_listeners (
    process_id TEXT PRIMARY KEY,
    -- Refreshed every few seconds while the process has subscribers; a
    -- row older than 30 s is a process gone without a word.
    seen_at TIMESTAMPTZ NOT NULL
);

CREATE FUNCTION kiln_notify_run_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changes record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM run_change_listeners WHERE seen_at > now() - interval '30 seconds') THEN
        RETURN NULL;
    END IF;
    FOR changes IN
        SELECT environment,
               json_build_object('e', environment, 'runs', json_agg(json_build_array(id, tags)))::text AS body
        FROM changed GROUP BY environment
    LOOP
        PERFORM pg_notify('kiln_run_changes', CASE
            WHEN octet_length(changes.body) > 7000 THEN json_build_object('e', changes.environment, 'all', true)::text
            ELSE changes.body END);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_inserted_notify AFTER INSERT ON runs
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_notify_run_changes();
CREATE TRIGGER runs_updated_notify AFTER UPDATE ON runs
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_notify_run_changes();
