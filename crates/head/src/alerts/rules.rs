//! The rules: what the head saw of the fleet (a pure [`Observation`], time included) and what
//! happened in it ([`Happening`]) in, alerts out. A state-like rule (a node offline, too few
//! lendable CPUs, the head's disk or memory short) fires once when its condition has held long
//! enough and clears once when it stops; an event (a job failed, a join code used, a node
//! revoked) fires once and has nothing to clear.

use std::collections::{HashMap, HashSet};

use super::config::{MEMORY_FOR, Settings};
use super::targets::rfc3339;
use super::{Alert, AlertState, Rule};
use crate::fleet::Happening;

/// A node as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    pub id: i64,
    pub name: String,
    pub connected: bool,
    pub last_seen_ms: i64,
    pub cpus_advertised: f64,
}

/// A Ray job as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSeen {
    pub id: String,
    pub status: String,
    pub entrypoint: String,
    pub reason: Option<String>,
}

/// One look at the fleet and the head's machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub now_ms: i64,
    pub nodes: Vec<NodeSeen>,
    /// Ray's jobs; `None` before the head first read Ray.
    pub jobs: Option<Vec<JobSeen>>,
    /// Free share (0 to 1) of the head's state disk and of its memory; `None`: unknown.
    pub disk_free: Option<f64>,
    pub memory_free: Option<f64>,
}

/// A condition followed over time.
#[derive(Debug, Default, Clone, Copy)]
struct Watch {
    since: Option<i64>,
    firing: bool,
}

impl Watch {
    /// The condition holds now (`holds`), having begun at `began_ms` when it was not yet
    /// followed. Fires once it has held `hold_ms`; clears when it stops while firing. Returns
    /// the change and when the condition began.
    fn step(
        &mut self,
        holds: bool,
        began_ms: i64,
        hold_ms: i64,
        now: i64,
    ) -> Option<(AlertState, i64)> {
        if holds {
            let since = *self.since.get_or_insert(began_ms);
            if !self.firing && now - since >= hold_ms {
                self.firing = true;
                return Some((AlertState::Firing, since));
            }
            return None;
        }
        let since = self.since.take();
        if std::mem::take(&mut self.firing) {
            return Some((AlertState::Cleared, since.unwrap_or(now)));
        }
        None
    }
}

/// A node the offline rule follows.
#[derive(Debug)]
struct Followed {
    name: String,
    /// It was in the fleet at the first look, or has had a session since it joined.
    armed: bool,
    /// Its last contact when the rules first saw it.
    first_seen_ms: i64,
    watch: Watch,
}

/// The rules' memory between looks.
#[derive(Debug)]
pub struct Rules {
    settings: Settings,
    /// When the head began watching: a node offline since before counts from here, so a head
    /// restarted after a night does not page for every node at once.
    started_ms: i64,
    offline: HashMap<i64, Followed>,
    /// The first look is done.
    looked: bool,
    lendable: Watch,
    disk: Watch,
    memory: Watch,
    /// The failed jobs already told (or there before the first look).
    failed_jobs: Option<HashSet<String>>,
}

impl Rules {
    pub fn new(settings: Settings, started_ms: i64) -> Rules {
        Rules {
            settings,
            started_ms,
            offline: HashMap::new(),
            looked: false,
            lendable: Watch::default(),
            disk: Watch::default(),
            memory: Watch::default(),
            failed_jobs: None,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The alerts one look at the fleet raises.
    pub fn observe(&mut self, o: &Observation) -> Vec<Alert> {
        let mut out = Vec::new();
        let now = o.now_ms;
        if let Some(after) = self.settings.offline_after {
            let hold = after.as_millis() as i64;
            let first_look = !self.looked;
            for n in &o.nodes {
                let f = self.offline.entry(n.id).or_insert_with(|| Followed {
                    name: n.name.clone(),
                    armed: first_look,
                    first_seen_ms: n.last_seen_ms,
                    watch: Watch::default(),
                });
                f.name.clone_from(&n.name);
                // A machine that just joined is not offline before its first session (it may
                // still be downloading its runtime); a session, however short, moves its last
                // contact on.
                f.armed |= n.connected || n.last_seen_ms > f.first_seen_ms;
                let (armed, watch) = (&f.armed, &mut f.watch);
                if !*armed {
                    continue;
                }
                let began = n.last_seen_ms.max(self.started_ms);
                match watch.step(!n.connected, began, hold, now) {
                    Some((AlertState::Firing, since)) => out.push(Alert::incident(
                        Rule::NodeOffline,
                        AlertState::Firing,
                        Some(&n.name),
                        format!(
                            "{} has been offline for {} (last seen {})",
                            n.name,
                            human(now - since),
                            rfc3339(n.last_seen_ms)
                        ),
                        now,
                        since,
                    )),
                    Some((AlertState::Cleared, since)) => out.push(Alert::incident(
                        Rule::NodeOffline,
                        AlertState::Cleared,
                        Some(&n.name),
                        format!("{} is back after {} offline", n.name, human(now - since)),
                        now,
                        since,
                    )),
                    None => {}
                }
            }
            // A node no longer in the fleet (revoked, replaced) ends its incident.
            let present: HashSet<i64> = o.nodes.iter().map(|n| n.id).collect();
            let gone: Vec<i64> = self
                .offline
                .keys()
                .filter(|id| !present.contains(id))
                .copied()
                .collect();
            for id in gone {
                if let Some(Followed { name, watch: w, .. }) = self.offline.remove(&id)
                    && w.firing
                {
                    out.push(Alert::incident(
                        Rule::NodeOffline,
                        AlertState::Cleared,
                        Some(&name),
                        format!("{name} is no longer in the fleet"),
                        now,
                        w.since.unwrap_or(now),
                    ));
                }
            }
        }
        let below = self.settings.lendable_cpus_below;
        if below > 0.0 {
            let lendable: f64 = o
                .nodes
                .iter()
                .filter(|n| n.connected)
                .map(|n| n.cpus_advertised)
                .sum();
            let hold = self.settings.lendable_for.as_millis() as i64;
            match self.lendable.step(lendable < below, now, hold, now) {
                Some((AlertState::Firing, since)) => out.push(Alert::incident(
                    Rule::LendableCpusLow,
                    AlertState::Firing,
                    None,
                    format!(
                        "the fleet lends {} CPUs, under {} (alerts.lendable_cpus_below), for {}",
                        cpus(lendable),
                        cpus(below),
                        human(now - since)
                    ),
                    now,
                    since,
                )),
                Some((AlertState::Cleared, since)) => out.push(Alert::incident(
                    Rule::LendableCpusLow,
                    AlertState::Cleared,
                    None,
                    format!(
                        "the fleet lends {} CPUs again, after {} under {}",
                        cpus(lendable),
                        human(now - since),
                        cpus(below)
                    ),
                    now,
                    since,
                )),
                None => {}
            }
        }
        let short = [
            (
                Rule::HeadDiskLow,
                self.settings.head_disk_free_below,
                o.disk_free,
                0,
                "the head's disk",
            ),
            (
                Rule::HeadMemoryLow,
                self.settings.head_memory_free_below,
                o.memory_free,
                MEMORY_FOR.as_millis() as i64,
                "the head's memory",
            ),
        ];
        for (rule, threshold, free, hold, what) in short {
            let (Some(free), true) = (free, threshold > 0.0) else {
                continue;
            };
            let watch = if rule == Rule::HeadDiskLow {
                &mut self.disk
            } else {
                &mut self.memory
            };
            // Cleared only one point above the threshold, so a value on the line does not
            // fire and clear in turn.
            let line = if watch.firing {
                threshold + 0.01
            } else {
                threshold
            };
            if let Some((state, since)) = watch.step(free < line, now, hold, now) {
                let summary = match state {
                    AlertState::Firing => format!(
                        "{what} is short: {} free, under {}",
                        percent(free),
                        percent(threshold)
                    ),
                    AlertState::Cleared => format!(
                        "{what} has room again: {} free, after {}",
                        percent(free),
                        human(now - since)
                    ),
                };
                out.push(Alert::incident(rule, state, None, summary, now, since));
            }
        }
        if let Some(jobs) = &o.jobs {
            let failed: Vec<&JobSeen> = jobs.iter().filter(|j| j.status == "FAILED").collect();
            let first = self.failed_jobs.is_none();
            let told = self.failed_jobs.get_or_insert_with(HashSet::new);
            for j in &failed {
                if told.insert(j.id.clone()) && !first && self.settings.job_failed {
                    let why = j
                        .reason
                        .as_deref()
                        .filter(|r| !r.trim().is_empty())
                        .unwrap_or("Ray gave no reason");
                    out.push(Alert::event(
                        Rule::JobFailed,
                        None,
                        format!(
                            "job {} ({}) failed: {}",
                            j.id,
                            short_text(&j.entrypoint, 80),
                            short_text(why, 300)
                        ),
                        now,
                    ));
                }
            }
            // Ray lists the latest jobs only; forget the ones it no longer lists.
            let listed: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            told.retain(|id| listed.contains(id.as_str()));
        }
        self.looked = true;
        out
    }

    /// The alert something that happened in the fleet raises, if its rule is on.
    pub fn happened(&mut self, h: &Happening, now_ms: i64) -> Option<Alert> {
        match h {
            Happening::Joined { name, hostname } if self.settings.join_code_used => {
                Some(Alert::event(
                    Rule::JoinCodeUsed,
                    Some(name),
                    format!("a join code was used: {name} ({hostname}) joined the fleet"),
                    now_ms,
                ))
            }
            Happening::Revoked { name } if self.settings.node_revoked => Some(Alert::event(
                Rule::NodeRevoked,
                Some(name),
                format!("{name} was revoked: its credential no longer works"),
                now_ms,
            )),
            _ => None,
        }
    }
}

/// A span of time as people say it: `45 s`, `10 min`, `2 h 5 min`.
pub fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => match s / 60 % 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
    }
}

fn cpus(n: f64) -> String {
    let r = (n * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn short_text(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: i64 = 60_000;

    fn settings() -> Settings {
        Settings {
            offline_after: Some(Duration::from_secs(600)),
            ..Settings::default()
        }
    }

    fn node(id: i64, connected: bool, last_seen_ms: i64, cpus: f64) -> NodeSeen {
        NodeSeen {
            id,
            name: format!("n{id}"),
            connected,
            last_seen_ms,
            cpus_advertised: cpus,
        }
    }

    fn look(now: i64, nodes: Vec<NodeSeen>) -> Observation {
        Observation {
            now_ms: now,
            nodes,
            ..Observation::default()
        }
    }

    fn kinds(alerts: &[Alert]) -> Vec<(Rule, AlertState, Option<String>)> {
        alerts
            .iter()
            .map(|a| (a.rule, a.state, a.node.clone()))
            .collect()
    }

    #[test]
    fn an_offline_node_fires_once_after_the_delay_and_clears_once() {
        let mut r = Rules::new(settings(), 0);
        let t0 = 100 * MIN;
        assert!(
            r.observe(&look(t0, vec![node(1, true, t0, 4.0)]))
                .is_empty()
        );
        // Gone at t0: nothing for ten minutes.
        for m in 1..10 {
            assert!(
                r.observe(&look(t0 + m * MIN, vec![node(1, false, t0, 0.0)]))
                    .is_empty()
            );
        }
        let fired = r.observe(&look(t0 + 10 * MIN, vec![node(1, false, t0, 0.0)]));
        assert_eq!(
            kinds(&fired),
            [(Rule::NodeOffline, AlertState::Firing, Some("n1".into()))]
        );
        assert_eq!(fired[0].since_ms, Some(t0));
        assert!(
            fired[0].summary.contains("offline for 10 min"),
            "{}",
            fired[0].summary
        );
        // Still offline: nothing more.
        for m in 11..30 {
            assert!(
                r.observe(&look(t0 + m * MIN, vec![node(1, false, t0, 0.0)]))
                    .is_empty()
            );
        }
        let back = r.observe(&look(
            t0 + 30 * MIN,
            vec![node(1, true, t0 + 30 * MIN, 4.0)],
        ));
        assert_eq!(
            kinds(&back),
            [(Rule::NodeOffline, AlertState::Cleared, Some("n1".into()))]
        );
        assert!(
            back[0].summary.contains("back after 30 min"),
            "{}",
            back[0].summary
        );
        assert!(
            r.observe(&look(t0 + 31 * MIN, vec![node(1, true, t0, 4.0)]))
                .is_empty()
        );
    }

    #[test]
    fn a_short_absence_says_nothing() {
        let mut r = Rules::new(settings(), 0);
        let t0 = 100 * MIN;
        for m in 0..9 {
            assert!(
                r.observe(&look(t0 + m * MIN, vec![node(1, false, t0, 0.0)]))
                    .is_empty()
            );
        }
        assert!(
            r.observe(&look(t0 + 9 * MIN, vec![node(1, true, t0, 4.0)]))
                .is_empty()
        );
    }

    #[test]
    fn a_machine_that_just_joined_is_not_offline_until_it_had_a_session() {
        let mut r = Rules::new(settings(), 0);
        assert!(r.observe(&look(0, vec![])).is_empty());
        // Joined at minute 1, its runtime downloads for half an hour.
        for m in 1..30 {
            assert!(
                r.observe(&look(m * MIN, vec![node(2, false, MIN, 0.0)]))
                    .is_empty()
            );
        }
        assert!(
            r.observe(&look(30 * MIN, vec![node(2, true, 30 * MIN, 4.0)]))
                .is_empty()
        );
        assert!(
            r.observe(&look(31 * MIN, vec![node(2, false, 31 * MIN, 0.0)]))
                .is_empty()
        );
        let fired = r.observe(&look(41 * MIN, vec![node(2, false, 31 * MIN, 0.0)]));
        assert_eq!(
            kinds(&fired),
            [(Rule::NodeOffline, AlertState::Firing, Some("n2".into()))]
        );
    }

    #[test]
    fn a_session_between_two_looks_counts() {
        let mut r = Rules::new(settings(), 0);
        assert!(r.observe(&look(0, vec![])).is_empty());
        assert!(
            r.observe(&look(MIN, vec![node(2, false, MIN, 0.0)]))
                .is_empty()
        );
        // Connected and gone again between two looks: its last contact moved on.
        assert!(
            r.observe(&look(3 * MIN, vec![node(2, false, 2 * MIN, 0.0)]))
                .is_empty()
        );
        let fired = r.observe(&look(12 * MIN, vec![node(2, false, 2 * MIN, 0.0)]));
        assert_eq!(
            kinds(&fired),
            [(Rule::NodeOffline, AlertState::Firing, Some("n2".into()))]
        );
        assert_eq!(fired[0].since_ms, Some(2 * MIN));
    }

    #[test]
    fn nodes_offline_before_the_head_started_count_from_its_start() {
        let started = 1000 * MIN;
        let mut r = Rules::new(settings(), started);
        // Last seen a day ago: not an alert the moment the head starts.
        assert!(
            r.observe(&look(started, vec![node(1, false, 0, 0.0)]))
                .is_empty()
        );
        let fired = r.observe(&look(started + 10 * MIN, vec![node(1, false, 0, 0.0)]));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].since_ms, Some(started));
    }

    #[test]
    fn a_node_that_leaves_the_fleet_ends_its_incident_and_offline_can_be_off() {
        let mut r = Rules::new(settings(), 0);
        r.observe(&look(0, vec![node(1, false, 0, 0.0)]));
        assert_eq!(
            r.observe(&look(10 * MIN, vec![node(1, false, 0, 0.0)]))
                .len(),
            1
        );
        let gone = r.observe(&look(11 * MIN, vec![]));
        assert_eq!(
            kinds(&gone),
            [(Rule::NodeOffline, AlertState::Cleared, Some("n1".into()))]
        );
        assert!(gone[0].summary.contains("no longer in the fleet"));

        let mut off = Rules::new(
            Settings {
                offline_after: None,
                ..settings()
            },
            0,
        );
        off.observe(&look(0, vec![node(1, false, 0, 8.0)]));
        assert!(
            off.observe(&look(600 * MIN, vec![node(1, false, 0, 8.0)]))
                .iter()
                .all(|a| a.rule != Rule::NodeOffline)
        );
    }

    #[test]
    fn too_few_lendable_cpus_fire_after_their_delay() {
        let mut r = Rules::new(
            Settings {
                lendable_cpus_below: 4.0,
                lendable_for: Duration::from_secs(300),
                ..Settings::default()
            },
            0,
        );
        let both = |a, b| vec![node(1, true, 0, a), node(2, true, 0, b)];
        assert!(r.observe(&look(0, both(2.0, 4.0))).is_empty());
        assert!(r.observe(&look(MIN, both(1.0, 1.0))).is_empty());
        let fired = r.observe(&look(6 * MIN, both(1.0, 1.0)));
        assert_eq!(
            kinds(&fired),
            [(Rule::LendableCpusLow, AlertState::Firing, None)]
        );
        assert!(
            fired[0].summary.contains("lends 2 CPUs, under 4"),
            "{}",
            fired[0].summary
        );
        assert!(r.observe(&look(7 * MIN, both(1.0, 1.5))).is_empty());
        let cleared = r.observe(&look(8 * MIN, both(2.0, 2.5)));
        assert_eq!(
            kinds(&cleared),
            [(Rule::LendableCpusLow, AlertState::Cleared, None)]
        );
        // Off by default.
        let mut d = Rules::new(Settings::default(), 0);
        d.observe(&look(0, vec![]));
        assert!(d.observe(&look(600 * MIN, vec![])).is_empty());
    }

    #[test]
    fn the_heads_disk_and_memory_fire_and_clear_with_a_margin() {
        let mut r = Rules::new(Settings::default(), 0);
        let at = |now, disk, memory| Observation {
            now_ms: now,
            disk_free: Some(disk),
            memory_free: Some(memory),
            ..Observation::default()
        };
        assert!(r.observe(&at(0, 0.5, 0.5)).is_empty());
        let disk = r.observe(&at(MIN, 0.08, 0.5));
        assert_eq!(
            kinds(&disk),
            [(Rule::HeadDiskLow, AlertState::Firing, None)]
        );
        assert!(
            disk[0].summary.contains("8% free, under 10%"),
            "{}",
            disk[0].summary
        );
        // On the line: still short.
        assert!(r.observe(&at(2 * MIN, 0.105, 0.5)).is_empty());
        let cleared = r.observe(&at(3 * MIN, 0.2, 0.5));
        assert_eq!(
            kinds(&cleared),
            [(Rule::HeadDiskLow, AlertState::Cleared, None)]
        );
        // Memory must stay short for a minute.
        assert!(r.observe(&at(4 * MIN, 0.5, 0.01)).is_empty());
        assert!(r.observe(&at(4 * MIN + 30_000, 0.5, 0.01)).is_empty());
        let mem = r.observe(&at(5 * MIN, 0.5, 0.01));
        assert_eq!(
            kinds(&mem),
            [(Rule::HeadMemoryLow, AlertState::Firing, None)]
        );
        // An unknown reading changes nothing.
        assert!(r.observe(&look(6 * MIN, vec![])).is_empty());
        let back = r.observe(&at(7 * MIN, 0.5, 0.5));
        assert_eq!(
            kinds(&back),
            [(Rule::HeadMemoryLow, AlertState::Cleared, None)]
        );
    }

    #[test]
    fn a_failed_job_is_told_once_and_those_before_the_first_look_never() {
        let job = |id: &str, status: &str| JobSeen {
            id: id.into(),
            status: status.into(),
            entrypoint: "python sweep.py --paths 8".into(),
            reason: Some("ModuleNotFoundError: No module named 'pandas'".into()),
        };
        let mut r = Rules::new(Settings::default(), 0);
        let with = |now, jobs: Vec<JobSeen>| Observation {
            now_ms: now,
            jobs: Some(jobs),
            ..Observation::default()
        };
        assert!(r.observe(&Observation::default()).is_empty());
        assert!(r.observe(&with(1, vec![job("old", "FAILED")])).is_empty());
        assert!(
            r.observe(&with(2, vec![job("old", "FAILED"), job("new", "RUNNING")]))
                .is_empty()
        );
        let failed = r.observe(&with(3, vec![job("old", "FAILED"), job("new", "FAILED")]));
        assert_eq!(
            kinds(&failed),
            [(Rule::JobFailed, AlertState::Firing, None)]
        );
        assert!(failed[0].one_shot);
        assert!(
            failed[0]
                .summary
                .contains("job new (python sweep.py --paths 8) failed: ModuleNotFoundError"),
            "{}",
            failed[0].summary
        );
        assert!(
            r.observe(&with(4, vec![job("old", "FAILED"), job("new", "FAILED")]))
                .is_empty()
        );
    }

    #[test]
    fn joins_and_revocations_are_events_when_their_rules_are_on() {
        let mut r = Rules::new(Settings::default(), 0);
        let joined = Happening::Joined {
            name: "laptop-7".into(),
            hostname: "laptop-7.lan".into(),
        };
        let a = r.happened(&joined, 5).unwrap();
        assert_eq!(
            (a.rule, a.state, a.one_shot),
            (Rule::JoinCodeUsed, AlertState::Firing, true)
        );
        assert!(
            a.summary.contains("laptop-7 (laptop-7.lan) joined"),
            "{}",
            a.summary
        );
        let revoked = Happening::Revoked {
            name: "laptop-7".into(),
        };
        assert_eq!(r.happened(&revoked, 6).unwrap().rule, Rule::NodeRevoked);
        let mut quiet = Rules::new(
            Settings {
                join_code_used: false,
                node_revoked: false,
                ..Settings::default()
            },
            0,
        );
        assert!(quiet.happened(&joined, 5).is_none());
        assert!(quiet.happened(&revoked, 5).is_none());
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(human(45_000), "45 s");
        assert_eq!(human(10 * MIN), "10 min");
        assert_eq!(human(125 * MIN), "2 h 5 min");
        assert_eq!(human(180 * MIN), "3 h");
        assert_eq!(short_text("a\n  b", 10), "a b");
        assert_eq!(short_text("abcdef", 4), "abc…");
    }
}
