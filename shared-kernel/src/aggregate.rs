//! The warrior aggregate: what the command side decides on, rebuilt by
//! folding the warrior's events in version order.

use serde::{Deserialize, Serialize};

use crate::events::{WarriorEvent, WarriorState};

/// A warrior's state after some prefix of its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarriorAggregate {
    /// Version of the last event folded in; 0 for a stream never written.
    pub version: i64,
    /// Current data; `None` before creation and after deletion.
    pub state: Option<WarriorState>,
    pub deleted: bool,
}

impl WarriorAggregate {
    /// Folds one event in. Events must come in version order.
    pub fn apply(&mut self, version: i64, event: &WarriorEvent) {
        self.version = version;
        match event {
            WarriorEvent::Created(state) | WarriorEvent::Updated(state) => self.state = Some(state.clone()),
            WarriorEvent::Deleted => {
                self.state = None;
                self.deleted = true;
            }
        }
    }

    /// Created and not deleted: the only state that accepts updates.
    pub fn is_live(&self) -> bool {
        self.state.is_some() && !self.deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn state(name: &str) -> WarriorState {
        WarriorState {
            name: name.into(),
            dob: NaiveDate::from_ymd_opt(1600, 1, 1).expect("valid date"),
            fight_skills: vec![],
        }
    }

    #[test]
    fn folding_follows_the_life_of_a_warrior() {
        let mut warrior = WarriorAggregate::default();
        assert!(!warrior.is_live());
        warrior.apply(1, &WarriorEvent::Created(state("A")));
        warrior.apply(2, &WarriorEvent::Updated(state("B")));
        assert!(warrior.is_live());
        assert_eq!(warrior.version, 2);
        assert_eq!(warrior.state, Some(state("B")));
        warrior.apply(3, &WarriorEvent::Deleted);
        assert!(!warrior.is_live());
        assert_eq!(warrior.version, 3);
    }

    #[test]
    fn a_snapshot_round_trips_through_json() {
        let mut warrior = WarriorAggregate::default();
        warrior.apply(1, &WarriorEvent::Created(state("A")));
        let json = serde_json::to_value(&warrior).expect("serialises");
        assert_eq!(
            serde_json::from_value::<WarriorAggregate>(json).expect("deserialises"),
            warrior
        );
    }
}
