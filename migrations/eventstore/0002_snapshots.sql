-- Folded state of an aggregate at some version, so loading a long stream
-- reads the snapshot plus the events after it instead of every event.
-- A cache only: deleting every row here changes no behaviour, only speed.
CREATE TABLE snapshots (
    aggregate_id UUID        PRIMARY KEY,
    version      BIGINT      NOT NULL,
    state        JSONB       NOT NULL,
    taken_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
