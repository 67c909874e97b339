//! Windows itself: Job Objects and the CPU-rate cap on real processes. These run on Windows, and
//! under Wine on Linux through `tests/cross-os`.
//!
//! The processes are this test binary started again with [`ROLE`] set: the filter runs only
//! [`helper_process`], which acts the role instead of testing anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
use windows_sys::Win32::System::JobObjects::{
    JOB_OBJECT_CPU_RATE_CONTROL_ENABLE, JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

use crate::process::{ProcessTree, TreeSpec};
use crate::throttle::{Limit, Throttle, ThrottleError};

const ROLE: &str = "FLOTILLA_WINDOWS_TEST_ROLE";
const DIR: &str = "FLOTILLA_WINDOWS_TEST_DIR";
const HELPER: &str = "windows_tests::helper_process";
/// Longer than any test; the processes are killed long before.
const LIFETIME: Duration = Duration::from_secs(300);

fn helper_args() -> Vec<String> {
    ["--exact", HELPER, "--nocapture", "--test-threads=1"]
        .map(String::from)
        .to_vec()
}

fn helper(role: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(helper_args()).env(ROLE, role).env(DIR, dir);
    cmd
}

fn helper_spec(role: &str, dir: &Path) -> TreeSpec {
    TreeSpec {
        program: std::env::current_exe().unwrap(),
        args: helper_args().into_iter().map(Into::into).collect(),
        env: vec![(ROLE.into(), role.into()), (DIR.into(), dir.into())],
        marker: format!("windows-test-{role}"),
        ..TreeSpec::default()
    }
}

/// Not a test of its own: the processes the tests start land here and act their role. Without a
/// role it has nothing to do.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    match role.as_str() {
        // An agent: a tree whose leader starts a child of its own.
        "agent" => {
            let tree = ProcessTree::spawn(helper_spec("leader", &dir)).unwrap();
            write_pid(&dir, "leader", tree.pid());
            std::thread::sleep(LIFETIME);
            drop(tree);
        }
        "leader" => {
            let mut leaf = helper("leaf", &dir).spawn().unwrap();
            write_pid(&dir, "leaf", leaf.id());
            std::thread::sleep(LIFETIME);
            let _ = leaf.kill();
            let _ = leaf.wait();
        }
        "leaf" | "sleeper" => std::thread::sleep(LIFETIME),
        other => panic!("unknown role {other}"),
    }
}

fn write_pid(dir: &Path, name: &str, pid: u32) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, pid.to_string()).unwrap();
    std::fs::rename(tmp, dir.join(format!("{name}.pid"))).unwrap();
}

fn wait_pid(dir: &Path, name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.pid"))) {
            return text.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no {name}.pid after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether this runs under Wine, which exports its version from its ntdll.
pub(crate) fn under_wine() -> bool {
    // SAFETY: both names are C strings; the module handle is not released (ntdll stays loaded).
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: the handle is checked, used for one query and closed.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            return false;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(h, &mut code);
        CloseHandle(h);
        ok != 0 && code == STILL_ACTIVE as u32
    }
}

/// Waits up to 20 s for every one of `pids` to be gone; names the survivors (and kills them)
/// otherwise.
fn assert_all_end(pids: &[(&str, u32)]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|&(_, pid)| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let survivors: Vec<_> = pids.iter().filter(|&&(_, pid)| alive(pid)).collect();
    for &(_, pid) in &survivors {
        let _ = Command::new("taskkill")
            .args(["/F", "/PID", &pid.to_string()])
            .output();
    }
    assert!(
        survivors.is_empty(),
        "still running 20 s later: {survivors:?}"
    );
}

#[test]
fn a_killed_agent_takes_its_whole_tree_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = helper("agent", dir.path()).spawn().unwrap();
    let leader = wait_pid(dir.path(), "leader");
    let leaf = wait_pid(dir.path(), "leaf");
    assert!(alive(leader) && alive(leaf), "the tree is running");
    // What a crash or `taskkill /f` does: no code of the agent's runs on the way out.
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_all_end(&[("leader", leader), ("leaf", leaf)]);
}

#[test]
fn dropping_a_tree_ends_its_leader_and_the_leaders_children() {
    let dir = tempfile::tempdir().unwrap();
    let tree = ProcessTree::spawn(helper_spec("leader", dir.path())).unwrap();
    let leader = tree.pid();
    let leaf = wait_pid(dir.path(), "leaf");
    assert!(alive(leader) && alive(leaf));
    drop(tree);
    assert_all_end(&[("leader", leader), ("leaf", leaf)]);
}

#[test]
fn a_cap_becomes_a_hard_cpu_rate_on_the_job_and_full_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sleeper = helper("sleeper", dir.path()).spawn().unwrap();
    let mut throttle = Throttle::attach("windows-test", sleeper.id(), "windows-test").unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let hard = JOB_OBJECT_CPU_RATE_CONTROL_ENABLE | JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP;

    match throttle.set(Limit::Cap { cpus: 0.5 }) {
        Ok(()) => {}
        // Wine implements Job Objects but not their CPU rate control: the cap must fail
        // saying so, and the tree keep running (the agent then holds Ray's CPUs back alone).
        Err(ThrottleError::Unavailable { reason, .. }) if under_wine() => {
            assert!(reason.contains("CPU rate control"), "{reason}");
            assert!(alive(sleeper.id()));
            eprintln!("under Wine, as expected: {reason}");
            throttle.kill();
            sleeper.wait().unwrap();
            return;
        }
        Err(e) => panic!("the cap was refused: {e}"),
    }
    let (flags, rate) = throttle.inner.cpu_rate().expect("the job's CPU rate");
    assert_eq!(flags & hard, hard, "flags {flags:#x}");
    // The rate is in 1/100 of a percent of the whole machine.
    let expected = (0.5 / cpus * 10_000.0).round() as u32;
    assert!(
        rate.abs_diff(expected) <= 1,
        "rate {rate}, expected {expected}"
    );

    throttle.set(Limit::Freeze).unwrap();
    assert_eq!(throttle.inner.cpu_rate().map(|r| r.1), Some(1));

    throttle.set(Limit::Full).unwrap();
    let (flags, rate) = throttle.inner.cpu_rate().expect("the job's CPU rate");
    assert!(
        flags & JOB_OBJECT_CPU_RATE_CONTROL_ENABLE == 0 || rate == 10_000,
        "{flags:#x} {rate}"
    );

    throttle.kill();
    sleeper.wait().unwrap();
}
