//! A fleet of machines whose Pythons differ, in network namespaces, running the team's own
//! code with its dependencies:
//!
//! - the head (`h`) offers one patch of Python 3.11 (`FLOTILLA_LAB_PY311_OTHER`, 3.11.7 here);
//! - `a` offers only Debian's python3.11 (another patch): it joins, its node runs on that patch,
//!   and `flotilla nodes` says so;
//! - `c` offers only Python 3.12: the head refuses it at `join`, and the code stays unused (`a`
//!   joins with it afterwards);
//! - `b` offers Debian's patch with Ray's strict `patch` match level forced back: Ray refuses
//!   its node, and Ray's reason reaches `join`'s output, `flotilla nodes` and `/api/v1/cluster`.
//!
//! Then jobs with dependencies from the package index: `--pip humanize` used inside tasks on
//! both workers (one per Python patch), a dependency that does not exist (fails with pip's own
//! message, listed FAILED by `flotilla jobs`), and a long job whose logs `jobs logs` prints and
//! that `jobs stop` stops.
//!
//! The interpreters come from `tests/lab-pythons` (run by `tests/run`), which uv installs where
//! it can download them and otherwise finds installed. Each machine sees only its own through
//! `PATH`, with uv's downloads off, and keeps its runtimes in a data dir of its own (kept under
//! the test command's cache, so a second run does not install them again).
#![cfg(target_os = "linux")]

mod common;
use common::netns::{Lab, home, spawn_logged, wait_for};
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BASE: u16 = 21000;

fn lab_python(var: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run tests/run, or `eval \"$(tests/lab-pythons UV)\"` first")
    });
    assert!(p.is_file(), "{var}={} does not exist", p.display());
    p
}

fn version_of(python: &Path) -> String {
    let out = Command::new(python)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The uv every machine of the lab uses (the test command's own).
fn uv() -> PathBuf {
    std::env::var_os("FLOTILLA_LAB_UV")
        .map(PathBuf::from)
        .unwrap_or_else(|| flotilla_host::Dirs::from_env().data.join("bin/uv"))
}

/// What one machine of the lab offers: a directory with its one Python, first on `PATH`, and a
/// data dir of its own for runtimes.
struct Machine {
    path: String,
    data: PathBuf,
    index: Option<String>,
    _bin: tempfile::TempDir,
    no_pythons: tempfile::TempDir,
}

impl Machine {
    /// `python` (linked as `name`) and, with `system`, the system's directories after it.
    fn new(python: &Path, name: &str, system: bool, data: &str) -> Machine {
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(python, bin.path().join(name)).unwrap();
        let mut path = bin.path().display().to_string();
        if system {
            path.push_str(":/usr/bin:/bin:/usr/sbin:/sbin");
        }
        let shared = flotilla_host::Dirs::from_env().data;
        Machine {
            path,
            data: shared.with_file_name(format!("data-lab-{data}")),
            index: None,
            _bin: bin,
            no_pythons: tempfile::tempdir().unwrap(),
        }
    }

    fn flotilla(&self, lab: &Lab, host: &str, home: &Path) -> Command {
        let mut c = lab.flotilla(host, home);
        self.env(&mut c);
        c
    }

    /// `flotilla` with this machine's Pythons, outside the lab (with the network: what an
    /// install needs).
    fn outside(&self, home: &Path) -> Command {
        let mut c = flotilla(home);
        self.env(&mut c);
        // The real package index, not the lab's.
        c.env_remove("PIP_INDEX_URL")
            .env_remove("PIP_TRUSTED_HOST")
            .env_remove("UV_INDEX_URL");
        c
    }

    /// Provisions the runtime this machine's node runs, where the package index is reachable:
    /// the lab's hosts reach only each other and the test's own index. Returns `(runtime dir,
    /// Python version)`.
    fn provision(&self, home: &Path) -> (PathBuf, String) {
        let out = self
            .outside(home)
            .args(["runtime", "ensure", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            PathBuf::from(v["dir"].as_str().unwrap()),
            v["python_full"].as_str().unwrap().to_string(),
        )
    }

    fn env(&self, c: &mut Command) {
        c.env("PATH", &self.path)
            .env("FLOTILLA_DATA_DIR", &self.data)
            .env("FLOTILLA_UV", uv())
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_PYTHON_INSTALL_DIR", self.no_pythons.path())
            .env_remove("VIRTUAL_ENV")
            .env_remove("PYENV_VERSION")
            .env_remove(flotilla_ray::versions::MATCH_LEVEL_VAR);
        if let Some(index) = &self.index {
            // Ray's pip and uv read these for a job's dependencies.
            // Plain HTTP on the lab's bridge: pip trusts it only when told.
            let host = index
                .split("//")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .unwrap_or("");
            c.env("PIP_INDEX_URL", index)
                .env("PIP_TRUSTED_HOST", host)
                .env("UV_INDEX_URL", index)
                .env_remove("PIP_FIND_LINKS");
        }
    }
}

/// A package index the lab's hosts reach: the real `humanize` wheel, downloaded from the
/// package index by the test, served in the simple-index layout (PEP 503) from the test's own
/// namespace, as a company's mirror would.
struct Index {
    url: String,
    server: std::process::Child,
    _root: tempfile::TempDir,
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn serve_index(python: &Path, at: std::net::Ipv4Addr) -> Index {
    let root = tempfile::tempdir().unwrap();
    let files = root.path().join("files");
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
        ])
        .arg(&files)
        .arg("humanize==4.11.0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let wheel = std::fs::read_dir(&files)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".whl"))
        .unwrap();
    let project = root.path().join("simple/humanize");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("index.html"),
        format!(
            "<!DOCTYPE html><html><body><a href=\"../../files/{wheel}\">{wheel}</a></body></html>\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.path().join("simple/index.html"),
        "<!DOCTYPE html><html><body><a href=\"humanize/\">humanize</a></body></html>\n",
    )
    .unwrap();
    let mut server = Command::new(python)
        .args([
            "-u",
            "-m",
            "http.server",
            "--bind",
            &at.to_string(),
            "0",
            "--directory",
        ])
        .arg(root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // "Serving HTTP on 10.1.2.254 port 40123 (http://10.1.2.254:40123/) ..."
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .split(" port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Index {
        url: format!("http://{at}:{port}/simple/"),
        server,
        _root: root,
    }
}

fn invite(lab: &Lab, head: &Machine, home: &Path) -> String {
    let mut cmd = head.flotilla(lab, "h", home);
    cmd.args(["invite", "--json"]);
    invite_code(&mut cmd)
}

fn nodes(lab: &Lab, head: &Machine, home: &Path) -> Vec<serde_json::Value> {
    let out = head
        .flotilla(lab, "h", home)
        .args(["nodes", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn node<'a>(nodes: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    nodes.iter().find(|n| n["name"] == name)
}

/// Runs `cmd` to its end, failing the test if it runs longer than `within` (a job that hangs
/// instead of failing).
fn run_within(mut cmd: Command, within: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {within:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

const TASKS_ON_EVERY_NODE: &str = r#"
import json
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init()
workers = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]

@ray.remote(num_cpus=1)
def work(n):
    import platform
    import humanize  # not in the runtime: installed for this job by --pip
    return {"python": platform.python_version(), "ip": ray.util.get_node_ip_address(),
            "value": humanize.intcomma(n)}

refs = [work.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
        .remote(1234567 + i) for i, n in enumerate(workers)]
print("RESULT " + json.dumps(ray.get(refs)))
"#;

/// Prints what the lab's machines logged when the test fails (their homes go with it).
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for home in &self.0 {
            for name in ["up.out", "join.out"] {
                let p = home.join(name);
                if p.exists() {
                    eprintln!("--- the end of {}:\n{}", p.display(), tail(&p, 40));
                }
            }
            eprintln!("{}", ray_logs(home));
        }
    }
}

#[test]
fn machines_with_other_pythons_join_or_are_told_why_and_jobs_bring_their_dependencies() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let debian = lab_python("FLOTILLA_LAB_PY311_DEBIAN");
    let other = lab_python("FLOTILLA_LAB_PY311_OTHER");
    let newer = lab_python("FLOTILLA_LAB_PY312");
    let (debian_v, head_v) = (version_of(&debian), version_of(&other));
    assert_ne!(debian_v, head_v, "the lab needs two patches of Python 3.11");
    assert!(head_v.starts_with("3.11.") && debian_v.starts_with("3.11."));

    let (hh, ha, hb, hc) = (home(), home(), home(), home());
    let _logs = LogsOnFailure(vec![
        hh.path().to_path_buf(),
        ha.path().to_path_buf(),
        hb.path().to_path_buf(),
    ]);
    let mut head = Machine::new(&other, "python3.11", true, "head");
    let mut deb = Machine::new(&debian, "python3.11", true, "debian");
    let only312 = Machine::new(&newer, "python3.12", false, "py312");
    let (head_runtime, head_python) = head.provision(hh.path());
    assert_eq!(head_python, head_v, "the head's runtime runs its Python");
    let (_, deb_python) = deb.provision(ha.path());
    assert_eq!(deb_python, debian_v, "a's runtime runs Debian's Python");

    let lab = Lab::new(&["h", "a", "b", "c"]);
    let index = serve_index(&head_runtime.join("bin/python"), lab.attach_outside());
    head.index = Some(index.url.clone());
    deb.index = Some(index.url.clone());

    // The head, with a worker of its own (on the head's Python).
    let mut up = head.flotilla(&lab, "h", hh.path());
    up.arg("up").args(port_args(BASE)).args([
        "--cpus",
        "1",
        "--object-store-mb",
        "100",
        "--name",
        "vh",
    ]);
    let mut up = spawn_logged(up, hh.path(), "up");
    wait_for("the head and its worker", Duration::from_secs(600), || {
        lab.status("h", hh.path(), BASE)
            .is_some_and(|s| s["totals"]["nodes_alive"] == 2)
    });
    let snapshot = lab.status("h", hh.path(), BASE).unwrap();
    let code = invite(&lab, &head, hh.path());

    // A machine with only Python 3.12 is refused before the code is used.
    let mut join = only312.flotilla(&lab, "c", hc.path());
    join.args(join_args("vc", BASE + 800, "0.5"))
        .arg("--no-start")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = join.spawn().unwrap();
    give_stdin(&mut child, code.as_bytes());
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    for part in [
        "Python 3.12",
        &format!("the fleet runs Python {head_v}"),
        "Install Python 3.11",
        "it was not used",
    ] {
        assert!(said.contains(part), "{part:?} missing from: {said}");
    }

    // The same (single-use) code still lets a machine with another 3.11 patch join; its node
    // runs that patch.
    let mut join = deb.flotilla(&lab, "a", ha.path());
    join.args(join_args("va", BASE + 800, "0.5"))
        .stdin(Stdio::piped());
    let mut worker_a = spawn_logged(join, ha.path(), "join");
    give_stdin(&mut worker_a, code.as_bytes());
    wait_for("a's node", Duration::from_secs(600), || {
        lab.status("h", hh.path(), BASE)
            .is_some_and(|s| s["totals"]["nodes_alive"] == 3)
    });
    wait_for(
        "a's Python in flotilla nodes",
        Duration::from_secs(60),
        || {
            node(&nodes(&lab, &head, hh.path()), "va")
                .is_some_and(|n| n["python_version"] == debian_v.as_str())
        },
    );
    let listed = nodes(&lab, &head, hh.path());
    let a = node(&listed, "va").unwrap();
    assert_eq!(a["python_differs"], true, "{a}");
    let h = node(&listed, "vh").unwrap();
    assert_eq!(h["python_version"], head_v.as_str(), "{h}");
    assert_eq!(h["python_differs"], false, "{h}");
    let joined = std::fs::read_to_string(ha.path().join("join.out")).unwrap();
    assert!(
        joined.contains(&format!("Python {debian_v} (the cluster runs {head_v})")),
        "{joined}"
    );
    assert_eq!(snapshot["python_version"], head_v.as_str(), "{snapshot}");

    // A job that needs a package the runtime lacks: installed on both workers, used there.
    let proj = tempfile::tempdir().unwrap();
    std::fs::write(proj.path().join("sweep.py"), TASKS_ON_EVERY_NODE).unwrap();
    let mut submit = head.flotilla(&lab, "h", hh.path());
    submit
        .current_dir(proj.path())
        .args([
            "submit",
            "--working-dir",
            ".",
            "--pip",
            "humanize==4.11.0",
            "--",
        ])
        .args(["python", "sweep.py"]);
    let out = run_within(submit, Duration::from_secs(600));
    let said = text(&out);
    if !out.status.success() {
        let jobs = head
            .flotilla(&lab, "h", hh.path())
            .args(["jobs", "--json"])
            .output()
            .unwrap();
        panic!("{said}\nRay's jobs: {}", text(&jobs));
    }
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT ").map(str::to_string))
        .unwrap_or_else(|| panic!("no result in: {said}"));
    let results: Vec<serde_json::Value> = serde_json::from_str(&line).unwrap();
    assert_eq!(results.len(), 2, "{line}");
    let mut pythons: Vec<&str> = results
        .iter()
        .map(|r| r["python"].as_str().unwrap())
        .collect();
    pythons.sort_unstable();
    let mut want = vec![debian_v.as_str(), head_v.as_str()];
    want.sort_unstable();
    assert_eq!(pythons, want, "{line}");
    let mut values: Vec<&str> = results
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, ["1,234,567", "1,234,568"], "{line}");

    // A dependency that does not exist fails the job with pip's message, and is listed so.
    let mut bad = head.flotilla(&lab, "h", hh.path());
    bad.args([
        "submit",
        "--pip",
        "flotilla-no-such-package-4e1c==1.0",
        "--",
    ])
    .args(["python", "-c", "print('never')"]);
    let out = run_within(bad, Duration::from_secs(180));
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("FAILED: installing the job's dependencies failed")
            && said.contains("flotilla-no-such-package-4e1c"),
        "{said}"
    );
    assert!(!said.contains("never\n"), "{said}");
    let out = head
        .flotilla(&lab, "h", hh.path())
        .args(["jobs", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let failed = jobs
        .iter()
        .find(|j| {
            j["entrypoint"]
                .as_str()
                .is_some_and(|e| e.contains("never"))
        })
        .unwrap_or_else(|| panic!("{jobs:?}"));
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(
        failed["reason"].as_str().is_some_and(
            |r| r.contains("No matching distribution found for flotilla-no-such-package-4e1c")
        ),
        "{failed}"
    );

    // A long job: its logs are readable while it runs, and it stops when told.
    let out = head
        .flotilla(&lab, "h", hh.path())
        .args(["submit", "--no-wait", "--", "python", "-c"])
        .arg("import time\nfor i in range(100000):\n    print('tick', i, flush=True)\n    time.sleep(0.5)")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("raysubmit_"), "{id}");
    wait_for("the long job's output", Duration::from_secs(120), || {
        let out = head
            .flotilla(&lab, "h", hh.path())
            .args(["jobs", "logs", &id])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("tick 3\n")
    });
    let out = head
        .flotilla(&lab, "h", hh.path())
        .args(["jobs", "stop", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("STOPPED"),
        "{}",
        text(&out)
    );
    let out = head
        .flotilla(&lab, "h", hh.path())
        .args(["jobs", "--json"])
        .output()
        .unwrap();
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let stopped = jobs.iter().find(|j| j["id"] == id.as_str()).unwrap();
    assert_eq!(stopped["status"], "STOPPED", "{stopped}");

    // A driver of the user's own: `flotilla env` makes an environment that matches the
    // cluster, `flotilla run` runs a driver from it; a Python that cannot join is told why.
    let venv = proj.path().join(".venv");
    let out = head
        .outside(hh.path())
        .args(["env", "--json"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["python_version"], head_v.as_str(), "{made}");
    let out = head
        .flotilla(&lab, "h", hh.path())
        .args(["run", "--"])
        .arg(venv.join("bin/python"))
        .args(["-c", "import ray; ray.init(); print('workers', sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')))"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("workers 2"),
        "{}",
        text(&out)
    );
    for (python, says) in [
        (&newer, format!("but the cluster runs Python {head_v}")),
        (&debian, "has no Ray".to_string()),
    ] {
        let out = head
            .flotilla(&lab, "h", hh.path())
            .args(["run", "--"])
            .arg(python)
            .args(["-c", "print('ran')"])
            .output()
            .unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.contains(&says) && said.contains("flotilla env .venv"),
            "{said}"
        );
        assert!(
            !said.contains("ran\n") && !said.contains("Traceback"),
            "{said}"
        );
    }

    // Ray refuses a node when made as strict as its default: its reason reaches the worker's
    // own output, `flotilla nodes` and the cluster API, and the worker keeps trying.
    let code = invite(&lab, &head, hh.path());
    let mut join = deb.flotilla(&lab, "b", hb.path());
    join.args(join_args("vb", BASE + 800, "0.5"))
        .env(flotilla_ray::versions::MATCH_LEVEL_VAR, "patch")
        .stdin(Stdio::piped());
    let mut worker_b = spawn_logged(join, hb.path(), "join");
    give_stdin(&mut worker_b, code.as_bytes());
    let reason = format!(
        "Ray refuses this node's versions: it has Python {debian_v} (the cluster runs {head_v})"
    );
    wait_for(
        "Ray's reason in b's output",
        Duration::from_secs(300),
        || std::fs::read_to_string(hb.path().join("join.out")).is_ok_and(|t| t.contains(&reason)),
    );
    wait_for(
        "Ray's reason in flotilla nodes",
        Duration::from_secs(60),
        || {
            node(&nodes(&lab, &head, hh.path()), "vb").is_some_and(|n| {
                n["state"] == "error"
                    && n["reason_code"] == "ray_version_mismatch"
                    && n["reason_en"].as_str().is_some_and(|r| r.contains(&reason))
            })
        },
    );
    let cluster = lab.status("h", hh.path(), BASE).unwrap();
    let b = cluster["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "vb")
        .unwrap_or_else(|| panic!("{cluster}"));
    assert!(
        b["reason_en"].as_str().is_some_and(|r| r.contains(&reason)),
        "{b}"
    );
    assert_eq!(b["state"], "error", "{b}");
    assert!(
        worker_b.try_wait().unwrap().is_none(),
        "the refused worker keeps trying"
    );
    let out = deb
        .flotilla(&lab, "b", hb.path())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ray node")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(node["status"], "fail", "{node}");
    assert!(
        node["detail"].as_str().is_some_and(|d| d.contains(&reason)),
        "{node}"
    );

    for mut w in [worker_a, worker_b] {
        unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
        let _ = w.wait();
    }
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    let _ = up.wait();
    for home in [&hh, &ha, &hb] {
        assert!(wait_none_left(home.path(), Duration::from_secs(30)).is_empty());
    }
}
