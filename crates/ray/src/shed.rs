//! Giving memory back at once: ending the Ray task worker of a node that holds the most.
//!
//! When the owner needs memory the node's ceiling falls; where the OS cannot press the node
//! under it (cgroup v1 without swap refuses a limit below what the group holds, macOS has no
//! ceiling), the agent ends the node's largest task worker. Ray sees the worker die and retries
//! its task (a task's `max_retries`, 3 by default; an actor's `max_restarts`), on whichever node
//! has room. The raylet, the GCS and Ray's agents are never ended: only a process whose command
//! line is a task worker's.

/// Whether `args` (a process's command line) is a Ray task or actor worker: Ray titles a worker
/// `ray::IDLE`, `ray::<task>` or `ray::<Actor>`, and before it does, it runs
/// `default_worker.py`.
pub fn is_task_worker(args: &[String]) -> bool {
    let title = args.first().is_some_and(|a| a.starts_with("ray::"));
    title
        || args
            .iter()
            .take(4)
            .any(|a| a.ends_with("workers/default_worker.py"))
}

/// The largest task worker of `processes` (pid and bytes, in any order), by `cmdline`.
pub fn largest_worker(
    processes: &[(u32, u64)],
    cmdline: impl Fn(u32) -> Option<Vec<String>>,
) -> Option<(u32, u64)> {
    processes
        .iter()
        .copied()
        .filter(|&(pid, _)| cmdline(pid).is_some_and(|args| is_task_worker(&args)))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[test]
    fn task_workers_are_told_from_rays_own_processes() {
        for worker in [
            "ray::IDLE",
            "ray::hold_memory",
            "ray::Trainer.step",
            "/rt/bin/python /rt/lib/python3.11/site-packages/ray/_private/workers/default_worker.py --node-ip-address=10.0.0.2",
        ] {
            assert!(is_task_worker(&args(worker)), "{worker}");
        }
        for system in [
            "/rt/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_id=ab",
            "/rt/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --gcs_server_port=6379",
            "/rt/bin/python -u /rt/lib/python3.11/site-packages/ray/dashboard/agent.py",
            "/rt/bin/python /rt/bin/ray start --block --address=10.0.0.1:6379",
            "/rt/bin/python -u /rt/lib/python3.11/site-packages/ray/_private/log_monitor.py",
            "/bin/sh -c exec ray start",
            "",
        ] {
            assert!(!is_task_worker(&args(system)), "{system}");
        }
    }

    #[test]
    fn the_largest_worker_is_chosen_and_never_a_system_process() {
        let lines = |pid: u32| {
            Some(args(match pid {
                1 => "/rt/ray/core/src/ray/raylet/raylet",
                2 => "ray::small",
                3 => "ray::big",
                4 => "ray::IDLE",
                _ => return None,
            }))
        };
        let procs = [(1, 900), (2, 100), (3, 300), (4, 50), (5, 5000)];
        assert_eq!(largest_worker(&procs, lines), Some((3, 300)));
        assert_eq!(largest_worker(&[(1, 900), (5, 5000)], lines), None);
        assert_eq!(largest_worker(&[], lines), None);
        // Equal sizes: the lower pid, so the choice does not depend on the order given.
        assert_eq!(largest_worker(&[(3, 100), (2, 100)], lines), Some((2, 100)));
    }
}
