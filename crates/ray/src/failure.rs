//! Ray's own reason for a node that did not start or stopped: read from what `ray start`
//! printed and from the node's session logs, so that a failure reaches people as one line
//! instead of a time-out.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

/// What kind of failure Ray reported; serialized as its [`code`](FailureKind::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum FailureKind {
    /// Ray refused the node: its Ray or Python version differs from the cluster's.
    #[serde(rename = "ray_version_mismatch")]
    VersionMismatch,
    /// A port the node needs is taken by another program.
    #[serde(rename = "ray_port_taken")]
    PortTaken,
    /// The node cannot reach the cluster's GCS (the head's Ray).
    #[serde(rename = "ray_gcs_unreachable")]
    GcsUnreachable,
    /// The machine or the object store ran out of memory.
    #[serde(rename = "ray_out_of_memory")]
    OutOfMemory,
    /// One of the node's processes (the raylet, the GCS) exited.
    #[serde(rename = "ray_process_exited")]
    ProcessExited,
    /// The node made no progress for too long.
    #[serde(rename = "ray_stalled")]
    Stalled,
    /// Something else; the reason is Ray's last error line.
    #[serde(rename = "ray_failed")]
    Other,
}

impl FailureKind {
    /// A stable code, as reasons carry (`ray_version_mismatch`, ...).
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::VersionMismatch => "ray_version_mismatch",
            FailureKind::PortTaken => "ray_port_taken",
            FailureKind::GcsUnreachable => "ray_gcs_unreachable",
            FailureKind::OutOfMemory => "ray_out_of_memory",
            FailureKind::ProcessExited => "ray_process_exited",
            FailureKind::Stalled => "ray_stalled",
            FailureKind::Other => "ray_failed",
        }
    }

    /// Whether starting again cannot mend it without someone changing something. A port
    /// taken is not among them: ports are checked before a node's first start, so one taken
    /// later is most often a previous incarnation's, gone a few seconds on.
    pub fn needs_a_person(self) -> bool {
        matches!(self, FailureKind::VersionMismatch)
    }
}

/// A node's failure: its kind and Ray's reason, in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The most of a log read from its end.
const TAIL_BYTES: u64 = 64 * 1024;

/// The text of `path` from byte `from` on (at most its last 64 KiB); empty if unreadable.
pub fn read_from(path: &Path, from: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(TAIL_BYTES)).min(len);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = f.take(TAIL_BYTES).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Ray's reason for a failed node: what `ray start` printed since it was started
/// (`launcher`), and the node's own logs under its temp dir (`session_latest/logs`) where the
/// launcher only says that a process exited.
pub fn explain_node(launcher: &str, temp_dir: &Path) -> Option<Failure> {
    let mut failure = explain(launcher);
    if failure
        .as_ref()
        .is_none_or(|f| f.kind == FailureKind::ProcessExited)
    {
        let logs = temp_dir.join("session_latest").join("logs");
        for name in [
            "raylet.err",
            "raylet.out",
            "gcs_server.err",
            "gcs_server.out",
        ] {
            let text = read_from(&logs.join(name), 0);
            if let Some(inner) = explain(&text).or_else(|| last_error_line(&text)) {
                failure = Some(match failure {
                    Some(outer) if inner.kind == FailureKind::Other => Failure {
                        kind: outer.kind,
                        reason: format!("{}: {}", outer.reason, inner.reason),
                    },
                    _ => inner,
                });
                break;
            }
        }
    }
    failure
}

/// Ray's reason in `text` (what a Ray process printed), where it is recognisable.
pub fn explain(text: &str) -> Option<Failure> {
    let text = strip_ansi(text);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let find = |needles: &[&str]| {
        lines.iter().rev().find(|l| {
            let low = l.to_ascii_lowercase();
            needles.iter().any(|n| low.contains(n))
        })
    };
    if let Some(i) = lines.iter().rposition(|l| l.contains("Version mismatch")) {
        return Some(version_mismatch(&lines[i..]));
    }
    if let Some(l) = find(&["already in use", "already occupied", "failed to bind"]) {
        return Some(Failure {
            kind: FailureKind::PortTaken,
            reason: format!("a port Ray needs is taken: {}", exception_text(l)),
        });
    }
    if let Some(l) = find(&[
        "unable to connect to gcs",
        "failed to connect to gcs",
        "failed to get cluster id from gcs",
    ]) {
        return Some(Failure {
            kind: FailureKind::GcsUnreachable,
            reason: first_sentence(exception_text(l)),
        });
    }
    if let Some(l) = find(&[
        "object store memory size is greater",
        "memoryerror",
        "cannot allocate memory",
        "out of memory",
        "outofmemory",
    ]) {
        return Some(Failure {
            kind: FailureKind::OutOfMemory,
            reason: format!("out of memory: {}", exception_text(l)),
        });
    }
    if let Some(i) = lines
        .iter()
        .rposition(|l| l.contains("Ray subprocesses exited unexpectedly"))
    {
        let which: Vec<String> = lines[i + 1..]
            .iter()
            .take_while(|l| l.contains("exit code"))
            .map(|l| l.replace(" [exit code=", " (exit code ").replace(']', ")"))
            .collect();
        return Some(Failure {
            kind: FailureKind::ProcessExited,
            reason: if which.is_empty() {
                "a Ray process exited unexpectedly".into()
            } else {
                format!("Ray's {} exited unexpectedly", which.join(", "))
            },
        });
    }
    last_exception(&lines)
}

/// "Version mismatch: The cluster was started with: Ray: a Python: b This process on ... was
/// started with: Ray: c Python: d" as one line.
fn version_mismatch(lines: &[&str]) -> Failure {
    let values = |key: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(key).map(str::trim))
            .take(2)
            .collect()
    };
    let (ray, python) = (values("Ray:"), values("Python:"));
    let reason = match (ray.as_slice(), python.as_slice()) {
        ([cr, nr], [cp, np]) => {
            let mut differs = Vec::new();
            if cp != np {
                differs.push(format!("Python {np} (the cluster runs {cp})"));
            }
            if cr != nr {
                differs.push(format!("Ray {nr} (the cluster runs {cr})"));
            }
            format!(
                "Ray refuses this node's versions: it has {}",
                if differs.is_empty() {
                    format!("Ray {nr} on Python {np}")
                } else {
                    differs.join(" and ")
                }
            )
        }
        _ => "Ray refuses this node: its Ray or Python version differs from the cluster's".into(),
    };
    Failure {
        kind: FailureKind::VersionMismatch,
        reason,
    }
}

/// The last `SomethingError: text` line of a Python traceback.
fn last_exception(lines: &[&str]) -> Option<Failure> {
    lines
        .iter()
        .rev()
        .find(|l| {
            l.split_once(": ").is_some_and(|(name, _)| {
                !name.contains(' ')
                    && (name.ends_with("Error") || name.ends_with("Exception"))
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            })
        })
        .map(|l| Failure {
            kind: FailureKind::Other,
            reason: l.to_string(),
        })
}

/// The last error line of a Ray C++ log (`[time E pid tid] file:line: text`, or `C` for a
/// fatal check).
fn last_error_line(text: &str) -> Option<Failure> {
    let text = strip_ansi(text);
    text.lines()
        .rev()
        .find_map(|l| {
            let (head, rest) = l.trim().strip_prefix('[')?.split_once(']')?;
            let level = head.split_whitespace().nth(2)?;
            matches!(level, "E" | "C" | "F").then(|| {
                let rest = rest.trim();
                // Drop the `(raylet) file.cc:123:` prefix.
                let rest = rest
                    .strip_prefix('(')
                    .and_then(|r| r.split_once(") "))
                    .map_or(rest, |(_, r)| r);
                match rest.split_once(": ") {
                    Some((place, msg)) if place.contains(".cc:") || place.contains(".h:") => {
                        msg.to_string()
                    }
                    _ => rest.to_string(),
                }
            })
        })
        .filter(|s| !s.is_empty())
        .map(|reason| Failure {
            kind: FailureKind::Other,
            reason,
        })
}

/// `ValueError: text` -> `text`.
fn exception_text(line: &str) -> &str {
    match line.split_once(": ") {
        Some((name, rest))
            if !name.contains(' ') && (name.ends_with("Error") || name.ends_with("Exception")) =>
        {
            rest
        }
        _ => line,
    }
}

/// Up to the end of the first sentence (Ray's GCS message goes on with a checklist).
fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(i) => text[..=i].to_string(),
        None => text.to_string(),
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISMATCH: &str = "\
Traceback (most recent call last):
  File \"/rt/bin/ray\", line 8, in <module>
    sys.exit(main())
  File \"/rt/lib/python3.11/site-packages/ray/_private/utils.py\", line 1432, in check_version_info
    raise RuntimeError(error_message)
RuntimeError: Version mismatch: The cluster was started with:
    Ray: 2.60.0
    Python: 3.11.7
This process on node 10.200.1.2 was started with:
    Ray: 2.60.0
    Python: 3.11.2
";

    #[test]
    fn a_version_mismatch_names_both_versions() {
        let f = explain(MISMATCH).unwrap();
        assert_eq!(f.kind, FailureKind::VersionMismatch);
        assert_eq!(f.kind.code(), "ray_version_mismatch");
        assert!(f.kind.needs_a_person());
        assert!(!FailureKind::PortTaken.needs_a_person());
        assert!(!FailureKind::ProcessExited.needs_a_person());
        assert_eq!(
            serde_json::to_value(f.kind).unwrap(),
            "ray_version_mismatch"
        );
        assert_eq!(
            f.reason,
            "Ray refuses this node's versions: it has Python 3.11.2 (the cluster runs 3.11.7)"
        );
        let ray = MISMATCH.replacen(
            "Ray: 2.60.0\n    Python: 3.11.2",
            "Ray: 2.59.0\n    Python: 3.11.7",
            1,
        );
        let f = explain(&ray).unwrap();
        assert!(
            f.reason.contains("Ray 2.59.0 (the cluster runs 2.60.0)"),
            "{}",
            f.reason
        );
        assert!(!f.reason.contains("Python"), "{}", f.reason);
    }

    #[test]
    fn ray_messages_are_classified() {
        let cases = [
            (
                "ValueError: Failed to bind to 0.0.0.0:8265 because it's already occupied. You can use `ray start --dashboard-port ...`",
                FailureKind::PortTaken,
                "Failed to bind to 0.0.0.0:8265",
            ),
            (
                "[2026-12-07 10:00:00,000 E 1 1] grpc_server.cc:95:  Failed to bind to address: Address already in use",
                FailureKind::PortTaken,
                "Address already in use",
            ),
            (
                "ConnectionError: Unable to connect to GCS (ray head) at 10.0.0.1:6379. Check that (1) Ray with matching version started",
                FailureKind::GcsUnreachable,
                "Unable to connect to GCS (ray head) at 10.0.0.1:6379.",
            ),
            (
                "ValueError: The requested object store memory size is greater than the total available memory.",
                FailureKind::OutOfMemory,
                "greater than the total available memory",
            ),
            (
                "Some Ray subprocesses exited unexpectedly:\n  raylet [exit code=1]\n\nRemaining processes will be killed.",
                FailureKind::ProcessExited,
                "Ray's raylet (exit code 1) exited unexpectedly",
            ),
            (
                "Traceback (most recent call last):\n  File \"x\", line 1\nray.exceptions.RaySystemError: System error: bad things",
                FailureKind::Other,
                "RaySystemError: System error: bad things",
            ),
        ];
        for (text, kind, part) in cases {
            let f = explain(text).unwrap_or_else(|| panic!("nothing found in {text:?}"));
            assert_eq!(f.kind, kind, "{text:?}: {f:?}");
            assert!(f.reason.contains(part), "{text:?}: {:?}", f.reason);
            assert!(!f.reason.contains('\n'), "one line: {:?}", f.reason);
        }
        assert_eq!(
            explain("Local node IP: 10.0.0.2\nRay runtime started.\n"),
            None
        );
        assert_eq!(explain(""), None);
    }

    #[test]
    fn colours_are_stripped() {
        let f = explain("\u{1b}[31mValueError\u{1b}[0m: Failed to bind to 1.2.3.4:1 because it's already occupied.").unwrap();
        assert_eq!(f.kind, FailureKind::PortTaken);
        assert!(!f.reason.contains('\u{1b}'), "{:?}", f.reason);
    }

    #[test]
    fn an_exited_raylet_takes_its_reason_from_its_own_log() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("session_latest/logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(
            logs.join("raylet.out"),
            "[2026-12-07 10:00:00,000 I 7 7] (raylet) main.cc:200: Starting\n\
             [2026-12-07 10:00:01,000 C 7 7] (raylet) node_manager.cc:412: Check failed: plasma store died\n",
        )
        .unwrap();
        let f = explain_node(
            "Some Ray subprocesses exited unexpectedly:\n  raylet [exit code=1]\n",
            tmp.path(),
        )
        .unwrap();
        assert_eq!(f.kind, FailureKind::ProcessExited);
        assert_eq!(
            f.reason,
            "Ray's raylet (exit code 1) exited unexpectedly: Check failed: plasma store died"
        );
        // Nothing in either: nothing to say.
        assert_eq!(
            explain_node("Ray runtime started.", tmp.path().join("none").as_path()),
            None
        );
    }

    #[test]
    fn only_the_newest_part_of_a_log_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("ray.log");
        std::fs::write(&log, "old: ValueError: earlier\n").unwrap();
        let from = std::fs::metadata(&log).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"new line\n"))
            .unwrap();
        assert_eq!(read_from(&log, from), "new line\n");
        assert_eq!(read_from(&tmp.path().join("missing"), 0), "");
    }
}
