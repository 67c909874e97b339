//! Warm workers: Python workers started ahead on a node that lends CPUs, so that a new job's
//! first tasks there find a worker ready instead of waiting the second or more (several on a
//! slow or throttled machine) that a worker takes to start and import Ray.
//!
//! Ray binds a worker to the job whose task it runs first, and ends the job's workers when the
//! job ends, so each job would otherwise start its own on every node. The raylet's
//! `PrestartWorkers` call starts workers bound to no job and the empty runtime environment,
//! which the next such job takes (a job with a runtime environment of its own still starts
//! its own workers). While the node lends CPUs and runs nothing, the agent keeps as many warm
//! workers as CPUs it lends; when it stops lending, the idle ones are ended, so that a machine
//! whose owner is back keeps no Python processes for the cluster beyond the node's own.
//!
//! Counting needs the node's processes and their titles (Ray titles an idle worker
//! `ray::IDLE`), which only Linux lets the agent read ([`flotilla_host::process::CAN_SCAN_MARKED`]).
//! Elsewhere the workers are asked for when the node turns quiet after work, at most as many
//! as it lends, and left to the raylet's own keep-alive.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla_ray::grpc::RayletClient;
use flotilla_ray::{RayToken, Supervisor};

/// How long the raylet keeps a warm worker that no task took.
pub const KEEP_ALIVE: Duration = Duration::from_secs(600);
/// How often the count is checked while nothing else prompts it (the raylet may have ended a
/// worker, or a worker died).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// How often in the minute after the node last worked: a job's own workers linger idle until
/// the job ends, and only then is the node short.
pub const CHECK_AFTER_WORK: Duration = Duration::from_secs(3);
const AFTER_WORK: Duration = Duration::from_secs(60);
/// After asking for workers, how long before asking again when the count is still short: a
/// worker that failed to start is not asked for in a loop.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(20);

/// Ray's process title of a worker that runs no task.
const IDLE_TITLE: &str = "ray::IDLE";
/// The script of a Python worker that has not titled itself yet (it is still starting).
const WORKER_SCRIPT: &str = "default_worker.py";

/// What a process of the node is, for the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A worker with no task.
    Idle,
    /// A worker still starting (it will be idle, or take a task, in a moment).
    Starting,
    /// Anything else: the raylet, agents, workers running tasks.
    Other,
}

/// Classifies a process by its command line as Linux shows it (`/proc/<pid>/cmdline`, split).
pub fn kind(cmdline: &[String]) -> Kind {
    match cmdline.first() {
        // `setproctitle` rewrites the whole command line; some kernels keep the arguments'
        // padding, so only the first word counts.
        Some(first) if first.split_whitespace().next() == Some(IDLE_TITLE) => Kind::Idle,
        Some(_) if cmdline.iter().any(|a| a.ends_with(WORKER_SCRIPT)) => Kind::Starting,
        _ => Kind::Other,
    }
}

/// What to do now, from the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Ask the raylet for this many more workers.
    Start(u32),
    /// End the idle workers.
    EndIdle,
}

/// The step for a node that should have `want` warm workers and has `idle` idle and
/// `starting` starting ones. `may_end` says whether Ray has stopped offering the node's CPUs,
/// so that no task can be on its way to an idle worker.
pub fn step(want: u32, idle: u32, starting: u32, may_end: bool) -> Step {
    if want == 0 {
        return if idle > 0 && may_end {
            Step::EndIdle
        } else {
            Step::Nothing
        };
    }
    match want.checked_sub(idle + starting) {
        Some(short) if short > 0 => Step::Start(short),
        _ => Step::Nothing,
    }
}

/// Keeps one node's warm workers.
#[derive(Debug, Default)]
pub struct Warm {
    raylet: Option<RayletClient>,
    want: u32,
    was_quiet: bool,
    worked: Option<Instant>,
    checked: Option<Instant>,
    asked: Option<Instant>,
    /// The idle workers last counted (Linux), for status.
    count: Option<u32>,
}

impl Warm {
    /// The idle workers last counted, where the OS lets the agent count them.
    pub fn count(&self) -> Option<u32> {
        self.count
    }

    /// Called every round of the politeness loop. `want` is the CPUs the node lends now (0
    /// when it lends none, is paused or not running); `quiet` whether it runs no task; `may_end`
    /// whether Ray no longer offers any of its CPUs.
    pub async fn keep(
        &mut self,
        want: u32,
        quiet: bool,
        may_end: bool,
        node: &Supervisor,
        raylet: SocketAddr,
        token: &RayToken,
    ) {
        let now = Instant::now();
        let turned_quiet = quiet && !self.was_quiet;
        let changed = want != self.want || turned_quiet;
        self.was_quiet = quiet;
        if !quiet {
            self.worked = Some(now);
        }
        if want != self.want {
            // A new node or a new address: the old connection may be gone with it.
            self.raylet = None;
            self.asked = None;
        }
        self.want = want;
        let every = if self
            .worked
            .is_some_and(|t| now.duration_since(t) < AFTER_WORK)
        {
            CHECK_AFTER_WORK
        } else {
            CHECK_EVERY
        };
        let due = changed || self.checked.is_none_or(|t| now.duration_since(t) >= every);
        // Workers are started only between jobs (a job that runs takes them itself), but ended
        // whenever the node stops lending.
        if !due || (want > 0 && !quiet) {
            return;
        }
        self.checked = Some(now);
        let step = if flotilla_host::process::CAN_SCAN_MARKED {
            let (idle, starting) = count(node.marker());
            self.count = Some(idle.len() as u32);
            match step(want, idle.len() as u32, starting, may_end) {
                Step::EndIdle => {
                    tracing::info!(
                        workers = idle.len(),
                        "the node lends no CPUs: ending its warm workers"
                    );
                    for pid in idle {
                        flotilla_host::process::kill(pid);
                    }
                    self.count = Some(0);
                    Step::Nothing
                }
                s => s,
            }
        } else if turned_quiet || changed {
            // No count here: ask for what the node lends, after work or a change.
            step(want, 0, 0, false)
        } else {
            Step::Nothing
        };
        let Step::Start(n) = step else {
            return;
        };
        if self
            .asked
            .is_some_and(|t| now.duration_since(t) < ASK_AGAIN_AFTER && !turned_quiet)
        {
            return;
        }
        self.asked = Some(now);
        if let Err(e) = self.ask(n, raylet, token).await {
            tracing::debug!("cannot start warm workers: {e}");
            self.raylet = None;
        }
    }

    async fn ask(
        &mut self,
        n: u32,
        addr: SocketAddr,
        token: &RayToken,
    ) -> Result<(), flotilla_ray::Error> {
        if self.raylet.as_ref().is_none_or(|c| c.addr() != addr) {
            self.raylet = Some(RayletClient::connect(addr, Some(token.clone())).await?);
        }
        let client = self.raylet.as_mut().expect("just connected");
        client.prestart_workers(n, KEEP_ALIVE).await?;
        tracing::debug!(workers = n, "warm workers asked for");
        Ok(())
    }
}

/// The node's idle workers (their pids) and how many are starting.
fn count(marker: &str) -> (Vec<u32>, u32) {
    let mut idle = Vec::new();
    let mut starting = 0;
    for pid in flotilla_host::process::marked_processes(marker) {
        match flotilla_host::process::cmdline(pid).as_deref().map(kind) {
            Some(Kind::Idle) => idle.push(pid),
            Some(Kind::Starting) => starting += 1,
            _ => {}
        }
    }
    (idle, starting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<String> {
        line.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_process_is_told_by_its_title_or_its_script() {
        assert_eq!(kind(&args(&["ray::IDLE"])), Kind::Idle);
        assert_eq!(kind(&args(&["ray::IDLE   "])), Kind::Idle);
        assert_eq!(kind(&args(&["ray::IDLE", "", ""])), Kind::Idle);
        assert_eq!(
            kind(&args(&[
                "/rt/bin/python",
                "/rt/ray/_private/workers/setup_worker.py",
                "/rt/ray/_private/workers/default_worker.py",
                "--node-ip-address=10.0.0.2",
            ])),
            Kind::Starting
        );
        for other in [
            &["ray::run_one"][..],
            &["ray::IDLE_SPILL_WORKER"],
            &[
                "/rt/ray/core/src/ray/raylet/raylet",
                "--node_manager_port=1",
            ],
            &["ray::DashboardAgent"],
            &[],
        ] {
            assert_eq!(kind(&args(other)), Kind::Other, "{other:?}");
        }
    }

    #[test]
    fn a_lending_node_is_topped_up_to_what_it_lends() {
        assert_eq!(step(2, 0, 0, false), Step::Start(2));
        assert_eq!(step(2, 1, 0, false), Step::Start(1));
        assert_eq!(step(2, 1, 1, false), Step::Nothing);
        assert_eq!(step(2, 3, 0, true), Step::Nothing);
        assert_eq!(step(1, 0, 4, true), Step::Nothing);
    }

    #[test]
    fn a_node_that_stops_lending_ends_its_idle_workers_once_ray_offers_nothing() {
        assert_eq!(step(0, 2, 0, true), Step::EndIdle);
        // Ray may still hand a task to an idle worker while it offers CPUs.
        assert_eq!(step(0, 2, 0, false), Step::Nothing);
        assert_eq!(step(0, 0, 1, true), Step::Nothing);
        assert_eq!(step(0, 0, 0, true), Step::Nothing);
    }
}
