//! `flotilla worker`: run this machine's agent. An enrolled machine (after `flotilla join`)
//! runs against its fleet with a control session; `--address` runs a node against a head whose
//! Ray token this machine already holds (the head's own machine), without one.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flotilla_agent::enrollment::{self, Enrollment};
use flotilla_agent::session::{SessionConfig, describe};
use flotilla_agent::{Agent, AgentConfig, Deps, SessionSetup};
use flotilla_ray::runtime::ProgressFn;
use flotilla_ray::{NodePorts, RayToken, RuntimeManager, RuntimeSpec};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Run against this Ray address (`ip:port`, as `flotilla up` prints it) with the Ray token
    /// stored on this machine, without joining [default: the fleet this machine joined].
    #[arg(long, value_name = "IP:PORT")]
    address: Option<SocketAddr>,
    #[command(flatten)]
    node: NodeArgs,
}

/// How this machine's node runs.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Name of this worker node [default: this machine's host name].
    #[arg(long)]
    pub name: Option<String>,
    /// CPUs this node offers at most [default: all logical cores].
    #[arg(long, env = "FLOTILLA_CPUS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cpus: Option<u32>,
    /// Object store size in MiB.
    #[arg(long, value_name = "MIB", env = "FLOTILLA_OBJECT_STORE_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(80..))]
    pub object_store_mb: u64,
    /// First of this node's ports (BASE..BASE+5 and BASE+20..BASE+275).
    #[arg(long, value_name = "BASE", env = "FLOTILLA_NODE_PORTS", default_value_t = flotilla_ray::ports::DEFAULT_WORKER_NODE_BASE)]
    pub node_ports: u16,
    /// Seconds between reports to the head.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = positive_secs)]
    pub report_every: f64,
    /// Seconds a contribution record stays open before it is queued for the head.
    #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = positive_secs)]
    pub record_every: f64,
}

impl Default for NodeArgs {
    /// The options' defaults, as `flotilla worker` with no options has them (the environment's
    /// `FLOTILLA_CPUS`, `FLOTILLA_OBJECT_STORE_MB` and `FLOTILLA_NODE_PORTS` included).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            node: NodeArgs,
        }
        <Defaults as clap::Parser>::parse_from(["flotilla"]).node
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0.1 and 86400")),
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    match args.address {
        Some(address) => run_unenrolled(address, args.node).await,
        None => {
            let (dirs, _, _) = tokio::task::spawn_blocking(crate::secret_cmd::load_store).await??;
            let enrolled = Enrollment::load(&dirs)?.context(
                "this machine has not joined a fleet: run `flotilla join CODE` with a code from \
                 the head's admin (`flotilla invite`), or give --address to run against a head \
                 whose Ray token this machine holds",
            )?;
            run_enrolled(enrolled, args.node).await
        }
    }
}

/// Runs the agent of an enrolled machine until Ctrl-C, or until the head removes it. When the
/// head's Ray settings change (a rotated token, a new address), the node restarts with them.
pub async fn run_enrolled(enrolled: Enrollment, node: NodeArgs) -> anyhow::Result<ExitCode> {
    run_enrolled_until(enrolled, node, crate::up::shutdown_signal(), None).await
}

/// [`run_enrolled`] until `shutdown` is cancelled (the desktop app's Quit); `progress`, when
/// given, also hears how the runtime's provisioning goes.
pub async fn run_enrolled_until(
    mut enrolled: Enrollment,
    node: NodeArgs,
    shutdown: tokio_util::sync::CancellationToken,
    progress: Option<ProgressFn>,
) -> anyhow::Result<ExitCode> {
    loop {
        match run_once(&enrolled, &node, &shutdown, progress.clone()).await? {
            Outcome::Exit(code) => return Ok(code),
            Outcome::RayChanged(ray) => {
                let mut updated = enrolled.clone();
                let updated = tokio::task::spawn_blocking(move || {
                    let (dirs, _, store) = crate::secret_cmd::load_store()?;
                    updated
                        .update_ray(&dirs, &store, &ray)
                        .map_err(|e| anyhow::anyhow!("cannot store the new Ray settings: {e}"))?;
                    anyhow::Ok(updated)
                })
                .await??;
                eprintln!(
                    "The head's Ray settings changed; restarting this machine's Ray node (Ray at {}).",
                    updated.gcs_addresses.join(", ")
                );
                enrolled = updated;
            }
        }
    }
}

enum Outcome {
    Exit(ExitCode),
    RayChanged(Box<flotilla_agent::session::RaySettings>),
}

async fn run_once(
    enrolled: &Enrollment,
    node: &NodeArgs,
    shutdown: &tokio_util::sync::CancellationToken,
    progress: Option<ProgressFn>,
) -> anyhow::Result<Outcome> {
    let (dirs, config, credential, token) = tokio::task::spawn_blocking(|| {
        let (dirs, config, store) = crate::secret_cmd::load_store()?;
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
    // The head's exact Python where this machine has it or can get it, else another patch of
    // its minor version.
    let spec = RuntimeSpec {
        ray: enrolled.ray_version.clone(),
        python: enrolled.python_version.clone(),
    };
    let fingerprint = enrolled
        .fingerprint()
        .context("the head's fingerprint in enrollment.json is unreadable: join again")?;
    let mut session = SessionConfig::new(
        enrolled.addresses(),
        fingerprint,
        enrolled.node_id.clone(),
        credential,
    );
    session.report_every = std::time::Duration::from_secs_f64(node.report_every);
    session.record_every = std::time::Duration::from_secs_f64(node.record_every);
    let local_config = std::fs::read_to_string(dirs.config.join(flotilla_agent::config::FILE_NAME))
        .unwrap_or_default();
    // The fleet's defaults with this machine's own settings on top.
    let policy = flotilla_agent::config::merge_policy(&enrolled.policy_toml, &local_config)
        .unwrap_or_else(|e| {
            eprintln!("warning: the fleet's policy defaults are unusable here ({e}); using this machine's settings");
            config.policy.clone()
        });
    session.local_config = local_config;
    session.ray = Some(flotilla_agent::session::RaySettings {
        gcs_addresses: enrolled.gcs_addresses.clone(),
        ray_version: enrolled.ray_version.clone(),
        python_version: enrolled.python_version.clone(),
        token: token.clone(),
    });
    let setup = SessionSetup {
        config: session,
        outbox: dirs.state.join("outbox.sqlite"),
    };
    let name = node.name.clone().unwrap_or(enrolled.node_name.clone());
    // One enrolled agent per home: its control socket is where `flotilla pause` and `status`
    // look for it.
    let run_dir = dirs.run.clone();
    let mut failures = 0u32;
    let mut agent = loop {
        // A service starts at boot, perhaps before the network, and a laptop may start away
        // from its head: wait for the head rather than exit.
        if !wait_for_head(head, shutdown).await {
            return Ok(Outcome::Exit(ExitCode::SUCCESS));
        }
        let started = start(
            &dirs,
            (policy.clone(), enrolled.policy_toml.clone()),
            spec.clone(),
            head,
            name.clone(),
            token.clone(),
            node.clone(),
            Some(setup.clone()),
            (run_dir.clone(), flotilla_agent::control::socket_path(&dirs)),
            progress.clone(),
        )
        .await;
        match started {
            Ok(agent) => break agent,
            // The link went again between the head answering and the node starting.
            Err(e) if lost_the_head(&e) => {
                eprintln!(
                    "{}\nThe head went out of reach while the worker started.",
                    crate::errors::describe(&e)
                );
            }
            Err(e) if gives_up(&e) => return Err(e),
            // A port taken, a runtime that could not be installed (offline, no Python yet):
            // a joined machine keeps trying, as a service would, and says why each time.
            Err(e) => {
                failures += 1;
                let wait = retry_delay(failures);
                eprintln!(
                    "error: {}\n  Trying again in {} s; Ctrl-C stops.",
                    crate::errors::describe(&e),
                    wait.as_secs()
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Outcome::Exit(ExitCode::SUCCESS)),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    eprintln!(
        "Worker {name} runs in the fleet at {}. Ctrl-C stops it.",
        enrolled.head.join(", ")
    );
    let mut shown = None;
    let mut failure_shown = None;
    let mut sleep_shown = (None, None);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Outcome::Exit(ExitCode::SUCCESS),
            end = agent.ended() => {
                use flotilla_agent::session::Ended;
                break match end {
                    Ended::Left(why) => {
                        eprintln!("The head removed this machine from the fleet: {why}");
                        let store = tokio::task::spawn_blocking(crate::secret_cmd::load_store).await??.2;
                        Enrollment::forget(&dirs, &store);
                        Outcome::Exit(ExitCode::SUCCESS)
                    }
                    Ended::Refused(why) => {
                        eprintln!("error: the head refuses this machine: {why}");
                        Outcome::Exit(ExitCode::FAILURE)
                    }
                    Ended::RayChanged(ray) => Outcome::RayChanged(ray),
                    Ended::Shutdown => Outcome::Exit(ExitCode::SUCCESS),
                };
            }
            _ = tick.tick() => {
                // Ray's reason, once per reason, while the node cannot run; the worker keeps
                // trying (a mismatch mended by installing Python is noticed on the next try).
                let failure = agent.failure();
                if failure != failure_shown {
                    match &failure {
                        Some(f) => eprintln!(
                            "error: Ray cannot run this machine's node: {f}\n  {}",
                            crate::worker::advice(f)
                        ),
                        None if failure_shown.is_some() => eprintln!("The Ray node runs again."),
                        None => {}
                    }
                    failure_shown = failure;
                }
                sleep_shown = tell_sleep(&agent.decision()["sleep"], sleep_shown);
                // Lost and restored are shown once each, not every retry; "connecting" only
                // before the first connection.
                if let Some(link) = agent.link() {
                    use flotilla_agent::session::Link;
                    let kind = match link {
                        Link::Connected { .. } => 0,
                        Link::Connecting { .. } if shown.is_none() => 1,
                        Link::Connecting { .. } => shown.unwrap_or(1),
                        Link::Offline { .. } => 2,
                        Link::Refused { .. } => 3,
                    };
                    if shown != Some(kind) {
                        eprintln!("Control plane: {}", describe(&link));
                        shown = Some(kind);
                    }
                }
            }
        }
    };
    eprintln!("Stopping...");
    agent.stop().await;
    Ok(outcome)
}

/// Says once when the machine hands its work back before it sleeps or shuts down, and once
/// after each wake how long it slept. `shown` is what was said last (the announcement, and
/// the wake's time); returns it updated.
fn tell_sleep(
    sleep: &serde_json::Value,
    shown: (Option<String>, Option<u64>),
) -> (Option<String>, Option<u64>) {
    let leaving = sleep["leaving"].as_str().map(str::to_string);
    if leaving.is_some() && leaving != shown.0 {
        eprintln!(
            "The machine is about to {}: its work goes back to the cluster first.",
            if leaving.as_deref() == Some("sleep") {
                "sleep"
            } else {
                "shut down"
            }
        );
    }
    let back = sleep["back"]["at_unix_ms"].as_u64();
    if back.is_some() && back != shown.1 {
        eprintln!(
            "{}; the node joins the cluster again.",
            sleep["back"]["text_en"].as_str().unwrap_or("Back")
        );
    }
    (leaving, back)
}

/// How long a joined worker waits before starting again after its `failures`-th failed start:
/// 5 s, doubling, at most a minute.
fn retry_delay(failures: u32) -> std::time::Duration {
    let secs = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(4));
    std::time::Duration::from_secs(secs.min(60))
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
async fn wait_for_head(head: SocketAddr, shutdown: &tokio_util::sync::CancellationToken) -> bool {
    let mut told = false;
    loop {
        let check =
            flotilla_ray::supervisor::check_reachable(head, std::time::Duration::from_secs(3));
        let error = tokio::select! {
            _ = shutdown.cancelled() => return false,
            r = check => match r {
                Ok(()) => return true,
                Err(e) => e,
            },
        };
        if !told {
            eprintln!("{error}\nWaiting for the head; Ctrl-C stops.");
            told = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

async fn run_unenrolled(address: SocketAddr, node: NodeArgs) -> anyhow::Result<ExitCode> {
    let (dirs, config, token) = tokio::task::spawn_blocking(|| {
        let (dirs, config, store) = crate::secret_cmd::load_store()?;
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
        None,
    )
    .await?;
    eprintln!("Worker {name} joined the cluster at {address}. Ctrl-C stops it.");
    crate::up::shutdown_signal().cancelled().await;
    eprintln!("Stopping...");
    agent.stop().await;
    Ok(ExitCode::SUCCESS)
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
    node: NodeArgs,
    session: Option<SessionSetup>,
    (run_dir, control_socket): (std::path::PathBuf, std::path::PathBuf),
    progress: Option<ProgressFn>,
) -> anyhow::Result<Agent> {
    let (progress, bar) = crate::progress::tee(progress);
    let runtime = RuntimeManager::new(&dirs.data)
        .ensure_matching(&spec.ray, &spec.python, progress)
        .await;
    bar.finish_and_clear();
    let runtime = runtime?;
    if runtime.python_full != spec.python && spec.python.split('.').count() == 3 {
        eprintln!(
            "This machine runs the node on Python {} (the cluster runs {}): uv cannot get {} \
             here, and Ray accepts another patch of the same minor version. Install Python {} \
             to match exactly.",
            runtime.python_full, spec.python, spec.python, spec.python
        );
    }
    let waiting = crate::progress::spinner(&format!(
        "Starting this machine's Ray node {name} and connecting it to the cluster at {head} \
         (a minute or two the first time)..."
    ));
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
    waiting.finish_and_clear();
    let agent = agent?;
    eprintln!(
        "The Ray node {name} is in the cluster ({} s).",
        began.elapsed().as_secs()
    );
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
