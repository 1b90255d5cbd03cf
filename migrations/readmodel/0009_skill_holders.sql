-- Skill search answers "any 50 live holders of these skills". The array GIN
-- index on warriors.skills_lower could only collect every holder first
-- (36 ms for a skill 69k warriors hold, every search of it), and it sat on
-- the projector's path. Holders now live in a table of their own, kept by
-- the search indexer beside the names (warrior_names.skills: the skills it
-- last wrote, so that it can remove the ones a warrior lost): an index scan
-- stops after the holders it needs, however many there are.
CREATE TABLE warrior_skills (
    skill TEXT NOT NULL,
    id UUID NOT NULL,
    PRIMARY KEY (skill, id)
);
ALTER TABLE warrior_names ADD COLUMN skills TEXT[] NOT NULL DEFAULT '{}';
DROP INDEX warriors_skills;
-- The indexer fills warrior_skills for every live warrior (their names are
-- unchanged and stay searchable meanwhile).
INSERT INTO search_queue SELECT id FROM warriors WHERE NOT deleted ON CONFLICT DO NOTHING;
