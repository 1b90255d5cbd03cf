-- The outbox row is written by the same statement as its event, so the
-- foreign key can never catch anything; it only cost an index lookup and a
-- row lock per appended event.
ALTER TABLE outbox DROP CONSTRAINT outbox_position_fkey;
