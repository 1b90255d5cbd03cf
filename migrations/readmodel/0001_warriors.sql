-- The read model, shaped for the queries the API serves.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE warriors (
    id           UUID        PRIMARY KEY,
    -- Highest event version applied; older or repeated events are ignored,
    -- which makes replays from Kafka harmless.
    version      BIGINT      NOT NULL,
    deleted      BOOLEAN     NOT NULL DEFAULT false,
    name         TEXT,
    dob          DATE,
    fight_skills TEXT[]      NOT NULL DEFAULT '{}',
    -- lower(name) and lower(skills), separated by a unit separator that a
    -- search term cannot contain, so a term never matches across fields.
    search_text  TEXT        NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX warriors_search_trgm ON warriors USING gin (search_text gin_trgm_ops) WHERE NOT deleted;
CREATE INDEX warriors_recent ON warriors (created_at DESC) WHERE NOT deleted;

-- Live-warrior count in O(1), kept in the same transaction as the rows.
CREATE TABLE warrior_count (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    live      BIGINT  NOT NULL
);
INSERT INTO warrior_count (live) VALUES (0);

-- Next Kafka offset to read per partition, written in the same transaction as
-- the rows it produced: the projector resumes from here after a crash or a
-- rebalance, so nothing is skipped or applied twice.
CREATE TABLE projection_offsets (
    topic       TEXT   NOT NULL,
    partition   INT    NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);
