//! Turns a request body into a [`WarriorDraft`], or says precisely what is wrong.
//!
//! The contract separates two kinds of failure: a body that is not a JSON
//! object or has a field of the wrong JSON type is *malformed* (400); a
//! well-formed body with unacceptable values is *invalid* (422). Every bad
//! field is reported, not just the first, so a client can fix all at once.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::warrior::{DateOfBirth, FightSkill, FightSkills, WarriorDraft, WarriorName, MAX_SKILLS, TOO_MANY_SKILLS};

/// Field name (or `field[index]`) to a human-readable message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Why a body was refused; the variant decides the HTTP status.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InputError {
    /// Not JSON, not an object, or a field of the wrong JSON type (400).
    #[error("malformed request body: {detail}")]
    Malformed { detail: String, errors: FieldErrors },
    /// Well-formed, but some values break the rules (422).
    #[error("invalid warrior")]
    Invalid { errors: FieldErrors },
}

/// Parses and validates a create/replace body. `today` bounds the date of birth.
pub fn parse_warrior(body: &[u8], today: NaiveDate) -> Result<WarriorDraft, InputError> {
    // Problems with the body as a whole name `body` in `errors`, as field
    // problems name their field.
    let whole_body = |detail: String| {
        let mut errors = FieldErrors::default();
        errors.add("body", detail.clone());
        InputError::Malformed { detail, errors }
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| whole_body(format!("body is not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(whole_body("body must be a JSON object".to_owned()));
    };
    Checker::default().check(&object, today)
}

/// Collects type errors (400) and value errors (422) separately while it walks
/// the fields, so one pass reports everything.
#[derive(Default)]
struct Checker {
    type_errors: FieldErrors,
    value_errors: FieldErrors,
}

impl Checker {
    fn check(mut self, object: &Map<String, Value>, today: NaiveDate) -> Result<WarriorDraft, InputError> {
        let name = self
            .required_string(object, "name")
            .and_then(|raw| self.value(WarriorName::parse(raw), "name"));
        let dob = self
            .required_string(object, "dob")
            .and_then(|raw| self.value(DateOfBirth::parse(raw, today), "dob"));
        let fight_skills = self.fight_skills(object);

        if !self.type_errors.is_empty() {
            return Err(InputError::Malformed {
                detail: "a field has the wrong JSON type".to_owned(),
                errors: self.type_errors,
            });
        }
        match (name, dob, fight_skills) {
            (Some(name), Some(dob), Some(fight_skills)) if self.value_errors.is_empty() => Ok(WarriorDraft {
                name,
                dob,
                fight_skills,
            }),
            _ => Err(InputError::Invalid {
                errors: self.value_errors,
            }),
        }
    }

    fn required_string<'a>(&mut self, object: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
        match object.get(field) {
            None | Some(Value::Null) => {
                self.value_errors.add(field, "is required");
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.type_errors
                    .add(field, format!("must be a string, not {}", json_type(other)));
                None
            }
        }
    }

    fn value<T>(&mut self, result: Result<T, &'static str>, field: &str) -> Option<T> {
        result.map_err(|message| self.value_errors.add(field, message)).ok()
    }

    /// `fight_skills` (or its alias `fightSkills`): absent or null means none.
    fn fight_skills(&mut self, object: &Map<String, Value>) -> Option<FightSkills> {
        const FIELD: &str = "fight_skills";
        let raw = match (object.get(FIELD), object.get("fightSkills")) {
            (Some(skills), Some(alias)) => {
                // A wrong type is reported whatever else is wrong.
                for (field, value) in [(FIELD, skills), ("fightSkills", alias)] {
                    if !matches!(value, Value::Null | Value::Array(_)) {
                        self.type_errors
                            .add(field, format!("must be an array of strings, not {}", json_type(value)));
                    }
                }
                self.value_errors
                    .add(FIELD, "give fight_skills or its alias fightSkills, not both");
                return None;
            }
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => return Some(FightSkills::default()),
        };
        let items = match raw {
            Value::Null => return Some(FightSkills::default()),
            Value::Array(items) => items,
            other => {
                self.type_errors
                    .add(FIELD, format!("must be an array of strings, not {}", json_type(other)));
                return None;
            }
        };
        let mut skills = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            match item {
                Value::String(s) => {
                    if let Some(skill) = self.value(FightSkill::parse(s), &field) {
                        skills.push(skill);
                    }
                }
                other => self
                    .type_errors
                    .add(field, format!("must be a string, not {}", json_type(other))),
            }
        }
        if skills.len() != items.len() {
            // Every bad field is reported: the count too, not only the bad items.
            if items.len() > MAX_SKILLS {
                self.value_errors.add(FIELD, TOO_MANY_SKILLS);
            }
            return None;
        }
        self.value(FightSkills::new(skills), FIELD)
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).expect("valid date")
    }

    fn parse(body: &str) -> Result<WarriorDraft, InputError> {
        parse_warrior(body.as_bytes(), today())
    }

    /// The field names that made a body malformed (400).
    fn malformed(body: &str) -> Vec<String> {
        match parse(body) {
            Err(InputError::Malformed { errors, .. }) => errors.fields().map(str::to_owned).collect(),
            other => panic!("expected 400 for {body}, got {other:?}"),
        }
    }

    /// The field names that made a body invalid (422).
    fn invalid(body: &str) -> Vec<String> {
        match parse(body) {
            Err(InputError::Invalid { errors }) => errors.fields().map(str::to_owned).collect(),
            other => panic!("expected 422 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_contract_example() {
        let draft = parse(r#"{"name":"Musashi","dob":"1584-03-12","fight_skills":["Katana"]}"#).expect("valid");
        assert_eq!(draft.name.as_str(), "Musashi");
        assert_eq!(draft.dob.date().to_string(), "1584-03-12");
        assert_eq!(draft.fight_skills.to_strings(), vec!["Katana"]);
    }

    #[test]
    fn accepts_the_camel_case_alias() {
        let draft = parse(r#"{"name":"A","dob":"2000-01-01","fightSkills":["Bo"]}"#).expect("valid");
        assert_eq!(draft.fight_skills.to_strings(), vec!["Bo"]);
    }

    #[test]
    fn absent_or_null_skills_mean_none() {
        for body in [
            r#"{"name":"A","dob":"2000-01-01"}"#,
            r#"{"name":"A","dob":"2000-01-01","fight_skills":null}"#,
            r#"{"name":"A","dob":"2000-01-01","fight_skills":[]}"#,
        ] {
            assert_eq!(parse(body).expect(body).fight_skills.to_strings(), Vec::<String>::new());
        }
    }

    #[test]
    fn ignores_unknown_fields() {
        assert!(parse(r#"{"name":"A","dob":"2000-01-01","rank":"shogun"}"#).is_ok());
    }

    #[test]
    fn accepts_boundary_lengths() {
        let body = serde_json::json!({
            "name": "n".repeat(100),
            "dob": "2000-02-29",
            "fight_skills": vec!["s".repeat(50); 100],
        });
        assert!(parse(&body.to_string()).is_ok());
    }

    #[test]
    fn not_json_is_malformed() {
        assert_eq!(malformed("{not json"), vec!["body"]);
        assert_eq!(malformed(""), vec!["body"]);
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let result = parse_warrior(b"{\"name\":\"\xff\xfe\",\"dob\":\"2000-01-01\"}", today());
        assert!(matches!(result, Err(InputError::Malformed { .. })), "{result:?}");
    }

    #[test]
    fn deeply_nested_json_is_malformed() {
        let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(malformed(&body), vec!["body"]);
    }

    #[test]
    fn non_objects_are_malformed() {
        for body in ["[]", "\"warrior\"", "42", "null", "true"] {
            assert_eq!(malformed(body), vec!["body"], "{body}");
        }
    }

    #[test]
    fn wrong_json_types_are_malformed() {
        assert_eq!(malformed(r#"{"name":"A","dob":10}"#), vec!["dob"]);
        assert_eq!(malformed(r#"{"name":7,"dob":"2000-01-01"}"#), vec!["name"]);
        assert_eq!(
            malformed(r#"{"name":"A","dob":"2000-01-01","fight_skills":"string"}"#),
            vec!["fight_skills"]
        );
        assert_eq!(
            malformed(r#"{"name":"A","dob":"2000-01-01","fight_skills":1}"#),
            vec!["fight_skills"]
        );
        assert_eq!(
            malformed(r#"{"name":"A","dob":"2000-01-01","fight_skills":["ok",3]}"#),
            vec!["fight_skills[1]"]
        );
        assert_eq!(
            malformed(r#"{"name":"A","dob":"2000-01-01","fight_skills":{"a":1}}"#),
            vec!["fight_skills"]
        );
    }

    #[test]
    fn type_errors_win_over_value_errors() {
        // A wrong type anywhere makes the body malformed, even with a bad value elsewhere.
        assert_eq!(malformed(r#"{"name":"","dob":10}"#), vec!["dob"]);
    }

    #[test]
    fn missing_or_null_required_fields_are_invalid() {
        assert_eq!(invalid("{}"), vec!["dob", "name"]);
        assert_eq!(invalid(r#"{"name":null,"dob":"2000-01-01"}"#), vec!["name"]);
        assert_eq!(invalid(r#"{"name":"A","dob":null}"#), vec!["dob"]);
    }

    #[test]
    fn bad_names_are_invalid() {
        assert_eq!(invalid(r#"{"name":"","dob":"2000-01-01"}"#), vec!["name"]);
        assert_eq!(invalid(r#"{"name":"   ","dob":"2000-01-01"}"#), vec!["name"]);
        let long = serde_json::json!({"name": "x".repeat(101), "dob": "2000-01-01"});
        assert_eq!(invalid(&long.to_string()), vec!["name"]);
        let challenge = serde_json::json!({"name": "x".repeat(120), "dob": "2000-01-01"});
        assert_eq!(invalid(&challenge.to_string()), vec!["name"]);
    }

    #[test]
    fn bad_dates_are_invalid() {
        for dob in [
            "12-12-2000",
            "2000-13-01",
            "2000-02-30",
            "1900-02-29",
            "?!?!?",
            "",
            "2999-01-01",
        ] {
            let body = serde_json::json!({"name": "A", "dob": dob});
            assert_eq!(invalid(&body.to_string()), vec!["dob"], "{dob}");
        }
    }

    #[test]
    fn bad_skills_are_invalid() {
        let blank = r#"{"name":"A","dob":"2000-01-01","fight_skills":["Bo"," "]}"#;
        assert_eq!(invalid(blank), vec!["fight_skills[1]"]);
        let long = serde_json::json!({"name": "A", "dob": "2000-01-01", "fight_skills": ["x".repeat(51)]});
        assert_eq!(invalid(&long.to_string()), vec!["fight_skills[0]"]);
        let forty_digits = serde_json::json!({"name": "A", "dob": "2000-01-01", "fight_skills": ["1".repeat(40)]});
        assert!(
            parse(&forty_digits.to_string()).is_ok(),
            "40 characters is within the limit"
        );
        let too_many = serde_json::json!({"name": "A", "dob": "2000-01-01", "fight_skills": vec!["Bo"; 101]});
        assert_eq!(invalid(&too_many.to_string()), vec!["fight_skills"]);
    }

    #[test]
    fn both_spellings_at_once_are_invalid() {
        let body = r#"{"name":"A","dob":"2000-01-01","fight_skills":[],"fightSkills":[]}"#;
        assert_eq!(invalid(body), vec!["fight_skills"]);
    }

    #[test]
    fn both_spellings_with_a_wrong_type_are_malformed() {
        let body = r#"{"name":"x","dob":"2000-01-01","fight_skills":1,"fightSkills":["b"]}"#;
        assert_eq!(malformed(body), vec!["fight_skills"]);
    }

    #[test]
    fn too_many_skills_are_reported_beside_a_bad_one() {
        let mut skills = vec!["Bo"; 101];
        skills[0] = "";
        let body = serde_json::json!({"name": "A", "dob": "2000-01-01", "fight_skills": skills});
        assert_eq!(invalid(&body.to_string()), vec!["fight_skills", "fight_skills[0]"]);
    }

    #[test]
    fn reports_every_bad_field() {
        let body = serde_json::json!({"name": "", "dob": "2000-02-30", "fight_skills": [""]});
        assert_eq!(invalid(&body.to_string()), vec!["dob", "fight_skills[0]", "name"]);
    }
}
