-- Every character that occurs in some indexed name (lower-cased), kept by
-- the search indexer in the statement that indexes the names. A term with
-- no trigram (under three letters or digits in a row, e.g. "û" or "!!!!")
-- can only be answered by scanning rows, and a scan for a term that matches
-- nothing reads the whole table (200 ms at 560k rows, past the search
-- timeout under load). A term holding a character no name has cannot match
-- a name, so such a search skips the scan. Characters are never removed:
-- a superset only costs a scan, never a missed match.
CREATE TABLE name_characters (
    ch TEXT PRIMARY KEY
);

INSERT INTO name_characters
SELECT DISTINCT c FROM warrior_names, string_to_table(search_text, NULL) AS c;
