//! This machine's worker: the agent of a machine that joined a fleet, kept running through a
//! head that goes out of reach, failed starts and new Ray settings from the head, until it is
//! stopped or the head removes or refuses the machine. Also a worker against a head whose Ray
//! token this machine holds, without joining ([`run_at`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use flotilla_agent::enrollment::{self, Enrollment};
use flotilla_agent::session::{SessionConfig, describe};
use flotilla_agent::{Agent, AgentConfig, Deps, SessionSetup};
use flotilla_policy::Leaving;
use flotilla_ray::{NodePorts, RayToken, RuntimeManager, RuntimeSpec};
use tokio_util::sync::CancellationToken;

use crate::{Event, Events};

/// Where a moved head's control plane is (`host:port`), as `flotilla worker --head` takes it.
pub use flotilla_proto::HeadAddress;

/// How this machine's node runs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOptions {
    /// Name of the node; `None`: the name the fleet knows this machine by (joined), else this
    /// machine's host name.
    pub name: Option<String>,
    /// CPUs the node offers at most; `None`: all logical cores.
    pub cpus: Option<u32>,
    /// Object store size in MiB.
    pub object_store_mb: u64,
    /// First of the node's ports (BASE..BASE+5 and BASE+20..BASE+275).
    pub node_ports: u16,
    /// Time between reports to the head.
    pub report_every: Duration,
    /// Time a contribution record stays open before it is queued for the head.
    pub record_every: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            name: None,
            cpus: None,
            object_store_mb: 512,
            node_ports: flotilla_ray::ports::DEFAULT_WORKER_NODE_BASE,
            report_every: Duration::from_secs(1),
            record_every: Duration::from_secs(300),
        }
    }
}

impl NodeOptions {
    /// The defaults with the environment's `FLOTILLA_CPUS`, `FLOTILLA_OBJECT_STORE_MB` and
    /// `FLOTILLA_NODE_PORTS` on top, as `flotilla worker` with no options has them.
    pub fn from_env() -> NodeOptions {
        let d = NodeOptions::default();
        NodeOptions {
            cpus: crate::env("FLOTILLA_CPUS")
                .filter(|n| (1..=4096).contains(n))
                .or(d.cpus),
            object_store_mb: crate::env("FLOTILLA_OBJECT_STORE_MB")
                .filter(|mb| *mb >= 80)
                .unwrap_or(d.object_store_mb),
            node_ports: crate::env("FLOTILLA_NODE_PORTS").unwrap_or(d.node_ports),
            ..d
        }
    }
}

/// How an enrolled worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEnd {
    /// Stopped: the shutdown token was cancelled, or the agent shut down.
    Shutdown,
    /// The head removed this machine from the fleet (why); the enrollment is forgotten.
    Left(String),
    /// The head refuses this machine (why): it has to join again.
    Refused(String),
}

/// The enrollment of the fleet this machine joined, if it joined one.
pub async fn enrollment() -> anyhow::Result<Option<Enrollment>> {
    let (dirs, _, _) = tokio::task::spawn_blocking(crate::secrets::load_store).await??;
    Ok(Enrollment::load(&dirs)?)
}

/// Points the enrollment at the head's new control-plane address (a head restored on another
/// machine) after checking there that it is the same head and that it knows this node; see
/// [`Enrollment::follow_head`].
pub async fn follow_head(
    mut enrolled: Enrollment,
    address: &HeadAddress,
) -> anyhow::Result<Enrollment> {
    let (dirs, store, credential) = tokio::task::spawn_blocking(|| {
        let (dirs, _, store) = crate::secrets::load_store()?;
        let credential = store.get(enrollment::CREDENTIAL_SECRET).context(
            "this machine's node credential is missing from the secret store: join again",
        )?;
        anyhow::Ok((dirs, store, credential))
    })
    .await??;
    // The store's calls block only briefly (two writes), after the head has answered.
    enrolled
        .follow_head(&dirs, &store, address, &credential)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(enrolled)
}

/// Runs the agent of an enrolled machine until `shutdown` is cancelled, or until the head
/// removes or refuses it. When the head's Ray settings change (a rotated token, a new
/// address), the node restarts with them. `events` hear the runtime's provisioning and what
/// happens to the node and its link to the head.
pub async fn run_enrolled(
    mut enrolled: Enrollment,
    node: NodeOptions,
    shutdown: CancellationToken,
    events: Events,
) -> anyhow::Result<WorkerEnd> {
    loop {
        match run_once(&enrolled, &node, &shutdown, &events).await? {
            Outcome::End(end) => return Ok(end),
            Outcome::RayChanged(ray) => {
                let mut updated = enrolled.clone();
                let updated = tokio::task::spawn_blocking(move || {
                    let (dirs, _, store) = crate::secrets::load_store()?;
                    updated
                        .update_ray(&dirs, &store, &ray)
                        .map_err(|e| anyhow::anyhow!("cannot store the new Ray settings: {e}"))?;
                    anyhow::Ok(updated)
                })
                .await??;
                events(Event::Info(format!(
                    "The head's Ray settings changed; restarting this machine's Ray node (Ray at {}).",
                    updated.gcs_addresses.join(", ")
                )));
                enrolled = updated;
            }
        }
    }
}

enum Outcome {
    End(WorkerEnd),
    RayChanged(Box<flotilla_agent::session::RaySettings>),
}

async fn run_once(
    enrolled: &Enrollment,
    node: &NodeOptions,
    shutdown: &CancellationToken,
    events: &Events,
) -> anyhow::Result<Outcome> {
    let prepared = prepare(enrolled, node, events).await?;
    let Some(mut agent) = start_until_running(&prepared, node, shutdown, events).await? else {
        return Ok(Outcome::End(WorkerEnd::Shutdown));
    };
    events(Event::Info(format!(
        "Worker {} runs in the fleet at {}. Ctrl-C stops it.",
        prepared.name,
        enrolled.head.join(", ")
    )));
    let mut told = Told::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Outcome::End(WorkerEnd::Shutdown),
            end = agent.ended() => break ended(end, &prepared.dirs, events).await?,
            _ = tick.tick() => told.tell(&agent, events),
        }
    };
    events(Event::Info("Stopping...".into()));
    agent.stop().await;
    Ok(outcome)
}

/// What a joined worker's agent starts with, read from the enrollment and the store.
struct Prepared {
    dirs: flotilla_host::Dirs,
    /// The fleet's Ray (GCS) address.
    head: SocketAddr,
    spec: RuntimeSpec,
    /// The fleet's defaults with this machine's own settings on top.
    policy: flotilla_policy::Settings,
    fleet_policy: String,
    setup: SessionSetup,
    name: String,
    token: RayToken,
}

async fn prepare(
    enrolled: &Enrollment,
    node: &NodeOptions,
    events: &Events,
) -> anyhow::Result<Prepared> {
    let (dirs, config, credential, token) = tokio::task::spawn_blocking(|| {
        let (dirs, config, store) = crate::secrets::load_store()?;
        let credential = store.get(enrollment::CREDENTIAL_SECRET).context(
            "this machine's node credential is missing from the secret store: join again",
        )?;
        let token = flotilla_head::read_cluster_token(&store)?
            .context("the cluster's Ray token is missing from the secret store: join again")?;
        anyhow::Ok((dirs, config, credential, token))
    })
    .await??;
    let head: SocketAddr = enrolled
        .gcs_addresses
        .iter()
        .find_map(|a| a.parse().ok())
        .with_context(|| {
            format!(
                "the fleet's Ray address {:?} is unusable: join again",
                enrolled.gcs_addresses
            )
        })?;
    let fingerprint = enrolled
        .fingerprint()
        .context("the head's fingerprint in enrollment.json is unreadable: join again")?;
    let mut session = SessionConfig::new(
        enrolled.addresses(),
        fingerprint,
        enrolled.node_id.clone(),
        credential,
    );
    session.report_every = node.report_every;
    session.record_every = node.record_every;
    let local_config = std::fs::read_to_string(dirs.config.join(flotilla_agent::config::FILE_NAME))
        .unwrap_or_default();
    let policy = flotilla_agent::config::merge_policy(&enrolled.policy_toml, &local_config)
        .unwrap_or_else(|e| {
            events(Event::Warning(format!(
                "the fleet's policy defaults are unusable here ({e}); using this machine's settings"
            )));
            config.policy.clone()
        });
    session.local_config = local_config;
    session.ray = Some(flotilla_agent::session::RaySettings {
        gcs_addresses: enrolled.gcs_addresses.clone(),
        ray_version: enrolled.ray_version.clone(),
        python_version: enrolled.python_version.clone(),
        token: token.clone(),
    });
    Ok(Prepared {
        setup: SessionSetup {
            config: session,
            outbox: dirs.state.join("outbox.sqlite"),
        },
        dirs,
        head,
        // The head's exact Python where this machine has it or can get it, else another
        // patch of its minor version.
        spec: RuntimeSpec {
            ray: enrolled.ray_version.clone(),
            python: enrolled.python_version.clone(),
        },
        policy,
        fleet_policy: enrolled.policy_toml.clone(),
        name: node.name.clone().unwrap_or(enrolled.node_name.clone()),
        token,
    })
}

/// Starts the agent, trying again until it runs; `None` when shut down first. A service
/// starts at boot, perhaps before the network, and a laptop may start away from its head: it
/// waits for the head rather than exit.
async fn start_until_running(
    p: &Prepared,
    node: &NodeOptions,
    shutdown: &CancellationToken,
    events: &Events,
) -> anyhow::Result<Option<Agent>> {
    let mut failures = 0u32;
    loop {
        if !wait_for_head(p.head, shutdown, events).await {
            return Ok(None);
        }
        // One enrolled agent per home: its control socket is where `flotilla pause` and
        // `status` look for it.
        let started = start(
            &p.dirs,
            (p.policy.clone(), p.fleet_policy.clone()),
            p.spec.clone(),
            p.head,
            p.name.clone(),
            p.token.clone(),
            node.clone(),
            Some(p.setup.clone()),
            (
                p.dirs.run.clone(),
                flotilla_agent::control::socket_path(&p.dirs),
            ),
            events,
        )
        .await;
        match started {
            Ok(agent) => return Ok(Some(agent)),
            // The link went again between the head answering and the node starting.
            Err(e) if lost_the_head(&e) => {
                events(Event::Info(format!(
                    "{}\nThe head went out of reach while the worker started.",
                    crate::describe(&e)
                )));
            }
            Err(e) if gives_up(&e) => return Err(e),
            // A port taken, a runtime that could not be installed (offline, no Python yet):
            // a joined machine keeps trying, as a service would, and says why each time.
            Err(e) => {
                failures += 1;
                let wait = retry_delay(failures);
                events(Event::Problem(format!(
                    "{}\n  Trying again in {} s; Ctrl-C stops.",
                    crate::describe(&e),
                    wait.as_secs()
                )));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// What the session's end means for the worker; a removed machine forgets its enrollment.
async fn ended(
    end: flotilla_agent::session::Ended,
    dirs: &flotilla_host::Dirs,
    events: &Events,
) -> anyhow::Result<Outcome> {
    use flotilla_agent::session::Ended;
    Ok(match end {
        Ended::Left(why) => {
            events(Event::Info(format!(
                "The head removed this machine from the fleet: {why}"
            )));
            let store = tokio::task::spawn_blocking(crate::secrets::load_store)
                .await??
                .2;
            Enrollment::forget(dirs, &store);
            Outcome::End(WorkerEnd::Left(why))
        }
        Ended::Refused(why) => {
            events(Event::Problem(format!(
                "the head refuses this machine: {why}"
            )));
            Outcome::End(WorkerEnd::Refused(why))
        }
        Ended::RayChanged(ray) => Outcome::RayChanged(ray),
        Ended::Shutdown => Outcome::End(WorkerEnd::Shutdown),
    })
}

/// What the running worker said last, so each change is said once.
#[derive(Debug, Default)]
struct Told {
    /// The link's kind: 0 connected, 1 connecting, 2 offline, 3 refused.
    link: Option<u8>,
    failure: Option<flotilla_ray::Failure>,
    sleep: (Option<Leaving>, Option<u64>),
}

impl Told {
    fn tell(&mut self, agent: &Agent, events: &Events) {
        // Ray's reason, once per reason, while the node cannot run; the worker keeps trying
        // (a mismatch mended by installing Python is noticed on the next try).
        let failure = agent.failure();
        if failure != self.failure {
            match &failure {
                Some(f) => events(Event::Problem(format!(
                    "Ray cannot run this machine's node: {f}\n  {}",
                    advice(f)
                ))),
                None if self.failure.is_some() => {
                    events(Event::Info("The Ray node runs again.".into()))
                }
                None => {}
            }
            self.failure = failure;
        }
        if let Some(d) = agent.decision() {
            self.sleep = tell_sleep(&d.published.sleep, self.sleep, events);
        }
        // Lost and restored are shown once each, not every retry; "connecting" only before
        // the first connection.
        if let Some(link) = agent.link() {
            use flotilla_agent::session::Link;
            let kind = match link {
                Link::Connected { .. } => 0,
                Link::Connecting { .. } if self.link.is_none() => 1,
                Link::Connecting { .. } => self.link.unwrap_or(1),
                Link::Offline { .. } => 2,
                Link::Refused { .. } => 3,
            };
            if self.link != Some(kind) {
                events(Event::Info(format!("Control plane: {}", describe(&link))));
                self.link = Some(kind);
            }
        }
    }
}

/// Says once when the machine hands its work back before it sleeps or shuts down, and once
/// after each wake how long it slept. `shown` is what was said last (the announcement, and
/// the wake's time); returns it updated.
fn tell_sleep(
    sleep: &flotilla_agent::sleep::SleepReport,
    shown: (Option<Leaving>, Option<u64>),
    events: &Events,
) -> (Option<Leaving>, Option<u64>) {
    if sleep.leaving.is_some() && sleep.leaving != shown.0 {
        events(Event::Info(format!(
            "The machine is about to {}: its work goes back to the cluster first.",
            match sleep.leaving {
                Some(Leaving::Sleep) => "sleep",
                _ => "shut down",
            }
        )));
    }
    let back = sleep.back.as_ref().map(|b| b.at_unix_ms);
    if let Some(b) = &sleep.back
        && back != shown.1
    {
        events(Event::Info(format!(
            "{}; the node joins the cluster again.",
            b.text_en
        )));
    }
    (sleep.leaving, back)
}

/// How long a joined worker waits before starting again after its `failures`-th failed start:
/// 5 s, doubling, at most a minute.
fn retry_delay(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(4));
    Duration::from_secs(secs.min(60))
}

/// Whether a failed start ends the worker rather than being tried again: another agent of this
/// home runs already (two would fight over the node), its control channel cannot be made, or a
/// version or argument is malformed.
fn gives_up(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<flotilla_agent::Error>(),
            Some(
                flotilla_agent::Error::AnotherAgent { .. } | flotilla_agent::Error::Control { .. }
            )
        ) || matches!(
            cause.downcast_ref::<flotilla_ray::Error>(),
            Some(
                flotilla_ray::Error::InvalidVersion { .. }
                    | flotilla_ray::Error::InvalidArgument { .. }
            )
        )
    })
}

/// What to do about a node Ray cannot run, in one line.
pub fn advice(f: &flotilla_ray::Failure) -> &'static str {
    use flotilla_ray::FailureKind as K;
    match f.kind {
        K::VersionMismatch => {
            "Install the cluster's Python (the version above) on this machine, or run \
             `flotilla doctor`; the worker keeps trying every minute"
        }
        K::PortTaken => {
            "Stop the program that uses the port, or choose others with --node-ports; the \
             worker keeps trying"
        }
        K::GcsUnreachable => {
            "Check that the head runs and that this machine reaches its Ray port; the worker \
             keeps trying"
        }
        K::OutOfMemory => {
            "Free some memory or give the node a smaller object store (--object-store-mb); \
             the worker keeps trying"
        }
        K::ProcessExited | K::Stalled | K::Other => {
            "The worker keeps trying; Ray's logs are in the `flotilla doctor` output"
        }
    }
}

/// Whether starting failed because the head went out of reach (the network's doing: wait for
/// it again) rather than for a reason waiting cannot mend.
fn lost_the_head(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<flotilla_agent::Error>(),
            Some(
                flotilla_agent::Error::NoRoute { .. }
                    | flotilla_agent::Error::Ray(flotilla_ray::Error::HeadUnreachable { .. })
            )
        ) || matches!(
            cause.downcast_ref::<flotilla_ray::Error>(),
            Some(flotilla_ray::Error::HeadUnreachable { .. })
        )
    })
}

/// Waits until the head's Ray port answers; `false` if shut down first.
async fn wait_for_head(head: SocketAddr, shutdown: &CancellationToken, events: &Events) -> bool {
    let mut told = false;
    loop {
        let check = flotilla_ray::supervisor::check_reachable(head, Duration::from_secs(3));
        let error = tokio::select! {
            _ = shutdown.cancelled() => return false,
            r = check => match r {
                Ok(()) => return true,
                Err(e) => e,
            },
        };
        if !told {
            events(Event::Info(format!(
                "{error}\nWaiting for the head; Ctrl-C stops."
            )));
            told = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Runs a node against the head at Ray `address` with the Ray token stored on this machine
/// (the head's own machine), without joining and without a control session, until
/// `shutdown` is cancelled.
pub async fn run_at(
    address: SocketAddr,
    node: NodeOptions,
    shutdown: CancellationToken,
    events: Events,
) -> anyhow::Result<()> {
    let (dirs, config, token) = tokio::task::spawn_blocking(|| {
        let (dirs, config, store) = crate::secrets::load_store()?;
        let token = flotilla_head::read_cluster_token(&store)?.context(
            "this machine holds no cluster token: join the fleet with `flotilla join CODE`, or \
             run this on the head's machine",
        )?;
        anyhow::Ok((dirs, config, token))
    })
    .await??;
    let name = node.name.clone().unwrap_or_else(crate::join::default_name);
    let agent = start(
        &dirs,
        (config.policy, String::new()),
        RuntimeSpec::default(),
        address,
        name.clone(),
        token,
        node,
        None,
        (
            dirs.run.join(format!("worker-{name}")),
            dirs.worker_socket(&name),
        ),
        &events,
    )
    .await?;
    events(Event::Info(format!(
        "Worker {name} joined the cluster at {address}. Ctrl-C stops it."
    )));
    shutdown.cancelled().await;
    events(Event::Info("Stopping...".into()));
    agent.stop().await;
    Ok(())
}

/// `policy`: the settings to start with, and the fleet's defaults they were merged from.
#[allow(clippy::too_many_arguments)]
async fn start(
    dirs: &flotilla_host::Dirs,
    (policy, fleet_policy): (flotilla_policy::Settings, String),
    spec: RuntimeSpec,
    head: SocketAddr,
    name: String,
    token: RayToken,
    node: NodeOptions,
    session: Option<SessionSetup>,
    (run_dir, control_socket): (std::path::PathBuf, std::path::PathBuf),
    events: &Events,
) -> anyhow::Result<Agent> {
    let runtime = RuntimeManager::new(&dirs.data)
        .ensure_matching(&spec.ray, &spec.python, crate::runtime_progress(events))
        .await?;
    if runtime.python_full != spec.python && spec.python.split('.').count() == 3 {
        events(Event::Info(format!(
            "This machine runs the node on Python {} (the cluster runs {}): uv cannot get {} \
             here, and Ray accepts another patch of the same minor version. Install Python {} \
             to match exactly.",
            runtime.python_full, spec.python, spec.python, spec.python
        )));
    }
    events(Event::Waiting(format!(
        "Starting this machine's Ray node {name} and connecting it to the cluster at {head} \
         (a minute or two the first time)..."
    )));
    let began = std::time::Instant::now();
    let agent = Agent::start(
        AgentConfig {
            node_name: name.clone(),
            head,
            node_ip: None,
            num_cpus: node.cpus,
            object_store_bytes: node.object_store_mb * 1024 * 1024,
            ports: NodePorts::from_base(node.node_ports, 256),
            token,
            run_dir,
            control_socket,
            log_dir: dirs.logs.clone(),
            env: vec![],
            cluster_state: None,
            policy,
            config_file: Some(dirs.config.join(flotilla_agent::config::FILE_NAME)),
            fleet_policy,
            session,
        },
        Deps { runtime },
    )
    .await;
    events(Event::WaitOver);
    let agent = agent?;
    events(Event::Info(format!(
        "The Ray node {name} is in the cluster ({} s).",
        began.elapsed().as_secs()
    )));
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> flotilla_ray::Error {
        flotilla_ray::Error::HeadUnreachable {
            addr: "10.0.0.1:6379".parse().unwrap(),
            detail: "No route to host (os error 113)".into(),
        }
    }

    #[test]
    fn a_head_gone_out_of_reach_while_starting_is_waited_for() {
        let through_agent = anyhow::Error::from(flotilla_agent::Error::Ray(unreachable()));
        assert!(lost_the_head(&through_agent));
        assert!(lost_the_head(
            &anyhow::Error::from(unreachable()).context("starting")
        ));
        let no_route = flotilla_agent::Error::NoRoute {
            head: "10.0.0.1:6379".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::NetworkUnreachable),
        };
        assert!(lost_the_head(&anyhow::Error::from(no_route)));
    }

    #[test]
    fn failed_starts_are_tried_again_ever_more_slowly_unless_they_cannot_mend() {
        let secs: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60, 60]);
        let another = flotilla_agent::Error::AnotherAgent {
            path: "/run/agent.sock".into(),
            detail: "another process (pid 7) answers on /run/agent.sock".into(),
        };
        assert!(gives_up(&anyhow::Error::from(another).context("starting")));
        let taken = flotilla_ray::Error::PortInUse {
            port: 7480,
            what: "Ray node manager",
            option: "--node-ports",
        };
        assert!(!gives_up(&anyhow::Error::from(flotilla_agent::Error::Ray(
            taken
        ))));
        let offline = flotilla_ray::Error::Offline {
            spec: "Ray 2.60.0 on Python 3.11".into(),
            detail: "dns error".into(),
        };
        assert!(!gives_up(&anyhow::Error::from(offline)));
    }

    #[test]
    fn other_failures_to_start_end_the_worker() {
        let taken = flotilla_ray::Error::PortInUse {
            port: 7480,
            what: "Ray node manager",
            option: "--node-ports",
        };
        assert!(!lost_the_head(&anyhow::Error::from(
            flotilla_agent::Error::Ray(taken)
        )));
        assert!(!lost_the_head(&anyhow::anyhow!("the runtime is broken")));
    }
}
