-- Every search scans GIN's whole pending list: with a 512 kB list that was
-- about 0.35 ms per search, more than the index lookup itself once searches
-- use a short piece of the term (see ReadModel::search). Measured on 230k
-- rows: 0.15 ms per search without the list. The projector pays instead, a
-- little per row and in set-based batches, with no flush stalls.
ALTER INDEX warriors_search_trgm SET (fastupdate = off);
SELECT gin_clean_pending_list('warriors_search_trgm'::regclass);
