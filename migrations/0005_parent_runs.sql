-- A run triggered by another run's handler (a conversion chaining into its
-- page previews) names its parent. Children are found through the index;
-- a parent deleted first leaves its children standing (no foreign key:
-- runs are never deleted one by one).
ALTER TABLE runs ADD COLUMN parent_run_id text;
CREATE INDEX runs_parent_run_id ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
