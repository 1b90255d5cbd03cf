-- The event store: one row per event, the only source of truth.
CREATE TABLE events (
    -- Global order of insertion. NOT a safe read cursor on its own: positions
    -- are taken at insert, and transactions commit out of order. Publishing
    -- goes through the outbox below instead.
    position       BIGSERIAL   PRIMARY KEY,
    event_id       UUID        NOT NULL UNIQUE,
    aggregate_id   UUID        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 1),
    event_type     TEXT        NOT NULL,
    schema_version INT         NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    data           JSONB       NOT NULL,
    metadata       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- Optimistic concurrency is enforced here, by the database, not by a
    -- read-then-write check in the application.
    CONSTRAINT events_stream_version UNIQUE (aggregate_id, version)
);

-- Events committed but not yet on Kafka. Written in the same statement as the
-- event; the relay deletes a row once Kafka acknowledged it. A transaction
-- that commits late is simply picked up on the relay's next round, so no
-- event can be skipped.
CREATE TABLE outbox (
    position BIGINT PRIMARY KEY REFERENCES events (position)
);

-- Wakes relays in other processes as soon as new events commit
-- (NOTIFY is delivered at commit, once per statement).
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
