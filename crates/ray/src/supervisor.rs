//! Supervising one Ray node: start, readiness, restart with backoff, stop.
//!
//! Each node is one `ray start --block` process tree ([`flotilla_host::ProcessTree`]): `--block`
//! makes Ray's own launcher stay in the foreground and exit as soon as any of its processes dies
//! (a raylet killed with `kill -9`, say), which the supervisor sees as the tree's exit and answers
//! with a restart after a capped, jittered exponential backoff. Stopping a node is a SIGTERM to
//! its own launcher, which drains the node and ends its processes; whatever is left after the
//! grace period is killed by group and by marker. `ray stop` is never used: it would kill every
//! Ray process on the machine, other nodes included.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flotilla_host::throttle::{Guarantees, Limit, MemoryCeiling, Throttle, ThrottleConfig};
use flotilla_host::{ProcessTree, TreeSpec};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ports::{self, NodePorts};
use crate::{Error, RayToken, Result, Runtime, StateClient};

/// Label every Flotilla node carries, with the node's name as value.
pub const NODE_LABEL: &str = "flotilla.node";

/// What kind of node to run.
#[derive(Debug, Clone)]
pub enum Role {
    /// The Ray head: GCS, dashboard (loopback only), 0 CPUs.
    Head {
        gcs_port: u16,
        dashboard_port: u16,
        client_server_port: u16,
    },
    /// A worker node joining the GCS at `head`.
    Worker { head: SocketAddr },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Head { .. } => "head",
            Role::Worker { .. } => "worker",
        }
    }
}

/// Everything needed to run one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub role: Role,
    pub runtime: Runtime,
    pub node_name: String,
    /// The address other nodes reach this one at; Ray picks one when `None`.
    pub node_ip: Option<IpAddr>,
    /// A worker whose address follows the network: each (re)start advertises the address
    /// that routes to the head now (falling back to `node_ip`), so a machine whose address
    /// changed (another Wi-Fi, a new lease) rejoins with its new one.
    pub follow_route: bool,
    /// CPUs to advertise; the head always advertises 0.
    pub num_cpus: Option<u32>,
    pub object_store_bytes: u64,
    pub ports: NodePorts,
    /// Ray's `--temp-dir`: sessions, sockets and logs of this node.
    pub temp_dir: PathBuf,
    /// File for the launcher's own output.
    pub log: PathBuf,
    pub token: Option<RayToken>,
    pub labels: BTreeMap<String, String>,
    /// Extra environment for the node (tests shorten Ray's health checks through it).
    pub env: Vec<(String, String)>,
    pub backoff: Backoff,
    /// How long to wait for the node to become ready.
    pub ready_timeout: Duration,
    /// Ray's view of the cluster, where this machine can read it (a worker on the head's
    /// machine): then a worker is ready only once Ray lists it ALIVE.
    pub cluster_state: Option<StateClient>,
    /// Run the node at the lowest OS priority (nice 19, `SCHED_IDLE`): workers on people's
    /// machines do; the head, which only coordinates, does not.
    pub background: bool,
    /// Put every incarnation of the node in a throttle ([`Supervisor::set_limit`]) from before
    /// its first process starts; `None` runs it unthrottled.
    pub throttle: Option<ThrottleConfig>,
}

impl NodeConfig {
    /// The `ray start` arguments for this node. The token is not among them: it goes through
    /// the environment only.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["start".to_string(), "--block".into()];
        match &self.role {
            Role::Head {
                gcs_port,
                dashboard_port,
                client_server_port,
            } => {
                a.push("--head".into());
                a.push(format!("--port={gcs_port}"));
                a.push("--num-cpus=0".into());
                a.push("--dashboard-host=127.0.0.1".into());
                a.push(format!("--dashboard-port={dashboard_port}"));
                a.push(format!("--ray-client-server-port={client_server_port}"));
            }
            Role::Worker { head } => {
                a.push(format!("--address={head}"));
                if let Some(n) = self.num_cpus {
                    a.push(format!("--num-cpus={n}"));
                }
                a.push("--include-log-monitor=false".into());
            }
        }
        if let Some(ip) = self.node_ip_now() {
            a.push(format!("--node-ip-address={ip}"));
        }
        a.push(format!("--node-name={}", self.node_name));
        let mut labels = self.labels.clone();
        labels.insert(NODE_LABEL.into(), self.node_name.clone());
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        a.push(format!("--labels={}", labels.join(",")));
        a.push(format!("--temp-dir={}", self.temp_dir.display()));
        a.push(format!("--object-store-memory={}", self.object_store_bytes));
        let p = &self.ports;
        a.push(format!("--node-manager-port={}", p.node_manager));
        a.push(format!("--object-manager-port={}", p.object_manager));
        a.push(format!(
            "--dashboard-agent-listen-port={}",
            p.dashboard_agent_http
        ));
        a.push(format!(
            "--dashboard-agent-grpc-port={}",
            p.dashboard_agent_grpc
        ));
        a.push(format!("--metrics-export-port={}", p.metrics_export));
        a.push(format!("--runtime-env-agent-port={}", p.runtime_env_agent));
        a.push(format!("--min-worker-port={}", p.min_worker));
        a.push(format!("--max-worker-port={}", p.max_worker));
        a.push("--disable-usage-stats".into());
        a
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("RAY_USAGE_STATS_ENABLED".into(), "0".into()),
            // macOS and Windows nodes refuse multi-node clusters without it.
            ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER".into(), "1".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            // Ray's Python components log a job's whole runtime env, environment variables
            // included, at INFO: job secrets would land in every node's log files.
            ("RAY_LOGGER_LEVEL".into(), "warning".into()),
            // A node, or a driver it starts, on another patch of the cluster's Python joins
            // (Ray logs a warning): see `versions::match_level`.
            (
                crate::versions::MATCH_LEVEL_VAR.into(),
                crate::versions::match_level().into(),
            ),
        ];
        // The runtime's own `python` (with Ray) comes first on the PATH of everything the node
        // starts, job drivers included: `flotilla submit -- python sweep.py` runs the
        // cluster's Python, not whatever the machine has.
        if let Some(bin) = self.runtime.ray_bin().parent() {
            let rest = std::env::var_os("PATH").unwrap_or_default();
            let paths = std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&rest));
            if let Ok(path) = std::env::join_paths(paths) {
                env.push(("PATH".into(), path));
            }
            if let Some(venv) = bin.parent() {
                env.push(("VIRTUAL_ENV".into(), venv.into()));
            }
        }
        if let Some(t) = &self.token {
            env.extend(t.env().map(|(k, v)| (k.into(), v.into())));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        env
    }

    /// Checks, before starting, what would otherwise fail slowly or obscurely inside Ray.
    pub async fn preflight(&self) -> Result<()> {
        if let Role::Head {
            gcs_port,
            dashboard_port,
            client_server_port,
        } = &self.role
        {
            ports::ensure_free(*gcs_port, "Ray GCS", "--ray-port")?;
            ports::ensure_free(*dashboard_port, "Ray dashboard", "--ray-dashboard-port")?;
            ports::ensure_free(
                *client_server_port,
                "Ray client server",
                "--ray-client-port",
            )?;
        }
        let option = match self.role {
            Role::Head { .. } => "--head-node-ports",
            Role::Worker { .. } => "--node-ports",
        };
        for (port, what) in self.ports.services() {
            ports::ensure_free(port, what, option)?;
        }
        if let Role::Worker { head } = &self.role {
            check_reachable(*head, Duration::from_secs(5)).await?;
        }
        Ok(())
    }

    /// The address this node advertises if it starts now.
    pub fn node_ip_now(&self) -> Option<IpAddr> {
        match (&self.role, self.follow_route) {
            (Role::Worker { head }, true) => flotilla_host::addr::route_to(*head)
                .ok()
                .filter(|ip| !ip.is_unspecified())
                .or(self.node_ip),
            _ => self.node_ip,
        }
    }

    pub(crate) fn spec(&self, marker: &str) -> TreeSpec {
        TreeSpec {
            program: self.runtime.ray_bin(),
            args: self.args().into_iter().map(OsString::from).collect(),
            env: self.env(),
            env_remove: vec!["RAY_ADDRESS".into()],
            cwd: Some(self.temp_dir.clone()),
            log: Some(self.log.clone()),
            marker: marker.into(),
            background: self.background,
            // A node that runs in the background also goes first when memory runs out.
            oom_first: self.background,
            cgroup_procs: Vec::new(),
        }
    }

    /// The head's dashboard, for readiness checks (head only).
    pub fn dashboard(&self) -> Option<StateClient> {
        match self.role {
            Role::Head { dashboard_port, .. } => Some(StateClient::new(
                format!("http://127.0.0.1:{dashboard_port}"),
                self.token.clone(),
            )),
            Role::Worker { .. } => None,
        }
    }

    /// Where readiness can be read from Ray's node table, if anywhere.
    fn node_table(&self) -> Option<StateClient> {
        self.dashboard().or_else(|| self.cluster_state.clone())
    }
}

/// Fails with [`Error::HeadUnreachable`] unless a TCP connection to `addr` opens in `timeout`.
pub async fn check_reachable(addr: SocketAddr, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::HeadUnreachable {
            addr,
            detail: e.to_string(),
        }),
        Err(_) => Err(Error::HeadUnreachable {
            addr,
            detail: format!("no answer in {} s", timeout.as_secs()),
        }),
    }
}

/// Capped exponential backoff with jitter for restarts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A node that stayed up this long starts again from `initial` after its next crash.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(15),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1-based), with ±20% jitter so that nodes that
    /// crashed together do not restart in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max);
        let jitter: f64 = rand::random_range(0.8..1.2);
        exp.mul_f64(jitter).min(self.max)
    }
}

/// Where a supervised node is in its life.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum NodePhase {
    Starting,
    Ready,
    /// The node exited on its own; it starts again in `in_secs`.
    Restarting {
        in_secs: f64,
        last_exit: String,
    },
    /// Held by [`Supervisor::hold`]: the node is not running and is not restarted until
    /// released.
    Held,
    /// A worker waiting for its head to answer before starting (the network is down, the head
    /// is away); it starts as soon as the head's GCS port accepts a connection.
    WaitingForHead {
        error: String,
    },
    Stopping,
    Stopped,
    /// Starting failed for a reason a restart cannot fix (a port in use, say).
    Failed {
        error: String,
    },
}

/// What the supervisor reports about its node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    pub phase: NodePhase,
    /// The launcher's pid while it runs.
    pub pid: Option<u32>,
    pub restarts: u32,
}

/// Runs one node until cancelled, restarting it when it dies.
#[derive(Debug)]
pub struct Supervisor {
    status: watch::Receiver<NodeStatus>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    cancel: CancellationToken,
    marker: String,
    control: std::sync::Arc<Control>,
}

/// What the handle and the supervising task share.
#[derive(Debug)]
struct Control {
    /// The current incarnation's throttle, if it has one.
    throttle: std::sync::Mutex<Option<Throttle>>,
    /// The last limit asked for, applied again to every new incarnation.
    limit: std::sync::Mutex<Limit>,
    /// The last memory ceiling asked for, applied again to every new incarnation.
    memory: std::sync::Mutex<Option<u64>>,
    held: watch::Sender<bool>,
    /// The address the current incarnation advertises.
    node_ip: std::sync::Mutex<Option<IpAddr>>,
    /// Asks the supervising task to check its node now ([`Supervisor::recheck`]).
    recheck: tokio::sync::Notify,
    /// CPUs for the next incarnation, replacing the configured count
    /// ([`Supervisor::restart_with_cpus`]).
    cpus: std::sync::Mutex<Option<u32>>,
    /// Asks the supervising task to restart the node now.
    restart: tokio::sync::Notify,
    /// Set by [`Supervisor::leave`] until the node is released: the current incarnation ends.
    leaving: std::sync::atomic::AtomicBool,
    leave: tokio::sync::Notify,
    /// What the current incarnation advertises.
    started_cpus: std::sync::Mutex<Option<u32>>,
    /// The current incarnation's Ray node id, once found (finding it walks the process table).
    node_id: std::sync::Mutex<Option<String>>,
    /// Ray's reason for the last failure to start or unexpected exit; cleared once the node is
    /// ready again.
    failure: std::sync::Mutex<Option<crate::Failure>>,
}

impl Control {
    /// The current incarnation's Ray node id: remembered once its raylet has been found.
    fn node_id(&self, marker: &str) -> Option<String> {
        let mut cached = self.node_id.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none() {
            *cached = raylet_node_id(marker);
        }
        cached.clone()
    }
}

impl Control {
    fn throttle(&self) -> std::sync::MutexGuard<'_, Option<Throttle>> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Supervisor {
    /// Runs preflight checks, then starts the node and supervises it in a background task.
    pub async fn start(config: NodeConfig) -> Result<Supervisor> {
        config.preflight().await?;
        flotilla_host::dirs::create_private_dir(&config.temp_dir).map_err(Error::io(format!(
            "cannot create {}",
            config.temp_dir.display()
        )))?;
        let marker = format!(
            "{}-{}-{}",
            config.node_name,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let (tx, status) = watch::channel(NodeStatus {
            phase: NodePhase::Starting,
            pid: None,
            restarts: 0,
        });
        let cancel = CancellationToken::new();
        let control = std::sync::Arc::new(Control {
            throttle: std::sync::Mutex::new(None),
            limit: std::sync::Mutex::new(Limit::Full),
            memory: std::sync::Mutex::new(None),
            held: watch::channel(false).0,
            node_ip: std::sync::Mutex::new(None),
            recheck: tokio::sync::Notify::new(),
            cpus: std::sync::Mutex::new(None),
            restart: tokio::sync::Notify::new(),
            leaving: std::sync::atomic::AtomicBool::new(false),
            leave: tokio::sync::Notify::new(),
            started_cpus: std::sync::Mutex::new(None),
            node_id: std::sync::Mutex::new(None),
            failure: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(supervise(
            config,
            marker.clone(),
            tx,
            cancel.clone(),
            control.clone(),
        ));
        Ok(Supervisor {
            status,
            task: std::sync::Mutex::new(Some(task)),
            cancel,
            marker,
            control,
        })
    }

    /// Limits the node's CPU through its throttle, now and for every later incarnation.
    /// Returns `Ok(false)` when the node has no throttle (none configured, or none available on
    /// this machine).
    pub fn set_limit(
        &self,
        limit: Limit,
    ) -> std::result::Result<bool, flotilla_host::throttle::ThrottleError> {
        if !matches!(limit, Limit::Thaw) {
            *self.control.limit.lock().unwrap_or_else(|e| e.into_inner()) = limit;
        } else {
            let mut last = self.control.limit.lock().unwrap_or_else(|e| e.into_inner());
            if *last == Limit::Freeze {
                *last = Limit::Full;
            }
        }
        match self.control.throttle().as_mut() {
            Some(t) => t.set(limit).map(|()| true),
            None => Ok(false),
        }
    }

    /// Puts a memory ceiling on the node's tree through its throttle, now and for every later
    /// incarnation (`None`: none). `Ok(None)` when the node has no throttle.
    pub fn set_memory_limit(
        &self,
        bytes: Option<u64>,
    ) -> std::result::Result<Option<MemoryCeiling>, flotilla_host::throttle::ThrottleError> {
        *self
            .control
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = bytes;
        match self.control.throttle().as_mut() {
            Some(t) => t.set_memory_limit(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The memory the node's tree holds, as its throttle measures it.
    pub fn memory_used(&self) -> Option<u64> {
        self.control
            .throttle()
            .as_ref()
            .and_then(|t| t.memory_used())
    }

    /// Ends the node's task worker that holds the most memory ([`crate::shed`]), so that Ray
    /// retries its task; returns its pid and bytes, or `None` when the node has no worker (or
    /// its processes cannot be told apart on this OS).
    pub fn shed_largest_worker(&self) -> Option<(u32, u64)> {
        let processes = self.control.throttle().as_ref()?.processes_by_memory();
        let (pid, bytes) =
            crate::shed::largest_worker(&processes, flotilla_host::process::cmdline)?;
        flotilla_host::process::kill(pid);
        Some((pid, bytes))
    }

    /// What the current throttle guarantees, if the node has one.
    pub fn throttle_guarantees(&self) -> Option<Guarantees> {
        self.control.throttle().as_ref().map(|t| t.guarantees())
    }

    /// The node's total CPU time as its throttle measures it.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.control.throttle().as_ref().and_then(|t| t.cpu_time())
    }

    /// Holds the node: once it exits (drained, say) it is not restarted until released.
    /// Releasing a held node that is not running starts it at once.
    pub fn hold(&self, held: bool) {
        if !held {
            self.control
                .leaving
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        self.control.held.send_replace(held);
    }

    /// Holds the node and ends its current incarnation now, gracefully: the raylet is asked to
    /// stop (it tells Ray's GCS it is going, so Ray gives up on it at once rather than after
    /// its health checks fail), and whatever is left after [`LEAVE_GRACE`] is killed. The node
    /// starts again when released ([`Supervisor::hold`]`(false)`). Before the machine sleeps,
    /// after Ray was told to drain it: its tasks then run elsewhere without waiting.
    pub fn leave(&self) {
        self.control.held.send_replace(true);
        self.control
            .leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.control.leave.notify_one();
    }

    pub fn is_held(&self) -> bool {
        *self.control.held.borrow()
    }

    /// The Ray node id (hex) of the current incarnation, read from its raylet's command line;
    /// `None` while no raylet runs or where the OS cannot tell.
    /// The address the current incarnation advertises (it may change between restarts of a
    /// node that follows the route to its head).
    pub fn node_ip(&self) -> Option<IpAddr> {
        *self
            .control
            .node_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn ray_node_id(&self) -> Option<String> {
        self.control.node_id(&self.marker)
    }

    /// Asks the supervisor to check its node now rather than at its next periodic check: the
    /// network changed, the machine woke, or the control session came back after a loss. A
    /// worker then restarts at once if its address changed or if Ray declared it dead, and a
    /// worker waiting for its head tries the head again.
    pub fn recheck(&self) {
        self.control.recheck.notify_one();
    }

    /// Restarts the node now, gracefully, advertising `cpus` from then on: how the advertised
    /// CPUs change where Ray cannot resize a node live. The caller picks a moment when the node
    /// runs no task.
    pub fn restart_with_cpus(&self, cpus: u32) {
        *self.control.cpus.lock().unwrap_or_else(|e| e.into_inner()) = Some(cpus);
        self.control.restart.notify_one();
    }

    /// The CPUs the current incarnation was started with.
    pub fn started_cpus(&self) -> Option<u32> {
        *self
            .control
            .started_cpus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Ray's reason why the node last failed to start or exited, while it is not running
    /// again ([`NodePhase::Ready`] clears it).
    pub fn failure(&self) -> Option<crate::Failure> {
        self.control
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// The marker every process of this node's tree carries (see [`flotilla_host::process`]).
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Waits until the node is ready; fails if it fails to start for good, if a start fails
    /// for a reason only a person can mend or starts keep failing for [`FAILING_FOR`] (with
    /// Ray's reason: [`Error::NodeFailed`]; the supervisor goes on retrying), or if `timeout`
    /// passes.
    /// A slow start that makes progress is waited for: the supervisor gives up on an attempt
    /// only once it stalls ([`NodeConfig::ready_timeout`]).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.status.clone();
        let mut failing_since: Option<Instant> = None;
        let wait = async {
            loop {
                let status = rx.borrow_and_update().clone();
                match &status.phase {
                    NodePhase::Ready => return Ok(()),
                    NodePhase::Failed { error } => {
                        return Err(Error::io("the Ray node failed to start")(
                            std::io::Error::other(error.clone()),
                        ));
                    }
                    NodePhase::Restarting { .. } => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if let Some(failure) = self.failure()
                            && (failure.kind.needs_a_person() || since.elapsed() >= FAILING_FOR)
                        {
                            return Err(Error::NodeFailed { failure });
                        }
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(Error::io("the supervisor ended")(std::io::Error::other(
                        "supervisor task ended",
                    )));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(Error::io("waiting for the Ray node")(
                    std::io::Error::other(format!("not ready after {} s", timeout.as_secs())),
                ))
            })
    }

    /// Stops the node (drain, then kill what is left) and waits for the supervisor to end.
    pub async fn stop(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The task owns the tree; cancelling lets it stop the tree, and if the runtime is gone
        // the tree's own drop kills it.
        self.cancel.cancel();
    }
}

/// How long a stopping node may drain before it is killed. Ray drains for up to 30 s on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(35);
/// How long a node that leaves ([`Supervisor::leave`]) gets to stop before it is killed: the
/// machine is about to sleep, and the OS grants a few seconds in all.
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);
/// How often a worker waiting for its head tries the head's GCS port (a TCP connect).
const HEAD_POLL: Duration = Duration::from_secs(2);
/// How often a running worker checks, unprompted, that its address is still the one that
/// routes to the head and that Ray has not declared it dead. Prompted checks
/// ([`Supervisor::recheck`]) come at once; this is the net under them, kept rare because each
/// check reads the whole cluster's state from the GCS.
const WATCHDOG_EVERY: Duration = Duration::from_secs(120);

/// How long [`Supervisor::wait_ready`] sits through failed starts (a restarted head whose old
/// Ray processes are still leaving, say) before it reports the failure.
pub const FAILING_FOR: Duration = Duration::from_secs(60);
/// How long a node that failed for a reason only a person can mend (a version mismatch) waits
/// before it tries again.
const NEEDS_A_PERSON_RETRY: Duration = Duration::from_secs(60);
/// The longest a node's start is waited for while it still makes progress.
pub const START_AT_MOST: Duration = Duration::from_secs(15 * 60);

/// Ray's reason for the end of the incarnation whose launcher output starts at `log_from`.
fn explain_exit(config: &NodeConfig, log_from: u64) -> Option<crate::Failure> {
    let launcher = crate::failure::read_from(&config.log, log_from);
    crate::failure::explain_node(&launcher, &config.temp_dir)
}

/// What changes while a starting node makes progress: what its launcher printed (`ray start`
/// says each step) and how many log files its session has (each of Ray's components starts
/// its own). The growth of a component's own log is not progress: a raylet that cannot reach
/// its GCS logs every retry.
fn start_progress(config: &NodeConfig) -> (u64, usize) {
    let launcher = std::fs::metadata(&config.log).map_or(0, |m| m.len());
    let logs = config.temp_dir.join("session_latest").join("logs");
    let files = std::fs::read_dir(&logs).map_or(0, |entries| entries.count());
    (launcher, files)
}

fn raylet_node_id(marker: &str) -> Option<String> {
    if !flotilla_host::process::CAN_SCAN_MARKED {
        return None;
    }
    flotilla_host::process::marked_processes(marker)
        .into_iter()
        .filter_map(flotilla_host::process::cmdline)
        .filter(|args| args.first().is_some_and(|a| a.ends_with("raylet")))
        .find_map(|args| {
            args.iter()
                .find_map(|a| a.strip_prefix("--node_id=").map(str::to_string))
        })
}

/// Waits until the worker's head accepts a connection, reporting
/// [`NodePhase::WaitingForHead`] meanwhile. Returns `None` if cancelled, else whether it had to
/// wait.
async fn wait_for_head(
    head: SocketAddr,
    control: &Control,
    cancel: &CancellationToken,
    mut waiting: impl FnMut(String),
) -> Option<bool> {
    let mut waited = false;
    loop {
        match check_reachable(head, Duration::from_secs(3)).await {
            Ok(()) => return Some(waited),
            Err(e) => {
                if !waited {
                    tracing::warn!("{e}; starting the Ray node once the head answers");
                }
                waited = true;
                waiting(e.to_string());
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(HEAD_POLL) => {}
            _ = control.recheck.notified() => {}
        }
    }
}

/// Returns, with the reason, once a running worker must start again: its address changed (it
/// follows the route to its head) or Ray declared it dead (it was cut off longer than Ray's
/// health checks allow, and its raylet did not notice). Checks when prompted and every
/// [`WATCHDOG_EVERY`]; never returns for a head.
async fn watchdog(config: &NodeConfig, marker: &str, control: &Control) -> String {
    let Role::Worker { head } = config.role else {
        return std::future::pending().await;
    };
    let advertised = *control.node_ip.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCHDOG_EVERY) => {}
            _ = control.recheck.notified() => {}
        }
        if config.follow_route
            && let (Some(now), Some(was)) = (config.node_ip_now(), advertised)
            && now != was
        {
            return format!("this machine's address changed from {was} to {now}");
        }
        let Some(id) = control.node_id(marker) else {
            continue;
        };
        let states = async {
            let mut gcs = crate::grpc::GcsClient::connect(head, config.token.clone()).await?;
            gcs.node_states().await
        };
        if let Ok(Ok(nodes)) = tokio::time::timeout(Duration::from_secs(5), states).await
            && nodes
                .iter()
                .any(|n| n.node_id_hex == id && n.state == crate::grpc::NodeLifecycle::Dead)
        {
            return "Ray declared this node dead while it was cut off".into();
        }
    }
}

async fn supervise(
    mut config: NodeConfig,
    marker: String,
    tx: watch::Sender<NodeStatus>,
    cancel: CancellationToken,
    control: std::sync::Arc<Control>,
) {
    let mut restarts = 0u32;
    let mut attempt = 0u32;
    let mut held = control.held.subscribe();
    loop {
        let set = |phase: NodePhase, pid: Option<u32>, restarts: u32| {
            let _ = tx.send(NodeStatus {
                phase,
                pid,
                restarts,
            });
        };
        if *held.borrow_and_update() {
            set(NodePhase::Held, None, restarts);
            tracing::info!(node = %config.node_name, "Ray node held");
            if !until_released(&mut held, &cancel).await {
                set(NodePhase::Stopped, None, restarts);
                return;
            }
        }
        if let Role::Worker { head } = config.role {
            let waiting = |error| set(NodePhase::WaitingForHead { error }, None, restarts);
            match wait_for_head(head, &control, &cancel, waiting).await {
                None => {
                    set(NodePhase::Stopped, None, restarts);
                    return;
                }
                // The exits before were the network's doing, not a crash loop.
                Some(true) => attempt = 0,
                Some(false) => {}
            }
        }
        set(NodePhase::Starting, None, restarts);
        let log_from = std::fs::metadata(&config.log).map_or(0, |m| m.len());
        let mut tree = match launch(&mut config, &marker, &control) {
            Ok(tree) => tree,
            Err(error) => {
                set(NodePhase::Failed { error }, None, restarts);
                return;
            }
        };
        let pid = tree.pid();
        set(NodePhase::Starting, Some(pid), restarts);
        tracing::info!(node = %config.node_name, pid, role = config.role.name(), "Ray node starting");
        let started = Instant::now();
        let run = Run {
            config: &config,
            marker: &marker,
            control: &control,
            held: &held,
            cancel: &cancel,
            log_from,
        };
        let ready = || set(NodePhase::Ready, Some(pid), restarts);
        let Some((last_exit, at_once)) = run.until_exit(&mut tree, ready).await else {
            set(NodePhase::Stopping, Some(pid), restarts);
            stop_for_good(&control, tree).await;
            set(NodePhase::Stopped, None, restarts);
            return;
        };
        // The launcher is gone; make sure nothing of its tree is left before starting anew.
        tree.kill();
        *control.throttle() = None;
        if *held.borrow() {
            // Drained on purpose: wait to be released, then start again without backoff.
            tracing::info!(node = %config.node_name, %last_exit, "Ray node left while held");
            attempt = 0;
            continue;
        }
        if at_once {
            attempt = 0;
            restarts += 1;
            continue;
        }
        if started.elapsed() >= config.backoff.reset_after {
            attempt = 0;
        }
        attempt += 1;
        restarts += 1;
        let delay = restart_delay(&config.backoff, attempt, &control);
        tracing::warn!(node = %config.node_name, %last_exit, ?delay, "Ray node exited; restarting");
        set(
            NodePhase::Restarting {
                in_secs: delay.as_secs_f64(),
                last_exit,
            },
            None,
            restarts,
        );
        tokio::select! {
            _ = cancel.cancelled() => {
                set(NodePhase::Stopped, None, restarts);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Waits while the node is held; false when cancelled meanwhile.
async fn until_released(held: &mut watch::Receiver<bool>, cancel: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            changed = held.changed() => {
                if changed.is_err() || !*held.borrow_and_update() {
                    return true;
                }
            }
        }
    }
}

/// Starts the node's process tree with the CPU count and throttle of the moment (the throttle
/// exists before the tree, so that its first process is born inside); the error says why it
/// could not start.
fn launch(config: &mut NodeConfig, marker: &str, control: &Control) -> Result<ProcessTree, String> {
    let prepared = config.throttle.as_ref().and_then(|tc| {
        // Named per agent process, after removing the node's groups killed agents left.
        Throttle::prepare_node(tc, &config.node_name)
            .inspect_err(
                |e| tracing::warn!(node = %config.node_name, "running without a throttle: {e}"),
            )
            .ok()
    });
    if let Some(cpus) = *control.cpus.lock().unwrap_or_else(|e| e.into_inner()) {
        config.num_cpus = Some(cpus);
    }
    *control
        .started_cpus
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = config.num_cpus;
    *control.node_id.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let mut spec = config.spec(marker);
    *control.node_ip.lock().unwrap_or_else(|e| e.into_inner()) = config.node_ip_now();
    if let Some(p) = &prepared {
        spec.cgroup_procs = p.procs_files().to_vec();
        // A group with the lowest weight (cgroup `cpu.idle`) keeps the node out of the
        // owner's way by itself; inside it, Ray's own priorities stand (its raylet answers
        // ahead of its busy task workers, as under plain Ray).
        if p.idle_group() {
            spec.background = false;
        }
    }
    let tree = ProcessTree::spawn(spec)
        .map_err(|e| format!("cannot start {}: {e}", config.runtime.ray_bin().display()))?;
    if let Some(p) = prepared {
        match p.attach(tree.pid(), marker) {
            Ok(mut t) => {
                let limit = *control.limit.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = t.set(limit) {
                    tracing::warn!(node = %config.node_name, "cannot apply {limit:?}: {e}");
                }
                let memory = *control.memory.lock().unwrap_or_else(|e| e.into_inner());
                if memory.is_some()
                    && let Err(e) = t.set_memory_limit(memory)
                {
                    tracing::warn!(node = %config.node_name, "cannot apply the memory ceiling: {e}");
                }
                *control.throttle() = Some(t);
            }
            Err(e) => {
                tracing::warn!(node = %config.node_name, "running without a throttle: {e}")
            }
        }
    }
    Ok(tree)
}

/// One run of a started node.
struct Run<'a> {
    config: &'a NodeConfig,
    marker: &'a str,
    control: &'a Control,
    held: &'a watch::Receiver<bool>,
    cancel: &'a CancellationToken,
    /// Where this run's lines begin in the node's log.
    log_from: u64,
}

impl Run<'_> {
    /// Waits for the node to be ready, then for it to end; readiness, the tree's exit and
    /// cancellation race, and whichever comes first decides. `ready` is called once it is.
    /// Returns why it ended and whether to start it again at once (no backoff); `None` when
    /// cancelled.
    async fn until_exit(
        &self,
        tree: &mut ProcessTree,
        ready: impl FnOnce(),
    ) -> Option<(String, bool)> {
        let config = self.config;
        let started = Instant::now();
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            result = wait_ready(config, tree) => match result {
                Ok(()) => {
                    tracing::info!(node = %config.node_name, secs = started.elapsed().as_secs_f32(), "Ray node ready");
                    *self.control.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    ready();
                    self.while_ready(tree).await
                }
                Err(e) => {
                    tree.kill();
                    let failure = explain_exit(config, self.log_from).or_else(|| {
                        matches!(e, Error::NotReady { .. }).then(|| crate::Failure {
                            kind: crate::FailureKind::Stalled,
                            reason: e.to_string(),
                        })
                    });
                    let text = failure.as_ref().map_or_else(|| e.to_string(), |f| f.reason.clone());
                    tracing::warn!(node = %config.node_name, "the Ray node did not start: {text}");
                    *self.control.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
                    Some((text, false))
                }
            }
        }
    }

    /// A ready node until it exits, is drained, stalls, leaves or is restarted.
    async fn while_ready(&self, tree: &mut ProcessTree) -> Option<(String, bool)> {
        let (config, control) = (self.config, self.control);
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            status = tree.wait() => {
                let failure = explain_exit(config, self.log_from);
                let text = failure.as_ref().map_or_else(|| status.to_string(), |f| f.reason.clone());
                *control.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
                Some((text, false))
            }
            () = drained(self.marker, self.held.clone()) => {
                // A drained raylet exits on its own, but `ray start --block` treats that as
                // graceful and keeps waiting; with the raylet gone there is nothing left to
                // drain, so end the rest at once.
                tree.kill();
                Some(("drained".to_string(), false))
            }
            reason = watchdog(config, self.marker, control) => {
                tracing::warn!(node = %config.node_name, "{reason}: restarting the Ray node");
                Some((reason, true))
            }
            () = left(control) => {
                tracing::info!(node = %config.node_name, "the Ray node leaves the cluster");
                tree.stop(LEAVE_GRACE).await;
                Some(("left the cluster".to_string(), false))
            }
            () = control.restart.notified() => {
                let cpus = *control.cpus.lock().unwrap_or_else(|e| e.into_inner());
                tracing::info!(node = %config.node_name, ?cpus, "restarting the Ray node with a new CPU count");
                // Idle by the caller's choice: let it leave Ray cleanly.
                tree.stop(STOP_GRACE).await;
                Some(("restarted with a new CPU count".to_string(), true))
            }
        }
    }
}

/// Stops the node for good: a frozen tree cannot drain, so it runs again to stop.
async fn stop_for_good(control: &Control, mut tree: ProcessTree) {
    if let Some(t) = control.throttle().as_mut() {
        let _ = t.set(Limit::Full);
    }
    tree.stop(STOP_GRACE).await;
    *control.throttle() = None;
}

/// How long to wait before the `attempt`-th start after a crash: the backoff's, and never less
/// than [`NEEDS_A_PERSON_RETRY`] when Ray's reason needs a person (trying again soon cannot
/// mend it; trying now and then notices when it is mended).
fn restart_delay(backoff: &Backoff, attempt: u32, control: &Control) -> Duration {
    let delay = backoff.delay(attempt);
    let needs_a_person = control
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|f| f.kind.needs_a_person());
    if needs_a_person {
        delay.max(NEEDS_A_PERSON_RETRY)
    } else {
        delay
    }
}

/// Returns once [`Supervisor::leave`] asked the node to leave.
async fn left(control: &Control) {
    loop {
        let asked = control.leave.notified();
        if control.leaving.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        asked.await;
    }
}

/// Returns once the node is held and its raylet has exited (a drain completed). Where the OS
/// cannot list the tree's processes, never: the node then runs on until stopped.
async fn drained(marker: &str, mut held: watch::Receiver<bool>) {
    if !flotilla_host::process::CAN_SCAN_MARKED {
        return std::future::pending().await;
    }
    loop {
        if *held.borrow_and_update() && !has_raylet(marker) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = held.changed() => {}
        }
    }
}

fn has_raylet(marker: &str) -> bool {
    flotilla_host::process::marked_processes(marker)
        .into_iter()
        .filter_map(flotilla_host::process::cmdline)
        .any(|args| args.first().is_some_and(|a| a.ends_with("raylet")))
}

/// Ready means: the GCS answers and the node is ALIVE in Ray's node table, where this machine
/// can read it (the head, or a worker beside it); elsewhere, a worker's node manager accepts
/// connections. Fails if the launcher exits first or time runs out.
async fn wait_ready(config: &NodeConfig, tree: &ProcessTree) -> Result<()> {
    let start = Instant::now();
    let mut deadline = start + config.ready_timeout;
    let mut progress = start_progress(config);
    let mut progress_at = start;
    let dashboard = config.node_table();
    loop {
        // A busy machine starts Ray slowly: as long as the node logs more, it is not stuck.
        if progress_at.elapsed() >= Duration::from_secs(2) {
            progress_at = Instant::now();
            let now = start_progress(config);
            if now != progress {
                progress = now;
                deadline = (progress_at + config.ready_timeout).min(start + START_AT_MOST);
            }
        }
        if let Some(status) = tree.try_status() {
            return Err(Error::io(format!(
                "the Ray {} node exited during start ({status}); its log is {}",
                config.role.name(),
                config.log.display()
            ))(std::io::Error::other("exited")));
        }
        let ready = match &dashboard {
            Some(d) => {
                d.gcs_healthy().await
                    && d.nodes().await.is_ok_and(|nodes| {
                        nodes
                            .iter()
                            .any(|n| n.is_alive() && n.node_name == config.node_name)
                    })
            }
            None => {
                let ip = config
                    .node_ip
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
                let addr = SocketAddr::new(ip, config.ports.node_manager);
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
        };
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                role: config.role.name(),
                secs: config.ready_timeout.as_secs(),
                log: config.log.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(role: Role) -> NodeConfig {
        NodeConfig {
            role,
            runtime: Runtime {
                spec: Default::default(),
                dir: "/rt".into(),
                python_full: "3.11.7".into(),
            },
            node_name: "laptop".into(),
            node_ip: Some("100.64.0.7".parse().unwrap()),
            follow_route: false,
            num_cpus: Some(4),
            object_store_bytes: 100_000_000,
            ports: NodePorts::worker_default(),
            temp_dir: "/tmp/flotilla-0/laptop".into(),
            log: "/l/laptop.log".into(),
            token: Some(RayToken::new("s3cret-token").unwrap()),
            labels: BTreeMap::new(),
            env: vec![],
            backoff: Backoff::default(),
            ready_timeout: Duration::from_secs(60),
            cluster_state: None,
            background: false,
            throttle: None,
        }
    }

    #[test]
    fn worker_command_line_pins_everything_and_hides_the_token() {
        let c = config(Role::Worker {
            head: "100.64.0.1:6379".parse().unwrap(),
        });
        let args = c.args();
        for want in [
            "--block",
            "--address=100.64.0.1:6379",
            "--num-cpus=4",
            "--include-log-monitor=false",
            "--node-ip-address=100.64.0.7",
            "--node-name=laptop",
            "--labels=flotilla.node=laptop",
            "--node-manager-port=7480",
            "--dashboard-agent-listen-port=7482",
            "--min-worker-port=7500",
            "--max-worker-port=7755",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        assert!(!args.iter().any(|a| a.contains("s3cret")));
        let env = c.env();
        assert!(
            env.iter()
                .any(|(k, v)| k == "RAY_AUTH_TOKEN" && v == "s3cret-token")
        );
        assert!(
            env.iter()
                .any(|(k, v)| k == "RAY_AUTH_MODE" && v == "token")
        );
        // The runtime's Python is the first `python` on the node's PATH.
        let path = env.iter().find(|(k, _)| k == "PATH").unwrap().1.clone();
        let first = std::env::split_paths(&path).next().unwrap();
        assert_eq!(Some(first.as_path()), c.runtime.ray_bin().parent());
    }

    #[test]
    fn head_advertises_no_cpus_and_keeps_its_dashboard_on_loopback() {
        let mut c = config(Role::Head {
            gcs_port: 6379,
            dashboard_port: 8265,
            client_server_port: 10001,
        });
        c.num_cpus = Some(8);
        let args = c.args();
        assert!(args.contains(&"--head".to_string()));
        assert!(args.contains(&"--num-cpus=0".to_string()));
        assert!(!args.contains(&"--num-cpus=8".to_string()));
        assert!(args.contains(&"--dashboard-host=127.0.0.1".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--include-log-monitor")));
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff::default();
        for attempt in 1..=20 {
            let d = b.delay(attempt);
            assert!(d <= b.max, "{attempt}: {d:?}");
            let base = b
                .initial
                .saturating_mul(2u32.saturating_pow(attempt - 1))
                .min(b.max);
            assert!(
                d >= base.mul_f64(0.8).min(b.max.mul_f64(0.8)),
                "{attempt}: {d:?}"
            );
        }
        assert!(b.delay(1) < Duration::from_millis(1300));
        // Late attempts sit at the cap, jitter taking up to a fifth off.
        assert!(b.delay(10) >= b.max.mul_f64(0.8));
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| b.delay(3)).collect();
        assert!(spread.len() > 1, "no jitter");
    }

    #[tokio::test]
    async fn an_unreachable_head_is_named() {
        // Nothing listens on port 9 of loopback: refused at once.
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let err = check_reachable(addr, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.0.0.1:9"), "{err}");
    }
}
