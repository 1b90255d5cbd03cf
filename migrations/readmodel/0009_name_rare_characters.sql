-- Which names hold each character other than a lower-case ASCII letter or
-- the space (names are indexed lower-cased). A term with no trigram ("ø",
-- "x-", "!!!!") could only be answered by scanning rows until 50 names
-- held it; with a character few names have, that read every row (0.65-0.8 s
-- at 1.5M warriors, near the search timeout). Such a term now looks up the
-- names holding one of its rare characters. Kept by the search indexer with
-- the names, only for names holding such characters (none in most data);
-- rows are never removed: a renamed or deleted warrior's row only costs a
-- candidate the search rejects. Replaces name_characters, whose only use
-- was telling that no name holds a character (no row here says the same);
-- that table stays for instances of the previous release during a rolling
-- deploy.
CREATE TABLE name_rare_characters (
    ch TEXT NOT NULL,
    id UUID NOT NULL,
    PRIMARY KEY (ch, id)
);

INSERT INTO name_rare_characters
SELECT DISTINCT c, id FROM warrior_names, string_to_table(search_text, NULL) AS c
WHERE search_text ~ '[^a-z ]' AND c !~ '[a-z ]';
