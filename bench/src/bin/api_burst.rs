//! What a burst of requests costs the head's HTTP API: 500 concurrent GETs (each its own
//! connection) at `/api/v1/cluster`, then at `/metrics`, against a real head
//! (`flotilla up --no-worker` on loopback) or one given with `--url`. Per route: every
//! request's latency (connect to the last byte), p50, p95 and max, and the statuses. The goal:
//! every answer 200 within 1 s.
//!
//! Prints one JSON object to stdout, writes it to `bench/results/api-burst-<date>.json` and a
//! summary to stderr. See `bench/README.md`.
#[cfg(target_os = "linux")]
fn main() {
    flotilla_bench::main("api-burst", linux::parse_args, linux::run);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("api-burst: only implemented on Linux");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    use std::path::{Path, PathBuf};
    use std::process::Child;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result};
    use flotilla_bench::cli::{start_head, stop};
    use flotilla_bench::proc::machine;
    use flotilla_bench::{percentile, round, today, wait_for};
    use serde_json::{Value, json};

    /// The head's ports: API at the base, the rest from base + 1.
    const BASE: u16 = 9100;
    const GOAL_MAX_MS: f64 = 1000.0;
    const ROUTES: [&str; 2] = ["/api/v1/cluster", "/metrics"];

    pub struct Args {
        flotilla: Option<PathBuf>,
        url: Option<String>,
        requests: usize,
        no_write: bool,
    }

    const USAGE: &str = "usage: api-burst [--requests N (500)] [--quick] [--url http://HOST:PORT] \
                         [--flotilla PATH] [--no-write]";

    pub fn parse_args() -> std::result::Result<Args, String> {
        let mut args = Args {
            flotilla: None,
            url: None,
            requests: 500,
            no_write: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--requests" => {
                    let v = value("--requests")?;
                    args.requests = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(format!("--requests: expected a positive number, got {v}"))?;
                }
                // The burst is the figure: a quick run changes nothing but is accepted.
                "--quick" => {}
                "--url" => args.url = Some(value("--url")?),
                "--flotilla" => args.flotilla = Some(value("--flotilla")?.into()),
                "--no-write" => args.no_write = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}; see --help")),
            }
        }
        Ok(args)
    }

    fn log(msg: impl AsRef<str>) {
        eprintln!("api-burst: {}", msg.as_ref());
    }

    /// A head with no worker of its own, stopped when dropped.
    struct Head {
        home: tempfile::TempDir,
        child: Child,
    }

    impl Head {
        fn start(bin: &Path) -> Result<Head> {
            let (home, child) = start_head(bin, BASE, "fba")?;
            let head = Head { home, child };
            let addr: SocketAddr = ([127, 0, 0, 1], BASE).into();
            wait_for("the head", Duration::from_secs(180), || {
                get(addr, "/api/v1/cluster").0 == 200
            })
            .with_context(|| {
                std::fs::read_to_string(head.home.path().join("up.log")).unwrap_or_default()
            })?;
            Ok(head)
        }
    }

    impl Drop for Head {
        fn drop(&mut self) {
            stop(&mut self.child, self.home.path());
        }
    }

    /// One GET on its own connection: the status (0 when the connection failed) and the
    /// milliseconds from connecting to the last byte.
    fn get(addr: SocketAddr, path: &str) -> (u16, f64) {
        let t = Instant::now();
        let status = (|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).ok()?;
            let text = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
            text.split_whitespace().nth(1)?.parse().ok()
        })()
        .unwrap_or(0);
        (status, t.elapsed().as_secs_f64() * 1000.0)
    }

    /// `n` GETs at once (each thread waits at a barrier, then connects).
    fn burst(addr: SocketAddr, path: &'static str, n: usize) -> Value {
        let start = std::sync::Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    get(addr, path)
                })
            })
            .collect();
        let answers: Vec<(u16, f64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let ms: Vec<f64> = answers.iter().map(|a| a.1).collect();
        let mut statuses = BTreeMap::<String, usize>::new();
        for (s, _) in &answers {
            *statuses.entry(s.to_string()).or_default() += 1;
        }
        let max = ms.iter().copied().fold(0.0, f64::max);
        let all_ok = answers.iter().all(|a| a.0 == 200);
        json!({
            "route": path,
            "requests": n,
            "statuses": statuses,
            "p50_ms": round(percentile(&ms, 50.0), 1),
            "p95_ms": round(percentile(&ms, 95.0), 1),
            "max_ms": round(max, 1),
            "meets_goal": all_ok && max <= GOAL_MAX_MS,
        })
    }

    pub fn run(args: &Args) -> Result<()> {
        let (addr, head) = match &args.url {
            Some(url) => {
                let hostport = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                let addr = hostport
                    .to_socket_addrs()?
                    .next()
                    .with_context(|| format!("no address for {url}"))?;
                (addr, None)
            }
            None => {
                let bin = flotilla_bench::cli::flotilla_binary(args.flotilla.as_deref())?;
                log("starting the head");
                let head = Head::start(&bin)?;
                (([127, 0, 0, 1], BASE).into(), Some(head))
            }
        };
        let routes: Vec<Value> = ROUTES
            .iter()
            .map(|path| {
                log(format!("{} GETs at once at {path}", args.requests));
                burst(addr, path, args.requests)
            })
            .collect();
        drop(head);
        let meets = routes.iter().all(|r| r["meets_goal"] == true);
        let out = json!({
            "machine": machine(),
            "goal_max_ms": GOAL_MAX_MS,
            "goal": "every answer 200 within 1 s",
            "routes": routes,
            "meets_goal": meets,
        });
        for r in &routes {
            log(format!(
                "{}: p50 {} ms, p95 {} ms, max {} ms, statuses {}",
                r["route"].as_str().unwrap_or_default(),
                r["p50_ms"],
                r["p95_ms"],
                r["max_ms"],
                r["statuses"]
            ));
        }
        let text = serde_json::to_string_pretty(&out)?;
        println!("{text}");
        if !args.no_write {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("results")
                .join(format!("api-burst-{}.json", today()));
            std::fs::write(&path, format!("{text}\n"))?;
            log(format!("wrote {}", path.display()));
        }
        Ok(())
    }
}
