//! The cluster snapshot: Ray's nodes, resources, tasks and jobs merged into one document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use flotilla_ray::StateClient;
use flotilla_ray::state::{RayJob, RayNode, ResourceUsage, TaskCounts};
use flotilla_ray::supervisor::NODE_LABEL;

/// How many jobs a snapshot lists when more have finished: a head that runs for months must not
/// carry, send and draw its whole history every two seconds.
pub const JOBS_SHOWN: usize = 50;

/// Everything the dashboard and `flotilla status` show about the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ClusterSnapshot {
    pub ray_version: String,
    /// The cluster's Python version (the head's; a node may run another patch of it, see
    /// `agents[].python_version`). Empty where not known.
    #[serde(default)]
    pub python_version: String,
    pub ray_address: String,
    pub generated_at_ms: u64,
    pub nodes: Vec<NodeView>,
    pub totals: Totals,
    pub tasks: TaskTotals,
    /// Every job still pending or running, then the most recent others, 50 in all
    /// (`JOBS_SHOWN`), newest first. Ray keeps every job of the cluster's life; its own
    /// dashboard lists them all.
    pub jobs: Vec<JobView>,
    /// Every node enrolled with the control plane, with its state and reason as its agent
    /// reports them (match `ray_node_id` with `nodes[].node_id`).
    #[serde(default)]
    pub agents: Vec<crate::fleet::AgentView>,
}

impl ClusterSnapshot {
    /// The control plane's snapshot (`Fleet/Cluster`, readable with a node credential) in the
    /// dashboard's form: the agents with their states and reasons, totals and jobs; Ray's own
    /// node table is the head's alone, so `nodes` stays empty.
    pub fn of_fleet(s: &flotilla_proto::v1::ClusterSnapshot) -> ClusterSnapshot {
        let agents: Vec<crate::fleet::AgentView> = s
            .nodes
            .iter()
            .map(crate::fleet::AgentView::of_summary)
            .collect();
        let t = s.totals.unwrap_or_default();
        ClusterSnapshot {
            generated_at_ms: s.time_unix_ms.max(0) as u64,
            totals: Totals {
                nodes_alive: agents.iter().filter(|a| a.connected).count(),
                nodes_dead: agents.iter().filter(|a| !a.connected).count(),
                cpus_total: t.cpus_advertised,
                cpus_used: t.cpus_used,
            },
            tasks: TaskTotals {
                running: u64::from(t.running_tasks),
                ..Default::default()
            },
            jobs: s
                .jobs
                .iter()
                .map(|j| JobView {
                    id: j.id.clone(),
                    status: flotilla_proto::v1::JobStatus::try_from(j.status)
                        .map_or("UNKNOWN", |s| match s {
                            flotilla_proto::v1::JobStatus::Pending => "PENDING",
                            flotilla_proto::v1::JobStatus::Running => "RUNNING",
                            flotilla_proto::v1::JobStatus::Stopped => "STOPPED",
                            flotilla_proto::v1::JobStatus::Succeeded => "SUCCEEDED",
                            flotilla_proto::v1::JobStatus::Failed => "FAILED",
                            flotilla_proto::v1::JobStatus::Unspecified => "UNKNOWN",
                        })
                        .into(),
                    entrypoint: j.entrypoint.clone(),
                    reason: Some(j.reason.clone()).filter(|m| !m.is_empty()),
                    ..Default::default()
                })
                .collect(),
            agents,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct NodeView {
    pub node_id: String,
    pub name: String,
    pub ip: String,
    /// `ALIVE` or `DEAD`, as Ray reports it.
    pub state: String,
    pub state_message: Option<String>,
    pub is_head: bool,
    /// Whether a Flotilla agent runs the node (it carries the `flotilla.node` label).
    pub flotilla: bool,
    /// The CPUs the node advertises now (Flotilla resizes them live).
    pub cpus_total: f64,
    pub cpus_used: f64,
    /// Ray is draining the node: its tasks finish, no new ones arrive.
    #[serde(default)]
    pub draining: bool,
    pub started_at_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Totals {
    pub nodes_alive: usize,
    pub nodes_dead: usize,
    pub cpus_total: f64,
    pub cpus_used: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TaskTotals {
    pub running: u64,
    pub pending: u64,
    pub finished: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JobView {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub entrypoint: String,
    pub start_time_ms: Option<u64>,
    pub end_time_ms: Option<u64>,
    /// Ray's whole message about the job (for a failed one, with Ray's traceback).
    #[serde(default)]
    pub message: Option<String>,
    /// Why the job ended as it did, in one line: for a failed one, Ray's reason, or the
    /// installer's error when its dependencies did not install.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A node's resources and state as the GCS knows them right now. The dashboard's node table
/// keeps the totals a node registered with, and its usage refreshes every few seconds; the GCS
/// follows live resizes and knows when a node is draining.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Live {
    pub cpus_total: f64,
    pub cpus_available: f64,
    pub draining: bool,
}

async fn live(
    gcs: Option<&(std::net::SocketAddr, flotilla_ray::RayToken)>,
) -> BTreeMap<String, Live> {
    let Some((addr, token)) = gcs else {
        return BTreeMap::new();
    };
    let states = async {
        let mut c = flotilla_ray::grpc::GcsClient::connect(*addr, Some(token.clone())).await?;
        c.node_states().await
    };
    match states.await {
        Ok(states) => states
            .into_iter()
            .map(|n| {
                let live = Live {
                    cpus_total: n.cpus_total(),
                    cpus_available: n.available_resources.get("CPU").copied().unwrap_or(0.0),
                    draining: n.state == flotilla_ray::grpc::NodeLifecycle::Draining,
                };
                (n.node_id_hex, live)
            })
            .collect(),
        Err(e) => {
            tracing::debug!("live node states unavailable: {e}");
            BTreeMap::new()
        }
    }
}

/// Reads Ray's state and builds the snapshot; `gcs` (address and token) adds live resources.
pub async fn snapshot(
    ray: &StateClient,
    ray_address: &str,
    gcs: Option<&(std::net::SocketAddr, flotilla_ray::RayToken)>,
) -> flotilla_ray::Result<ClusterSnapshot> {
    let (version, nodes, usage, tasks, jobs, live) = tokio::join!(
        ray.ray_version(),
        ray.nodes(),
        ray.resource_usage(),
        ray.task_counts(),
        ray.jobs(),
        live(gcs),
    );
    // Nodes are essential; the rest degrade to empty while Ray is still starting up.
    let read = RayRead {
        version: version.unwrap_or_default(),
        nodes: nodes?,
        usage: usage.unwrap_or_default(),
        tasks: tasks.unwrap_or_default(),
        jobs: jobs.unwrap_or_default(),
        live,
    };
    Ok(merge(ray_address, read, now_ms()))
}

/// Everything read from Ray for one snapshot.
#[derive(Debug, Default)]
pub(crate) struct RayRead {
    pub version: String,
    pub nodes: Vec<RayNode>,
    pub usage: ResourceUsage,
    pub tasks: TaskCounts,
    pub jobs: Vec<RayJob>,
    pub live: BTreeMap<String, Live>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Builds the snapshot from Ray's answers. A node that restarted appears in Ray's table once
/// per incarnation; the dead incarnations of a name that has a live one are left out.
pub(crate) fn merge(ray_address: &str, read: RayRead, generated_at_ms: u64) -> ClusterSnapshot {
    let RayRead {
        version: ray_version,
        nodes,
        usage,
        tasks,
        jobs,
        live,
    } = read;
    let alive_names: std::collections::BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.is_alive())
        .map(|n| n.node_name.clone())
        .collect();
    let mut dead_seen = std::collections::BTreeSet::new();
    let mut views: Vec<NodeView> = Vec::new();
    let mut by_start: Vec<RayNode> = nodes;
    // Newest first, so the one dead incarnation kept per name is the latest.
    by_start.sort_by_key(|n| std::cmp::Reverse(n.start_time_ms));
    for n in by_start {
        if !n.is_alive()
            && (alive_names.contains(&n.node_name) || !dead_seen.insert(n.node_name.clone()))
        {
            continue;
        }
        let l = live.get(&n.node_id).filter(|_| n.is_alive());
        views.push(NodeView {
            cpus_used: match l {
                Some(l) => (l.cpus_total - l.cpus_available).max(0.0),
                None if n.is_alive() => usage.cpus_used(&n.node_id),
                None => 0.0,
            },
            cpus_total: l.map_or_else(|| n.cpus_total(), |l| l.cpus_total),
            draining: l.is_some_and(|l| l.draining),
            flotilla: n.labels.contains_key(NODE_LABEL),
            node_id: n.node_id,
            name: n.node_name,
            ip: n.node_ip,
            state: n.state,
            state_message: n.state_message,
            is_head: n.is_head_node,
            started_at_ms: n.start_time_ms,
        });
    }
    views.sort_by(|a, b| (!a.is_head, &a.name).cmp(&(!b.is_head, &b.name)));
    let alive = views.iter().filter(|n| n.state == "ALIVE");
    let totals = Totals {
        nodes_alive: alive.clone().count(),
        nodes_dead: views.len() - alive.clone().count(),
        cpus_total: alive.clone().map(|n| n.cpus_total).sum(),
        cpus_used: alive.map(|n| n.cpus_used).sum(),
    };
    let jobs: Vec<JobView> = jobs
        .into_iter()
        .map(|j| JobView {
            id: j.submission_id.or(j.job_id).unwrap_or_default(),
            kind: j.kind,
            status: j.status,
            entrypoint: j.entrypoint,
            start_time_ms: j.start_time.filter(|t| *t > 0),
            end_time_ms: j.end_time.filter(|t| *t > 0),
            reason: j
                .message
                .as_deref()
                .and_then(flotilla_ray::state::job_reason),
            message: j.message.filter(|m| !m.is_empty()),
        })
        .collect();
    // Every live job, then the newest finished ones up to JOBS_SHOWN in all.
    let (mut jobs, mut finished): (Vec<JobView>, Vec<JobView>) = jobs
        .into_iter()
        .partition(|j| matches!(j.status.as_str(), "PENDING" | "RUNNING"));
    finished.sort_by_key(|j| std::cmp::Reverse(j.start_time_ms));
    finished.truncate(JOBS_SHOWN.saturating_sub(jobs.len()));
    jobs.append(&mut finished);
    jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time_ms));
    ClusterSnapshot {
        ray_version,
        python_version: String::new(),
        ray_address: ray_address.to_string(),
        generated_at_ms,
        nodes: views,
        totals,
        tasks: TaskTotals {
            running: tasks.running(),
            pending: tasks.pending(),
            finished: tasks.finished(),
            failed: tasks.failed(),
        },
        jobs,
        agents: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_control_planes_snapshot_reads_as_the_dashboards() {
        use flotilla_proto::v1 as pb;
        let node = |id: &str, name: &str, state: pb::NodeState, cpus: f64| pb::NodeSummary {
            node_id: id.into(),
            name: name.into(),
            state: state as i32,
            reason: Some(pb::Reason {
                code: "owner_active".into(),
                text_en: "You're using this computer".into(),
                text_es: "Estás usando este ordenador".into(),
            }),
            cpus_advertised: cpus,
            cpus_total: 8.0,
            owner_active: Some(true),
            last_seen_unix_ms: 1_700_000_000_000,
            ..Default::default()
        };
        let s = pb::ClusterSnapshot {
            time_unix_ms: 1_700_000_000_500,
            nodes: vec![
                node("3", "laptop", pb::NodeState::Throttled, 2.0),
                node("4", "desk", pb::NodeState::Offline, 0.0),
            ],
            totals: Some(pb::ClusterTotals {
                cpus_advertised: 2.0,
                running_tasks: 5,
                ..Default::default()
            }),
            jobs: vec![pb::JobSummary {
                id: "raysubmit_1".into(),
                status: pb::JobStatus::Running as i32,
                entrypoint: "python sweep.py".into(),
                reason: String::new(),
            }],
        };
        let d = ClusterSnapshot::of_fleet(&s);
        assert_eq!(d.agents.len(), 2);
        let laptop = &d.agents[0];
        assert_eq!(
            (laptop.node_id, laptop.state.as_str(), laptop.connected),
            (3, "throttled", true)
        );
        assert_eq!(laptop.reason_code, "owner_active");
        assert_eq!(laptop.reason_es, "Estás usando este ordenador");
        assert_eq!((laptop.cpus, laptop.cpus_advertised), (8, 2.0));
        assert_eq!(d.agents[1].state, "offline");
        assert!(!d.agents[1].connected);
        assert_eq!((d.totals.nodes_alive, d.totals.nodes_dead), (1, 1));
        assert_eq!(d.totals.cpus_total, 2.0);
        assert_eq!(d.tasks.running, 5);
        assert_eq!(d.jobs[0].status, "RUNNING");
        assert!(d.nodes.is_empty(), "Ray's node table is the head's alone");
    }

    fn node(id: &str, name: &str, state: &str, cpus: f64, start: u64) -> RayNode {
        RayNode {
            node_id: id.into(),
            node_name: name.into(),
            node_ip: "10.0.0.1".into(),
            state: state.into(),
            is_head_node: name == "head",
            resources_total: BTreeMap::from([("CPU".to_string(), cpus)]),
            labels: BTreeMap::from([(NODE_LABEL.to_string(), name.to_string())]),
            start_time_ms: start,
            ..Default::default()
        }
    }

    #[test]
    fn a_restarted_node_shows_once_and_dead_ones_once_per_name() {
        let nodes = vec![
            node("h", "head", "ALIVE", 0.0, 1),
            node("w1a", "laptop", "DEAD", 4.0, 2),
            node("w1b", "laptop", "ALIVE", 4.0, 3),
            node("w2a", "desk", "DEAD", 8.0, 2),
            node("w2b", "desk", "DEAD", 8.0, 4),
        ];
        let mut usage = ResourceUsage::default();
        usage.by_node.insert(
            "w1b".into(),
            BTreeMap::from([("CPU".to_string(), (3.0, 4.0))]),
        );
        let read = RayRead {
            version: "2.60.0".into(),
            nodes,
            usage,
            ..Default::default()
        };
        let s = merge("10.0.0.1:6379", read, 9);
        let ids: Vec<&str> = s.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["h", "w2b", "w1b"]);
        assert_eq!(s.totals.nodes_alive, 2);
        assert_eq!(s.totals.nodes_dead, 1);
        assert_eq!(s.totals.cpus_total, 4.0);
        assert_eq!(s.totals.cpus_used, 3.0);
        assert!(s.nodes.iter().all(|n| n.flotilla));
    }

    #[test]
    fn live_gcs_state_overrides_registered_totals() {
        let nodes = vec![
            node("h", "head", "ALIVE", 0.0, 1),
            node("w", "laptop", "ALIVE", 8.0, 2),
        ];
        let live = BTreeMap::from([(
            "w".to_string(),
            Live {
                cpus_total: 2.0,
                cpus_available: 0.5,
                draining: true,
            },
        )]);
        let read = RayRead {
            nodes,
            live,
            ..Default::default()
        };
        let s = merge("", read, 0);
        let w = s.nodes.iter().find(|n| n.node_id == "w").unwrap();
        assert_eq!((w.cpus_total, w.cpus_used, w.draining), (2.0, 1.5, true));
        assert_eq!(s.totals.cpus_total, 2.0);
    }

    #[test]
    fn jobs_are_newest_first_with_their_submission_id() {
        let jobs = vec![
            RayJob {
                job_id: Some("01".into()),
                start_time: Some(5),
                end_time: Some(0),
                status: "RUNNING".into(),
                ..Default::default()
            },
            RayJob {
                job_id: Some("02".into()),
                submission_id: Some("raysubmit_x".into()),
                start_time: Some(7),
                ..Default::default()
            },
        ];
        let read = RayRead {
            jobs,
            ..Default::default()
        };
        let s = merge("", read, 0);
        assert_eq!(s.jobs[0].id, "raysubmit_x");
        assert_eq!(s.jobs[1].id, "01");
        assert_eq!(s.jobs[1].end_time_ms, None);
    }

    #[test]
    fn a_long_history_shows_every_live_job_and_the_latest_finished_ones() {
        let job = |n: u64, status: &str| RayJob {
            job_id: Some(format!("{n:08}")),
            status: status.into(),
            start_time: Some(n),
            ..Default::default()
        };
        // Ten thousand finished jobs, and a sweep still running from long ago.
        let mut jobs: Vec<RayJob> = (1..=10_000).map(|n| job(n, "SUCCEEDED")).collect();
        jobs.push(job(0, "RUNNING"));
        jobs.push(job(10_001, "PENDING"));
        let s = merge(
            "",
            RayRead {
                jobs,
                ..Default::default()
            },
            0,
        );
        assert_eq!(s.jobs.len(), JOBS_SHOWN);
        let ids: Vec<&str> = s.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids[0], "00010001", "newest first");
        assert_eq!(ids[1], "00010000");
        assert_eq!(
            ids[JOBS_SHOWN - 2],
            format!("{:08}", 10_001 - (JOBS_SHOWN - 2))
        );
        assert_eq!(ids[JOBS_SHOWN - 1], "00000000", "the old running job stays");
    }
}
