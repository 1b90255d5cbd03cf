//! OpenAPI description of the create/replace body (feature `openapi`).
//!
//! The body is parsed by [`crate::parse_warrior`], not by serde, so its schema
//! is written here by hand from the same constants the validation uses. It is
//! a description only: nothing reads requests through it.

use std::borrow::Cow;

use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::warrior::{MAX_NAME_CHARS, MAX_SKILLS, MAX_SKILL_CHARS};

/// Body of `POST /warrior`, `PUT /warrior/{id}` and `POST /api/v1/commands/warriors`.
pub struct WarriorInput;

/// A string of 1 to `max` characters without NUL. "Non-blank" is left to the
/// description: JSON Schema's `\s` and Rust's notion of white space differ.
fn text(max: usize, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some("^[^\\u0000]*$"))
        .description(Some(description))
}

fn skills(description: &str) -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(text(
            MAX_SKILL_CHARS,
            &format!("A non-blank skill of at most {MAX_SKILL_CHARS} characters."),
        ))
        .max_items(Some(MAX_SKILLS))
        .description(Some(description))
}

impl utoipa::PartialSchema for WarriorInput {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A warrior to create, or the full replacement of one. A body that is not a JSON \
                 object, or has a field of the wrong JSON type, is a 400; a well-formed body with \
                 unacceptable values (a missing or null required field, a blank name, a date that \
                 is not real or in the future, ...) is a 422 listing every bad field. Unknown \
                 fields are ignored.",
            ))
            .property(
                "name",
                text(
                    MAX_NAME_CHARS,
                    &format!("At least one non-blank character, at most {MAX_NAME_CHARS} characters."),
                ),
            )
            .required("name")
            .property(
                "dob",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
                    .description(Some(
                        "Date of birth, `YYYY-MM-DD`: a real calendar date, not in the future.",
                    )),
            )
            .required("dob")
            .property(
                "fight_skills",
                skills(&format!(
                    "Optional (absent or null: none); at most {MAX_SKILLS} skills, duplicates allowed. \
                     Give this or its alias `fightSkills`, not both."
                )),
            )
            .property(
                "fightSkills",
                skills("Alias of `fight_skills` (the original API's spelling)."),
            )
            .examples([serde_json::json!({
                "name": "Musashi",
                "dob": "1584-03-12",
                "fight_skills": ["Katana"]
            })])
            .into()
    }
}

impl utoipa::ToSchema for WarriorInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WarriorInput")
    }
}
