//! The head's HTTP API as a scraper, a burst and a foreign web page meet it, on a real
//! one-machine cluster (`flotilla up`): `/metrics` passes Debian's `promtool check metrics`
//! (the `prometheus` package; this test fails without it), 500 concurrent requests to
//! `/api/v1/cluster` and to `/metrics` are all answered 200, and a request whose `Host` is
//! another name is refused while the head's own address is served.
#![cfg(target_os = "linux")]

mod common;
use common::*;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const BASE: u16 = 24000;

/// One HTTP/1.1 GET on loopback with this `Host`: the status (0 when the connection failed)
/// and the body.
fn get(port: u16, path: &str, host: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Runs `promtool check metrics` on `text`; its verdict and what it printed.
fn promtool(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!(
            "promtool is needed to check /metrics ({e}): install Debian's `prometheus` package \
             (tests/run does)"
        )
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The names of the metrics in a Prometheus text exposition (from its `# TYPE` lines).
fn served(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Flotilla's metric names an expression uses (`flotilla_` and on, up to the first character
/// a metric name cannot have).
fn named(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("flotilla_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// What ships under `monitoring/` works with this head: `promtool` accepts the alerting rules
/// and the Prometheus configuration, and every expression of the Grafana dashboard and of the
/// rules names only metrics that `/metrics` serves.
fn shipped_monitoring_fits(metrics: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../monitoring");
    for (what, file) in [
        ("rules", "prometheus/flotilla-rules.yml"),
        ("config", "prometheus/prometheus.yml"),
    ] {
        let out = Command::new("promtool")
            .args(["check", what])
            .arg(root.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check {what} {file}: {}",
            text(&out)
        );
    }
    let served = served(metrics);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/flotilla-fleet.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(
        exprs.len() >= 10,
        "the dashboard has {} queries",
        exprs.len()
    );
    let rules = std::fs::read_to_string(root.join("prometheus/flotilla-rules.yml")).unwrap();
    exprs.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(str::to_string),
    );
    for expr in &exprs {
        for name in named(expr) {
            assert!(
                served.contains(&name),
                "{name} (in `{expr}`) is not served by /metrics: {served:?}"
            );
        }
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        named("sum(flotilla_cpus_advertised) < 0.1 * sum(flotilla_cpus_logical)"),
        ["flotilla_cpus_advertised", "flotilla_cpus_logical"]
    );
    assert_eq!(
        named("rate(flotilla_node_contributed_cpu_seconds_total[5m])"),
        ["flotilla_node_contributed_cpu_seconds_total"]
    );
    assert!(named("up{job=\"flotilla-head\"} == 0").is_empty());
    let served = served("# HELP flotilla_nodes n\n# TYPE flotilla_nodes gauge\nflotilla_nodes 1\n");
    assert!(served.contains("flotilla_nodes"));
}

#[test]
fn metrics_pass_promtool_a_burst_is_served_and_foreign_hosts_are_refused() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut up = Up::start(BASE);
    let status = up.wait_status(2);

    // promtool itself judges: a metric it rejects fails this check.
    let (code, bad) = promtool("# TYPE flotilla_cpus_total gauge\nflotilla_cpus_total 4\n");
    assert!(
        !code,
        "promtool accepted a gauge named like a counter: {bad}"
    );
    let (code, metrics) = get(BASE, "/metrics", "127.0.0.1");
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("flotilla_ray_nodes_alive 2"), "{metrics}");
    let (ok, said) = promtool(&metrics);
    assert!(
        ok,
        "promtool check metrics: {said}\n--- /metrics:\n{metrics}"
    );
    shipped_monitoring_fits(&metrics);

    // 500 at once, to each of the two routes a dashboard and a scraper poll.
    for path in ["/api/v1/cluster", "/metrics"] {
        let burst: Vec<_> = (0..500)
            .map(|_| std::thread::spawn(move || get(BASE, path, "127.0.0.1").0))
            .collect();
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for t in burst {
            *statuses.entry(t.join().unwrap()).or_default() += 1;
        }
        assert_eq!(statuses, [(200, 500)].into(), "{path}");
    }

    // A page on another name that resolves to the head (DNS rebinding) is refused; the head's
    // own address, which other machines and scrapers use, is served.
    for host in [
        "evil.example",
        &format!("evil.example:{BASE}"),
        "10.255.0.1",
    ] {
        for path in ["/", "/api/v1/cluster", "/metrics", "/healthz"] {
            let (code, body) = get(BASE, path, host);
            assert_eq!(code, 403, "{host} {path}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["code"], "host_not_allowed", "{body}");
        }
    }
    let ray_address = status["ray_address"].as_str().unwrap();
    let head_ip = ray_address.rsplit_once(':').unwrap().0;
    for host in [
        format!("{head_ip}:{BASE}"),
        format!("localhost:{BASE}"),
        "[::1]".to_string(),
    ] {
        let (code, body) = get(BASE, "/api/v1/cluster", &host);
        assert_eq!(code, 200, "{host}: {body}");
    }
    up.stop();
}
