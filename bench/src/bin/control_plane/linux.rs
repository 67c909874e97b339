//! The benchmark itself; it reads its threads' CPU time from `/proc/self/task`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use flotilla_head::fleet::{ControlPlane, FleetConfig, RayInfo};
use flotilla_head::registry::Registry;
use flotilla_proto::v1::{self as pb, fleet_client::FleetClient};
use flotilla_secrets::Secret;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// CPU time (user + system) of the given threads of this process, in seconds.
fn threads_cpu(tids: &[i32]) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tids.iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok())
        .filter_map(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
        })
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The send times of each agent's last few reports (Unix ms), newest last.
struct Sent {
    ring: Vec<Mutex<[u64; 4]>>,
}

impl Sent {
    fn push(&self, node: usize, at: u64) {
        let mut r = self.ring[node].lock().unwrap();
        r.rotate_left(1);
        r[3] = at;
    }

    /// The newest report sent at or before `applied` (the head's last-seen time).
    fn reflected(&self, node: usize, applied: u64) -> Option<u64> {
        let r = self.ring[node].lock().unwrap();
        r.iter().rev().copied().find(|&t| t != 0 && t <= applied)
    }
}

struct Run {
    n: usize,
    head_cpu_cores: f64,
    report_p50_ms: f64,
    report_p99_ms: f64,
    report_samples: usize,
    snapshot_p50_ms: f64,
    snapshot_p99_ms: f64,
    snapshot_calls: usize,
    reports_per_sec: f64,
}

pub fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = opt("--agents")
        .unwrap_or_else(|| "1000,5000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .context("--agents takes numbers, e.g. 1000,5000")
        })
        .collect::<anyhow::Result<_>>()?;
    let window = Duration::from_secs(
        opt("--secs")
            .map(|s| s.parse())
            .transpose()
            .context("--secs takes a number")?
            .unwrap_or(20),
    );
    let out = opt("--out");

    let tmp = tempfile::tempdir()?;
    let head_tids = Arc::new(Mutex::new(Vec::new()));
    let head_rt = {
        let tids = head_tids.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("head")
            .on_thread_start(move || {
                tids.lock().unwrap().push(unsafe { libc::gettid() });
            })
            .enable_all()
            .build()?
    };
    let agents_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agents")
        .enable_all()
        .build()?;

    // The head.
    let dirs = flotilla_host::Dirs::under(tmp.path());
    dirs.create_all()?;
    let mut store_config = flotilla_secrets::StoreConfig::new(&dirs.state);
    store_config.backend = flotilla_secrets::Backend::File;
    let store = flotilla_secrets::SecretStore::open(&store_config)?;
    let identity = flotilla_head::tls::Identity::load_or_create(&dirs, &store, &[])?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let registry = Registry::open(dirs.state.join("registry.sqlite"))?;
    let plane = ControlPlane::new(FleetConfig {
        registry: Arc::new(registry),
        ray: RayInfo {
            gcs_addresses: vec!["127.0.0.1:6380".into()],
            ray_version: "2.60.0".into(),
            python_version: "3.11".into(),
            token: flotilla_ray::RayToken::generate(),
        },
        addresses: vec![addr.to_string().parse()?],
        fingerprint: identity.fingerprint,
        admin_token: Secret::from("bench"),
        policy_toml: String::new(),
    })?;
    {
        let _inside = head_rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let tls = identity.server_config()?;
        let serving = plane.clone();
        head_rt.spawn(async move {
            let _ = serving
                .serve(listener, tls, std::future::pending::<()>())
                .await;
        });
    }
    let fingerprint = identity.fingerprint;
    let head_addr: flotilla_proto::HeadAddress = addr.to_string().parse()?;

    let max = sizes.iter().copied().max().unwrap_or(0);
    let sent = Arc::new(Sent {
        ring: (0..max).map(|_| Mutex::new([0; 4])).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reports = Arc::new(AtomicU64::new(0));
    let mut node_index = std::collections::HashMap::new();
    let mut runs = Vec::new();
    let mut started = 0usize;

    for &n in &sizes {
        // Enroll and connect the agents this size adds, a few hundred a second.
        eprintln!("connecting agents {started}..{n}");
        for i in started..n {
            let (id, _, credential) = head_rt
                .block_on(plane.enroll_local(&format!("agent-{i:05}"), 4))
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            node_index.insert(id.0, i);
            let auth = format!(
                "Node {}:{}",
                id.0,
                flotilla_head::fleet::encode_hex(credential.expose())
            );
            let (sent, stop, reports, head_addr) = (
                sent.clone(),
                stop.clone(),
                reports.clone(),
                head_addr.clone(),
            );
            agents_rt.spawn(async move {
                if let Err(e) = agent(i, auth, head_addr, fingerprint, sent, stop, reports).await {
                    eprintln!("agent {i}: {e}");
                }
            });
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        started = n;
        // Wait until every agent is connected and has reported.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let connected = plane.agents().iter().filter(|a| a.connected).count();
            if connected >= n {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {connected} of {n} agents connected"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(2));
        runs.push(measure(
            n,
            window,
            &head_rt,
            &agents_rt,
            &head_tids,
            &head_addr,
            fingerprint,
            &sent,
            &node_index,
            &reports,
        )?);
    }
    stop.store(true, Ordering::Relaxed);

    let goal_cores = 1.0;
    let json = serde_json::json!({
        "benchmark": "control-plane",
        "machine": { "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()) },
        "window_secs": window.as_secs(),
        "runs": runs.iter().map(|r| serde_json::json!({
            "agents": r.n,
            "head_cpu_cores": round(r.head_cpu_cores),
            "reports_per_sec": round(r.reports_per_sec),
            "report_to_snapshot_ms": {"p50": round(r.report_p50_ms), "p99": round(r.report_p99_ms), "samples": r.report_samples},
            "snapshot_api_ms": {"p50": round(r.snapshot_p50_ms), "p99": round(r.snapshot_p99_ms), "calls": r.snapshot_calls},
        })).collect::<Vec<_>>(),
        "goals": {
            "head_cpu_cores_at_5000": goal_cores,
            "report_to_snapshot_p99_ms": 1000,
            "snapshot_api_p99_ms_at_5000": 50,
        },
    });
    let text = serde_json::to_string_pretty(&json)?;
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(&path, format!("{text}\n")).with_context(|| format!("writing {path}"))?;
    }
    agents_rt.shutdown_background();
    head_rt.shutdown_background();
    Ok(())
}

/// A request carrying the bench head's admin token.
fn admin<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::from_static("Admin bench"),
    );
    r
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[allow(clippy::too_many_arguments)]
fn measure(
    n: usize,
    window: Duration,
    head_rt: &tokio::runtime::Runtime,
    agents_rt: &tokio::runtime::Runtime,
    head_tids: &Mutex<Vec<i32>>,
    head_addr: &flotilla_proto::HeadAddress,
    fingerprint: flotilla_proto::Fingerprint,
    sent: &Arc<Sent>,
    node_index: &std::collections::HashMap<i64, usize>,
    reports: &AtomicU64,
) -> anyhow::Result<Run> {
    let _ = head_rt;
    let tids = head_tids.lock().unwrap().clone();
    let cpu0 = threads_cpu(&tids);
    let reports0 = reports.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let (latencies, snapshot_ms) = agents_rt.block_on(async {
        let channel = flotilla_proto::transport::connect(
            std::slice::from_ref(head_addr),
            fingerprint,
            Duration::from_secs(10),
        )
        .await?;
        let mut watcher = FleetClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        let mut api = FleetClient::new(channel).max_decoding_message_size(64 << 20);
        let mut stream = watcher
            .watch_cluster(admin(pb::ClusterRequest {}))
            .await?
            .into_inner();
        let mut last_seen = std::collections::HashMap::new();
        let mut latencies = Vec::new();
        let mut snapshot_ms = Vec::new();
        let end = Instant::now() + window;
        let calls = async {
            let mut out = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                let snap = api
                    .cluster(admin(pb::ClusterRequest {}))
                    .await?
                    .into_inner();
                out.push(t.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(snap.nodes.len() >= n, "the snapshot lacks nodes");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(out)
        };
        let watch = async {
            while Instant::now() < end {
                let Some(snap) = tokio::time::timeout(Duration::from_secs(5), stream.message())
                    .await
                    .ok()
                    .and_then(|m| m.ok().flatten())
                else {
                    continue;
                };
                let now = unix_ms();
                let mut seen_nodes = HashSet::new();
                for node in &snap.nodes {
                    let Ok(id) = node.node_id.parse::<i64>() else {
                        continue;
                    };
                    let Some(&i) = node_index.get(&id) else {
                        continue;
                    };
                    seen_nodes.insert(i);
                    let applied = node.last_seen_unix_ms as u64;
                    let before = last_seen.insert(i, applied);
                    if before.is_some_and(|b| b < applied)
                        && let Some(t) = sent.reflected(i, applied)
                    {
                        latencies.push(now.saturating_sub(t) as f64);
                    }
                }
            }
        };
        let (calls, ()) = tokio::join!(calls, watch);
        snapshot_ms.extend(calls?);
        anyhow::Ok((latencies, snapshot_ms))
    })?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = threads_cpu(&head_tids.lock().unwrap()) - cpu0;
    let mut l = latencies;
    l.sort_by(f64::total_cmp);
    let mut s = snapshot_ms;
    s.sort_by(f64::total_cmp);
    let run = Run {
        n,
        head_cpu_cores: cpu / elapsed,
        report_p50_ms: percentile(&l, 0.5),
        report_p99_ms: percentile(&l, 0.99),
        report_samples: l.len(),
        snapshot_p50_ms: percentile(&s, 0.5),
        snapshot_p99_ms: percentile(&s, 0.99),
        snapshot_calls: s.len(),
        reports_per_sec: (reports.load(Ordering::Relaxed) - reports0) as f64 / elapsed,
    };
    eprintln!(
        "{n} agents: head {:.3} cores, report->snapshot p99 {:.0} ms, snapshot p99 {:.1} ms",
        run.head_cpu_cores, run.report_p99_ms, run.snapshot_p99_ms
    );
    Ok(run)
}

/// One simulated agent: a TLS connection and a session reporting once a second (jittered
/// start so reports spread over the second).
async fn agent(
    i: usize,
    auth: String,
    head: flotilla_proto::HeadAddress,
    fingerprint: flotilla_proto::Fingerprint,
    sent: Arc<Sent>,
    stop: Arc<AtomicBool>,
    reports: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let channel =
        flotilla_proto::transport::connect(&[head], fingerprint, Duration::from_secs(30)).await?;
    let mut client = FleetClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", auth.parse()?);
    let mut commands = client.session(request).await?.into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = commands.message().await {} });
    let offset = Duration::from_millis((i as u64 * 7919) % 1000);
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        seq += 1;
        let now = unix_ms();
        sent.push(i, now);
        let report = pb::AgentReport {
            seq,
            time_unix_ms: now as i64,
            state: pb::NodeState::Contributing as i32,
            reason: Some(pb::Reason {
                code: "idle".into(),
                text_en: "Idle".into(),
                text_es: "Inactivo".into(),
            }),
            advertised_cpus: 4.0,
            capped_cpus: 4.0,
            owner_active: Some(false),
            ..Default::default()
        };
        if tx.send(report).await.is_err() {
            anyhow::bail!("the session closed");
        }
        reports.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
