//! The fleet's figures in Prometheus' text format (version 0.0.4), served by the HTTP API's
//! `/metrics` with Ray's.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use flotilla_proto::state;

use super::{AgentView, ControlPlane};

type Pick = fn(&AgentView) -> f64;

/// Cluster-wide totals: name, help, the figure of one node.
const TOTALS: [(&str, &str, Pick); 3] = [
    (
        "flotilla_cpus_advertised",
        "CPUs the nodes offer Ray now.",
        |a| a.cpus_advertised,
    ),
    (
        "flotilla_cpus_capped",
        "CPU caps of the nodes' Ray processes, in cores.",
        |a| a.cpus_capped,
    ),
    (
        "flotilla_cpus_logical",
        "Logical CPUs of the enrolled nodes.",
        |a| f64::from(a.cpus),
    ),
];

/// Per-node figures: name, kind, help, the figure. The counter is the node's contribution
/// since the head started, which the live table holds, not the view.
const PER_NODE: [(&str, &str, &str, Pick); 5] = [
    (
        "flotilla_node_cpus_advertised",
        "gauge",
        "CPUs a node offers Ray now.",
        |a| a.cpus_advertised,
    ),
    (
        "flotilla_node_owner_active",
        "gauge",
        "1 while the node's owner uses it.",
        |a| f64::from(u8::from(a.owner_active == Some(true))),
    ),
    (
        "flotilla_node_on_battery",
        "gauge",
        "1 while the node runs on battery.",
        |a| f64::from(u8::from(a.on_battery)),
    ),
    (
        "flotilla_node_connected",
        "gauge",
        "1 while the node has a session with the head.",
        |a| f64::from(u8::from(a.connected)),
    ),
    (
        "flotilla_node_contributed_cpu_seconds_total",
        "counter",
        "CPU-seconds a node gave Ray since the head started.",
        |_| 0.0,
    ),
];

impl ControlPlane {
    /// The fleet's figures in Prometheus' text format (version 0.0.4).
    pub fn metrics(&self) -> String {
        let agents = self.agents();
        let contributed: HashMap<i64, f64> = self
            .nodes()
            .iter()
            .map(|(id, l)| (id.0, l.contributed))
            .collect();
        let mut out = String::new();
        describe(
            &mut out,
            "flotilla_nodes",
            "gauge",
            "Enrolled nodes by state.",
        );
        let mut by_state: BTreeMap<&str, u32> =
            state::KNOWN.iter().map(|s| (s.name(), 0)).collect();
        for a in &agents {
            *by_state.entry(a.state.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            let _ = writeln!(out, "flotilla_nodes{{state=\"{}\"}} {n}", label(state));
        }
        for (name, help, pick) in TOTALS {
            describe(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", agents.iter().map(pick).sum::<f64>());
        }
        describe(
            &mut out,
            "flotilla_node_state",
            "gauge",
            "1 for each node's state and the code of the reason its agent gave (going_to_sleep, owner_active...).",
        );
        for a in &agents {
            let _ = writeln!(
                out,
                "flotilla_node_state{{node=\"{}\",state=\"{}\",reason=\"{}\"}} 1",
                label(&a.name),
                label(&a.state),
                label(&a.reason_code)
            );
        }
        for (name, kind, help, pick) in PER_NODE {
            describe(&mut out, name, kind, help);
            for a in &agents {
                let value = if kind == "counter" {
                    contributed.get(&a.node_id).copied().unwrap_or(0.0)
                } else {
                    pick(a)
                };
                let _ = writeln!(out, "{name}{{node=\"{}\"}} {value}", label(&a.name));
            }
        }
        if let Some(alerts) = super::lock(&self.inner.alerts).as_ref() {
            out.push_str(&alerts.metrics());
        }
        out
    }
}

/// A metric's `# HELP` and `# TYPE` lines.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
