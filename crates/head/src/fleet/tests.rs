use std::sync::Arc;

use flotilla_proto::v1::{self as pb, head_command::Command as Cmd};
use flotilla_ray::RayToken;
use flotilla_secrets::Secret;
use tokio::sync::mpsc;

use super::live::registry_state;
use super::*;
use crate::registry::NodeId;

#[test]
fn a_machine_without_the_clusters_minor_python_is_refused_with_what_to_install() {
    let v = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Another patch of the same minor, several Pythons, or one it can download: accepted.
    assert_eq!(python_refusal(&v(&["3.11.2"]), false, "3.11.7"), None);
    assert_eq!(
        python_refusal(&v(&["3.12.1", "3.11.9"]), false, "3.11.7"),
        None
    );
    assert_eq!(python_refusal(&v(&["3.12.1"]), true, "3.11.7"), None);
    // Not said (an older agent): accepted, as before.
    assert_eq!(python_refusal(&[], false, "3.11.7"), None);
    // Only other minors, no downloads: refused, naming both sides and the fix.
    let why = python_refusal(&v(&["3.12.1", "3.10.13", "3.12.1"]), false, "3.11.7").unwrap();
    for part in [
        "Python 3.10.13, 3.12.1",
        "the fleet runs Python 3.11.7",
        "same minor version (3.11)",
        "Install Python 3.11",
        "uv python install 3.11.7",
        "it was not used",
    ] {
        assert!(why.contains(part), "{part:?} in {why}");
    }
    // 3.1 is not 3.11.
    assert!(python_refusal(&v(&["3.1.4"]), false, "3.11.7").is_some());
}

fn plane() -> ControlPlane {
    ControlPlane::new(FleetConfig {
        registry: Arc::new(Registry::open_in_memory().unwrap()),
        ray: RayInfo {
            gcs_addresses: vec!["10.0.0.1:6379".into()],
            ray_version: "2.60.0".into(),
            python_version: "3.11.7".into(),
            token: RayToken::generate(),
        },
        addresses: vec!["10.0.0.1:7470".parse().unwrap()],
        fingerprint: flotilla_proto::Fingerprint([7; 32]),
        admin_token: Secret::from("admin"),
        policy_toml: String::new(),
    })
    .unwrap()
}

#[tokio::test]
async fn the_heads_own_worker_enrolled_again_replaces_its_earlier_self_in_the_live_table() {
    let plane = plane();
    let (first, name, _) = plane.enroll_local("studio", 8).await.unwrap();
    assert_eq!(name, "studio");
    let (tx, mut rx) = mpsc::channel(4);
    plane.nodes().get_mut(&first).unwrap().session = Some((1, tx));
    let (second, name, _) = plane.enroll_local("studio", 8).await.unwrap();
    assert_eq!(name, "studio");
    assert_ne!(first, second);
    let names: Vec<_> = plane.agents().into_iter().map(|a| a.name).collect();
    assert_eq!(names, vec!["studio".to_string()]);
    // The replaced node's session is over.
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn a_node_is_named_by_id_or_name_and_never_by_a_guess() {
    let plane = plane();
    let (studio, _, _) = plane.enroll_local("studio", 8).await.unwrap();
    let (boxed, _, _) = plane.enroll_local("Box", 8).await.unwrap();
    // A numeric name from before names were checked, held by another node than the id.
    let mut legacy = plane.nodes().get(&boxed).unwrap().record.clone();
    legacy.id = NodeId(70);
    legacy.name = studio.to_string();
    plane.insert(legacy, None);

    assert_eq!(plane.find("studio").unwrap(), studio);
    assert_eq!(plane.find("BOX").unwrap(), boxed);
    assert_eq!(plane.find(&format!("#{boxed}")).unwrap(), boxed);
    assert_eq!(plane.find(&format!("{boxed}")).unwrap(), boxed);
    assert_eq!(plane.find(&format!("#{studio}")).unwrap(), studio);
    assert_eq!(plane.find("#70").unwrap(), NodeId(70));
    let both = plane.find(&studio.to_string()).unwrap_err();
    assert!(matches!(both, FleetError::InvalidArgument(_)), "{both:?}");
    assert!(both.message().contains(&format!("#{studio}")), "{both:?}");
    assert!(both.message().contains("#70"), "{both:?}");
    let none = plane.find("nobody").unwrap_err();
    assert!(matches!(none, FleetError::NotFound(_)), "{none:?}");
    // A pause for the ambiguous text reaches nobody.
    assert!(
        plane
            .command(&studio.to_string(), pb::HeadCommand::default())
            .is_err()
    );
}

#[tokio::test]
async fn the_snapshot_merges_reports_with_rays_view() {
    let plane = plane();
    let (id, _, _) = plane.enroll_local("studio", 8).await.unwrap();
    // A connected node (a session sender stands in for the stream).
    let (tx, _rx) = mpsc::channel(4);
    plane.nodes().get_mut(&id).unwrap().session = Some((1, tx));
    let report = pb::AgentReport {
        seq: 1,
        state: pb::NodeState::Throttled as i32,
        reason: Some(reason(
            "owner_active",
            "You're using this computer",
            "Estás usando este ordenador",
        )),
        advertised_cpus: 2.0,
        capped_cpus: 2.0,
        ray_node_id: "abc123".into(),
        contributions: vec![pb::ContributionRecord {
            hour_start_unix: 1_800_000_000 / 3600 * 3600,
            cpu_seconds: 12.5,
            seq: 1,
        }],
        ..Default::default()
    };
    let ack = plane.apply_report(id, report.clone()).await.unwrap();
    assert!(matches!(
        ack,
        Some(pb::HeadCommand {
            command: Some(Cmd::Ack(pb::Ack { up_to_seq: 1 }))
        })
    ));
    // The same report again (a resend after a reconnect) counts once.
    plane.apply_report(id, report).await.unwrap();
    assert_eq!(
        plane.inner.config.registry.total_cpu_seconds(id).unwrap(),
        12.5
    );

    let ray = crate::ClusterSnapshot {
        nodes: vec![crate::NodeView {
            node_id: "abc123".into(),
            state: "ALIVE".into(),
            cpus_used: 1.5,
            ..Default::default()
        }],
        tasks: crate::TaskTotals {
            running: 3,
            ..Default::default()
        },
        jobs: vec![crate::JobView {
            id: "raysubmit_1".into(),
            status: "RUNNING".into(),
            entrypoint: "python sweep.py".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    plane.set_ray_view(RayView::of(&ray));
    let snap = plane.snapshot();
    let node = &snap.nodes[0];
    assert_eq!(node.name, "studio");
    assert_eq!(node.state, pb::NodeState::Throttled as i32);
    assert_eq!(node.cpus_used, 1.5);
    assert_eq!(node.cpus_advertised, 2.0);
    assert_eq!(node.cpus_total, 8.0);
    let totals = snap.totals.unwrap();
    assert_eq!((totals.running_tasks, totals.nodes_contributing), (3, 1));
    assert_eq!(snap.jobs.len(), 1);
    assert_eq!(snap.jobs[0].status, pb::JobStatus::Running as i32);
    let metrics = plane.metrics();
    assert!(
        metrics.contains("flotilla_nodes{state=\"throttled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_node_cpus_advertised{node=\"studio\"} 2"),
        "{metrics}"
    );
    let state = metrics
        .lines()
        .find(|l| l.starts_with("flotilla_node_state{node=\"studio\""))
        .unwrap_or_else(|| panic!("no state of the node: {metrics}"));
    assert!(state.contains("state=\"throttled\""), "{state}");
    assert!(state.ends_with("} 1"), "{state}");
}

/// Issue 10 (fuzzing): a report whose figures are NaN or infinite must not turn the
/// cluster's totals into NaN (which JSON cannot even carry).
#[test]
fn regression_10_reports_with_non_finite_figures_are_made_safe() {
    let mut r = pb::AgentReport {
        advertised_cpus: f64::NAN,
        capped_cpus: f64::INFINITY,
        owner_load: -3.0,
        battery_percent: Some(f64::NAN),
        contributed_cpu_seconds: f64::NEG_INFINITY,
        ..Default::default()
    };
    sanitize_report(&mut r);
    assert_eq!(
        (
            r.advertised_cpus,
            r.capped_cpus,
            r.owner_load,
            r.contributed_cpu_seconds
        ),
        (0.0, 0.0, 0.0, 0.0)
    );
    assert_eq!(r.battery_percent, None);
    let mut r = pb::AgentReport {
        advertised_cpus: 4.0,
        battery_percent: Some(140.0),
        ..Default::default()
    };
    sanitize_report(&mut r);
    assert_eq!((r.advertised_cpus, r.battery_percent), (4.0, Some(100.0)));
}

#[test]
fn report_states_map_to_registry_states() {
    assert_eq!(
        registry_state(pb::NodeState::Paused as i32),
        registry::NodeState::Paused
    );
    assert_eq!(
        registry_state(pb::NodeState::Throttled as i32),
        registry::NodeState::Online
    );
    // A state from a newer agent counts as online.
    assert_eq!(registry_state(99), registry::NodeState::Online);
}
