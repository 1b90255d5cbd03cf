-- With GIN's fast-update, inserts pile up in a pending list that every
-- search scans linearly and that some unlucky insert (the projector) must
-- flush, which stalled projection for seconds under steady writes. Without
-- it each insert updates the index directly: a little more work per row,
-- no stalls, and searches that stay fast.
ALTER INDEX warriors_search_trgm SET (fastupdate = off);
SELECT gin_clean_pending_list('warriors_search_trgm'::regclass);
