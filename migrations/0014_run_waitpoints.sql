-- RUN waitpoints: a run waits for a child it triggered with
-- `resumeParentOnCompletion` (`triggerAndWait`, `batchTriggerAndWait` on
-- SDK 4.x). The process running the parent asks for its waitpoints whose
-- child has ended and goes on with the child's output or error. A batch's
-- children carry the batch and their index in it, which is how the SDK
-- matches them to its waits. A two-phase batch (SDK 4.8) learns its
-- parent when it is created and its items later, so the batch keeps it.
ALTER TABLE waitpoints
    ALTER COLUMN complete_after DROP NOT NULL,
    ADD COLUMN child_run_id TEXT,
    ADD COLUMN batch_id TEXT,
    ADD COLUMN batch_index INTEGER;
CREATE UNIQUE INDEX waitpoints_child_run ON waitpoints (run_id, child_run_id) WHERE child_run_id IS NOT NULL;
ALTER TABLE batches
    ADD COLUMN parent_run_id TEXT,
    ADD COLUMN resume_parent BOOLEAN NOT NULL DEFAULT false;
