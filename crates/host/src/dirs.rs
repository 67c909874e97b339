//! Where Flotilla keeps its files on each platform.
//!
//! # Platform behavior
//!
//! | what | Linux | macOS | Windows |
//! |---|---|---|---|
//! | config | `$XDG_CONFIG_HOME/flotilla` | `~/Library/Application Support/flotilla` | `%APPDATA%\flotilla` |
//! | data (runtimes) | `$XDG_DATA_HOME/flotilla` | `~/Library/Application Support/flotilla` | `%LOCALAPPDATA%\flotilla` |
//! | state (registry, pid files) | `$XDG_STATE_HOME/flotilla` | data dir `/state` | data dir `\state` |
//! | logs | state dir `/logs` | `~/Library/Logs/flotilla` | data dir `\logs` |
//! | run (Ray temp dirs) | `/tmp/flotilla-<uid>` | `/tmp/flotilla-<uid>` | `%TEMP%\flotilla` |
//! | agent control socket | run dir `/agent-<hash>.sock` | run dir `/agent-<hash>.sock` | a named pipe derived from that path |
//!
//! Ray puts Unix sockets under its temp dir and a socket path is limited to about 100 bytes, so
//! the run dir is deliberately short and never under the home directory. Every home of one user
//! shares that run dir, so what lives there is named after the home's state dir: the agent's
//! control socket ([`Dirs::agent_socket`]) carries a hash of the canonical state dir, and two
//! agents of two homes never meet on one socket.
//!
//! `FLOTILLA_HOME` puts all of them under one directory (tests, portable installs), and
//! `FLOTILLA_DATA_DIR` moves only the data dir, so that many homes can share one set of
//! provisioned runtimes.

use std::path::{Path, PathBuf};

/// The directories Flotilla uses, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub config: PathBuf,
    pub data: PathBuf,
    pub state: PathBuf,
    pub logs: PathBuf,
    pub run: PathBuf,
}

const APP: &str = "flotilla";

impl Dirs {
    /// Resolves the directories from the environment and the platform's conventions.
    pub fn from_env() -> Self {
        let mut dirs = match std::env::var_os("FLOTILLA_HOME").filter(|v| !v.is_empty()) {
            Some(home) => Self::under(Path::new(&home)),
            None => Self::platform(),
        };
        if let Some(data) = std::env::var_os("FLOTILLA_DATA_DIR").filter(|v| !v.is_empty()) {
            dirs.data = PathBuf::from(data);
        }
        dirs
    }

    /// Every directory under one root.
    pub fn under(root: &Path) -> Self {
        Dirs {
            config: root.join("config"),
            data: root.join("data"),
            state: root.join("state"),
            logs: root.join("logs"),
            run: root.join("run"),
        }
    }

    fn platform() -> Self {
        let home = dirs::home_dir().unwrap_or_else(std::env::temp_dir);
        let config = dirs::config_dir()
            .unwrap_or_else(|| home.join(".config"))
            .join(APP);
        let data = dirs::data_local_dir()
            .unwrap_or_else(|| home.join(".local/share"))
            .join(APP);
        let state = match dirs::state_dir() {
            Some(s) => s.join(APP),
            None => data.join("state"),
        };
        let logs = if cfg!(target_os = "macos") {
            home.join("Library/Logs").join(APP)
        } else {
            state.join("logs")
        };
        Dirs {
            config,
            data,
            state,
            logs,
            run: short_run_dir(),
        }
    }

    /// Where the runtimes (Python + Ray environments) live.
    pub fn runtimes(&self) -> PathBuf {
        self.data.join("runtimes")
    }

    /// The agent's control channel for this home: `agent-<hash>.sock` in the run dir, the hash
    /// (48 bits of a stable FNV-1a) taken over the canonical state dir, so that every home has its
    /// own channel while the path stays short (`/tmp/flotilla-<uid>/agent-<12 hex>.sock`, 44
    /// bytes at most, well inside the ~104 bytes a Unix socket path may have). The agent and
    /// every client (the command line, the desktop app) find it through this one function; on
    /// Windows [`crate::ipc`] names its pipe after this path.
    pub fn agent_socket(&self) -> PathBuf {
        self.socket_for(&[])
    }

    /// The control channel of an extra worker named `name` that runs beside this home's agent
    /// (`flotilla worker --address`): its own, the hash taken over the state dir and the name,
    /// so that it never takes the home's channel nor another home's worker of that name.
    pub fn worker_socket(&self, name: &str) -> PathBuf {
        self.socket_for(name.as_bytes())
    }

    fn socket_for(&self, worker: &[u8]) -> PathBuf {
        let state = std::fs::canonicalize(&self.state).unwrap_or_else(|_| self.state.clone());
        let mut key = state.as_os_str().as_encoded_bytes().to_vec();
        if !worker.is_empty() {
            key.push(0);
            key.extend_from_slice(worker);
        }
        let hash = crate::ipc::stable_hash(&key);
        self.run
            .join(format!("agent-{:012x}.sock", hash & 0xffff_ffff_ffff))
    }

    /// Creates every directory, private to the current user where the OS allows it.
    pub fn create_all(&self) -> std::io::Result<()> {
        for dir in [&self.config, &self.data, &self.state, &self.logs, &self.run] {
            create_private_dir(dir)?;
        }
        Ok(())
    }
}

/// Creates `dir` (and its parents); on Unix the directory itself is made `0700`.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(unix)]
fn short_run_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/{APP}-{uid}"))
}

#[cfg(not(unix))]
fn short_run_dir() -> PathBuf {
    std::env::temp_dir().join(APP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_puts_everything_below_the_root() {
        let root = Path::new("/x/y");
        let d = Dirs::under(root);
        for p in [&d.config, &d.data, &d.state, &d.logs, &d.run] {
            assert!(p.starts_with(root), "{p:?}");
        }
        assert_eq!(d.runtimes(), root.join("data/runtimes"));
    }

    #[cfg(unix)]
    #[test]
    fn create_all_makes_private_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = Dirs::under(tmp.path());
        d.create_all().unwrap();
        let mode = std::fs::metadata(&d.state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn each_state_dir_has_its_own_agent_socket_in_the_shared_run_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let run = short_run_dir();
        let home = |name: &str| Dirs {
            run: run.clone(),
            ..Dirs::under(&tmp.path().join(name))
        };
        let (a, b) = (home("a"), home("b"));
        std::fs::create_dir_all(&a.state).unwrap();
        assert_ne!(a.agent_socket(), b.agent_socket());
        for d in [&a, &b] {
            let sock = d.agent_socket();
            assert_eq!(sock.parent(), Some(run.as_path()), "{sock:?}");
            // Within the Unix socket path limit for any uid (macOS allows 104 bytes).
            assert!(sock.as_os_str().len() <= 64, "{sock:?}");
        }
        // The same state dir, however it is spelled, is the same socket.
        let again = Dirs {
            state: tmp.path().join("a/../a/state"),
            ..a.clone()
        };
        assert_eq!(again.agent_socket(), a.agent_socket());
        // An extra worker beside a home's agent has a channel of its own, per home and name.
        let workers = [
            a.worker_socket("w2"),
            a.worker_socket("w3"),
            b.worker_socket("w2"),
        ];
        for (i, w) in workers.iter().enumerate() {
            assert_ne!(*w, a.agent_socket());
            assert_ne!(*w, b.agent_socket());
            assert_eq!(w.parent(), Some(run.as_path()), "{w:?}");
            assert!(workers[i + 1..].iter().all(|o| o != w), "{workers:?}");
        }
        assert_eq!(again.worker_socket("w2"), a.worker_socket("w2"));
    }

    #[cfg(unix)]
    #[test]
    fn platform_run_dir_is_short_enough_for_ray_sockets() {
        // Ray appends about 80 bytes (session name + sockets/plasma_store) below its temp dir.
        assert!(short_run_dir().as_os_str().len() < 24);
    }
}
