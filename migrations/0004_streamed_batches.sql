-- SDK 4.8's two-phase batches: the batch is created with the number of
-- items it expects, then items arrive (possibly again, on a retry) with
-- their index. run_ids[index + 1] holds each item's run once recorded, so a
-- resent item is recognised; the batch is sealed when every slot is set.
ALTER TABLE batches ADD COLUMN expected_count integer;
