//! `flotilla status`: the cluster as the head's API reports it.

use std::process::ExitCode;

use clap::Args;
use flotilla_agent::enforce::EnforcementState;
use flotilla_agent::outbox::Contribution;
use flotilla_app::cluster::{ThisMachine, api_url, fetch};
use flotilla_head::ClusterSnapshot;
use flotilla_host::Dirs;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the snapshot as JSON.
    #[arg(long)]
    json: bool,
    /// The head's API [default: the head running on this machine, else http://127.0.0.1:7471].
    #[arg(long, value_name = "URL")]
    api: Option<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let api = api_url(args.api, &Dirs::from_env());
    let (snap, local) = tokio::join!(fetch(&api), flotilla_app::cluster::this_machine());
    let snap = match (snap, local) {
        (Ok(snap), local) => (snap, local),
        (Err(e), None) => return Err(e),
        // A worker machine: the head's API listens on the head's own loopback.
        (Err(e), Some(d)) => {
            if args.json {
                let v = serde_json::json!({"this_machine": d, "cluster_error": format!("{e:#}")});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", this_machine(&d));
                println!(
                    "The cluster view is not available here ({e:#}); run `flotilla nodes` on the \
                     head's machine, or pass --api."
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let (snap, local) = snap;
    if args.json {
        let mut v = serde_json::to_value(&snap)?;
        v["this_machine"] = serde_json::to_value(local)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&snap));
    if let Some(d) = local {
        println!();
        println!("{}", this_machine(&d));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(s: &ClusterSnapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let t = &s.totals;
    let _ = writeln!(
        out,
        "Ray {} at {}: {} node{} alive, {} of {} CPUs in use",
        s.ray_version,
        s.ray_address,
        t.nodes_alive,
        if t.nodes_alive == 1 { "" } else { "s" },
        fmt_cpu(t.cpus_used),
        fmt_cpu(t.cpus_total)
    );
    let _ = writeln!(
        out,
        "Tasks: {} running, {} pending, {} finished, {} failed",
        s.tasks.running, s.tasks.pending, s.tasks.finished, s.tasks.failed
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<6} {:<7} {:<9} {:<16}",
        "NODE", "STATE", "ROLE", "CPUS", "ADDRESS"
    );
    for n in &s.nodes {
        let role = if n.is_head { "head" } else { "worker" };
        let cpus = format!("{}/{}", fmt_cpu(n.cpus_used), fmt_cpu(n.cpus_total));
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:<7} {:<9} {:<16}",
            n.name, n.state, role, cpus, n.ip
        );
    }
    if !s.jobs.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<28} {:<10} ENTRYPOINT", "JOB", "STATUS");
        for j in s.jobs.iter().take(10) {
            let entry: String = j.entrypoint.chars().take(60).collect();
            let _ = writeln!(out, "{:<28} {:<10} {entry}", j.id, j.status);
        }
    }
    out
}

/// "This machine: capped at 2 CPUs (Ray advertises 2): You're using this computer".
fn this_machine(m: &ThisMachine) -> String {
    let d = &m.decision;
    let reason = &d.published.reason_en;
    let e = d.published.enforcement.as_ref();
    let state = match e.map(|e| (e.state, e)) {
        Some((EnforcementState::Full, _)) => "contributing every CPU".to_string(),
        Some((EnforcementState::Cap, e)) => {
            format!("capped at {} CPUs", fmt_cpu(e.cap_cpus.unwrap_or(0.0)))
        }
        Some((EnforcementState::Draining, _)) => "finishing its tasks, then pausing".into(),
        Some((EnforcementState::Paused, _)) => "paused".into(),
        Some((EnforcementState::Error, e)) => format!(
            "cannot run its Ray node ({})",
            e.failure
                .as_ref()
                .map_or("see its log", |f| f.reason.as_str())
        ),
        _ => format!("{} CPUs decided", d.published.decision.target_cpus),
    };
    let advertised = e
        .and_then(|e| e.advertised_cpus)
        .map(|c| format!(" (Ray advertises {})", fmt_cpu(c)))
        .unwrap_or_default();
    let session = d
        .session_text
        .as_deref()
        .map(|t| format!("\nControl plane: {t}"))
        .unwrap_or_default();
    let contribution = m
        .contribution
        .map(|c| format!("\n{}", contribution_line(&c)))
        .unwrap_or_default();
    format!("This machine: {state}{advertised}: {reason}{session}{contribution}")
}

/// "Contributed: 1.5 CPU-hours today, 12 this week, 80 in all".
fn contribution_line(c: &Contribution) -> String {
    let h = |secs: f64| {
        let v = secs / 3600.0;
        if v >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    format!(
        "Contributed: {} CPU-hours today, {} this week, {} in all",
        h(c.today_cpu_seconds),
        h(c.week_cpu_seconds),
        h(c.total_cpu_seconds)
    )
}

fn fmt_cpu(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_head::{NodeView, Totals};

    #[test]
    fn renders_nodes_and_totals() {
        let s = ClusterSnapshot {
            ray_version: "2.60.0".into(),
            ray_address: "10.0.0.1:6379".into(),
            nodes: vec![
                NodeView {
                    name: "head".into(),
                    state: "ALIVE".into(),
                    is_head: true,
                    ..Default::default()
                },
                NodeView {
                    name: "laptop".into(),
                    state: "ALIVE".into(),
                    cpus_total: 8.0,
                    cpus_used: 2.5,
                    ..Default::default()
                },
            ],
            totals: Totals {
                nodes_alive: 2,
                nodes_dead: 0,
                cpus_total: 8.0,
                cpus_used: 2.5,
            },
            ..Default::default()
        };
        let text = render(&s);
        assert!(
            text.contains("2 nodes alive, 2.5 of 8 CPUs in use"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("laptop") && l.contains("2.5/8")),
            "{text}"
        );
    }

    #[test]
    fn the_contribution_reads_in_cpu_hours() {
        let c = Contribution {
            today_cpu_seconds: 5400.0,
            week_cpu_seconds: 43_200.0,
            total_cpu_seconds: 0.0,
            since_unix: None,
        };
        assert_eq!(
            contribution_line(&c),
            "Contributed: 1.5 CPU-hours today, 12 this week, 0.0 in all"
        );
    }

    #[tokio::test]
    async fn no_head_says_how_to_start_one() {
        let err = fetch("http://127.0.0.1:9").await.unwrap_err().to_string();
        assert!(err.contains("flotilla up"), "{err}");
    }
}
