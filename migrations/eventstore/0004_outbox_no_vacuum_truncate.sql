-- The relay vacuums the outbox every 2,000 deleted rows. By default VACUUM
-- then tries to cut the table's emptied tail pages off, which needs an
-- exclusive lock that concurrent appends always hold against it: VACUUM
-- retried every 50 ms, so each vacuum stalled the relay for 50 ms (the
-- projection lag's p99 at 1,000 creates/s). The pages are reused anyway.
ALTER TABLE outbox SET (vacuum_truncate = false);
