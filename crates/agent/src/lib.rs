//! Flotilla's worker agent.
//!
//! [`Agent::start`] is the entry point (`flotilla-app` calls it for a joined machine's worker
//! and for the hosting machine's own): it resolves how this machine reaches the head, starts the
//! local Ray worker node under a [`flotilla_ray::Supervisor`] (which restarts it when it dies),
//! and [`Agent::stop`] stops it.
//!
//! Beside the node it runs the sense -> decide -> enforce loop ([`politeness`], [`enforce`]),
//! the control-plane session with the head ([`session`], its records kept in [`outbox`]), the
//! sleep and wake watch ([`sleep`]) and the local control channel ([`control`]: typed requests
//! and replies, and the one client the command and the desktop app use). The agent owns its
//! node's process tree, so the node can never outlive it.

pub mod config;
pub mod control;
pub mod enforce;
pub mod enrollment;
pub mod outbox;
pub mod politeness;
pub mod sampler;
pub mod session;
pub mod sleep;
pub mod warm;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use flotilla_ray::supervisor::{Backoff, NodeConfig, NodeStatus, Role};
use flotilla_ray::{NodePorts, RayToken, Runtime, Supervisor};
use tokio_util::sync::CancellationToken;

/// How this machine's worker node runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// The head's Ray GCS address.
    pub head: SocketAddr,
    /// The address the head reaches this machine at; chosen from the route to the head if `None`.
    pub node_ip: Option<IpAddr>,
    pub num_cpus: Option<u32>,
    pub object_store_bytes: u64,
    pub ports: NodePorts,
    pub token: RayToken,
    /// Where Ray's sessions and sockets go (short: Unix socket paths are limited).
    pub run_dir: PathBuf,
    /// The agent's control channel: [`control::socket_path`] of its home.
    pub control_socket: PathBuf,
    pub log_dir: PathBuf,
    /// Extra environment for the node.
    pub env: Vec<(String, String)>,
    /// Ray's node table, when this machine can read it (the head's own machine): the node then
    /// counts as ready only once Ray lists it ALIVE.
    pub cluster_state: Option<flotilla_ray::StateClient>,
    /// The `[policy]` settings of `flotilla.toml`.
    pub policy: flotilla_policy::Settings,
    /// `flotilla.toml`, read again on `{"reload": "policy"}` ([`control`]); `None`: no reload.
    pub config_file: Option<PathBuf>,
    /// The fleet's defaults (the head's `[policy]` as TOML text) that `policy` was merged
    /// from; the session replaces them with the head's latest.
    pub fleet_policy: String,
    /// The control-plane session, for an enrolled node; `None` runs the node without one.
    pub session: Option<SessionSetup>,
}

/// How an enrolled agent keeps its session with the head.
#[derive(Debug, Clone)]
pub struct SessionSetup {
    pub config: session::SessionConfig,
    /// The outbox file (`outbox.sqlite` in the state directory).
    pub outbox: PathBuf,
}

/// What the agent is given rather than finds itself.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The provisioned runtime matching the head's Ray and Python versions.
    pub runtime: Runtime,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find a local address that routes to the head at {head}: {source}")]
    NoRoute {
        head: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the agent's control channel at {}: {source}", path.display())]
    Control {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another Flotilla agent of this home's state directory is running ({detail}): stop it \
         (`flotilla status` reaches it) before starting another, or give this one its own \
         FLOTILLA_HOME"
    )]
    AnotherAgent {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("cannot open the outbox {}: {source}", path.display())]
    Outbox {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Ray(#[from] flotilla_ray::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    node: std::sync::Arc<Supervisor>,
    node_ip: IpAddr,
    decision: tokio::sync::watch::Receiver<serde_json::Value>,
    link: Option<tokio::sync::watch::Receiver<session::Link>>,
    ended: Option<tokio::sync::oneshot::Receiver<session::Ended>>,
    notices: Option<tokio::sync::broadcast::Sender<session::Notice>>,
    /// Watches the network for as long as the agent runs.
    _net: flotilla_net::NetWatch,
    /// Hears the owner's input, event by event, where the OS allows.
    _input: Option<flotilla_host::input::InputWatch>,
    background: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agent {
    /// Starts the worker node (after checking that the head is reachable) and waits until it is
    /// ready.
    pub async fn start(config: AgentConfig, deps: Deps) -> Result<Agent> {
        let background = CancellationToken::new();
        let feeds = control::Feeds {
            source: control::PolicySource::new(config.config_file.clone(), &config.fleet_policy),
            ..Default::default()
        };
        let (json_tx, decision) = tokio::sync::watch::channel(serde_json::Value::Null);
        let (tx, published) = tokio::sync::watch::channel(None);
        let control = serve_control(&config, &feeds, &decision, &background).await?;
        // Until the agent is up, an early return stops the control channel again.
        let guard = background.clone().drop_guard();
        let settings = config.policy.clone();
        // The head shows which Python each node runs (a patch may differ from the cluster's).
        let python = deps.runtime.python_full.clone();
        let config = AgentConfig {
            session: config.session.map(|mut s| {
                s.config.node_python = python;
                s
            }),
            ..config
        };
        let node_ip = match config.node_ip {
            Some(ip) => ip,
            None => route_to(config.head)?,
        };
        let node = node_config(&config, deps.runtime, node_ip);
        let raylet = SocketAddr::new(node_ip, node.ports.node_manager);
        let total = node
            .num_cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        let node = start_node(node).await?;
        let marker = node.marker().to_string();
        let mut tasks = vec![control];
        tasks.push(tokio::spawn(flotilla_host::memory::keep_releasing(
            background.clone().cancelled_owned(),
        )));
        // Network changes and wakes prompt the session and the node to check themselves.
        let net = flotilla_net::NetWatch::start();
        tasks.push(recheck_on_network_change(&node, &net, &background));
        let (link, ended, notices) = match config.session {
            Some(setup) => {
                let sources = session_sources(&published, &feeds, &node, &net);
                let handles = start_session(setup, sources, background.clone())?;
                tasks.extend(handles.tasks);
                *feeds.ledger.lock().unwrap_or_else(|e| e.into_inner()) = Some(handles.outbox);
                (
                    Some(handles.link),
                    Some(handles.ended),
                    Some(handles.notices),
                )
            }
            None => (None, None, None),
        };
        tasks.push(tokio::spawn(publish_json(
            published.clone(),
            link.clone(),
            json_tx,
            background.clone(),
        )));
        // Sleep and wake as the OS announces them: the loop hands the work back first.
        let sleep_feed = std::sync::Arc::new(sleep::SleepFeed::default());
        tasks.push(tokio::spawn(sleep::watch(
            sleep_feed.clone(),
            {
                let (node, woke) = (node.clone(), net.woke_handle());
                move || {
                    woke.woke();
                    node.recheck();
                }
            },
            background.clone(),
        )));
        tasks.push(tokio::spawn(sleep::keep_awake(
            published,
            background.clone(),
        )));
        let enforcer = enforce::Enforcer::with_mode(
            raylet,
            config.head,
            config.token.clone(),
            total,
            enforce::ResizeMode::from_env(),
        );
        let (input, input_watch) = watch_input();
        let loop_task = tokio::spawn(politeness::run(
            settings,
            politeness::Inputs {
                sensors: flotilla_host::sensors::Sensors::new(),
                idle: feeds.idle,
                manual: feeds.manual,
                policy: feeds.policy,
                sleep: sleep_feed,
                input,
                tick: politeness::tick_from_env(),
            },
            move || flotilla_host::process::marked_processes(&marker),
            Some(politeness::Driven {
                node: node.clone(),
                enforcer,
            }),
            tx,
            background.clone(),
        ));
        guard.disarm();
        tasks.push(loop_task);
        Ok(Agent {
            node,
            node_ip,
            decision,
            link,
            ended,
            notices,
            _net: net,
            _input: input_watch,
            background,
            tasks,
        })
    }

    /// The control-plane link, for an enrolled agent.
    pub fn link(&self) -> Option<session::Link> {
        self.link.as_ref().map(|l| l.borrow().clone())
    }

    /// Connection lost / restored notices, for an enrolled agent.
    pub fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<session::Notice>> {
        self.notices.as_ref().map(|n| n.subscribe())
    }

    /// Resolves when the session ends for good (the head removed or refused this node); never
    /// for an agent without a session.
    pub async fn ended(&mut self) -> session::Ended {
        match self.ended.as_mut() {
            Some(rx) => rx.await.unwrap_or(session::Ended::Shutdown),
            None => std::future::pending().await,
        }
    }

    /// The latest politeness decision with the readings behind it (JSON of
    /// [`politeness::Published`]; null before the first tick).
    /// The latest decision as the control channel serves it (`None` before the first tick).
    pub fn decision(&self) -> Option<control::DecisionView> {
        serde_json::from_value(self.decision.borrow().clone()).ok()
    }

    pub fn status(&self) -> NodeStatus {
        self.node.status()
    }

    /// Ray's reason why the node is not running, while it is not.
    pub fn failure(&self) -> Option<flotilla_ray::Failure> {
        match self.node.status().phase {
            flotilla_ray::NodePhase::Ready => None,
            _ => self.node.failure(),
        }
    }

    pub fn node_ip(&self) -> IpAddr {
        self.node_ip
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.node
    }

    /// Stops the loop and the control channel, then drains and stops the worker node.
    pub async fn stop(self) {
        self.background.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.node.stop().await;
    }
}

/// The running parts of an enrolled agent's session.
#[derive(Debug)]
pub struct SessionHandles {
    pub link: tokio::sync::watch::Receiver<session::Link>,
    /// Resolves when the session ends for good.
    pub ended: tokio::sync::oneshot::Receiver<session::Ended>,
    /// Connection lost and restored, for notifications (subscribe to hear them).
    pub notices: tokio::sync::broadcast::Sender<session::Notice>,
    /// The outbox the ledger writes (its tally says what this machine contributed).
    pub outbox: std::sync::Arc<std::sync::Mutex<outbox::Outbox>>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the ledger and session tasks of an enrolled agent.
pub fn start_session(
    setup: SessionSetup,
    sources: session::Sources,
    background: CancellationToken,
) -> Result<SessionHandles> {
    let outbox = outbox::Outbox::open(&setup.outbox).map_err(|source| Error::Outbox {
        path: setup.outbox.clone(),
        source,
    })?;
    let outbox = std::sync::Arc::new(std::sync::Mutex::new(outbox));
    let (link_tx, link) = tokio::sync::watch::channel(session::Link::Connecting { attempt: 0 });
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let (notices, _) = tokio::sync::broadcast::channel(16);
    let ledger = tokio::spawn(session::run_ledger(
        outbox.clone(),
        sources.cpu_time.clone(),
        setup.config.record_every,
        background.clone(),
    ));
    let watcher = tokio::spawn(session::watch_link(
        link.clone(),
        notices.clone(),
        sources.restored.clone(),
        background.clone(),
    ));
    let run = tokio::spawn({
        let outbox = outbox.clone();
        async move {
            let end = session::run(setup.config, sources, outbox, link_tx, background).await;
            let _ = ended_tx.send(end);
        }
    });
    Ok(SessionHandles {
        link,
        ended,
        notices,
        outbox,
        tasks: vec![ledger, watcher, run],
    })
}

/// Serves the agent's control channel; another agent already serving it is its own error.
async fn serve_control(
    config: &AgentConfig,
    feeds: &control::Feeds,
    decision: &tokio::sync::watch::Receiver<serde_json::Value>,
    background: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    control::serve(
        &config.control_socket,
        feeds.clone(),
        decision.clone(),
        background.clone(),
    )
    .await
    .map_err(|e| {
        let path = config.control_socket.clone();
        match e.kind() {
            std::io::ErrorKind::AddrInUse => Error::AnotherAgent {
                path,
                detail: e.to_string(),
            },
            _ => Error::Control { path, source: e },
        }
    })
}

/// The worker node the agent supervises, at `node_ip`.
fn node_config(config: &AgentConfig, runtime: Runtime, node_ip: IpAddr) -> NodeConfig {
    NodeConfig {
        role: Role::Worker { head: config.head },
        runtime,
        node_name: config.node_name.clone(),
        node_ip: Some(node_ip),
        // An address chosen here follows the network; one given by the caller stays.
        follow_route: config.node_ip.is_none(),
        num_cpus: config.num_cpus,
        object_store_bytes: config.object_store_bytes,
        ports: config.ports,
        temp_dir: config.run_dir.join(&config.node_name),
        log: config.log_dir.join(format!("ray-{}.log", config.node_name)),
        token: Some(config.token.clone()),
        labels: Default::default(),
        env: config.env.clone(),
        backoff: Backoff::default(),
        ready_timeout: Duration::from_secs(90),
        cluster_state: config.cluster_state.clone(),
        background: true,
        throttle: Some(flotilla_host::throttle::ThrottleConfig::from_env()),
    }
}

/// Starts hearing the owner's input on the X display the idle sensor reads (`DISPLAY`), or the
/// OS's own events elsewhere. Without a watch (no display, no permission) the agent runs on: the
/// idle time is then only read each tick, and the log says why, once.
fn watch_input() -> (
    std::sync::Arc<sampler::InputFeed>,
    Option<flotilla_host::input::InputWatch>,
) {
    let feed = std::sync::Arc::new(sampler::InputFeed::default());
    let display = std::env::var("DISPLAY").ok();
    let source = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let watch = flotilla_host::input::InputWatch::start(display, {
        let (feed, source) = (feed.clone(), source.clone());
        move || feed.input(source.get().map_or("input", String::as_str))
    });
    match watch {
        Ok(w) => {
            let _ = source.set(w.source().to_owned());
            tracing::info!(source = w.source(), "owner input is heard as it happens");
            (feed, Some(w))
        }
        Err(why) => {
            tracing::info!("no input events ({why}): the owner's idle time is read each tick");
            (feed, None)
        }
    }
}

/// Starts the node. A first start that fails (Ray refuses the node, a port is taken) does not
/// stop the agent: the node keeps trying with backoff, and the session tells the head why.
async fn start_node(node: NodeConfig) -> Result<std::sync::Arc<Supervisor>> {
    let node = std::sync::Arc::new(Supervisor::start(node).await?);
    match node
        .wait_ready(flotilla_ray::supervisor::START_AT_MOST)
        .await
    {
        Ok(()) => {}
        Err(flotilla_ray::Error::NodeFailed { failure }) => {
            tracing::warn!("the Ray node cannot start yet: {failure}");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(node)
}

/// Has the node check itself after each network change, once the address settled (DHCP, a
/// VPN coming up).
fn recheck_on_network_change(
    node: &std::sync::Arc<Supervisor>,
    net: &flotilla_net::NetWatch,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (node, mut changes, stop) = (node.clone(), net.subscribe(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    changes.mark_unchanged();
                    node.recheck();
                }
            }
        }
    })
}

/// What the session reads from the rest of the agent.
fn session_sources(
    published: &tokio::sync::watch::Receiver<Option<std::sync::Arc<politeness::Published>>>,
    feeds: &control::Feeds,
    node: &std::sync::Arc<Supervisor>,
    net: &flotilla_net::NetWatch,
) -> session::Sources {
    session::Sources {
        published: published.clone(),
        manual: feeds.manual.clone(),
        policy: feeds.policy.clone(),
        policy_source: feeds.source.clone(),
        ray_node_id: {
            let node = node.clone();
            std::sync::Arc::new(move || node.ray_node_id())
        },
        cpu_time: {
            let node = node.clone();
            std::sync::Arc::new(move || node.cpu_time())
        },
        network: Some(net.subscribe()),
        restored: {
            let node = node.clone();
            std::sync::Arc::new(move || node.recheck())
        },
    }
}

/// Keeps the JSON the control socket serves (the decision, plus the session's link) current.
async fn publish_json(
    mut published: tokio::sync::watch::Receiver<Option<std::sync::Arc<politeness::Published>>>,
    mut link: Option<tokio::sync::watch::Receiver<session::Link>>,
    tx: tokio::sync::watch::Sender<serde_json::Value>,
    shutdown: CancellationToken,
) {
    loop {
        let current = link.as_mut().map(|l| l.borrow_and_update().clone());
        let value = match published.borrow_and_update().as_deref() {
            Some(p) => serde_json::to_value(control::DecisionView::new(p.clone(), current))
                .expect("plain data"),
            None => serde_json::Value::Null,
        };
        let _ = tx.send(value);
        let link_changed = async {
            match link.as_mut() {
                Some(l) => l.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = published.changed() => if r.is_err() { return },
            _ = link_changed => {}
        }
    }
}

/// The local address the OS would use to reach `head` (see [`flotilla_host::addr::route_to`]).
pub fn route_to(head: SocketAddr) -> Result<IpAddr> {
    flotilla_host::addr::route_to(head).map_err(|source| Error::NoRoute { head, source })
}
