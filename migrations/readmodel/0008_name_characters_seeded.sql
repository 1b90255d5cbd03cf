-- Lower-case ASCII letters and the space are in name_characters for good,
-- so the search indexer needs to split only names holding anything else
-- (splitting every name into characters was a fifth of its statement's
-- time). A character listed that no name has only costs a scan.
INSERT INTO name_characters
SELECT chr(c) FROM generate_series(ascii('a'), ascii('z')) AS c
UNION ALL SELECT ' '
ON CONFLICT DO NOTHING;
