//! The control plane end to end, without Ray: a real head control plane (TLS gRPC, SQLite
//! registry) on loopback, and real agent code joining it, keeping a session, obeying commands
//! and delivering its ledger. The politeness loop runs on this machine's real sensors; only
//! the Ray node is absent (its CPU time is a counter the test advances).

use std::error::Error as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_agent::enrollment::{self, JoinError, Machine};
use flotilla_agent::session::{
    Ended, LOST_AFTER, Link, Notice, RaySettings, SessionConfig, Sources,
};
use flotilla_agent::{SessionSetup, politeness, sampler};
use flotilla_head::fleet::{ControlPlane, FleetConfig, RayInfo};
use flotilla_head::registry::Registry;
use flotilla_head::tls::Identity;
use flotilla_host::Dirs;
use flotilla_proto::v1 as pb;
use flotilla_ray::RayToken;
use flotilla_secrets::{Secret, SecretStore};
use tokio_util::sync::CancellationToken;

fn store(dir: &Path) -> SecretStore {
    let mut c = flotilla_secrets::StoreConfig::new(dir);
    c.backend = flotilla_secrets::Backend::File;
    SecretStore::open(&c).unwrap()
}

/// A head's control plane in its own runtime, so that stopping it drops every connection at
/// once, the way a head machine going away does.
struct Head {
    plane: ControlPlane,
    addr: SocketAddr,
    identity: Identity,
    rt: Option<tokio::runtime::Runtime>,
}

impl Head {
    fn start(dir: &Path, port: u16) -> Head {
        Head::start_with(dir, port, "")
    }

    fn start_with(dir: &Path, port: u16, policy_toml: &str) -> Head {
        let dirs = Dirs::under(dir);
        dirs.create_all().unwrap();
        let identity = Identity::load_or_create(&dirs, &store(&dirs.state), &[]).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let _inside = rt.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = Registry::open(dirs.state.join("registry.sqlite")).unwrap();
        let plane = ControlPlane::new(FleetConfig {
            registry: Arc::new(registry),
            ray: RayInfo {
                gcs_addresses: vec!["127.0.0.1:6380".into()],
                ray_version: "2.60.0".into(),
                python_version: "3.11.7".into(),
                token: RayToken::generate(),
            },
            addresses: vec![addr.to_string().parse().unwrap()],
            fingerprint: identity.fingerprint,
            admin_token: Secret::from("admin-token"),
            policy_toml: policy_toml.into(),
        })
        .unwrap();
        let tls = identity.server_config().unwrap();
        let serving = plane.clone();
        rt.spawn(async move {
            let _ = serving
                .serve(listener, tls, std::future::pending::<()>())
                .await;
        });
        Head {
            plane,
            addr,
            identity,
            rt: Some(rt),
        }
    }

    async fn invite(&self, uses: u32, ttl: Duration) -> String {
        self.plane.invite(uses, ttl).await.unwrap().code
    }

    fn stop(mut self) {
        self.rt.take().unwrap().shutdown_background();
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// An agent without a Ray node: the real politeness loop and the real session.
struct Agent {
    decision: tokio::sync::watch::Receiver<Option<Arc<politeness::Published>>>,
    link: tokio::sync::watch::Receiver<Link>,
    ended: tokio::sync::oneshot::Receiver<Ended>,
    notices: tokio::sync::broadcast::Sender<flotilla_agent::session::Notice>,
    /// Stands in for the network watch: the tests report changes through it.
    network: tokio::sync::watch::Sender<flotilla_net::watch::Seen>,
    cpu: Arc<Mutex<Duration>>,
    outbox: PathBuf,
    stop: CancellationToken,
}

impl Agent {
    fn start(
        enrolled: &enrollment::Enrollment,
        credential: Secret,
        outbox: PathBuf,
        report_every: Duration,
        record_every: Duration,
    ) -> Agent {
        Agent::start_with(
            enrolled,
            credential,
            outbox,
            report_every,
            record_every,
            None,
            "",
        )
    }

    fn start_with(
        enrolled: &enrollment::Enrollment,
        credential: Secret,
        outbox: PathBuf,
        report_every: Duration,
        record_every: Duration,
        ray: Option<RaySettings>,
        local_config: &str,
    ) -> Agent {
        let stop = CancellationToken::new();
        let manual = sampler::ManualFeed::default();
        let policy = sampler::PolicyFeed::default();
        let (tx, decision) = tokio::sync::watch::channel(None);
        tokio::spawn(politeness::run(
            flotilla_policy::Settings::default(),
            politeness::Inputs {
                sensors: flotilla_host::sensors::Sensors::new(),
                idle: Default::default(),
                manual: manual.clone(),
                policy: policy.clone(),
                sleep: Default::default(),
                input: Default::default(),
                tick: politeness::TICK,
            },
            Vec::new,
            None,
            tx,
            stop.clone(),
        ));
        let cpu = Arc::new(Mutex::new(Duration::ZERO));
        let (network, _) = tokio::sync::watch::channel(Default::default());
        let mut config = SessionConfig::new(
            enrolled.addresses(),
            enrolled.fingerprint().unwrap(),
            enrolled.node_id.clone(),
            credential,
        );
        config.report_every = report_every;
        config.record_every = record_every;
        config.ray = ray;
        config.local_config = local_config.into();
        let sources = Sources {
            published: decision.clone(),
            manual,
            policy,
            policy_source: Default::default(),
            ray_node_id: Arc::new(|| None),
            cpu_time: {
                let cpu = cpu.clone();
                Arc::new(move || Some(*cpu.lock().unwrap()))
            },
            network: Some(network.subscribe()),
            restored: Arc::new(|| {}),
        };
        let handles = flotilla_agent::start_session(
            SessionSetup {
                config,
                outbox: outbox.clone(),
            },
            sources,
            stop.clone(),
        )
        .unwrap();
        Agent {
            decision,
            link: handles.link,
            ended: handles.ended,
            notices: handles.notices,
            network,
            cpu,
            outbox,
            stop,
        }
    }

    fn paused(&self) -> Option<bool> {
        self.decision
            .borrow()
            .as_ref()
            .map(|p| p.decision.pause != flotilla_policy::Pause::None)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn machine(name: &str) -> Machine {
    Machine {
        node_name: name.into(),
        hostname: "test-host".into(),
        cpus: 4,
        memory_bytes: 0,
        python_versions: vec![],
        python_downloads: false,
        previous: None,
    }
}

/// Joins and tells the head the secrets were kept, as `flotilla join` does once they are
/// stored.
async fn join_kept(
    code: &str,
    machine: &Machine,
) -> (enrollment::Enrollment, Secret, flotilla_ray::RayToken) {
    let joined = enrollment::join(code, machine).await.unwrap();
    enrollment::finish(&joined, true).await.unwrap();
    (joined.enrollment, joined.credential, joined.token)
}

fn view(head: &Head, name: &str) -> Option<flotilla_head::fleet::AgentView> {
    head.plane.agents().into_iter().find(|a| a.name == name)
}

fn pause_now() -> pb::HeadCommand {
    pb::HeadCommand {
        command: Some(pb::head_command::Command::Pause(pb::Pause {
            until_unix_ms: 0,
            mode: pb::PauseMode::Now as i32,
            reason: None,
        })),
    }
}

fn resume() -> pb::HeadCommand {
    pb::HeadCommand {
        command: Some(pb::head_command::Command::Resume(pb::Resume {})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_reports_obeys_the_head_and_is_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let head = Head::start(&tmp.path().join("head"), 0);
    let code = head.invite(1, Duration::from_secs(600)).await;
    let (enrolled, credential, token) = join_kept(&code, &machine("studio")).await;
    assert_eq!(enrolled.ray_version, "2.60.0");
    assert_eq!(enrolled.gcs_addresses, ["127.0.0.1:6380"]);
    assert_eq!(enrolled.fingerprint, head.identity.fingerprint.to_hex());
    assert!(!token.expose().is_empty());

    // The enrollment is stored: secrets in the store, the rest in a file without them.
    let dirs = Dirs::under(&tmp.path().join("worker"));
    dirs.create_all().unwrap();
    let worker_store = store(&dirs.state);
    enrolled
        .save(&dirs, &worker_store, &credential, &token)
        .unwrap();
    let file = std::fs::read_to_string(enrollment::path(&dirs)).unwrap();
    assert!(!file.contains(token.expose()));
    assert!(!file.contains(&flotilla_head::fleet::encode_hex(credential.expose())));
    assert_eq!(
        enrollment::Enrollment::load(&dirs).unwrap().unwrap(),
        enrolled
    );

    let mut agent = Agent::start(
        &enrolled,
        credential.clone(),
        dirs.state.join("outbox.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    until("the session", Duration::from_secs(20), || {
        view(&head, "studio").is_some_and(|v| v.connected && !v.reason_code.is_empty())
    })
    .await;
    assert!(matches!(*agent.link.borrow(), Link::Connected { .. }));
    until("the first decision", Duration::from_secs(10), || {
        agent.paused().is_some()
    })
    .await;
    assert_eq!(agent.paused(), Some(false));

    // A pause from the head reaches the agent's decision, and the head sees it.
    let sent = Instant::now();
    let (_, name, delivered) = head.plane.command("studio", pause_now()).unwrap();
    assert_eq!(name, "studio");
    assert!(delivered);
    until("the pause", Duration::from_secs(10), || {
        agent.paused() == Some(true)
    })
    .await;
    let took = sent.elapsed();
    until("the head to see the pause", Duration::from_secs(10), || {
        view(&head, "studio")
            .is_some_and(|v| v.state == "paused" && v.reason_code == "paused_indefinitely")
    })
    .await;
    eprintln!("pause from the head applied by the agent in {took:?}");
    head.plane.command("studio", resume()).unwrap();
    until("the resume", Duration::from_secs(10), || {
        agent.paused() == Some(false)
    })
    .await;

    // Revoked: the session ends with Leave, and the credential is refused from then on.
    head.plane.revoke("studio").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut agent.ended)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ended, Ended::Left(ref why) if why.contains("revoked")),
        "{ended:?}"
    );
    assert!(view(&head, "studio").is_none());
    let mut again = Agent::start(
        &enrolled,
        credential,
        tmp.path().join("outbox2.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let ended = tokio::time::timeout(Duration::from_secs(20), &mut again.ended)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ended, Ended::Refused(ref why) if why.contains("revoked")),
        "{ended:?}"
    );
    // And the used invite does not let it back in.
    let err = enrollment::join(&code, &machine("studio"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already been used"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_errors_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let head = Head::start(&tmp.path().join("head"), 0);

    // Malformed codes never reach the network.
    for bad in ["", "hello", "flot1-aaaaa-bbbbb", &"flot1-".repeat(100)] {
        let err = enrollment::join(bad, &machine("m")).await.unwrap_err();
        assert!(matches!(err, JoinError::Code(_)), "{bad:?}: {err}");
        // Said once, with what to do.
        let text = err.to_string();
        assert!(text.contains("copied") || text.contains("paste"), "{text}");
        assert!(err.source().is_none(), "{text}");
    }

    // An impostor: the code's fingerprint, another head's certificate at its address.
    let impostor = Head::start(&tmp.path().join("impostor"), 0);
    assert_ne!(impostor.identity.fingerprint, head.identity.fingerprint);
    let real =
        flotilla_proto::JoinCode::parse(&head.invite(1, Duration::from_secs(600)).await).unwrap();
    let forged = flotilla_proto::JoinCode::new(
        vec![impostor.addr.to_string().parse().unwrap()],
        *real.secret(),
        *real.fingerprint(),
        real.expires_unix(),
    )
    .unwrap()
    .encode();
    let err = enrollment::join(&forged, &machine("m")).await.unwrap_err();
    assert!(matches!(err, JoinError::Impostor(_)), "{err}");
    assert!(
        err.to_string()
            .contains("not the head the join code was made for"),
        "{err}"
    );

    // Expired: caught from the code itself, and by the head when the code hides it.
    let short = head.invite(1, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = enrollment::join(&short, &machine("m")).await.unwrap_err();
    assert!(matches!(err, JoinError::Expired { .. }), "{err}");
    let parsed = flotilla_proto::JoinCode::parse(&short).unwrap();
    let no_expiry = flotilla_proto::JoinCode::new(
        parsed.addresses().to_vec(),
        *parsed.secret(),
        *parsed.fingerprint(),
        None,
    )
    .unwrap()
    .encode();
    let err = enrollment::join(&no_expiry, &machine("m"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");

    // Used up after its uses, and unknown secrets.
    let two = head.invite(2, Duration::from_secs(600)).await;
    join_kept(&two, &machine("a")).await;
    join_kept(&two, &machine("b")).await;
    let err = enrollment::join(&two, &machine("c")).await.unwrap_err();
    assert!(err.to_string().contains("already been used"), "{err}");
    let unknown = flotilla_proto::JoinCode::new(
        real.addresses().to_vec(),
        [7; 32],
        *real.fingerprint(),
        None,
    )
    .unwrap()
    .encode();
    let err = enrollment::join(&unknown, &machine("m")).await.unwrap_err();
    assert!(
        err.to_string().contains("does not know this join code"),
        "{err}"
    );

    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let nowhere = flotilla_proto::JoinCode::new(
        vec![closed.to_string().parse().unwrap()],
        [7; 32],
        *real.fingerprint(),
        None,
    )
    .unwrap()
    .encode();
    let err = enrollment::join(&nowhere, &machine("m")).await.unwrap_err();
    assert!(matches!(err, JoinError::Unreachable(..)), "{err}");
    assert!(
        err.to_string().contains("Check that the head is running"),
        "{err}"
    );
    drop(impostor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_control_port_never_stops_the_head() {
    use rand::{Rng, RngCore};
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().unwrap();
    let head = Head::start(&tmp.path().join("head"), 0);
    let code = head.invite(1, Duration::from_secs(600)).await;
    let mut rng = rand::rng();
    let fingerprint = head.identity.fingerprint;
    let channel = flotilla_proto::transport::connect(
        &[head.addr.to_string().parse().unwrap()],
        fingerprint,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut client = pb::fleet_client::FleetClient::new(channel);
    for i in 0..1000 {
        let len = rng.random_range(1..4096);
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if i % 4 == 0 {
            // Inside TLS: garbage where HTTP/2 frames belong.
            let config = Arc::new(flotilla_proto::transport::pinned_client_config(fingerprint));
            let tcp = tokio::net::TcpStream::connect(head.addr).await.unwrap();
            let name = rustls_name();
            if let Ok(mut tls) = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
            {
                let _ = tls.write_all(&bytes).await;
                let _ = tls.shutdown().await;
            }
        } else {
            let mut tcp = tokio::net::TcpStream::connect(head.addr).await.unwrap();
            let _ = tcp.write_all(&bytes).await;
            // Half the time the connection is left open and silent.
            if i % 2 == 0 {
                let _ = tcp.shutdown().await;
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    drop(tcp);
                });
            }
        }
        if i % 100 == 0 {
            let snap = client
                .cluster(admin(pb::ClusterRequest {}))
                .await
                .unwrap()
                .into_inner();
            assert!(snap.time_unix_ms > 0);
        }
    }
    // Still serving correct answers: a real join and the snapshot.
    let (enrolled, _, _) = join_kept(&code, &machine("after-garbage")).await;
    let snap = client
        .cluster(admin(pb::ClusterRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(
        snap.nodes.iter().any(|n| n.node_id == enrolled.node_id),
        "{snap:?}"
    );
    // The cluster view is for the fleet only.
    let refused = client.cluster(pb::ClusterRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
}

/// A request with the test head's admin token.
fn admin<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", "Admin admin-token".parse().unwrap());
    r
}

fn rustls_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("flotilla-head").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contribution_records_arrive_exactly_once_after_the_head_was_away_for_60_s() {
    let tmp = tempfile::tempdir().unwrap();
    let head_dir = tmp.path().join("head");
    let head = Head::start(&head_dir, 0);
    let port = head.addr.port();
    let code = head.invite(1, Duration::from_secs(600)).await;
    let (enrolled, credential, _) = join_kept(&code, &machine("laptop")).await;
    let node_id: i64 = enrolled.node_id.parse().unwrap();
    let agent = Agent::start(
        &enrolled,
        credential,
        tmp.path().join("outbox.sqlite"),
        Duration::from_millis(250),
        Duration::from_secs(1),
    );
    // Ray "uses" half a core: the CPU-time counter grows by 0.5 s a second.
    let cpu = agent.cpu.clone();
    let ticking = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            *cpu.lock().unwrap() += Duration::from_millis(50);
        }
    });
    until("the session", Duration::from_secs(20), || {
        matches!(*agent.link.borrow(), Link::Connected { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut notices = agent.notices.subscribe();

    head.stop();
    until("the agent to notice", Duration::from_secs(60), || {
        matches!(*agent.link.borrow(), Link::Offline { .. })
    })
    .await;
    // A loss longer than LOST_AFTER is told (for the desktop's notification).
    let lost = tokio::time::timeout(LOST_AFTER + Duration::from_secs(5), notices.recv())
        .await
        .expect("a lost notice")
        .unwrap();
    assert!(matches!(lost, Notice::ConnectionLost { .. }), "{lost:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let pending_while_away = flotilla_agent::outbox::Outbox::open(&agent.outbox)
        .unwrap()
        .len()
        .unwrap();
    assert!(
        pending_while_away >= 20,
        "records queue while the head is away: {pending_while_away}"
    );

    // The head returns just after an attempt failed, and the network "changes" (as the watch
    // reports when a link comes back): the agent retries at once rather than after its backoff.
    let mut link = agent.link.clone();
    let (offline_at, retry_ms) = loop {
        link.changed().await.unwrap();
        if let Link::Offline { retry_in_ms, .. } = *link.borrow_and_update()
            && retry_in_ms >= 5_000
        {
            break (Instant::now(), retry_in_ms);
        }
    };
    let head = Head::start(&head_dir, port);
    agent.network.send_modify(|s| s.generation += 1);
    until(
        "the session after the network change",
        Duration::from_secs(30),
        || matches!(*agent.link.borrow(), Link::Connected { .. }),
    )
    .await;
    let took = offline_at.elapsed();
    eprintln!("back {took:?} after the failed attempt; its backoff was {retry_ms} ms");
    assert!(
        took < Duration::from_millis(retry_ms),
        "the network change should cut the {retry_ms} ms backoff short (took {took:?})"
    );
    let restored = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .expect("a restored notice")
        .unwrap();
    assert!(
        matches!(restored, Notice::ConnectionRestored { after_secs } if after_secs >= 60),
        "{restored:?}"
    );
    until("the outbox to drain", Duration::from_secs(90), || {
        matches!(*agent.link.borrow(), Link::Connected { .. })
            && flotilla_agent::outbox::Outbox::open(&agent.outbox)
                .unwrap()
                .is_empty()
                .unwrap()
    })
    .await;
    ticking.abort();
    // Let the ledger take its last sample, then stop the agent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counted = agent.cpu.lock().unwrap().as_secs_f64();
    agent.stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let outbox = flotilla_agent::outbox::Outbox::open(&agent.outbox).unwrap();
    let open = outbox.open_cpu().unwrap().unwrap_or(0.0);
    let pending: f64 = outbox
        .pending(10_000)
        .unwrap()
        .iter()
        .map(|r| r.cpu_seconds)
        .sum();
    let registry = Registry::open(head_dir.join("state/registry.sqlite")).unwrap();
    let stored = registry
        .total_cpu_seconds(flotilla_head::registry::NodeId(node_id))
        .unwrap();
    eprintln!(
        "queued while away: {pending_while_away}; stored {stored:.2} + pending {pending:.2} + \
         open {open:.2} CPU-s of {counted:.2} counted"
    );
    // Nothing lost, nothing twice: every CPU-second the ledger sampled is in exactly one place.
    assert!(
        (stored + pending + open - counted).abs() < 1e-6,
        "stored {stored} + pending {pending} + open {open} != counted {counted}"
    );
    assert!(stored > 30.0, "{stored}");
    drop(head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_running_other_ray_settings_is_told_to_restart_with_the_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let head = Head::start(&tmp.path().join("head"), 0);
    let code = head.invite(1, Duration::from_secs(600)).await;
    let (enrolled, credential, token) = join_kept(&code, &machine("m")).await;
    let settings = |token: RayToken| RaySettings {
        gcs_addresses: enrolled.gcs_addresses.clone(),
        ray_version: enrolled.ray_version.clone(),
        python_version: enrolled.python_version.clone(),
        token,
    };
    // The same settings as the head's: the session stays up.
    let mut same = Agent::start_with(
        &enrolled,
        credential.clone(),
        tmp.path().join("a.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
        Some(settings(token.clone())),
        "",
    );
    until("the session", Duration::from_secs(20), || {
        matches!(*same.link.borrow(), Link::Connected { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(same.ended.try_recv().is_err(), "the session ended");
    drop(same);
    // An old token (the head rotated it): the session ends with the head's settings.
    let mut stale = Agent::start_with(
        &enrolled,
        credential,
        tmp.path().join("b.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
        Some(settings(RayToken::generate())),
        "",
    );
    let ended = tokio::time::timeout(Duration::from_secs(20), &mut stale.ended)
        .await
        .unwrap()
        .unwrap();
    match ended {
        Ended::RayChanged(new) => assert_eq!(*new, settings(token)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleets_policy_applies_unless_the_machine_sets_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    // The fleet allows no hours at all: every machine that follows it lends nothing.
    let head = Head::start_with(
        &tmp.path().join("head"),
        0,
        "[policy.schedule]\nmonday = []\ntuesday = []\nwednesday = []\nthursday = []\n\
         friday = []\nsaturday = []\nsunday = []\n",
    );
    let code = head.invite(2, Duration::from_secs(600)).await;
    let reason = |a: &Agent| {
        a.decision
            .borrow()
            .as_ref()
            .map(|p| p.decision.reason.code().to_string())
    };
    let (fleet_only, credential, _) = join_kept(&code, &machine("a")).await;
    let a = Agent::start(
        &fleet_only,
        credential,
        tmp.path().join("a.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    until("the fleet's policy", Duration::from_secs(20), || {
        reason(&a).as_deref() == Some("outside_hours")
    })
    .await;
    let (own, credential, _) = join_kept(&code, &machine("b")).await;
    let b = Agent::start_with(
        &own,
        credential,
        tmp.path().join("b.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
        None,
        "[policy.schedule]\nmonday = [\"00:00-24:00\"]\ntuesday = [\"00:00-24:00\"]\n\
         wednesday = [\"00:00-24:00\"]\nthursday = [\"00:00-24:00\"]\nfriday = [\"00:00-24:00\"]\n\
         saturday = [\"00:00-24:00\"]\nsunday = [\"00:00-24:00\"]\n",
    );
    until("the session", Duration::from_secs(20), || {
        view(&head, "b").is_some_and(|v| v.connected && !v.reason_code.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(reason(&b).as_deref(), Some("outside_hours"));
    assert_eq!(reason(&a).as_deref(), Some("outside_hours"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_is_final_only_once_the_machine_kept_its_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let head = Head::start(&tmp.path().join("head"), 0);
    let code = head.invite(1, Duration::from_secs(600)).await;

    // Joined, but the secrets could not be stored: the head forgets the node, and the code's
    // one use is there again.
    let joined = enrollment::join(&code, &machine("laptop")).await.unwrap();
    assert!(view(&head, "laptop").is_none(), "listed before it was kept");
    enrollment::finish(&joined, false).await.unwrap();
    assert!(head.plane.agents().is_empty());
    let invites = head.plane.invites().await.unwrap();
    assert_eq!((invites[0].uses_left, invites[0].joined.len()), (1, 0));
    // Its credential is worth nothing now.
    let err = enrollment::finish(&joined, true).await.unwrap_err();
    assert!(err.to_string().contains("join again"), "{err}");

    // The same code admits the machine once it can keep the credential.
    let (enrolled, credential, _) = join_kept(&code, &machine("laptop")).await;
    assert_eq!(enrolled.node_name, "laptop");
    assert!(view(&head, "laptop").is_some());
    assert!(enrolled.cluster(&credential).await.is_ok());
    let invites = head.plane.invites().await.unwrap();
    assert_eq!(invites[0].joined, vec!["laptop".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_is_kept_by_its_node_unless_the_joiner_proves_it_is_that_node() {
    let tmp = tempfile::tempdir().unwrap();
    let head = Head::start(&tmp.path().join("head"), 0);
    let code = head.invite(3, Duration::from_secs(600)).await;
    let (first, first_credential, _) = join_kept(&code, &machine("mbp")).await;
    let dirs = Dirs::under(&tmp.path().join("first"));
    dirs.create_all().unwrap();
    let mut agent = Agent::start(
        &first,
        first_credential.clone(),
        dirs.state.join("outbox.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    until("the first session", Duration::from_secs(20), || {
        view(&head, "mbp").is_some_and(|v| v.connected)
    })
    .await;

    // A second laptop of the same host name: its own name, and the first keeps its session.
    let twin = enrollment::join(&code, &machine("mbp")).await.unwrap();
    enrollment::finish(&twin, true).await.unwrap();
    assert_eq!(twin.enrollment.node_name, "mbp-2");
    let notice = twin.notice.clone().unwrap_or_default();
    assert!(notice.contains("belongs to another machine"), "{notice}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(view(&head, "mbp").is_some_and(|v| v.connected));
    assert!(first.cluster(&first_credential).await.is_ok());
    assert!(
        matches!(
            agent.ended.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ),
        "the holder's session ended"
    );

    // The first machine joining again with its credential as proof takes its name back.
    let mut again_machine = machine("mbp");
    again_machine.previous = Some((first.clone(), first_credential.clone()));
    let (again, again_credential, _) = join_kept(&code, &again_machine).await;
    assert_eq!(again.node_name, "mbp");
    assert_ne!(again.node_id, first.node_id);
    assert!(again.cluster(&again_credential).await.is_ok());
    let err = first.cluster(&first_credential).await.unwrap_err();
    assert!(err.contains("revoked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_follows_its_head_restored_elsewhere_and_refuses_an_impostor() {
    let tmp = tempfile::tempdir().unwrap();
    let head = Head::start(&tmp.path().join("head"), 0);
    let code = head.invite(1, Duration::from_secs(600)).await;
    let (enrolled, credential, token) = join_kept(&code, &machine("m")).await;
    let worker = Dirs::under(&tmp.path().join("worker"));
    worker.create_all().unwrap();
    let worker_store = store(&worker.state);
    enrolled
        .save(&worker, &worker_store, &credential, &token)
        .unwrap();
    let saved = std::fs::read(enrollment::path(&worker)).unwrap();
    // The head is backed up and goes away.
    let head_dirs = Dirs::under(&tmp.path().join("head"));
    // (This test's head keeps its tokens in memory; a real one has them in its store.)
    flotilla_head::cluster_token(&store(&head_dirs.state)).unwrap();
    flotilla_head::admin_token(&store(&head_dirs.state)).unwrap();
    let pass = Secret::from("a passphrase for the test");
    let sealed = flotilla_head::backup::seal(
        &flotilla_head::backup::Contents::of_home(&head_dirs, &store(&head_dirs.state)).unwrap(),
        &pass,
    )
    .unwrap();
    head.stop();

    // Another head (its own identity) at a new address: refused, nothing changed.
    let impostor = Head::start(&tmp.path().join("impostor"), 0);
    let mut following = enrolled.clone();
    let err = following
        .follow_head(
            &worker,
            &worker_store,
            &impostor.addr.to_string().parse().unwrap(),
            &credential,
        )
        .await
        .unwrap_err();
    assert!(err.contains("not the one this machine joined"), "{err}");
    assert_eq!(following, enrolled);
    assert_eq!(std::fs::read(enrollment::path(&worker)).unwrap(), saved);
    impostor.stop();

    // The head restored into another home, at another address: followed.
    let restored_dirs = Dirs::under(&tmp.path().join("restored"));
    let opened = flotilla_head::backup::open(&sealed, &pass, "test.backup").unwrap();
    flotilla_head::backup::restore(&restored_dirs, &store(&restored_dirs.state), &opened, false)
        .unwrap();
    let restored = Head::start(&tmp.path().join("restored"), 0);
    assert_eq!(restored.identity.fingerprint.to_hex(), enrolled.fingerprint);
    let new = restored.addr.to_string();
    following
        .follow_head(&worker, &worker_store, &new.parse().unwrap(), &credential)
        .await
        .unwrap();
    assert_eq!(following.head[0], new);
    assert_eq!(&following.head[1..], &enrolled.head[..]);
    assert_eq!(following.node_id, enrolled.node_id);
    assert_eq!(
        enrollment::Enrollment::load(&worker).unwrap().unwrap(),
        following
    );
    // The head's Ray settings came with its answer (this test head makes a new token at each
    // start).
    let stored = worker_store.get(enrollment::RAY_TOKEN_SECRET).unwrap();
    assert_ne!(stored.expose(), token.expose().as_bytes());
    // And the worker's session runs there with its old credential.
    let agent = Agent::start(
        &following,
        credential,
        tmp.path().join("outbox.sqlite"),
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    until(
        "the session with the restored head",
        Duration::from_secs(20),
        || matches!(*agent.link.borrow(), Link::Connected { .. }),
    )
    .await;
    until(
        "the node in the restored head's view",
        Duration::from_secs(20),
        || view(&restored, "m").is_some_and(|a| a.connected),
    )
    .await;
}
