//! The names people and programs see for a node's state (`flotilla nodes`, the dashboard, the
//! HTTP API, the metrics' `state` label): one lower-case word per [`NodeState`].

use crate::v1::NodeState;

/// What a state that is not known is called: `NODE_STATE_UNSPECIFIED`, or a value from a
/// newer peer.
pub const UNKNOWN: &str = "unknown";

/// What a connected node that has not reported yet is called.
pub const CONNECTING: &str = "connecting";

/// Every state a node reports or the head gives it, in the `.proto`'s order.
pub const KNOWN: [NodeState; 6] = [
    NodeState::Contributing,
    NodeState::Throttled,
    NodeState::Paused,
    NodeState::Draining,
    NodeState::Offline,
    NodeState::Error,
];

impl NodeState {
    /// The state's name: `contributing`, `throttled`, `paused`, `draining`, `offline`,
    /// `error`, or [`UNKNOWN`] for `Unspecified`.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Contributing => "contributing",
            NodeState::Throttled => "throttled",
            NodeState::Paused => "paused",
            NodeState::Draining => "draining",
            NodeState::Offline => "offline",
            NodeState::Error => "error",
            NodeState::Unspecified => UNKNOWN,
        }
    }
}

/// The name of a state as the wire carries it: a value this version does not know is
/// [`UNKNOWN`].
pub fn name_of(state: i32) -> &'static str {
    NodeState::try_from(state).map_or(UNKNOWN, NodeState::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_own_name_and_strangers_are_unknown() {
        let mut names: Vec<_> = KNOWN.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KNOWN.len());
        assert!(!names.contains(&UNKNOWN));
        assert_eq!(name_of(NodeState::Paused as i32), "paused");
        assert_eq!(name_of(0), UNKNOWN);
        assert_eq!(name_of(99), UNKNOWN);
    }
}
