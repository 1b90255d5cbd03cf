-- Trigram-indexing every skill of every row made each projected row update
-- a few hundred index entries (13 skills on average in the load profile),
-- and the projector fell behind under load. Skills come from a small
-- vocabulary, so: trigrams for names only; each row's lower-cased skills in
-- an array with a plain GIN index; and the distinct skills in a tiny table
-- with its own trigram index. A search finds the matching skills first,
-- then the rows holding any of them.
CREATE TABLE skill_names (
    name_lower TEXT PRIMARY KEY
);
CREATE INDEX skill_names_trgm ON skill_names USING gin (name_lower gin_trgm_ops);

ALTER TABLE warriors ADD COLUMN skills_lower TEXT[] NOT NULL DEFAULT '{}';
UPDATE warriors
   SET skills_lower = ARRAY(SELECT DISTINCT lower(s) FROM unnest(fight_skills) AS s),
       search_text = coalesce(lower(name), '');
INSERT INTO skill_names SELECT DISTINCT unnest(skills_lower) FROM warriors ON CONFLICT DO NOTHING;

CREATE INDEX warriors_skills ON warriors USING gin (skills_lower) WITH (gin_pending_list_limit = 512) WHERE NOT deleted;
-- Names alone are cheap enough for GIN's fast update, with a small pending
-- list so that searches never scan much of it.
ALTER INDEX warriors_search_trgm SET (fastupdate = on, gin_pending_list_limit = 512);
