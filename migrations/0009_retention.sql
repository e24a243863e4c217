-- Retention deletes batches once their runs are gone, oldest first.
CREATE INDEX batches_created ON batches (created_at);
