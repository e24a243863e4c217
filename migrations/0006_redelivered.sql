-- A worker starts a run before recording EXECUTING and records it only if
-- the run is still going a moment later (see docs/architecture.md), so a
-- worker that dies in that moment leaves no attempt behind. The stale-push
-- sweep, which finds such runs, marks them: a redelivered run is recorded
-- EXECUTING before it starts, so a run that keeps killing its worker still
-- uses up its attempts and ends CRASHED.
ALTER TABLE runs ADD COLUMN redelivered boolean NOT NULL DEFAULT false;
