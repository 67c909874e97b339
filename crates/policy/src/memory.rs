//! The memory ceiling of the node: how much memory Ray may hold so that the owner's programs
//! always find what they ask for.
//!
//! The owner's demand is what the machine holds outside the node: `total - available -
//! node`. The node may hold the rest, less a reserve kept free for the owner's next
//! allocation (`min_free_memory_fraction` of the total):
//!
//! `ceiling = node + available - reserve`
//!
//! When the owner allocates, `available` falls by as much and so does the ceiling, and the node
//! is pressed to give memory back (the OS reclaims its pages or, when it cannot, the agent ends
//! its largest task worker, whose task Ray retries elsewhere); when the owner frees memory, the
//! ceiling rises again. It is never below [`MEMORY_FLOOR`] (what an idle Ray node needs to keep
//! its raylet and agents alive), and there is none when the node could have the whole machine.

use crate::Settings;

/// The least memory a node is left: an idle Ray worker node (raylet, its agents, `ray start`
/// and a couple of idle workers) holds about 400 MiB.
pub const MEMORY_FLOOR: u64 = 512 << 20;

/// The ceiling moves in steps of this size (rounded down), so that the small movements of the
/// machine's available memory do not rewrite it every tick.
pub const MEMORY_STEP: u64 = 32 << 20;

/// What the ceiling is computed from, in bytes. Unknown readings are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReadings {
    /// The machine's memory (or the container's, when it is limited).
    pub total: Option<u64>,
    /// What new work can take without swapping (`MemAvailable` on Linux).
    pub available: Option<u64>,
    /// What the node's processes hold now, without file pages the kernel can drop at once.
    pub node: Option<u64>,
}

/// The node's memory ceiling in bytes, or `None` for no ceiling: memory is plentiful (the
/// ceiling would be the whole machine), the setting is 0 (never limit), or a reading is
/// unknown (without the node's own use the owner's demand cannot be told from the node's).
pub fn memory_ceiling(settings: &Settings, r: MemoryReadings) -> Option<u64> {
    let fraction = settings.min_free_memory_fraction;
    if !(fraction.is_finite() && fraction > 0.0) {
        return None;
    }
    let total = r.total.filter(|&t| t > 0)?;
    let available = r.available?.min(total);
    let node = r.node?.min(total);
    let reserve = (total as f64 * fraction.min(1.0)) as u64;
    let ceiling = (node + available).saturating_sub(reserve);
    if ceiling >= total {
        return None;
    }
    let stepped = ceiling / MEMORY_STEP * MEMORY_STEP;
    Some(stepped.max(MEMORY_FLOOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn at(fraction: f64) -> Settings {
        Settings {
            min_free_memory_fraction: fraction,
            ..Settings::default()
        }
    }

    fn r(total: u64, available: u64, node: u64) -> MemoryReadings {
        MemoryReadings {
            total: Some(total),
            available: Some(available),
            node: Some(node),
        }
    }

    #[test]
    fn the_ceiling_is_the_node_plus_what_is_available_less_the_reserve() {
        // 8 GiB, the owner holds 3, the node 2, 3 available; the default reserve is 15 %.
        let c = memory_ceiling(&Settings::default(), r(8 * GIB, 3 * GIB, 2 * GIB)).unwrap();
        let exact = 5 * GIB - (8.0 * GIB as f64 * 0.15) as u64;
        assert!(c <= exact && exact - c < MEMORY_STEP, "{c} {exact}");
        assert_eq!(c % MEMORY_STEP, 0);
    }

    #[test]
    fn the_ceiling_follows_the_owners_demand_both_ways() {
        let s = Settings::default();
        let node = 2 * GIB;
        let mut last = None;
        // The owner takes 0.5 GiB more at each step: the ceiling falls by as much.
        for owner_half_gibs in 0..8u64 {
            let owner = owner_half_gibs * GIB / 2;
            let available = 16 * GIB - node - owner;
            let c = memory_ceiling(&s, r(16 * GIB, available, node));
            if let (Some(prev), Some(now)) = (last, c) {
                assert!(now < prev, "{now} after {prev}");
                assert!(prev - now <= GIB / 2 + MEMORY_STEP, "{prev} -> {now}");
            }
            last = c;
        }
        // And frees it: it rises back to where it was.
        let again = memory_ceiling(&s, r(16 * GIB, 14 * GIB, node));
        let first = memory_ceiling(&s, r(16 * GIB, 14 * GIB, node));
        assert_eq!(again, first);
        assert!(again > last);
    }

    #[test]
    fn a_node_above_its_ceiling_is_pressed_below_what_it_holds() {
        // The owner took nearly everything: less is available than the reserve.
        let c = memory_ceiling(&Settings::default(), r(8 * GIB, GIB / 2, 3 * GIB)).unwrap();
        assert!(c < 3 * GIB, "{c}");
        assert_eq!(
            c,
            (3 * GIB + GIB / 2 - (8.0 * GIB as f64 * 0.15) as u64) / MEMORY_STEP * MEMORY_STEP
        );
    }

    #[test]
    fn the_ceiling_never_falls_below_the_floor() {
        let s = Settings::default();
        assert_eq!(memory_ceiling(&s, r(8 * GIB, 0, 0)), Some(MEMORY_FLOOR));
        // The node holds the whole machine: it keeps all but the reserve.
        let reserve = (8.0 * GIB as f64 * 0.15) as u64;
        assert_eq!(
            memory_ceiling(&s, r(8 * GIB, 0, 8 * GIB)),
            Some((8 * GIB - reserve) / MEMORY_STEP * MEMORY_STEP)
        );
        // A tiny machine: the floor stands even above what the reserve leaves.
        assert_eq!(
            memory_ceiling(&s, r(600 * MIB, 100 * MIB, 50 * MIB)),
            Some(MEMORY_FLOOR)
        );
    }

    #[test]
    fn plenty_of_memory_means_no_ceiling() {
        // Everything the node could take fits: no ceiling.
        let s = at(0.05);
        assert_eq!(memory_ceiling(&s, r(8 * GIB, 8 * GIB, GIB)), None);
        assert!(memory_ceiling(&s, r(8 * GIB, 7 * GIB, 0)).is_some());
    }

    #[test]
    fn unknown_readings_or_a_zero_setting_mean_no_ceiling() {
        let s = Settings::default();
        let full = r(8 * GIB, GIB, GIB);
        assert_eq!(memory_ceiling(&at(0.0), full), None);
        for missing in [
            MemoryReadings {
                total: None,
                ..full
            },
            MemoryReadings {
                available: None,
                ..full
            },
            MemoryReadings { node: None, ..full },
            MemoryReadings {
                total: Some(0),
                ..full
            },
            MemoryReadings::default(),
        ] {
            assert_eq!(memory_ceiling(&s, missing), None, "{missing:?}");
        }
    }

    #[test]
    fn readings_out_of_range_are_clamped_not_trusted() {
        let s = Settings::default();
        // Available above the total (readings taken at different moments) counts as the total.
        assert_eq!(
            memory_ceiling(&s, r(8 * GIB, 9 * GIB, GIB)),
            memory_ceiling(&s, r(8 * GIB, 8 * GIB, GIB))
        );
        // A node reading above the total is the total.
        assert_eq!(
            memory_ceiling(&s, r(8 * GIB, GIB, 20 * GIB)),
            memory_ceiling(&s, r(8 * GIB, GIB, 8 * GIB))
        );
    }

    #[test]
    fn over_a_grid_of_machines_the_ceiling_keeps_the_reserve_free() {
        let s = Settings::default();
        for total_gib in [1u64, 2, 4, 8, 16, 64] {
            let total = total_gib * GIB;
            let reserve = (total as f64 * 0.15) as u64;
            for node_pct in (0..=100).step_by(10) {
                for avail_pct in (0..=100).step_by(10) {
                    let node = total * node_pct / 100;
                    let available = (total * avail_pct / 100).min(total - node);
                    let Some(c) = memory_ceiling(&s, r(total, available, node)) else {
                        // No ceiling only when the node could have the whole machine.
                        assert!(node + available >= total + reserve - MEMORY_STEP);
                        continue;
                    };
                    assert!(c >= MEMORY_FLOOR && c < total.max(MEMORY_FLOOR + 1));
                    if c > MEMORY_FLOOR {
                        // Held to the ceiling, the node leaves the reserve free for the owner.
                        let owner = total - available - node;
                        assert!(owner + c + reserve <= total, "{total} {node} {available}");
                    }
                }
            }
        }
    }
}
