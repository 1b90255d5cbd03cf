//! The events that record a warrior's life, and the envelope they travel in.
//!
//! Created and Updated carry the warrior's full state, so a consumer can apply
//! the newest version it sees and ignore older ones: replays and duplicates
//! are harmless by construction.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use crate::warrior::WarriorDraft;

/// Schema version written with every new event.
///
/// * 1: the Java seed's shape, `fightSkills` in camelCase, `null` for none.
/// * 2: `fight_skills`, always an array.
pub const SCHEMA_VERSION: i32 = 2;

pub const WARRIOR_CREATED: &str = "WarriorCreated";
pub const WARRIOR_UPDATED: &str = "WarriorUpdated";
pub const WARRIOR_DELETED: &str = "WarriorDeleted";

/// The state a Created or Updated event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarriorState {
    pub name: String,
    pub dob: NaiveDate,
    pub fight_skills: Vec<String>,
}

impl From<&WarriorDraft> for WarriorState {
    fn from(draft: &WarriorDraft) -> Self {
        Self {
            name: draft.name.as_str().to_owned(),
            dob: draft.dob.date(),
            fight_skills: draft.fight_skills.to_strings(),
        }
    }
}

/// A domain event of the warrior aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarriorEvent {
    Created(WarriorState),
    Updated(WarriorState),
    Deleted,
}

/// An event type or payload this build cannot read.
#[derive(Debug, Error)]
pub enum UnknownEventType {
    #[error("unknown event type {0:?}")]
    Type(String),
    #[error("unsupported schema version {version} of {event_type}")]
    SchemaVersion { event_type: String, version: i32 },
    #[error("undecodable {event_type} payload: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

impl WarriorEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created(_) => WARRIOR_CREATED,
            Self::Updated(_) => WARRIOR_UPDATED,
            Self::Deleted => WARRIOR_DELETED,
        }
    }

    /// The JSON payload stored and published for this event.
    pub fn data(&self) -> Value {
        match self {
            Self::Created(state) | Self::Updated(state) => serde_json::to_value(state).unwrap_or(Value::Null),
            Self::Deleted => Value::Object(Default::default()),
        }
    }

    /// Reads a stored or published event. Older schema versions are upcast
    /// here, in one place, so every reader sees the current shape.
    pub fn decode(event_type: &str, schema_version: i32, data: &Value) -> Result<Self, UnknownEventType> {
        if !(1..=SCHEMA_VERSION).contains(&schema_version) {
            return Err(UnknownEventType::SchemaVersion {
                event_type: event_type.to_owned(),
                version: schema_version,
            });
        }
        let upcast = upcast(schema_version, data);
        let state = || {
            WarriorState::deserialize(&upcast).map_err(|source| UnknownEventType::Payload {
                event_type: event_type.to_owned(),
                source,
            })
        };
        match event_type {
            WARRIOR_CREATED => Ok(Self::Created(state()?)),
            WARRIOR_UPDATED => Ok(Self::Updated(state()?)),
            WARRIOR_DELETED => Ok(Self::Deleted),
            other => Err(UnknownEventType::Type(other.to_owned())),
        }
    }
}

/// Brings a payload of any known schema version to the current shape. Each
/// step handles one version, so adding version N+1 adds one step.
fn upcast(schema_version: i32, data: &Value) -> Value {
    let mut data = data.clone();
    if schema_version < 2 {
        if let Value::Object(fields) = &mut data {
            let skills = fields
                .remove("fightSkills")
                .or_else(|| fields.remove("fight_skills"))
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| Value::Array(Vec::new()));
            fields.insert("fight_skills".to_owned(), skills);
        }
    }
    data
}

/// An event as it is published on Kafka (see docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_id: Uuid,
    pub version: i64,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}

impl EventEnvelope {
    pub fn event(&self) -> Result<WarriorEvent, UnknownEventType> {
        WarriorEvent::decode(&self.event_type, self.schema_version, &self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> WarriorState {
        WarriorState {
            name: "Musashi".into(),
            dob: NaiveDate::from_ymd_opt(1584, 3, 12).expect("valid date"),
            fight_skills: vec!["Katana".into()],
        }
    }

    #[test]
    fn every_event_round_trips_through_its_payload() {
        for event in [
            WarriorEvent::Created(state()),
            WarriorEvent::Updated(state()),
            WarriorEvent::Deleted,
        ] {
            let decoded = WarriorEvent::decode(event.event_type(), SCHEMA_VERSION, &event.data()).expect("decodes");
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn schema_1_payloads_are_upcast() {
        let seed = serde_json::json!({"name": "Musashi", "dob": "1584-03-12", "fightSkills": ["Katana"]});
        assert_eq!(
            WarriorEvent::decode(WARRIOR_CREATED, 1, &seed).expect("decodes"),
            WarriorEvent::Created(state())
        );
        let none = serde_json::json!({"name": "Musashi", "dob": "1584-03-12", "fightSkills": null});
        let WarriorEvent::Updated(decoded) = WarriorEvent::decode(WARRIOR_UPDATED, 1, &none).expect("decodes") else {
            panic!("wrong variant");
        };
        assert!(decoded.fight_skills.is_empty());
    }

    #[test]
    fn unknown_types_and_future_schemas_are_refused() {
        let data = WarriorEvent::Created(state()).data();
        assert!(matches!(
            WarriorEvent::decode("WarriorPromoted", 1, &data),
            Err(UnknownEventType::Type(_))
        ));
        assert!(matches!(
            WarriorEvent::decode(WARRIOR_CREATED, SCHEMA_VERSION + 1, &data),
            Err(UnknownEventType::SchemaVersion { .. })
        ));
    }

    #[test]
    fn bad_payloads_are_refused() {
        let data = serde_json::json!({"name": 1});
        assert!(matches!(
            WarriorEvent::decode(WARRIOR_CREATED, 1, &data),
            Err(UnknownEventType::Payload { .. })
        ));
    }
}
