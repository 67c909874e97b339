//! Making the politeness decision real: the OS cap on the node's process tree, the CPUs Ray
//! advertises for the node, and pause (drain) and resume.
//!
//! - A cap takes effect at once: the throttle writes the cgroup (or starts its duty cycle) in
//!   the same tick as the decision.
//! - Ray's advertised CPUs follow through the raylet's live resize call, so Ray stops
//!   scheduling onto a busy machine. Ray only takes back CPUs that are free, so running tasks
//!   are never killed; the call is repeated (at most once a second) until the total has shrunk.
//! - Where Ray has no live resize (or `FLOTILLA_RAY_RESIZE=restart` says not to use it), the
//!   node restarts with the new count at a moment when it runs no task ([`ResizeMode::Restart`]).
//! - "Finish" drains the node with reason PREEMPTION and holds it: running tasks finish, no new
//!   ones arrive, the node leaves, and it is not restarted until the pause ends.
//! - "Now" caps the tree to almost nothing at once, then drains with a short deadline, so that
//!   Ray reruns its tasks elsewhere. The raylet keeps a sliver of CPU: a frozen raylet would be
//!   declared dead.
//! - Before the machine sleeps or shuts down ([`Enforcer::hand_back`]), the node is drained
//!   with reason PREEMPTION and a deadline of the seconds the OS grants, then ended at once: its
//!   raylet tells Ray it is going, so Ray reruns its tasks elsewhere without waiting for the
//!   health checks of a node that went silent.
//! - Memory: every tick the node's tree gets a memory ceiling that follows the owner's demand
//!   ([`flotilla_policy::memory_ceiling`]: what the node holds plus what is available, less
//!   `min_free_memory_fraction` of the machine kept free for the owner). The OS presses the tree
//!   under it (cgroups reclaim, then kill inside the tree; a job refuses commits past it); where
//!   it cannot (cgroup v1 refuses a limit below what the group holds without swap; macOS has no
//!   ceiling) and the node holds more than its ceiling, the node's largest Ray task worker is
//!   ended, at most once per [`SHED_EVERY`], and Ray retries its task.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use flotilla_host::throttle::{Limit, MemoryCeiling};
use flotilla_policy::{Decision, Pause};
use flotilla_ray::grpc::{DrainReason, GcsClient, RayletClient};
use flotilla_ray::supervisor::NodePhase;
use flotilla_ray::{RayToken, Supervisor};
use serde::Serialize;

/// What "pause now" leaves the tree while Ray reschedules its tasks: enough for the raylet to
/// answer health checks, too little for the owner to notice.
pub const PAUSE_NOW_CAP: f64 = 0.05;
/// How long Ray gets to move a node's tasks elsewhere on "pause now".
pub const PAUSE_NOW_DEADLINE: Duration = Duration::from_secs(5);
const RESIZE_RETRY: Duration = Duration::from_secs(1);
/// How long a limit the throttle refused waits before it is tried again.
const LIMIT_RETRY: Duration = Duration::from_secs(5);
/// How long after ending a task worker to give memory back the next may be ended: the time for
/// the kernel to take back the first one's pages and the readings to show it.
pub const SHED_EVERY: Duration = Duration::from_secs(2);
/// How often a memory ceiling the OS refused is tried again.
const MEMORY_RETRY: Duration = Duration::from_millis(500);
/// The environment variable naming a memory cgroup whose limit stands for the machine's
/// memory (a container, or the "laptop" a benchmark confines its cluster in): the ceiling is
/// then computed from its limit and use, not from the whole machine's.
pub const MEMORY_CGROUP_ENV: &str = "FLOTILLA_MEMORY_CGROUP";

/// How the CPUs Ray advertises follow the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The raylet's live resize (Ray 2.60 and newer).
    #[default]
    Live,
    /// Restart the node with the new count once it runs no task: for Ray versions without the
    /// live call (chosen by itself when the raylet lacks it), or by `FLOTILLA_RAY_RESIZE=restart`.
    Restart,
}

impl ResizeMode {
    /// `FLOTILLA_RAY_RESIZE` (`live` or `restart`), else live.
    pub fn from_env() -> ResizeMode {
        match std::env::var("FLOTILLA_RAY_RESIZE").as_deref() {
            Ok("restart") => ResizeMode::Restart,
            _ => ResizeMode::Live,
        }
    }
}

/// What the enforcer does to the node, serialized as `full`, `cap`, `paused`, `draining`,
/// `error` (and the empty string before it acted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementState {
    /// Not applied anything yet.
    #[default]
    #[serde(rename = "")]
    Unset,
    /// The node may use all its CPUs.
    Full,
    /// The node is capped below its CPUs.
    Cap,
    /// Held after a drain.
    Paused,
    /// Its running tasks finish; no new ones start.
    Draining,
    /// The Ray node cannot run (`failure` says why).
    Error,
}

impl EnforcementState {
    /// The state as it is serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementState::Unset => "",
            EnforcementState::Full => "full",
            EnforcementState::Cap => "cap",
            EnforcementState::Paused => "paused",
            EnforcementState::Draining => "draining",
            EnforcementState::Error => "error",
        }
    }
}

/// What the enforcer last did, as shown in status and logs.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct Enforcement {
    pub state: EnforcementState,
    /// The OS cap in cores, when capped.
    pub cap_cpus: Option<f64>,
    /// What Ray advertises for the node, as the raylet last reported it.
    pub advertised_cpus: Option<f64>,
    /// The CPUs the node was started with: the most it can offer.
    pub node_cpus: u32,
    /// The throttle's backend (`cgroup-v1`, `cgroup-v2`, `signals`), or none.
    pub throttle: Option<String>,
    /// How the advertised CPUs follow the decision.
    pub resize: ResizeMode,
    pub last_error: Option<String>,
    /// Ray's reason why the node is not running, while it is not.
    pub failure: Option<flotilla_ray::Failure>,
    /// The node's idle Python workers, ready for the next job ([`crate::warm`]), where the
    /// agent can count them.
    pub warm_workers: Option<u32>,
    /// The memory ceiling on the node's tree, in bytes, when there is one.
    pub memory_limit_bytes: Option<u64>,
    /// What the node's tree holds, in bytes, as its throttle measures it.
    pub memory_used_bytes: Option<u64>,
    /// Whether the OS holds the tree under the ceiling (else the agent sheds task workers).
    pub memory_ceiling_held: bool,
    /// Task workers ended to give memory back to the owner since the agent started.
    pub shed_workers: u32,
}

/// The machine's memory as the enforcer last got it, and the reserve setting.
#[derive(Debug, Clone, Copy, Default)]
struct MachineMemory {
    total: Option<u64>,
    available: Option<u64>,
    settings_fraction: Option<f64>,
}

/// Applies decisions to one node.
#[derive(Debug)]
pub struct Enforcer {
    raylet_addr: SocketAddr,
    gcs_addr: SocketAddr,
    token: RayToken,
    /// CPUs the node was started with: the most it can advertise.
    total: u32,
    raylet: Option<RayletClient>,
    limit: Option<Limit>,
    advertised: Option<f64>,
    asked: Option<f64>,
    last_resize: Option<Instant>,
    drained: Option<Pause>,
    limit_failed: Option<(Limit, Instant)>,
    mode: ResizeMode,
    warm: crate::warm::Warm,
    status: Enforcement,
    machine: MachineMemory,
    /// The memory ceiling last put in force (`Some(None)`: none), not yet any when `None`.
    memory_limit: Option<Option<u64>>,
    memory_tried: Option<Instant>,
    last_shed: Option<Instant>,
    memory_cgroup: Option<std::path::PathBuf>,
}

impl Enforcer {
    pub fn new(raylet_addr: SocketAddr, gcs_addr: SocketAddr, token: RayToken, total: u32) -> Self {
        Self::with_mode(raylet_addr, gcs_addr, token, total, ResizeMode::Live)
    }

    /// The CPUs the node was started with: the most it can lend.
    pub fn node_cpus(&self) -> u32 {
        self.total
    }

    pub fn with_mode(
        raylet_addr: SocketAddr,
        gcs_addr: SocketAddr,
        token: RayToken,
        total: u32,
        mode: ResizeMode,
    ) -> Self {
        Enforcer {
            raylet_addr,
            gcs_addr,
            token,
            total,
            raylet: None,
            limit: None,
            advertised: None,
            asked: None,
            last_resize: None,
            drained: None,
            limit_failed: None,
            mode,
            warm: crate::warm::Warm::default(),
            status: Enforcement {
                node_cpus: total,
                resize: mode,
                ..Enforcement::default()
            },
            machine: MachineMemory::default(),
            memory_limit: None,
            memory_tried: None,
            last_shed: None,
            memory_cgroup: std::env::var_os(MEMORY_CGROUP_ENV)
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from),
        }
    }

    /// The machine's memory (`total`, `available`, in bytes) and the settings, for the next
    /// [`apply`](Self::apply)'s memory ceiling. With [`MEMORY_CGROUP_ENV`] set, that cgroup's
    /// limit and use stand for the machine's instead.
    pub fn set_machine_memory(
        &mut self,
        reading: Option<&flotilla_host::sensors::MemoryReading>,
        settings: &flotilla_policy::Settings,
    ) {
        let own = self
            .memory_cgroup
            .as_deref()
            .map(flotilla_host::sensors::kernel::memory_of_cgroup);
        let reading = own.as_ref().or(reading);
        self.machine = MachineMemory {
            total: reading.and_then(|r| r.total_bytes),
            available: reading.and_then(|r| r.available_bytes),
            settings_fraction: Some(settings.min_free_memory_fraction),
        };
    }

    /// Puts the memory ceiling that follows the owner's demand on the node's tree, and sheds
    /// the largest task worker when the node holds more than it and the OS did not press it
    /// under. See the module's documentation.
    fn memory(&mut self, node: &Supervisor) {
        let Some(fraction) = self.machine.settings_fraction else {
            return;
        };
        let used = node.memory_used();
        let settings = flotilla_policy::Settings {
            min_free_memory_fraction: fraction,
            ..flotilla_policy::Settings::default()
        };
        let ceiling = flotilla_policy::memory_ceiling(
            &settings,
            flotilla_policy::MemoryReadings {
                total: self.machine.total,
                available: self.machine.available,
                node: used,
            },
        );
        self.status.memory_used_bytes = used;
        let retry = self
            .memory_tried
            .is_none_or(|t| t.elapsed() >= MEMORY_RETRY);
        if self.memory_limit != Some(ceiling) && retry {
            self.memory_tried = Some(Instant::now());
            match node.set_memory_limit(ceiling) {
                Ok(Some(MemoryCeiling::Refused)) => {
                    self.status.memory_ceiling_held = false;
                }
                Ok(Some(outcome)) => {
                    if ceiling.is_some() || self.memory_limit.flatten().is_some() {
                        tracing::info!(
                            ceiling_mib = ceiling.map(|c| c >> 20),
                            used_mib = used.map(|u| u >> 20),
                            "node memory ceiling"
                        );
                    }
                    self.memory_limit = Some(ceiling);
                    self.status.memory_ceiling_held = outcome == MemoryCeiling::Held;
                }
                Ok(None) => self.memory_limit = Some(ceiling),
                Err(e) => {
                    tracing::warn!("cannot set the node's memory ceiling: {e}");
                    self.status.last_error = Some(e.to_string());
                }
            }
        }
        self.status.memory_limit_bytes = ceiling;
        let over = matches!((ceiling, used), (Some(c), Some(u)) if u > c);
        let shed_ok = self.last_shed.is_none_or(|t| t.elapsed() >= SHED_EVERY);
        if over
            && shed_ok
            && let Some((pid, bytes)) = node.shed_largest_worker()
        {
            self.last_shed = Some(Instant::now());
            self.status.shed_workers += 1;
            tracing::warn!(
                pid,
                worker_mib = bytes >> 20,
                used_mib = used.map(|u| u >> 20),
                ceiling_mib = ceiling.map(|c| c >> 20),
                "the owner needs memory: ended the node's largest task worker (Ray retries its task)"
            );
        }
    }

    pub fn status(&self) -> &Enforcement {
        &self.status
    }

    /// Applies `d` to `node`. Cheap when nothing changed: no call leaves the machine then.
    pub async fn apply(&mut self, d: &Decision, node: &Supervisor) -> &Enforcement {
        self.status.throttle = node.throttle_guarantees().map(|g| g.backend.to_string());
        match d.pause {
            Pause::None => self.contribute(d.target_cpus, node).await,
            Pause::Finish | Pause::Now => self.pause(d.pause, node).await,
        }
        self.status.failure = match node.status().phase {
            NodePhase::Ready => None,
            _ => node.failure(),
        };
        if self.status.failure.is_some() && d.pause == Pause::None {
            self.status.state = EnforcementState::Error;
        }
        self.memory(node);
        &self.status
    }

    /// Keeps the node's warm workers ([`crate::warm`]) after [`Enforcer::apply`]: as many as
    /// the CPUs it lends under `d`, started while `quiet` (it runs no task); none once it lends
    /// nothing and Ray offers none of its CPUs.
    pub async fn keep_warm(
        &mut self,
        d: &Decision,
        quiet: bool,
        node: &Supervisor,
    ) -> &Enforcement {
        let running = matches!(node.status().phase, NodePhase::Ready);
        let lends = d.pause == Pause::None && self.drained.is_none() && running;
        let want = if lends {
            d.target_cpus.min(self.total)
        } else {
            0
        };
        let offers_none = !running || self.advertised.is_some_and(|a| a < 0.5);
        self.warm
            .keep(
                want,
                quiet,
                offers_none,
                node,
                self.raylet_addr,
                &self.token,
            )
            .await;
        self.status.warm_workers = self.warm.count();
        &self.status
    }

    async fn contribute(&mut self, target: u32, node: &Supervisor) {
        if self.drained.take().is_some() || node.is_held() {
            tracing::info!("resuming: the node starts again");
            node.hold(false);
            self.advertised = None;
            self.asked = None;
            self.raylet = None;
        }
        let cpus = target.min(self.total);
        let limit = if cpus >= self.total {
            Limit::Full
        } else {
            // Zero CPUs offered (low memory, too hot) still leaves the raylet a sliver.
            Limit::Cap {
                cpus: f64::from(cpus).max(PAUSE_NOW_CAP),
            }
        };
        self.set_limit(limit, node);
        self.status.state = if cpus >= self.total {
            EnforcementState::Full
        } else {
            EnforcementState::Cap
        };
        self.status.cap_cpus = match limit {
            Limit::Cap { cpus } => Some(cpus),
            _ => None,
        };
        self.resize(f64::from(cpus), node).await;
    }

    async fn pause(&mut self, pause: Pause, node: &Supervisor) {
        if pause == Pause::Now {
            self.set_limit(
                Limit::Cap {
                    cpus: PAUSE_NOW_CAP,
                },
                node,
            );
            self.status.cap_cpus = Some(PAUSE_NOW_CAP);
        }
        // A "finish" that turns into "now" drains again, with the short deadline.
        let again = self.drained == Some(Pause::Finish) && pause == Pause::Now;
        if self.drained.is_none() || again {
            node.hold(true);
            match self.drain(pause, node).await {
                Ok(()) => {
                    self.drained = Some(pause);
                    self.status.last_error = None;
                }
                Err(e) => {
                    tracing::warn!("cannot drain the node: {e}");
                    self.status.last_error = Some(e);
                }
            }
        }
        let running = matches!(node.status().phase, NodePhase::Ready | NodePhase::Starting);
        self.status.state = if running {
            EnforcementState::Draining
        } else {
            EnforcementState::Paused
        };
        if !running {
            self.advertised = None;
            self.status.advertised_cpus = None;
        }
    }

    async fn drain(&mut self, pause: Pause, node: &Supervisor) -> Result<(), String> {
        if !matches!(node.status().phase, NodePhase::Ready) {
            // Nothing runs: holding it is the whole pause.
            return Ok(());
        }
        let deadline = (pause == Pause::Now).then(|| SystemTime::now() + PAUSE_NOW_DEADLINE);
        self.drain_for(node, "paused by Flotilla", deadline).await
    }

    /// Tells Ray's GCS the node leaves now: a drain with reason PREEMPTION (no new tasks, and
    /// Ray records why), then the node out of the node table, so that every owner reruns the
    /// node's tasks elsewhere at once. A raylet stopped by a signal would try to drain
    /// gracefully first, for longer than the OS grants, and be killed before it could say it
    /// left.
    async fn tell_ray_it_leaves(
        &mut self,
        node: &Supervisor,
        why: &str,
        within: Duration,
    ) -> Result<(), String> {
        let (id, mut gcs) = self.gcs_for(node).await?;
        let deadline = SystemTime::now() + within;
        match gcs
            .drain_node(&id, DrainReason::Preemption, why, Some(deadline))
            .await
        {
            Ok(reply) if !reply.accepted => {
                tracing::warn!("Ray refused to drain the node: {}", reply.rejection)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot drain the node: {e}"),
        }
        gcs.unregister_node(&id, why)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(node_id = %id, why, "the node left Ray's node table");
        Ok(())
    }

    /// The node's Ray id and a client of the GCS that knows it.
    async fn gcs_for(&self, node: &Supervisor) -> Result<(String, GcsClient), String> {
        let id = node
            .ray_node_id()
            .ok_or("the node's Ray id is not known yet")?;
        let gcs = GcsClient::connect(self.gcs_addr, Some(self.token.clone()))
            .await
            .map_err(|e| e.to_string())?;
        Ok((id, gcs))
    }

    /// Asks Ray's GCS to drain the node with reason PREEMPTION.
    async fn drain_for(
        &mut self,
        node: &Supervisor,
        message: &str,
        deadline: Option<SystemTime>,
    ) -> Result<(), String> {
        let (id, mut gcs) = self.gcs_for(node).await?;
        let reply = gcs
            .drain_node(&id, DrainReason::Preemption, message, deadline)
            .await
            .map_err(|e| e.to_string())?;
        if reply.accepted {
            tracing::info!(node_id = %id, message, "node draining");
            Ok(())
        } else {
            Err(format!(
                "Ray refused to drain the node: {}",
                reply.rejection
            ))
        }
    }

    /// Before the machine sleeps or shuts down: tells Ray the node is leaving (a drain with
    /// reason PREEMPTION, `why` as its message and a deadline `within` from now), ends the
    /// node ([`Supervisor::leave`]) and returns once it has stopped or `within` has passed.
    /// The node stays held: the next decision without a pause starts it again at once.
    pub async fn hand_back(
        &mut self,
        node: &Supervisor,
        within: Duration,
        why: &str,
    ) -> &Enforcement {
        let start = Instant::now();
        node.hold(true);
        if matches!(node.status().phase, NodePhase::Ready) {
            // A head out of reach must not use up the time the OS grants.
            let told = tokio::time::timeout(within / 2, self.tell_ray_it_leaves(node, why, within))
                .await
                .unwrap_or_else(|_| Err("Ray's GCS did not answer in time".into()));
            match told {
                Ok(()) => self.status.last_error = None,
                Err(e) => {
                    // The node leaves all the same; Ray then learns it from the raylet's exit
                    // or, at worst, from its health checks.
                    tracing::warn!("cannot tell Ray the node is leaving: {e}");
                    self.status.last_error = Some(e);
                }
            }
        }
        node.leave();
        self.drained = Some(Pause::Now);
        self.advertised = None;
        self.raylet = None;
        self.status.state = EnforcementState::Draining;
        let mut status = node.subscribe();
        let gone = async {
            loop {
                let phase = status.borrow_and_update().phase.clone();
                if !matches!(
                    phase,
                    NodePhase::Ready | NodePhase::Starting | NodePhase::Stopping
                ) {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        };
        let left = tokio::time::timeout(within.saturating_sub(start.elapsed()), gone).await;
        if left.is_ok() {
            self.status.state = EnforcementState::Paused;
            self.status.advertised_cpus = None;
            tracing::info!(
                secs = start.elapsed().as_secs_f32(),
                "the node handed its work back and left"
            );
        } else {
            tracing::warn!(?within, "the node had not stopped when the time ran out");
        }
        &self.status
    }

    fn set_limit(&mut self, limit: Limit, node: &Supervisor) {
        if self.limit == Some(limit) {
            return;
        }
        // A limit that failed is tried again every few seconds, and said once.
        if let Some((failed, at)) = self.limit_failed
            && failed == limit
            && at.elapsed() < LIMIT_RETRY
        {
            return;
        }
        match node.set_limit(limit) {
            Ok(_) => {
                self.limit = Some(limit);
                self.limit_failed = None;
            }
            Err(e) => {
                let text = e.to_string();
                if self.status.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!("cannot apply {limit:?}: {text}");
                }
                self.limit_failed = Some((limit, Instant::now()));
                self.status.last_error = Some(text);
            }
        }
    }

    /// Asks the raylet to advertise `cpus`, until it does.
    async fn resize(&mut self, cpus: f64, node: &Supervisor) {
        if !matches!(node.status().phase, NodePhase::Ready) {
            self.raylet = None;
            self.advertised = None;
            return;
        }
        if self.mode == ResizeMode::Restart {
            return self.resize_by_restart(cpus, node).await;
        }
        if self.advertised == Some(cpus) {
            return;
        }
        // A new target goes out at once; the same one is repeated at most once a second while
        // Ray still holds CPUs that running tasks use.
        let recent = self.last_resize.is_some_and(|t| t.elapsed() < RESIZE_RETRY);
        if self.asked == Some(cpus) && recent {
            return;
        }
        self.asked = Some(cpus);
        self.last_resize = Some(Instant::now());
        // A node that follows the network may come back at another address.
        if let Some(ip) = node.node_ip()
            && ip != self.raylet_addr.ip()
        {
            self.raylet_addr.set_ip(ip);
            self.raylet = None;
        }
        if self.raylet.is_none() {
            match RayletClient::connect(self.raylet_addr, Some(self.token.clone())).await {
                Ok(c) => self.raylet = Some(c),
                Err(e) => {
                    self.status.last_error = Some(e.to_string());
                    return;
                }
            }
        }
        let client = self.raylet.as_mut().expect("just connected");
        match client.resize_cpus(cpus).await {
            Ok(total) => {
                if self.advertised != Some(total) {
                    tracing::info!(asked = cpus, advertised = total, "Ray CPUs resized");
                }
                self.advertised = Some(total);
                self.status.advertised_cpus = Some(total);
                self.status.last_error = None;
            }
            Err(flotilla_ray::Error::RpcUnsupported { .. }) => {
                tracing::warn!(
                    "this Ray cannot resize a node live; the node restarts with its new CPU \
                     count when it runs no task"
                );
                self.mode = ResizeMode::Restart;
                self.status.resize = ResizeMode::Restart;
                self.raylet = None;
            }
            Err(e) => {
                self.raylet = None;
                self.status.last_error = Some(e.to_string());
            }
        }
    }

    /// [`ResizeMode::Restart`]: once the node runs no task (every CPU it advertises is free, as
    /// the GCS reports), restart it advertising `cpus`. Checked at most once a second.
    async fn resize_by_restart(&mut self, cpus: f64, node: &Supervisor) {
        let want = cpus.max(0.0).round() as u32;
        let started = node.started_cpus().unwrap_or(self.total);
        self.advertised = Some(f64::from(started));
        self.status.advertised_cpus = Some(f64::from(started));
        if started == want {
            return;
        }
        if self.last_resize.is_some_and(|t| t.elapsed() < RESIZE_RETRY) {
            return;
        }
        self.last_resize = Some(Instant::now());
        let Some(id) = node.ray_node_id() else {
            return;
        };
        let states = async {
            let mut gcs = GcsClient::connect(self.gcs_addr, Some(self.token.clone())).await?;
            gcs.node_states().await
        };
        let nodes = match states.await {
            Ok(n) => n,
            Err(e) => {
                self.status.last_error = Some(e.to_string());
                return;
            }
        };
        let Some(me) = nodes.iter().find(|n| n.node_id_hex == id) else {
            return;
        };
        let free = me.available_resources.get("CPU").copied().unwrap_or(0.0);
        if free + 1e-9 < me.cpus_total() {
            // A task runs: wait for it (a restart would kill it).
            return;
        }
        tracing::info!(
            from = started,
            to = want,
            "restarting the idle node with its new CPU count"
        );
        node.restart_with_cpus(want);
        self.raylet = None;
    }
}
