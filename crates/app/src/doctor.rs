//! The checks of this machine's setup (`flotilla doctor`), each failing one with how to fix
//! it: the secret store, the runtime, the throttle, the ports, the running node, start at
//! login, the head, the network and the joined fleet.

use std::time::Duration;

use flotilla_agent::enrollment::Enrollment;
use flotilla_head::HeadInfo;
use flotilla_host::Dirs;
use flotilla_ray::{RuntimeManager, RuntimeSpec};
use flotilla_secrets::SecretStore;
use serde::Serialize;

/// How a check came out, from best to worst (`Skip`: it does not apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Skip,
    Ok,
    Warn,
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it, for `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// The worst outcome of `checks`.
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

/// Runs every check of this machine, in the order a person reads them.
pub async fn run() -> anyhow::Result<Vec<Check>> {
    let mut checks = vec![check(
        "version",
        Status::Ok,
        format!(
            "flotilla {} on {} {}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    )];
    let loaded = tokio::task::spawn_blocking(crate::secrets::load_store).await?;
    let dirs = Dirs::from_env();
    let (store_check, store) = secrets_check(loaded);
    checks.push(store_check);
    let enrolled = Enrollment::load(&dirs).ok().flatten();
    let head = HeadInfo::read(&dirs);
    checks.push(runtime_check(&dirs, enrolled.as_ref()));
    checks.push(throttle_check());
    checks.push(ports_check(&dirs, head.is_some()).await);
    checks.extend(node_check(&dirs).await);
    checks.push(start_at_login_check());
    // The head: this machine's, or the one it joined.
    if let Some(info) = &head {
        checks.push(check(
            "head",
            Status::Ok,
            format!(
                "this machine runs the head: API {}, control plane {}, Ray {}",
                info.api_url,
                info.control_addresses.join(", "),
                info.ray_address
            ),
        ));
    }
    checks.extend(network_checks(head.as_ref(), enrolled.as_ref()).await);
    match (&enrolled, &store) {
        (Some(e), Some(store)) => checks.extend(fleet_checks(e, store).await),
        (Some(_), None) => {}
        (None, _) if head.is_none() => checks.push(
            check("fleet", Status::Skip, "this machine has not joined a fleet")
                .fix("`flotilla join CODE` with a code from the head (`flotilla invite`)"),
        ),
        (None, _) => {}
    }
    Ok(checks)
}

/// The secret store as `flotilla.toml` asks for it.
fn secrets_check(
    loaded: anyhow::Result<(Dirs, flotilla_agent::config::FileConfig, SecretStore)>,
) -> (Check, Option<SecretStore>) {
    match loaded {
        Ok((_, _, store)) => (
            check(
                "secrets",
                Status::Ok,
                format!("secrets are kept in {}", store.backend_name()),
            ),
            Some(store),
        ),
        Err(e) => (
            check("secrets", Status::Fail, format!("{e:#}"))
                .fix("see the message above; `[secrets]` in flotilla.toml chooses the backend"),
            None,
        ),
    }
}

/// The runtime this machine's nodes need: the cluster's Python down to the patch, or another
/// patch of its minor (Ray accepts it).
fn runtime_check(dirs: &Dirs, enrolled: Option<&Enrollment>) -> Check {
    let spec = match enrolled {
        Some(e) => RuntimeSpec {
            ray: e.ray_version.clone(),
            python: e.python_version.clone(),
        },
        None => RuntimeSpec::default(),
    };
    let manager = RuntimeManager::new(&dirs.data);
    let found = match enrolled {
        Some(_) => manager.installed_matching(&spec.ray, &spec.python),
        None => manager.installed(&spec).ok(),
    };
    match found {
        Some(rt) if enrolled.is_some() && rt.python_full != spec.python => check(
            "runtime",
            Status::Warn,
            format!(
                "Ray {} with Python {} in {}: the cluster runs Python {} (Ray accepts another \
                 patch of the same minor, and says so in its log)",
                rt.spec.ray,
                rt.python_full,
                rt.dir.display(),
                spec.python
            ),
        )
        .fix(format!(
            "install Python {} here (python.org, `uv python install {}`, your package manager); \
             the node uses it from its next start",
            spec.python, spec.python
        )),
        Some(rt) => check(
            "runtime",
            Status::Ok,
            format!(
                "Ray {} with Python {} in {}",
                rt.spec.ray,
                rt.python_full,
                rt.dir.display()
            ),
        ),
        None => check(
            "runtime",
            Status::Warn,
            format!(
                "Ray {} with Python {} is not provisioned yet",
                spec.ray, spec.python
            ),
        )
        .fix(format!(
            "`flotilla runtime ensure --ray {} --python {}` (or it is provisioned at the first start)",
            spec.ray, spec.python
        )),
    }
}

/// How this machine can hold back Ray.
fn throttle_check() -> Check {
    match flotilla_host::throttle::Throttle::prepare("doctor-probe") {
        Ok(prepared) => {
            let g = prepared.guarantees();
            let status = if g.hard_cap { Status::Ok } else { Status::Warn };
            let c = check(
                "throttle",
                status,
                format!(
                    "{}: {} cap, {} freeze",
                    g.backend,
                    if g.hard_cap { "hard" } else { "approximate" },
                    if g.atomic_freeze {
                        "atomic"
                    } else {
                        "non-atomic"
                    }
                ),
            );
            if g.hard_cap {
                c
            } else {
                c.fix("run the agent as a service with cgroup delegation (`Delegate=yes`) or as root for a hard cap")
            }
        }
        Err(e) => check("throttle", Status::Warn, e.to_string())
            .fix("Ray will still follow the decision through its advertised CPUs"),
    }
}

/// The running worker's Ray node, as its agent reports it: Ray's own reason when Ray cannot run
/// it. `None` when no worker runs here.
async fn node_check(dirs: &Dirs) -> Option<Check> {
    use flotilla_agent::enforce::EnforcementState;
    use flotilla_ray::FailureKind;
    let decision = flotilla_agent::control::Client::of(dirs)
        .decision()
        .await
        .ok()?;
    let e = decision.and_then(|d| d.published.enforcement);
    Some(match e.as_ref().map(|e| (e.state, e.failure.as_ref())) {
        Some((EnforcementState::Error, Some(failure))) => check(
            "ray node",
            Status::Fail,
            format!("Ray cannot run this machine's node: {}", failure.reason),
        )
        .fix(match failure.kind {
            FailureKind::VersionMismatch => {
                "install the cluster's Python (the version above); the worker tries again every minute"
            }
            FailureKind::PortTaken => {
                "stop the program on that port, or give the worker other ports (--node-ports)"
            }
            _ => "see the node's log under Flotilla's logs directory; the worker keeps trying",
        }),
        state => check(
            "ray node",
            Status::Ok,
            format!(
                "the worker's Ray node runs ({})",
                match state.map(|(s, _)| s.as_str()) {
                    None | Some("") => "starting",
                    Some(s) => s,
                }
            ),
        ),
    })
}

/// The ports Flotilla and its Ray nodes listen on by default: free, or held by Flotilla itself
/// (this machine's head, or its running worker).
async fn ports_check(dirs: &Dirs, runs_head: bool) -> Check {
    use flotilla_ray::ports::{self, NodePorts};
    let worker_runs = flotilla_agent::control::Client::of(dirs)
        .decision()
        .await
        .is_ok();
    let mut wanted: Vec<(u16, &'static str, &'static str)> = Vec::new();
    if !worker_runs {
        let w = NodePorts::worker_default();
        wanted.extend(w.services().map(|(p, what)| (p, what, "--node-ports")));
    }
    if !runs_head {
        wanted.extend([
            (
                flotilla_head::DEFAULT_API_PORT,
                "Flotilla dashboard and API",
                "--api-port",
            ),
            (
                flotilla_head::fleet::DEFAULT_CONTROL_PORT,
                "Flotilla control plane",
                "--control-port",
            ),
            (ports::DEFAULT_GCS_PORT, "Ray GCS", "--ray-port"),
            (
                ports::DEFAULT_RAY_DASHBOARD_PORT,
                "Ray dashboard",
                "--ray-dashboard-port",
            ),
            (
                ports::DEFAULT_CLIENT_SERVER_PORT,
                "Ray client server",
                "--ray-client-port",
            ),
        ]);
        let h = NodePorts::head_default();
        wanted.extend(h.services().map(|(p, what)| (p, what, "--head-node-ports")));
    }
    let taken: Vec<String> = wanted
        .iter()
        .filter_map(|&(port, what, option)| {
            ports::ensure_free(port, what, option)
                .err()
                .map(|_| format!("{port} ({what}; {option} moves it)"))
        })
        .collect();
    let held = match (runs_head, worker_runs) {
        (true, true) => " (this machine's head and worker hold theirs)",
        (true, false) => " (this machine's head holds its own)",
        (false, true) => " (this machine's worker holds its own)",
        (false, false) => "",
    };
    if taken.is_empty() {
        check(
            "ports",
            Status::Ok,
            format!("the default ports are free{held}"),
        )
    } else {
        check(
            "ports",
            Status::Warn,
            format!("in use by another program: {}", taken.join(", ")),
        )
        .fix(
            "stop the program that holds them, or give Flotilla other ports with the options named",
        )
    }
}

/// What starts Flotilla by itself: the desktop app at login, or a service.
fn start_at_login_check() -> Check {
    let services: Vec<String> = crate::service::all_plans()
        .into_iter()
        .filter(|p| p.path.exists())
        .map(|p| {
            format!(
                "the {} service ({}, {})",
                p.role.name(),
                p.scope.name(),
                p.path.display()
            )
        })
        .collect();
    let entries: Vec<String> = crate::service::autostart_entries()
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| format!("the desktop app at login ({})", p.display()))
        .collect();
    let all: Vec<String> = entries.into_iter().chain(services).collect();
    if all.is_empty() {
        check(
            "start at login",
            Status::Skip,
            "nothing starts Flotilla by itself: it runs while you run it",
        )
        .fix("turn on Start at login in the desktop app, or `flotilla service install` on a server")
    } else {
        check(
            "start at login",
            Status::Ok,
            format!("started by {}", all.join("; ")),
        )
    }
}

/// The network: the mode, this machine's address toward the head, Tailscale's state (and the
/// head's machine online in the tailnet), and how network changes are noticed.
async fn network_checks(head: Option<&HeadInfo>, enrolled: Option<&Enrollment>) -> Vec<Check> {
    let mut out = Vec::new();
    // The head's hosts, as this machine knows them.
    let head_hosts: Vec<String> = match (head, enrolled) {
        (Some(info), _) => info
            .control_addresses
            .iter()
            .filter_map(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
            .collect(),
        (None, Some(e)) => e.addresses().iter().map(|a| a.host().to_string()).collect(),
        (None, None) => vec![],
    };
    let hosts: Vec<&str> = head_hosts.iter().map(String::as_str).collect();
    let on_tailnet = hosts
        .iter()
        .any(|h| flotilla_net::tailscale::looks_tailnet(h))
        || head.is_some_and(|i| i.network == "tailscale");
    let mode = if on_tailnet { "tailscale" } else { "lan" };

    // This machine's address toward the head (or its LAN address).
    let toward = match (head, enrolled) {
        (Some(info), _) => info
            .ray_address
            .rsplit_once(':')
            .map(|(ip, _)| format!("this machine is the head, at {ip}")),
        (None, Some(e)) => {
            let mut found = None;
            for a in e.addresses() {
                if let Ok(mut it) = tokio::net::lookup_host(a.to_string()).await
                    && let Some(dest) = it.next()
                {
                    found = Some((a.to_string(), flotilla_host::addr::route_to(dest)));
                    break;
                }
            }
            match found {
                Some((to, Ok(ip))) => Some(format!("reaches the head at {to} from {ip}")),
                Some((to, Err(e))) => {
                    out.push(
                        check("network", Status::Fail, format!("no route to the head at {to}: {e}"))
                            .fix("connect this machine to the head's network (its LAN, or its tailnet with `tailscale up`)"),
                    );
                    None
                }
                None => {
                    out.push(
                        check("network", Status::Fail, format!("cannot resolve the head ({})", head_hosts.join(", ")))
                            .fix("check DNS (MagicDNS on the tailnet) or join with a code that carries the head's address"),
                    );
                    None
                }
            }
        }
        (None, None) => flotilla_host::addr::lan_address()
            .map(|ip| format!("this machine's LAN address is {ip}")),
    };
    if let Some(toward) = toward {
        out.push(check(
            "network",
            Status::Ok,
            format!("{mode} mode; {toward}"),
        ));
    }

    // Tailscale.
    let needed = on_tailnet;
    let status = tokio::time::timeout(Duration::from_secs(3), flotilla_net::status()).await;
    out.push(match status {
        Ok(Ok(s)) if s.is_running() => {
            let me = s
                .self_node
                .as_ref()
                .map(|m| m.dns_name.trim_end_matches('.').to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "this machine".into());
            let ip = s
                .self_ipv4()
                .or_else(|| s.self_ipv6())
                .map_or("no address".into(), |ip| ip.to_string());
            let online = s.peers.iter().filter(|p| p.online).count();
            match s.check_head(&hosts) {
                Err(e) => check("tailscale", Status::Fail, e)
                    .fix("see the message; `tailscale status` shows the tailnet"),
                Ok(peer) => {
                    let head = match peer {
                        flotilla_net::tailscale::HeadPeer::Online(p) => {
                            format!("; the head {} is online", p.dns_name.trim_end_matches('.'))
                        }
                        _ => String::new(),
                    };
                    check(
                        "tailscale",
                        Status::Ok,
                        format!("running as {me} ({ip}), {online} peers online{head}"),
                    )
                }
            }
        }
        Ok(Ok(s)) => {
            let guidance = s.guidance().unwrap_or_default();
            let c = check(
                "tailscale",
                if needed { Status::Fail } else { Status::Skip },
                format!("Tailscale is {}", s.backend_state),
            );
            c.fix(guidance)
        }
        Ok(Err(e)) => check(
            "tailscale",
            if needed { Status::Fail } else { Status::Skip },
            if needed {
                format!("the head is on a tailnet: {e}")
            } else {
                format!(
                    "not in use (LAN mode): {}",
                    e.to_string().lines().next().unwrap_or("")
                )
            },
        )
        .fix("install Tailscale and run `tailscale up` to use Flotilla across networks"),
        Err(_) => check(
            "tailscale",
            if needed { Status::Warn } else { Status::Skip },
            "Tailscale did not answer in 3 s",
        )
        .fix("check that tailscaled runs (`tailscale status`)"),
    });

    let watch = flotilla_net::NetWatch::start();
    out.push(check(
        "network watch",
        Status::Ok,
        format!(
            "network changes and sleep are noticed through {}",
            watch.method
        ),
    ));
    out
}

/// The joined fleet: the control plane answers with the pinned certificate and knows this
/// node, Ray's GCS is reachable, the versions match, and the clocks agree.
async fn fleet_checks(e: &Enrollment, store: &SecretStore) -> Vec<Check> {
    use flotilla_proto::v1::{self as pb, fleet_client::FleetClient};
    let mut out = Vec::new();
    let Some(fingerprint) = e.fingerprint() else {
        out.push(
            check(
                "control plane",
                Status::Fail,
                "enrollment.json has no readable fingerprint",
            )
            .fix("join again"),
        );
        return out;
    };
    let started = std::time::Instant::now();
    match flotilla_proto::transport::connect(&e.addresses(), fingerprint, Duration::from_secs(5))
        .await
    {
        Ok(channel) => {
            let credential = store
                .get(flotilla_agent::enrollment::CREDENTIAL_SECRET)
                .ok();
            let mut request = tonic::Request::new(pb::ClusterRequest {});
            request.set_timeout(Duration::from_secs(5));
            if let Some(c) = credential
                && let Ok(v) = flotilla_proto::auth::node(&e.node_id, c.expose()).parse()
            {
                request.metadata_mut().insert(flotilla_proto::auth::HEADER, v);
            }
            let sent = now_ms();
            match FleetClient::new(channel).cluster(request).await {
                Ok(reply) => {
                    let received = now_ms();
                    let rtt = received - sent;
                    let head_time = reply.into_inner().time_unix_ms;
                    out.push(check(
                        "control plane",
                        Status::Ok,
                        format!(
                            "the head at {} answers as node {} ({} ms)",
                            e.head.join(", "),
                            e.node_id,
                            started.elapsed().as_millis()
                        ),
                    ));
                    let skew = head_time - (sent + rtt / 2);
                    let c = check(
                        "clock",
                        if skew.abs() > 5_000 { Status::Warn } else { Status::Ok },
                        format!("this clock is {} ms off the head's (±{} ms)", -skew, rtt / 2),
                    );
                    out.push(if skew.abs() > 5_000 {
                        c.fix("turn on automatic time (NTP) on both machines")
                    } else {
                        c
                    });
                }
                Err(s) => out.push(
                    check("control plane", Status::Fail, format!("the head refuses: {}", s.message()))
                        .fix("join again with a new code (`flotilla invite` on the head)"),
                ),
            }
        }
        Err(err) => out.push(
            check("control plane", Status::Fail, err.to_string()).fix(
                "start the head (`flotilla up`) and check that this machine reaches it (same LAN or tailnet, port open); if it was restored on another machine, `flotilla worker --head NEW-ADDRESS:PORT`",
            ),
        ),
    }
    for address in &e.gcs_addresses {
        let reach = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(address.as_str()),
        )
        .await;
        // macOS's Local Network privacy refuses a LAN peer as though it had no route.
        let privacy = match &reach {
            Ok(Err(e)) => address.parse::<std::net::SocketAddr>().ok().and_then(|to| {
                flotilla_net::lan::local_network_privacy_hint(
                    flotilla_host::macos_major(),
                    e.raw_os_error(),
                    to.ip(),
                )
            }),
            _ => None,
        };
        out.push(match reach {
            Ok(Ok(_)) => check("ray gcs", Status::Ok, format!("{address} is reachable")),
            Ok(Err(e)) if privacy.is_some() => check(
                "local network",
                Status::Fail,
                format!("{address}: {e} (macOS's Local Network privacy)"),
            )
            .fix(privacy.unwrap_or_default()),
            _ => check(
                "ray gcs",
                Status::Fail,
                format!("{address} does not answer"),
            )
            .fix("check that the head runs and that its Ray port is open to this machine"),
        });
    }
    let pinned = RuntimeSpec::default();
    out.push(if e.ray_version == pinned.ray {
        check(
            "versions",
            Status::Ok,
            format!("the fleet runs Ray {} like this Flotilla", e.ray_version),
        )
    } else {
        check(
            "versions",
            Status::Warn,
            format!(
                "the fleet runs Ray {}, this Flotilla pins {}",
                e.ray_version, pinned.ray
            ),
        )
        .fix("the node follows the head's version; upgrade Flotilla on every machine together")
    });
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
