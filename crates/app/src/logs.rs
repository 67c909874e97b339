//! Flotilla's own log, for every front end: standard error in the form its reader wants (text
//! on a terminal, the journal's form under systemd, JSON lines otherwise) and, for the programs
//! that keep running, a file of JSON lines in Flotilla's log dir that rotates by day and by size
//! and keeps what is young and small enough.
//!
//! Files are `NAME.YYYY-MM-DD.log`, then `NAME.YYYY-MM-DD.1.log`, `.2.log`, … when a day's file
//! reaches [`Retention::max_file_bytes`]; dates are UTC. Each event is written as it happens, so
//! a crash loses no line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_host::clock::{civil_from_days, days_from_civil};

/// The form of the lines on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Text on a terminal, the journal's form under systemd, JSON lines otherwise.
    #[default]
    Auto,
    Text,
    Json,
    /// Text without timestamps (the journal adds them), each line led by its syslog priority
    /// (`<3>` for an error … `<7>` for debug), which the journal reads as the line's priority.
    Journald,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Format::Auto),
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "journald" => Ok(Format::Journald),
            other => Err(format!(
                "unknown log format {other:?}: use auto, text, json or journald"
            )),
        }
    }
}

impl Format {
    /// What `Auto` means for this process's standard error.
    pub fn resolve(self) -> Format {
        use std::io::IsTerminal;
        match self {
            Format::Auto if flotilla_host::journal::stderr_is_journal() => Format::Journald,
            Format::Auto if std::io::stderr().is_terminal() => Format::Text,
            Format::Auto => Format::Json,
            other => other,
        }
    }
}

/// How much of the log files is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Files of days older than this many are removed.
    pub keep_days: u32,
    /// A file that reaches this size is closed and the next one of the day opened.
    pub max_file_bytes: u64,
    /// The oldest files go while all of them together are larger.
    pub max_total_bytes: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            keep_days: 14,
            max_file_bytes: 10 << 20,
            max_total_bytes: 100 << 20,
        }
    }
}

/// A log file to write besides standard error.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub dir: PathBuf,
    /// The files' name before the date (`flotilla`, `desktop`).
    pub name: String,
    pub retention: Retention,
}

/// What [`init`] installs.
#[derive(Debug, Clone)]
pub struct LogSetup {
    pub format: Format,
    /// The levels standard error shows when `FLOTILLA_LOG` does not say (`warn`, `info`, …).
    pub stderr_level: String,
    pub file: Option<LogFile>,
}

/// Installs the process's log (once; later calls change nothing). `FLOTILLA_LOG` (an
/// `EnvFilter` directive such as `info` or `flotilla_agent=debug`) overrides every level.
/// Returns a warning to show when the file could not be opened; standard error still works.
pub fn init(setup: LogSetup) -> Option<String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = |default: &str| {
        EnvFilter::try_from_env("FLOTILLA_LOG").unwrap_or_else(|_| EnvFilter::new(default))
    };
    let stderr_filter = filter(&setup.stderr_level);
    let stderr = match setup.format.resolve() {
        Format::Json => json_layer(std::io::stderr)
            .with_filter(stderr_filter)
            .boxed(),
        Format::Journald => tracing_subscriber::fmt::layer()
            .with_writer(Journald(std::io::stderr))
            .without_time()
            .with_ansi(false)
            .with_level(false)
            .with_target(false)
            .with_filter(stderr_filter)
            .boxed(),
        Format::Text | Format::Auto => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(stderr_filter)
            .boxed(),
    };
    let mut warning = None;
    let file = setup
        .file
        .and_then(|f| match RotatingFile::open(&f.dir, &f.name, f.retention) {
            Ok(file) => Some(json_layer(file).with_filter(filter("info"))),
            Err(e) => {
                warning = Some(format!("no log file in {}: {e}", f.dir.display()));
                None
            }
        });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    warning
}

/// JSON lines: `{"timestamp", "level", "fields": {"message", …}}`.
fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_writer(writer)
        .with_target(false)
        .with_current_span(false)
}

/// Standard error (or any writer) with each event led by its syslog priority, as the journal
/// reads a service's output.
#[derive(Debug, Clone, Copy)]
pub struct Journald<M>(pub M);

/// The syslog priority of a level.
pub fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// One event's writer: the priority goes before its first byte.
#[derive(Debug)]
pub struct Prefixed<W> {
    inner: W,
    prefix: Option<[u8; 3]>,
}

impl<W: Write> Write for Prefixed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(prefix) = self.prefix.take() {
            let mut line = Vec::with_capacity(prefix.len() + buf.len());
            line.extend_from_slice(&prefix);
            line.extend_from_slice(buf);
            self.inner.write_all(&line)?;
            return Ok(buf.len());
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Journald<M>
{
    type Writer = Prefixed<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        Prefixed {
            inner: self.0.make_writer(),
            prefix: None,
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Prefixed {
            inner: self.0.make_writer_for(meta),
            prefix: Some([b'<', b'0' + priority(meta.level()), b'>']),
        }
    }
}

/// A log file that rotates by day and size and removes what [`Retention`] does not keep.
#[derive(Debug)]
pub struct RotatingFile {
    dir: PathBuf,
    name: String,
    retention: Retention,
    state: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    file: Option<std::fs::File>,
    key: Key,
    written: u64,
}

/// Where a file falls in order: its day (since 1970-01-01, UTC) and its number in the day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub day: i64,
    pub seq: u32,
}

impl RotatingFile {
    /// Opens today's newest file (appending to it while it has room) in `dir`, created
    /// private if missing.
    pub fn open(dir: &Path, name: &str, retention: Retention) -> std::io::Result<RotatingFile> {
        flotilla_host::dirs::create_private_dir(dir)?;
        let file = RotatingFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            retention,
            state: Mutex::new(Open::default()),
        };
        let mut state = file.state.lock().unwrap_or_else(|e| e.into_inner());
        file.roll(&mut state, today(), 1)?;
        drop(state);
        Ok(file)
    }

    /// Writes one event's bytes, opening the next file first when the day changed or the
    /// current one is full.
    fn append(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let day = today();
        let full =
            state.written > 0 && state.written + buf.len() as u64 > self.retention.max_file_bytes;
        if state.file.is_none() || day != state.key.day || full {
            self.roll(&mut state, day, buf.len() as u64)?;
        }
        if let Some(file) = state.file.as_mut() {
            file.write_all(buf)?;
            state.written += buf.len() as u64;
        }
        Ok(())
    }

    /// Opens the file to write next on `day` (the day's newest while `need` more bytes fit in
    /// it) and applies the retention.
    fn roll(&self, state: &mut Open, day: i64, need: u64) -> std::io::Result<()> {
        let newest = files_with_keys(&self.dir, &self.name)
            .into_iter()
            .filter(|(k, _)| k.day == day)
            .max_by_key(|(k, _)| *k);
        let (key, size) = match newest {
            Some((k, path)) => {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if size == 0 || size + need <= self.retention.max_file_bytes {
                    (k, size)
                } else {
                    (
                        Key {
                            day,
                            seq: k.seq + 1,
                        },
                        0,
                    )
                }
            }
            None => (Key { day, seq: 0 }, 0),
        };
        let path = self.dir.join(file_name(&self.name, key));
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        state.file = Some(options.open(&path)?);
        state.key = key;
        state.written = size;
        prune(&self.dir, &self.name, self.retention, key);
        Ok(())
    }
}

/// Removes the files of days older than the retention's and then the oldest while the whole
/// is too large; never the one being written (`current`).
fn prune(dir: &Path, name: &str, retention: Retention, current: Key) {
    let oldest_day = current.day - i64::from(retention.keep_days);
    let mut kept = Vec::new();
    for (key, path) in files_with_keys(dir, name) {
        if key != current && key.day < oldest_day {
            let _ = std::fs::remove_file(&path);
        } else {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            kept.push((key, path, size));
        }
    }
    let mut total: u64 = kept.iter().map(|(_, _, s)| s).sum();
    for (key, path, size) in kept {
        if total <= retention.max_total_bytes {
            break;
        }
        if key != current && std::fs::remove_file(&path).is_ok() {
            total -= size;
        }
    }
}

/// One event's writer to a [`RotatingFile`]: one `write_all` per event.
#[derive(Debug)]
pub struct FileWriter<'a>(&'a RotatingFile);

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingFile {
    type Writer = FileWriter<'a>;
    fn make_writer(&'a self) -> FileWriter<'a> {
        FileWriter(self)
    }
}

/// `NAME.YYYY-MM-DD.log`, or `NAME.YYYY-MM-DD.N.log` after the day's first.
fn file_name(name: &str, key: Key) -> String {
    let (y, m, d) = civil_from_days(key.day);
    match key.seq {
        0 => format!("{name}.{y:04}-{m:02}-{d:02}.log"),
        n => format!("{name}.{y:04}-{m:02}-{d:02}.{n}.log"),
    }
}

/// The key of a file named as [`file_name`] names them.
fn parse_name(name: &str, file: &str) -> Option<Key> {
    let rest = file
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_suffix(".log")?;
    let (date, seq) = match rest.split_once('.') {
        Some((date, seq)) => (date, seq.parse().ok().filter(|n| *n > 0)?),
        None => (rest, 0),
    };
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if date.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(Key {
        day: days_from_civil(y, m, d),
        seq,
    })
}

fn files_with_keys(dir: &Path, name: &str) -> Vec<(Key, PathBuf)> {
    let mut files: Vec<(Key, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let key = parse_name(name, e.file_name().to_str()?)?;
            Some((key, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// The log files named `name` in `dir`, oldest first.
pub fn files(dir: &Path, name: &str) -> Vec<PathBuf> {
    files_with_keys(dir, name)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Days since 1970-01-01 now, UTC.
fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    (secs / 86_400) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_day_then_number() {
        let k = |day, seq| Key { day, seq };
        assert_eq!(
            file_name("flotilla", k(20_794, 0)),
            "flotilla.2026-12-07.log"
        );
        assert_eq!(
            file_name("flotilla", k(20_794, 12)),
            "flotilla.2026-12-07.12.log"
        );
        assert_eq!(
            parse_name("flotilla", "flotilla.2026-12-07.log"),
            Some(k(20_794, 0))
        );
        assert_eq!(
            parse_name("flotilla", "flotilla.2026-12-07.2.log"),
            Some(k(20_794, 2))
        );
        for other in [
            "desktop.2026-12-07.log",
            "flotilla.2026-13-07.log",
            "flotilla.2026-12-07.0.log",
            "flotilla.2026-12-7.log",
            "flotilla.2026-12-07.x.log",
            "ray-laptop.log",
        ] {
            assert_eq!(parse_name("flotilla", other), None, "{other}");
        }
        let tmp = tempfile::tempdir().unwrap();
        for f in [
            "flotilla.2026-12-07.10.log",
            "flotilla.2026-12-07.2.log",
            "flotilla.2026-12-06.log",
            "flotilla.2026-12-07.log",
        ] {
            std::fs::write(tmp.path().join(f), "x\n").unwrap();
        }
        let names: Vec<String> = files(tmp.path(), "flotilla")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "flotilla.2026-12-06.log",
                "flotilla.2026-12-07.log",
                "flotilla.2026-12-07.2.log",
                "flotilla.2026-12-07.10.log"
            ]
        );
    }

    fn sizes(dir: &Path, name: &str) -> Vec<(String, u64)> {
        files(dir, name)
            .iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::metadata(p).unwrap().len(),
                )
            })
            .collect()
    }

    #[test]
    fn a_full_file_rolls_to_the_next_and_the_oldest_go_past_the_total() {
        let tmp = tempfile::tempdir().unwrap();
        let retention = Retention {
            keep_days: 14,
            max_file_bytes: 100,
            max_total_bytes: 350,
        };
        let log = RotatingFile::open(tmp.path(), "w", retention).unwrap();
        let line = [b'a'; 39];
        for _ in 0..20 {
            let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&log);
            w.write_all(&line).unwrap();
        }
        let got = sizes(tmp.path(), "w");
        // Two 39-byte events fit in 100 bytes: ten files were written. Each roll keeps the
        // newest that fit in 350 bytes (four full ones) besides the one it opens.
        assert!(got.iter().all(|(_, s)| *s <= 100), "{got:?}");
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(
            got[0].0,
            file_name(
                "w",
                Key {
                    day: today(),
                    seq: 5
                }
            ),
            "{got:?}"
        );
        assert_eq!(
            got.last().unwrap().0,
            file_name(
                "w",
                Key {
                    day: today(),
                    seq: 9
                }
            )
        );
        // Opened again, the day's newest file is continued while it has room.
        drop(log);
        let log = RotatingFile::open(tmp.path(), "w", retention).unwrap();
        tracing_subscriber::fmt::MakeWriter::make_writer(&log)
            .write_all(b"x\n")
            .unwrap();
        let last = sizes(tmp.path(), "w").pop().unwrap();
        assert_eq!(
            last,
            (
                file_name(
                    "w",
                    Key {
                        day: today(),
                        seq: 9
                    }
                ),
                80
            )
        );
    }

    #[test]
    fn files_of_old_days_go_and_other_files_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let day = today();
        let old = file_name(
            "w",
            Key {
                day: day - 15,
                seq: 0,
            },
        );
        let kept = file_name(
            "w",
            Key {
                day: day - 14,
                seq: 3,
            },
        );
        for f in [
            &old,
            &kept,
            &"ray-node.log".to_string(),
            &"desktop.2001-01-01.log".to_string(),
        ] {
            std::fs::write(tmp.path().join(f), "x\n").unwrap();
        }
        let _log = RotatingFile::open(tmp.path(), "w", Retention::default()).unwrap();
        assert!(!tmp.path().join(&old).exists());
        for f in [&kept, "ray-node.log", "desktop.2001-01-01.log"] {
            assert!(tmp.path().join(f).exists(), "{f}");
        }
        assert!(
            tmp.path()
                .join(file_name("w", Key { day, seq: 0 }))
                .exists()
        );
    }

    #[test]
    fn events_reach_the_file_as_json_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let log = RotatingFile::open(tmp.path(), "w", Retention::default()).unwrap();
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(json_layer(log));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(node = "n1", "the node \"n1\" left");
        });
        let text = std::fs::read_to_string(&files(tmp.path(), "w")[0]).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["level"], "WARN", "{v}");
        assert_eq!(v["fields"]["message"], "the node \"n1\" left", "{v}");
        assert_eq!(v["fields"]["node"], "n1", "{v}");
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_journal_form_leads_each_event_with_its_priority() {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Journald(move || sink.clone()))
            .without_time()
            .with_ansi(false)
            .with_level(false)
            .with_target(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("cannot reach the head");
            tracing::warn!("slow");
            tracing::info!(node = "n1", "joined");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<3>cannot reach the head",
                "<4>slow",
                "<6>joined node=\"n1\"",
                "<7>detail"
            ]
        );
    }

    #[test]
    fn formats_parse_and_unknown_ones_say_the_choices() {
        assert_eq!("JSON".parse::<Format>(), Ok(Format::Json));
        assert_eq!("journald".parse::<Format>(), Ok(Format::Journald));
        assert!(
            "xml"
                .parse::<Format>()
                .unwrap_err()
                .contains("auto, text, json or journald")
        );
        assert_eq!(Format::Text.resolve(), Format::Text);
    }
}
