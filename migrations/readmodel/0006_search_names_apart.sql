-- Names are indexed for search in a table of their own, filled in bulk by a
-- background indexer, instead of in the projector's transaction: the trigram
-- index cost ~0.3 ms of database CPU per projected row, nine tenths of a
-- projected row's cost, and under a burst of creates it made the projection
-- (and with it every read-your-writes lookup) fall seconds behind. Lookups
-- need only `warriors`; search may trail the projection by a moment.
CREATE TABLE warrior_names (
    id UUID PRIMARY KEY,
    search_text TEXT NOT NULL
);
-- Fast update plus a cleanup after each indexer batch: entries are merged
-- into the index in bulk (half the cost of inserting them one by one), and
-- searches never scan more than one batch of pending entries.
CREATE INDEX warrior_names_trgm ON warrior_names USING gin (search_text gin_trgm_ops)
    WITH (fastupdate = on, gin_pending_list_limit = 4096);

-- Warriors whose name must be (re)indexed: written by the projector in the
-- same statement as the rows, consumed by the indexer (so a crash between
-- the two loses nothing).
CREATE TABLE search_queue (
    id UUID PRIMARY KEY
);

INSERT INTO warrior_names SELECT id, search_text FROM warriors WHERE NOT deleted;
DROP INDEX warriors_search_trgm;
