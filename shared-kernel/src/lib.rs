//! The warrior domain shared by both services: what a warrior is, which
//! inputs are acceptable, and the events that record its life.
//!
//! Nothing here performs I/O; "today" is passed in so validation stays pure.

pub mod aggregate;
pub mod events;
pub mod idempotency;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod validation;
pub mod warrior;

pub use aggregate::WarriorAggregate;
pub use events::{EventEnvelope, UnknownEventType, WarriorEvent, WarriorState, SCHEMA_VERSION};
pub use idempotency::IdempotencyKey;
pub use validation::{parse_warrior, FieldErrors, InputError};
pub use warrior::{DateOfBirth, FightSkill, FightSkills, Warrior, WarriorDraft, WarriorName};
