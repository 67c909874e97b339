//! A standard output whose reader has gone (`flotilla nodes | head -1`): every command ends
//! quietly (no panic, no "Broken pipe"), and a long-running one keeps running. Each command's
//! standard output is the write end of a real pipe whose read end is closed before it starts,
//! so its first write fails, whatever the timing.
#![cfg(target_os = "linux")]

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use common::{Up, flotilla};

const BASE: u16 = 25000;

/// The write end of a pipe nobody reads.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

/// Runs `cmd` with its standard output closed; returns how it ended and what it said on stderr.
fn run_closed(mut cmd: Command) -> (ExitStatus, String) {
    let out = cmd
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Quiet: no panic, no word about the pipe, and either success or the end a closed pipe gives
/// a pipeline member (SIGPIPE, status 141 in a shell).
fn assert_quiet(what: &str, status: ExitStatus, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
        "`{what}` was not quiet ({status}): {stderr}"
    );
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE) || status.code() == Some(141),
        "`{what}` ended with {status}: {stderr}"
    );
}

#[test]
fn every_command_ends_quietly_on_a_closed_standard_output() {
    let _one = common::CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::Builder::new()
        .prefix("fl")
        .tempdir_in("/tmp")
        .unwrap();
    // `flotilla up` itself prints its summary into the closed pipe once the cluster is up, and
    // must keep running the cluster (not panic and leave it).
    let mut up_cmd = flotilla(home.path());
    up_cmd
        .arg("up")
        .args(common::port_args(BASE))
        // The head alone: enough for every command here, and lighter on a busy machine.
        .arg("--no-worker")
        .stdout(closed_pipe())
        .stderr(Stdio::piped());
    let mut up = Up {
        child: up_cmd.spawn().unwrap(),
        home,
        base: BASE,
    };
    up.wait_status(1);
    let home = up.home.path().to_path_buf();

    // Commands that print and exit, among them large outputs (help, JSON, tables).
    for args in [
        &["--help"][..],
        &["nodes"],
        &["nodes", "--json"],
        &["status"],
        &["status", "--json"],
        &["sensors", "--json"],
        &["policy", "explain"],
        &["runtime", "list"],
        &["jobs", "list"],
        &["doctor"],
    ] {
        let mut cmd = flotilla(&home);
        cmd.args(args);
        let (status, stderr) = run_closed(cmd);
        assert_quiet(&args.join(" "), status, &stderr);
    }

    // A long-running command whose reader went keeps running; it stops as it always does.
    assert!(
        up.child.try_wait().unwrap().is_none(),
        "`flotilla up` ended when its output was closed"
    );
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(up.pid(), libc::SIGTERM) };
    let ended = up.child.wait().unwrap();
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        up.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    assert_quiet("up", ended, &stderr);
    assert!(
        ended.success(),
        "`flotilla up` ended with {ended}: {stderr}"
    );
    assert!(stderr.contains("Stopped."), "{stderr}");
}
