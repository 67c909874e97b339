//! The app's log: to standard error as text (a terminal, or the session's journal) and to
//! `desktop.<date>.log` in Flotilla's log dir as JSON lines, a file a day, the last 14 kept.
//! The app's log is its agent's too (the worker runs in this process). The Logs view reads the
//! file's tail ([`tail`]).
//!
//! Nothing secret is logged (the secret store's values and the Ray token never reach
//! `tracing`); the tail still hides anything shaped like a join code, which is a password.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Files are `desktop.YYYY-MM-DD.log`.
const PREFIX: &str = "desktop";
const SUFFIX: &str = "log";
/// Days of logs kept.
pub const KEEP: usize = 14;
/// The most lines the Logs view asks for.
pub const MAX_LINES: usize = 2000;

/// Installs the subscriber: stderr and the daily file (written as each event happens, so a
/// quit or a crash loses no line).
pub fn init(dir: &Path) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter =
        || EnvFilter::try_from_env("FLOTILLA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter());
    let file = match file_writer(dir) {
        Ok(appender) => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(appender))
                .with_target(false)
                .with_current_span(false)
                .with_filter(filter()),
        ),
        Err(e) => {
            eprintln!("warning: no log file in {}: {e}", dir.display());
            None
        }
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

fn file_writer(dir: &Path) -> Result<tracing_appender::rolling::RollingFileAppender, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(PREFIX)
        .filename_suffix(SUFFIX)
        .max_log_files(KEEP)
        .build(dir)
        .map_err(|e| e.to_string())
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
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{PREFIX}.")) && n.ends_with(&format!(".{SUFFIX}"))
            })
        })
        .collect();
    // The date in the name sorts as it reads.
    files.sort();
    files
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

    #[test]
    fn the_file_gets_json_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let appender = file_writer(tmp.path()).unwrap();
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(appender))
                .with_target(false)
                .with_current_span(false),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(node = "n1", "hello from the app");
        });
        let t = tail(tmp.path(), 10);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].message, "hello from the app");
        assert_eq!(t[0].level, "INFO");
        assert!(t[0].fields.contains("node=n1"), "{t:?}");
    }
}
