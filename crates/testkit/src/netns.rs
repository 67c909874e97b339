//! Hosts for multi-machine tests: real Linux network namespaces joined by a bridge, each with
//! its own address, so that Flotilla's head and workers talk over a real (virtual) network whose
//! links the test can cut. Needs root (as the tests' other real-kernel parts do) and iproute2.
//!
//! Layout: one bridge `<prefix>br` in the test's own namespace; per host a namespace
//! `<prefix><name>` with a veth pair (`<prefix><name>h` on the bridge, `eth0` inside) and the
//! address `10.<a>.<b>.<n>/24`. Dropping the [`Lab`] kills what still runs inside and removes
//! everything.
//!
//! The multi-host tests of `crates/cli` and the `scaling` and `sleep` benchmarks build on it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub use crate::wait_for;

/// Runs `ip` (iproute2) with `args`; fails the test when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 (`ip`) is needed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The bridge side of its link (set down to cut the host off).
    link: String,
}

/// A set of hosts on one bridge.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    pub hosts: Vec<Host>,
    /// The `flotilla` binary [`Lab::flotilla`] runs; the build's when `None`.
    flotilla: Option<std::path::PathBuf>,
}

impl Lab {
    /// Creates hosts named `names` (short: interface names have at most 15 characters).
    pub fn new(names: &[&str]) -> Lab {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "network namespaces need root: run the tests as root (CI does)"
        );
        let id = std::process::id() % 10_000;
        let prefix = format!("fl{id}");
        let subnet = (200 + id % 50, id % 250);
        let bridge = format!("{prefix}br");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["link", "set", &bridge, "up"]);
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{prefix}{name}");
            let link = format!("{prefix}{name}h");
            let inner = format!("{prefix}{name}n");
            let addr = Ipv4Addr::new(10, subnet.0 as u8, subnet.1 as u8, i as u8 + 1);
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &link, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &link, "master", &bridge]);
            ip(&["link", "set", &link, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            hosts.push(Host {
                name: name.to_string(),
                ns,
                addr,
                link,
            });
        }
        Lab {
            prefix,
            hosts,
            flotilla: None,
        }
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `program` run inside `host`.
    pub fn exec(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        // By its path: a test may give the command a PATH without the system's directories.
        let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("ip");
        let mut c = Command::new(ip);
        c.args(["netns", "exec", &self.host(host).ns])
            .arg(program)
            .stdin(Stdio::null());
        c
    }

    /// Runs `bin` where [`Lab::flotilla`] runs `flotilla` (a benchmark's `--flotilla`).
    pub fn use_flotilla(&mut self, bin: &Path) {
        self.flotilla = Some(bin.to_path_buf());
    }

    /// `flotilla` (the build's, [`crate::flotilla_bin`], unless [`Lab::use_flotilla`] said
    /// another) with its own home and the machine's runtimes, run inside `host`.
    pub fn flotilla(&self, host: &str, home: &Path) -> Command {
        let bin = self.flotilla.clone().unwrap_or_else(crate::flotilla_bin);
        let mut c = self.exec(host, bin);
        c.env("FLOTILLA_HOME", home)
            .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
            .stdin(Stdio::null());
        c
    }

    /// Gives the test's own namespace an address on the lab's bridge (`.254` of its subnet), so
    /// that a server the test runs there (a package index, say) is reachable from every host.
    pub fn attach_outside(&self) -> Ipv4Addr {
        let o = self.hosts[0].addr.octets();
        let addr = Ipv4Addr::new(o[0], o[1], o[2], 254);
        ip(&[
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &format!("{}br", self.prefix),
        ]);
        addr
    }

    /// `flotilla status --json` of the head running in `host` with `home` and its API on
    /// `api_port`; `None` while it does not answer.
    pub fn status(&self, host: &str, home: &Path, api_port: u16) -> Option<serde_json::Value> {
        let out = self
            .flotilla(host, home)
            .args([
                "status",
                "--json",
                "--api",
                &format!("http://127.0.0.1:{api_port}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Cuts `host` off the network (its link to the bridge goes down).
    pub fn cut(&self, host: &str) {
        ip(&["link", "set", &self.host(host).link, "down"]);
    }

    /// Gives `host` its link back.
    pub fn restore(&self, host: &str) {
        ip(&["link", "set", &self.host(host).link, "up"]);
    }

    /// Moves `host` to the address `.n` of the lab's subnet.
    pub fn readdress(&mut self, host: &str, n: u8) -> Ipv4Addr {
        let h = self
            .hosts
            .iter_mut()
            .find(|h| h.name == host)
            .expect("a host");
        let o = h.addr.octets();
        let new = Ipv4Addr::new(o[0], o[1], o[2], n);
        ip(&[
            "-n",
            &h.ns,
            "addr",
            "del",
            &format!("{}/24", h.addr),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &h.ns,
            "addr",
            "add",
            &format!("{new}/24"),
            "dev",
            "eth0",
        ]);
        h.addr = new;
        new
    }
}

/// A private home for one host of a lab.
pub fn home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fn")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Starts a long-running command with its output in `<home>/<name>.out` (a pipe nobody reads
/// could fill up and stall it).
pub fn spawn_logged(mut cmd: Command, home: &Path, name: &str) -> Child {
    let log = std::fs::File::create(home.join(format!("{name}.out"))).unwrap();
    cmd.stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &h.ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).output();
            let _ = Command::new("ip").args(["link", "del", &h.link]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.prefix)])
            .output();
    }
}
