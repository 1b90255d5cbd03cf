-- When the projector wrote the row: with updated_at (when the event occurred
-- in the event store) it gives the projection lag of every row.
ALTER TABLE warriors ADD COLUMN projected_at TIMESTAMPTZ;
