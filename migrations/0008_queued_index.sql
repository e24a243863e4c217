-- `/metrics` reads each queue's backlog and its oldest run from here: the
-- rows of QUEUED runs only, so the scrape costs what the backlog holds,
-- not the history.
CREATE INDEX runs_queued ON runs (queue, created_at) WHERE status = 'QUEUED';
