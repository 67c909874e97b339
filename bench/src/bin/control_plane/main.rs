//! `control-plane`: how many agents one head carries.
//!
//! One process, two runtimes: the head (the real `ControlPlane`: TLS gRPC on loopback, a
//! SQLite registry in a temporary directory) on its own threads, and N simulated agents (real
//! TLS connections, one per agent, each with a `Session` stream reporting once a second) on
//! others. The head's CPU use is the CPU time of its own threads only (`/proc/self/task`).
//!
//! Measured at each N (default 1,000 and 5,000):
//! - head CPU, in cores, over the measurement window;
//! - report-to-snapshot latency: from an agent sending a report to a `WatchCluster` snapshot
//!   that reflects it arriving at a watcher (p50/p99);
//! - snapshot API latency: `Cluster` calls, one after another (p50/p99).
//!
//! Prints one JSON document; `--out FILE` also writes it. Goals: 5,000 agents on at most one
//! core, p99 report-to-snapshot <= 1 s, snapshot p99 <= 50 ms.

#[cfg(target_os = "linux")]
mod linux;

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("control-plane: only implemented on Linux (its threads' CPU time from /proc)");
    std::process::exit(2);
}
