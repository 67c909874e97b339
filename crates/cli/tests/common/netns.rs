//! Hosts for multi-machine tests: real Linux network namespaces joined by a bridge, each with
//! its own address, so that Flotilla's head and workers talk over a real (virtual) network whose
//! links the test can cut. Needs root (as the tests' other real-kernel parts do) and iproute2.
//!
//! Layout: one bridge `<prefix>br` in the test's own namespace; per host a namespace
//! `<prefix><name>` with a veth pair (`<prefix><name>h` on the bridge, `eth0` inside) and the
//! address `10.<a>.<b>.<n>/24`. Dropping the [`Lab`] kills what still runs inside and removes
//! everything.
//!
//! `bench/src/bin/scaling.rs` builds on the same lab (it includes this file).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

fn ip(args: &[&str]) {
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
        Lab { prefix, hosts }
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `program` run inside `host`.
    pub fn exec(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(host).ns])
            .arg(program)
            .stdin(Stdio::null());
        c
    }

    /// `flotilla` with its own home, run inside `host`.
    pub fn flotilla(&self, host: &str, home: &Path) -> Command {
        let mut c = self.exec(host, super::BIN);
        c.env("FLOTILLA_HOME", home)
            .env("FLOTILLA_DATA_DIR", flotilla_host::Dirs::from_env().data)
            .stdin(Stdio::null());
        c
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
