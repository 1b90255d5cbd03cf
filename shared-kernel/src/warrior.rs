//! Value objects of a warrior. Each constructor is the single place its rule
//! lives, so an invalid value cannot be built anywhere else.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest accepted name, in characters (not bytes).
pub const MAX_NAME_CHARS: usize = 100;
/// Longest accepted fight skill, in characters.
pub const MAX_SKILL_CHARS: usize = 50;
/// Most fight skills one warrior may list.
pub const MAX_SKILLS: usize = 100;
/// What a list over [`MAX_SKILLS`] is told.
pub const TOO_MANY_SKILLS: &str = "must list at most 100 skills";

/// The one character no stored text may hold: PostgreSQL refuses NUL in
/// `text` and in `jsonb` strings, so a name or skill with one could never be
/// written; it is an invalid value (422), not a server failure.
const NUL: char = '\0';

/// Whether `text` holds a character that shows: not whitespace, not a
/// control character, not one that renders as nothing. A name of zero-width
/// spaces is as blank as one of spaces.
fn shows_something(text: &str) -> bool {
    text.chars()
        .any(|c| !c.is_whitespace() && !c.is_control() && !is_default_ignorable(c))
}

/// Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt,
/// stable since Unicode 6.3): zero-width spaces and joiners, direction marks,
/// variation selectors, the byte-order mark, tags and the like.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// A name with at least one non-blank character and at most 100 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WarriorName(String);

impl WarriorName {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if !shows_something(raw) {
            return Err("must contain a non-blank character");
        }
        if raw.chars().count() > MAX_NAME_CHARS {
            return Err("must be at most 100 characters");
        }
        if raw.contains(NUL) {
            return Err("must not contain a NUL character");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WarriorName {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<WarriorName> for String {
    fn from(value: WarriorName) -> Self {
        value.0
    }
}

/// A real calendar date written `YYYY-MM-DD`, not after "today".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateOfBirth(NaiveDate);

impl DateOfBirth {
    /// Accepts only the strict ten-character form, so `"12-12-2000"` or
    /// `"2000-1-1"` are rejected rather than guessed at.
    pub fn parse(raw: &str, today: NaiveDate) -> Result<Self, &'static str> {
        let bytes = raw.as_bytes();
        let shape_ok = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !shape_ok {
            return Err("must be a date written YYYY-MM-DD");
        }
        let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| "must be a real calendar date")?;
        if date > today {
            return Err("must not be in the future");
        }
        Ok(Self(date))
    }

    pub fn date(&self) -> NaiveDate {
        self.0
    }
}

/// One non-blank skill of at most 50 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FightSkill(String);

impl FightSkill {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if !shows_something(raw) {
            return Err("must contain a non-blank character");
        }
        if raw.chars().count() > MAX_SKILL_CHARS {
            return Err("must be at most 50 characters");
        }
        if raw.contains(NUL) {
            return Err("must not contain a NUL character");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FightSkill {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<FightSkill> for String {
    fn from(value: FightSkill) -> Self {
        value.0
    }
}

/// Up to 100 skills; duplicates are allowed, order is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FightSkills(Vec<FightSkill>);

impl FightSkills {
    pub fn new(skills: Vec<FightSkill>) -> Result<Self, &'static str> {
        if skills.len() > MAX_SKILLS {
            return Err(TOO_MANY_SKILLS);
        }
        Ok(Self(skills))
    }

    pub fn iter(&self) -> impl Iterator<Item = &FightSkill> {
        self.0.iter()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| s.0.clone()).collect()
    }
}

/// A validated create or replace command: everything but identity and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarriorDraft {
    pub name: WarriorName,
    pub dob: DateOfBirth,
    pub fight_skills: FightSkills,
}

/// The warrior resource as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(example = json!({
        "id": "6f1c0c3e-2b8a-4d5e-9f4b-0a1b2c3d4e5f",
        "name": "Musashi",
        "dob": "1584-03-12",
        "fight_skills": ["Katana"],
        "version": 1
    }))
)]
pub struct Warrior {
    pub id: Uuid,
    pub name: String,
    pub dob: NaiveDate,
    pub fight_skills: Vec<String>,
    /// Number of events in the warrior's history; also sent as the `ETag`.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: i64,
}

impl Warrior {
    pub fn from_draft(id: Uuid, version: i64, draft: &WarriorDraft) -> Self {
        Self {
            id,
            name: draft.name.as_str().to_owned(),
            dob: draft.dob.date(),
            fight_skills: draft.fight_skills.to_strings(),
            version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_skills_of_invisible_characters_are_blank() {
        for blank in [
            "\u{200b}",
            "\u{feff}\u{200b} ",
            "\u{2060}\u{200d}",
            "\u{1}\u{7f}",
            " \u{3164} ",
            "\u{e0041}",
        ] {
            assert!(WarriorName::parse(blank).is_err(), "name {blank:?}");
            assert!(FightSkill::parse(blank).is_err(), "skill {blank:?}");
        }
        for shown in ["a\u{200b}", "\u{200b}ø", "李", "\u{1f355}", "-"] {
            assert!(WarriorName::parse(shown).is_ok(), "name {shown:?}");
            assert!(FightSkill::parse(shown).is_ok(), "skill {shown:?}");
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).expect("valid date")
    }

    #[test]
    fn name_counts_characters_not_bytes() {
        let hundred_wide = "é".repeat(100);
        assert!(WarriorName::parse(&hundred_wide).is_ok());
        assert!(WarriorName::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn nul_characters_are_refused() {
        assert_eq!(WarriorName::parse("a\0b"), Err("must not contain a NUL character"));
        assert_eq!(FightSkill::parse("x\0"), Err("must not contain a NUL character"));
    }

    #[test]
    fn dob_accepts_today_and_rejects_tomorrow() {
        assert!(DateOfBirth::parse("2026-11-25", today()).is_ok());
        assert_eq!(
            DateOfBirth::parse("2026-11-26", today()),
            Err("must not be in the future")
        );
    }

    #[test]
    fn dob_rejects_loose_shapes() {
        for raw in ["2000-1-01", " 2000-01-01", "2000/01/01", "20000-01-01", "+200-01-01"] {
            assert!(DateOfBirth::parse(raw, today()).is_err(), "{raw}");
        }
    }

    #[test]
    fn skills_allow_duplicates_and_keep_order() {
        let skills = FightSkills::new(vec![
            FightSkill::parse("Katana").expect("valid"),
            FightSkill::parse("Katana").expect("valid"),
        ])
        .expect("two skills");
        assert_eq!(skills.to_strings(), vec!["Katana", "Katana"]);
    }
}
