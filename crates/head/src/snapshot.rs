//! The cluster snapshot: Ray's nodes, resources, tasks and jobs merged into one document.

use serde::{Deserialize, Serialize};

use flotilla_ray::StateClient;
use flotilla_ray::state::{RayJob, RayNode, ResourceUsage, TaskCounts};
use flotilla_ray::supervisor::NODE_LABEL;

/// Everything the dashboard and `flotilla status` show about the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterSnapshot {
    pub ray_version: String,
    pub ray_address: String,
    pub generated_at_ms: u64,
    pub nodes: Vec<NodeView>,
    pub totals: Totals,
    pub tasks: TaskTotals,
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
    pub cpus_total: f64,
    pub cpus_used: f64,
    pub started_at_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub nodes_alive: usize,
    pub nodes_dead: usize,
    pub cpus_total: f64,
    pub cpus_used: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskTotals {
    pub running: u64,
    pub pending: u64,
    pub finished: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub entrypoint: String,
    pub start_time_ms: Option<u64>,
    pub end_time_ms: Option<u64>,
}

/// Reads Ray's state and builds the snapshot.
pub async fn snapshot(
    ray: &StateClient,
    ray_address: &str,
) -> flotilla_ray::Result<ClusterSnapshot> {
    let (version, nodes, usage, tasks, jobs) = tokio::join!(
        ray.ray_version(),
        ray.nodes(),
        ray.resource_usage(),
        ray.task_counts(),
        ray.jobs(),
    );
    // Nodes are essential; the rest degrade to empty while Ray is still starting up.
    Ok(merge(
        version.unwrap_or_default(),
        ray_address,
        nodes?,
        &usage.unwrap_or_default(),
        &tasks.unwrap_or_default(),
        jobs.unwrap_or_default(),
        now_ms(),
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Builds the snapshot from Ray's answers. A node that restarted appears in Ray's table once
/// per incarnation; the dead incarnations of a name that has a live one are left out.
pub(crate) fn merge(
    ray_version: String,
    ray_address: &str,
    nodes: Vec<RayNode>,
    usage: &ResourceUsage,
    tasks: &TaskCounts,
    jobs: Vec<RayJob>,
    generated_at_ms: u64,
) -> ClusterSnapshot {
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
        views.push(NodeView {
            cpus_used: if n.is_alive() {
                usage.cpus_used(&n.node_id)
            } else {
                0.0
            },
            cpus_total: n.cpus_total(),
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
    let mut jobs: Vec<JobView> = jobs
        .into_iter()
        .map(|j| JobView {
            id: j.submission_id.or(j.job_id).unwrap_or_default(),
            kind: j.kind,
            status: j.status,
            entrypoint: j.entrypoint,
            start_time_ms: j.start_time.filter(|t| *t > 0),
            end_time_ms: j.end_time.filter(|t| *t > 0),
        })
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time_ms));
    ClusterSnapshot {
        ray_version,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        let s = merge(
            "2.60.0".into(),
            "10.0.0.1:6379",
            nodes,
            &usage,
            &TaskCounts::default(),
            vec![],
            9,
        );
        let ids: Vec<&str> = s.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["h", "w2b", "w1b"]);
        assert_eq!(s.totals.nodes_alive, 2);
        assert_eq!(s.totals.nodes_dead, 1);
        assert_eq!(s.totals.cpus_total, 4.0);
        assert_eq!(s.totals.cpus_used, 3.0);
        assert!(s.nodes.iter().all(|n| n.flotilla));
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
        let s = merge(
            String::new(),
            "",
            vec![],
            &ResourceUsage::default(),
            &TaskCounts::default(),
            jobs,
            0,
        );
        assert_eq!(s.jobs[0].id, "raysubmit_x");
        assert_eq!(s.jobs[1].id, "01");
        assert_eq!(s.jobs[1].end_time_ms, None);
    }
}
