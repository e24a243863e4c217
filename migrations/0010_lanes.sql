-- Redis keeps one list per environment's queue (a lane), so the backlog
-- and the pushed runs are found per lane: the indexes lead with the
-- environment, and the loose scan over lanes skips through them.
DROP INDEX runs_awaiting_push;
CREATE INDEX runs_awaiting_push ON runs (environment, queue, id)
    WHERE status = 'QUEUED' AND enqueued_at IS NULL AND dispatch_at IS NULL AND NOT parked;
DROP INDEX runs_pushed;
CREATE INDEX runs_pushed ON runs (environment, queue, enqueued_at) WHERE status = 'QUEUED' AND enqueued_at IS NOT NULL;
