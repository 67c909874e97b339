//! The app's log: to standard error and to `desktop.<date>.log` in Flotilla's log dir as JSON
//! lines, rotated and pruned as every Flotilla log is ([`flotilla_app::logs`]: by day and by
//! size, 14 days and 100 MiB kept). The app's log is its agent's too (the worker runs in this process). The Logs view reads the
//! file's tail ([`tail`]).
//!
//! Nothing secret is logged (the secret store's values and the Ray token never reach
//! `tracing`); the tail still hides anything shaped like a join code, which is a password.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Files are `desktop.YYYY-MM-DD.log` (see [`flotilla_app::logs`]).
const NAME: &str = "desktop";
/// The most lines the Logs view asks for.
pub const MAX_LINES: usize = 2000;

/// Installs the log: standard error (text on a terminal, the journal's form in a systemd
/// session, JSON lines otherwise) and the app's file, rotated by day and size.
pub fn init(dir: &Path) {
    use flotilla_app::logs::{Format, LogFile, LogSetup, Retention};
    if let Some(warning) = flotilla_app::logs::init(LogSetup {
        format: Format::Auto,
        stderr_level: "info".into(),
        file: Some(LogFile {
            dir: dir.to_path_buf(),
            name: NAME.into(),
            retention: Retention::default(),
        }),
    }) {
        eprintln!("warning: {warning}");
    }
}

/// One line of the log as the Logs view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LogLine {
    /// RFC 3339, as logged.
    pub time: String,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`.
    pub level: String,
    pub message: String,
    /// The event's other fields, `key=value`.
    pub fields: String,
}

/// The app's log files, oldest first.
fn files(dir: &Path) -> Vec<PathBuf> {
    flotilla_app::logs::files(dir, NAME)
}

/// The last `n` lines of the app's log, across files (the newest last).
pub fn tail(dir: &Path, n: usize) -> Vec<LogLine> {
    let n = n.clamp(1, MAX_LINES);
    let mut out: Vec<LogLine> = Vec::new();
    for file in files(dir).iter().rev() {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<LogLine> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse)
            .collect();
        let take = (n - out.len()).min(lines.len());
        let mut older: Vec<LogLine> = lines[lines.len() - take..].to_vec();
        older.append(&mut out);
        out = older;
        if out.len() >= n {
            break;
        }
    }
    out
}

/// A JSON line of the file, or a line written otherwise, shown as it is.
fn parse(line: &str) -> LogLine {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_str::<serde_json::Value>(line) else {
        return LogLine {
            time: String::new(),
            level: String::new(),
            message: redact(line),
            fields: String::new(),
        };
    };
    let text = |x: Option<&serde_json::Value>| match x {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let fields = v.get("fields").and_then(|f| f.as_object());
    let message = text(fields.and_then(|f| f.get("message")));
    let others: Vec<String> = fields
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "message")
        .map(|(k, v)| format!("{k}={}", text(Some(v))))
        .collect();
    LogLine {
        time: text(v.get("timestamp")),
        level: text(v.get("level")),
        message: redact(&message),
        fields: redact(&others.join(" ")),
    }
}

/// `text` with anything shaped like a join code (`flot1-` and what follows) hidden.
pub fn redact(text: &str) -> String {
    const MARK: &str = "flot1-";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        out.push_str("flot1-…");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_reads_across_days_newest_last() {
        let tmp = tempfile::tempdir().unwrap();
        let line = |msg: &str| {
            format!(
                r#"{{"timestamp":"2026-12-01T10:00:00Z","level":"INFO","fields":{{"message":"{msg}","node":"n1"}}}}"#
            )
        };
        std::fs::write(
            tmp.path().join("desktop.2026-12-01.log"),
            format!("{}\n{}\n", line("one"), line("two")),
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("desktop.2026-12-02.log"),
            format!("{}\nnot json\n", line("three")),
        )
        .unwrap();
        std::fs::write(tmp.path().join("ray-laptop.log"), "a Ray line\n").unwrap();
        let t = tail(tmp.path(), 3);
        let messages: Vec<&str> = t.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["two", "three", "not json"]);
        assert_eq!(t[0].level, "INFO");
        assert_eq!(t[0].fields, "node=n1");
        assert_eq!(tail(tmp.path(), 100).len(), 4);
        assert!(tail(&tmp.path().join("none"), 10).is_empty());
    }

    #[test]
    fn join_codes_never_show() {
        assert_eq!(
            redact("joining with FLOT1-abcd-EFGH2345 now"),
            "joining with flot1-… now"
        );
        assert_eq!(redact("nothing here"), "nothing here");
        assert_eq!(redact("flot1-"), "flot1-…");
    }
}
