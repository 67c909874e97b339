//! `flotilla.toml`: the agent's settings, validated with the file, line and field of every
//! problem and what would be accepted.
//!
//! ```toml
//! [policy]
//! active_cpus = 2
//! exclusive_apps = ["zoom"]
//!
//! [policy.schedule]
//! monday = ["18:00-08:00"]
//! ```
//!
//! A missing file means every default. Unknown keys are errors, so a typo never silently does
//! nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use flotilla_policy::Settings;
use serde::Deserialize;

/// The file name in Flotilla's config dir.
pub const FILE_NAME: &str = "flotilla.toml";

/// Everything `flotilla.toml` holds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// When and how much this machine lends to the cluster.
    pub policy: Settings,
    /// Where secrets (the cluster's Ray token, your API keys) are kept.
    pub secrets: SecretsSettings,
    /// The head's alerts, read and checked by the head when it starts
    /// (`flotilla_head::alerts::AlertsConfig`); other machines ignore it.
    pub alerts: toml::Table,
    /// Scheduled backups of the head (read only where a head runs).
    pub backup: BackupSettings,
}

/// `[backup]`: the head backs itself up on a schedule (`flotilla head backup` by hand needs
/// none of this). The passphrase is in the secret store (`flotilla head backup-passphrase`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// How often: a number and a unit, `30m`, `12h`, `1d`. No value: no scheduled backups.
    pub every: Option<String>,
    /// How many scheduled backups to keep; older ones are removed. Default 7.
    pub keep: u32,
    /// Where they go. Default: `backups` in Flotilla's state dir.
    pub dir: Option<PathBuf>,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            every: None,
            keep: 7,
            dir: None,
        }
    }
}

impl BackupSettings {
    /// The period, when backups are scheduled.
    pub fn period(&self) -> Option<std::time::Duration> {
        self.every.as_deref().and_then(parse_every)
    }
}

/// A period as [`parse_every`] reads it, in its largest whole unit.
pub fn format_every(d: std::time::Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// `30s`, `30m`, `12h`, `1d` as a duration; `None` for anything else or zero.
pub fn parse_every(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

/// `[secrets]`: which store holds Flotilla's secrets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSettings {
    /// `"auto"` (the OS keyring when one is reachable), `"keyring"` (only the OS keyring) or
    /// `"file"` (a file in the state dir readable only by you). Default `"auto"`.
    pub backend: SecretsBackend,
    /// With `"auto"` and no reachable keyring (a server with no desktop session), keep secrets
    /// in the private file, as ssh and tailscaled do. Default `true`; `false` refuses instead.
    pub file_fallback: bool,
    /// Encrypt that file at rest: `"auto"` (with systemd-creds where it works: root or a TPM),
    /// `"systemd-creds"` (or refuse to start) or `"off"`. Default `"auto"`.
    pub encrypt_file: FileEncryption,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FileEncryption {
    #[default]
    Auto,
    SystemdCreds,
    Off,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        SecretsSettings {
            backend: SecretsBackend::Auto,
            file_fallback: true,
            encrypt_file: FileEncryption::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretsBackend {
    Auto,
    Keyring,
    File,
}

impl SecretsSettings {
    /// The store configuration for these settings, with files in `state_dir`. A non-default
    /// `FLOTILLA_HOME` gets a keyring service of its own, so that separate homes on one desktop
    /// never share secrets.
    pub fn store_config(&self, state_dir: &Path) -> flotilla_secrets::StoreConfig {
        let mut c = flotilla_secrets::StoreConfig::new(state_dir);
        c.backend = match self.backend {
            SecretsBackend::Auto => flotilla_secrets::Backend::Auto,
            SecretsBackend::Keyring => flotilla_secrets::Backend::Keyring,
            SecretsBackend::File => flotilla_secrets::Backend::File,
        };
        c.allow_file_fallback = self.file_fallback;
        c.file_encryption = match self.encrypt_file {
            FileEncryption::Auto => flotilla_secrets::FileEncryption::Auto,
            FileEncryption::SystemdCreds => flotilla_secrets::FileEncryption::SystemdCreds,
            FileEncryption::Off => flotilla_secrets::FileEncryption::Off,
        };
        if let Some(home) = std::env::var_os("FLOTILLA_HOME").filter(|h| !h.is_empty()) {
            c.service = format!(
                "{}:{}",
                flotilla_secrets::DEFAULT_SERVICE,
                Path::new(&home).display()
            );
        }
        c
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// 1-based line, where it can be told.
    pub line: Option<usize>,
    /// The setting, as written (`policy.active_cpus`), where it can be told.
    pub field: Option<String>,
    pub message: String,
}

/// Why a config file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.path.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
            if let Some(field) = &p.field {
                write!(f, "{field}: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates `path`; a missing file gives the defaults.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: None,
                field: None,
                message: format!("cannot read it: {e}"),
            }],
        }),
    }
}

/// Parses and validates config text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let config: FileConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of_offset(text, s.start));
        let field = line.and_then(|l| key_at_line(text, l));
        let message = line
            .zip(field.as_deref())
            .and_then(|(l, f)| out_of_range(e.message().trim(), text, l, f))
            .unwrap_or_else(|| plain(e.message().trim()));
        ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line,
                field,
                message,
            }],
        }
    })?;
    let mut backup = Vec::new();
    if let Some(every) = &config.backup.every
        && parse_every(every).is_none()
    {
        backup.push(Problem {
            line: line_of_key(text, "backup", "every"),
            field: Some("backup.every".into()),
            message: format!(
                "{every:?} is not a period: write a number and a unit, such as \"30m\", \"12h\" \
                 or \"1d\""
            ),
        });
    }
    if config.backup.keep == 0 {
        backup.push(Problem {
            line: line_of_key(text, "backup", "keep"),
            field: Some("backup.keep".into()),
            message: "keep at least 1 backup".into(),
        });
    }
    if !backup.is_empty() {
        return Err(ConfigError {
            path: path.to_path_buf(),
            problems: backup,
        });
    }
    if let Err(errors) = config.policy.validate() {
        return Err(ConfigError {
            path: path.to_path_buf(),
            problems: errors
                .into_iter()
                .map(|e| {
                    let key = e
                        .field
                        .split(['[', '.'])
                        .next()
                        .unwrap_or(&e.field)
                        .to_string();
                    Problem {
                        line: line_of_key(text, "policy", &key),
                        field: Some(format!("policy.{}", e.field)),
                        message: e.message,
                    }
                })
                .collect(),
        });
    }
    Ok(config)
}

/// The `[policy]` table of a config text (empty when it has none), as TOML text: what the
/// head sends agents as the fleet's defaults.
pub fn policy_section(text: &str) -> Result<String, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    match table.get("policy") {
        Some(toml::Value::Table(policy)) => {
            let mut doc = toml::Table::new();
            doc.insert("policy".into(), toml::Value::Table(policy.clone()));
            toml::to_string(&doc).map_err(|e| e.to_string())
        }
        Some(_) => Err("`policy` must be a table".into()),
        None => Ok(String::new()),
    }
}

/// `text` (a `flotilla.toml`) with `[policy]` changed to `wanted`, everything else (other
/// sections, comments, key order) untouched: `wanted` and `now` are JSON objects keyed as
/// [`flotilla_policy::Settings::KEYS`]. A key whose wanted value is null is removed (the fleet's
/// value or the default applies); a key whose wanted value is what is in force (`now`) is left
/// alone, so a machine pins only what its owner changed; a changed value keeps the key's
/// comment. The result is not checked: [`parse`] does that.
pub fn edit_policy(
    text: &str,
    wanted: &serde_json::Value,
    now: &serde_json::Value,
) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("flotilla.toml: {e}"))?;
    if !doc.contains_key("policy") {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        doc.insert("policy", toml_edit::Item::Table(t));
    }
    let policy = doc["policy"]
        .as_table_like_mut()
        .ok_or("flotilla.toml: `policy` is not a table")?;
    for (key, kind) in flotilla_policy::Settings::KEYS {
        let value = &wanted[key];
        if value.is_null() {
            policy.remove(key);
            continue;
        }
        if same(value, &now[key]) {
            continue;
        }
        let new = policy_item(kind, value);
        match policy.get_mut(key) {
            // The same key, a new value: its comment and spacing stay.
            Some(toml_edit::Item::Value(old)) if new.is_value() => {
                let decor = old.decor().clone();
                let mut v = new.into_value().expect("checked");
                *v.decor_mut() = decor;
                *old = v;
            }
            _ => {
                policy.insert(key, new);
            }
        }
    }
    Ok(doc.to_string())
}

/// Numbers compared as numbers (the settings' integers against a form's floats).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// One `[policy]` value as TOML. A whole number is written as one; anything else as it is,
/// for the validator to refuse with the field's name.
fn policy_item(kind: flotilla_policy::KeyKind, v: &serde_json::Value) -> toml_edit::Item {
    use flotilla_policy::KeyKind;
    use toml_edit::value;
    let strings = |v: &serde_json::Value| -> toml_edit::Array {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap_or_default().to_string())
            .collect()
    };
    match kind {
        KeyKind::Whole => match v.as_f64() {
            Some(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => value(n as i64),
            Some(n) => value(n),
            None => value(v.to_string()),
        },
        KeyKind::Fraction => value(v.as_f64().unwrap_or(f64::NAN)),
        KeyKind::Text => value(v.as_str().unwrap_or_default()),
        KeyKind::Flag => match v.as_bool() {
            Some(b) => value(b),
            None => value(v.to_string()),
        },
        KeyKind::List => value(strings(v)),
        KeyKind::Schedule => {
            let mut days = toml_edit::Table::new();
            for (day, windows) in v.as_object().into_iter().flatten() {
                days.insert(day, value(strings(windows)));
            }
            toml_edit::Item::Table(days)
        }
    }
}

/// The politeness settings from the fleet's `[policy]` defaults with this machine's own
/// `flotilla.toml` keys on top (each key the machine sets wins; tables such as `schedule` are
/// replaced whole).
pub fn merge_policy(fleet: &str, local: &str) -> Result<flotilla_policy::Settings, String> {
    let policy_of = |text: &str, what: &str| -> Result<toml::Table, String> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| format!("{what}: {}", e.message()))?;
        match table.get("policy") {
            Some(toml::Value::Table(p)) => Ok(p.clone()),
            Some(_) => Err(format!("{what}: `policy` must be a table")),
            None => Ok(toml::Table::new()),
        }
    };
    let mut merged = policy_of(fleet, "the fleet's defaults")?;
    merged.extend(policy_of(local, "flotilla.toml")?);
    let mut doc = toml::Table::new();
    doc.insert("policy".into(), toml::Value::Table(merged));
    let text = toml::to_string(&doc).map_err(|e| e.to_string())?;
    parse(&text, Path::new("(fleet defaults + flotilla.toml)"))
        .map(|c| c.policy)
        .map_err(|e| e.to_string())
}

/// A number that does not fit its setting's type (too large, negative, or a fraction where a
/// whole number is needed), in words with the range the setting allows: the setting's own range
/// when it has one (found by validating the nearest value the type holds), else the type's.
/// `None` for any other message.
fn out_of_range(message: &str, text: &str, line: usize, field: &str) -> Option<String> {
    // Serde's words: "invalid value: integer `N`, expected u32", "invalid type: integer `N` as
    // i128, expected u64", "invalid type: floating point `1.5`, expected u32".
    let (_, rest) = message.split_once('`')?;
    let (number, rest) = rest.split_once('`')?;
    let max: u64 = match rest.rsplit_once("expected ")?.1 {
        "u8" => u8::MAX.into(),
        "u16" => u16::MAX.into(),
        "u32" => u32::MAX.into(),
        "u64" => u64::MAX,
        _ => return None,
    };
    if message.contains("floating point") {
        return Some(format!(
            "{number} is not a whole number: this setting takes a whole number, like 2"
        ));
    }
    if !message.contains("integer") || !is_digits(number) {
        return None;
    }
    let negative = number.starts_with('-');
    let nearest = if negative { 0 } else { max };
    // The setting's own range, from its validation of the nearest value its type holds.
    let own = with_value_at(text, line, &nearest.to_string())
        .and_then(|t| parse(&t, Path::new("")).err())
        .and_then(|e| {
            e.problems
                .into_iter()
                .find(|p| p.field.as_deref() == Some(field))
        })
        .map(|p| match p.message.rsplit_once(", not ") {
            Some((rule, _)) => rule.to_string(),
            None => p.message,
        });
    Some(match (negative, own) {
        (true, Some(rule)) => format!("{number} is negative: {rule}"),
        (true, None) => {
            format!("{number} is negative: this setting takes a whole number, 0 or more")
        }
        (false, Some(rule)) => format!("{number} is too large: {rule}"),
        (false, None) => format!("{number} is too large: the largest allowed is {max}"),
    })
}

fn is_digits(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'_')
}

/// `text` with the value of the key on 1-based `line` replaced by `value`.
fn with_value_at(text: &str, line: usize, value: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut done = false;
    for (i, raw) in text.lines().enumerate() {
        if i + 1 == line {
            let (key, _) = raw.split_once('=')?;
            out.push_str(&format!("{key}= {value}"));
            done = true;
        } else {
            out.push_str(raw);
        }
        out.push('\n');
    }
    done.then_some(out)
}

/// Serde's type names, in words.
fn plain(message: &str) -> String {
    message
        .replace("expected u32", "expected a whole number, 0 or more")
        .replace("expected u64", "expected a whole number, 0 or more")
        .replace("expected u8", "expected a whole number from 0 to 255")
        .replace("expected f64", "expected a number")
}

/// The full name (`policy.active_cpus`) of the key set on 1-based `line`.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(header) = l.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().to_string();
        } else if i + 1 == line {
            let (lhs, _) = l.split_once('=')?;
            let key = lhs.trim().trim_matches('"');
            return Some(if current.is_empty() {
                key.to_string()
            } else {
                format!("{current}.{key}")
            });
        }
        if i + 1 == line {
            return None;
        }
    }
    None
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `key` is set inside `[table]` (or as `table.key` / in `[table.key]`).
fn line_of_key(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().to_string();
            if current == format!("{table}.{key}") {
                return Some(i + 1);
            }
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().trim_matches('"');
        let full = if current.is_empty() {
            lhs.to_string()
        } else {
            format!("{current}.{lhs}")
        };
        if full == format!("{table}.{key}") || full.starts_with(&format!("{table}.{key}.")) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("/etc/flotilla.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_machines_own_keys_win_over_the_fleets() {
        let fleet = policy_section(
            "[policy]\nactive_cpus = 1\nkeep_cpus_for_owner = 1\n[policy.schedule]\nmonday = [\"18:00-08:00\"]\n[secrets]\nbackend = \"file\"\n",
        )
        .unwrap();
        assert!(!fleet.contains("secrets"), "{fleet}");
        let merged = merge_policy(&fleet, "[policy]\nactive_cpus = 3\n").unwrap();
        assert_eq!(merged.active_cpus, 3);
        assert_eq!(merged.keep_cpus_for_owner, 1);
        assert!(merged.schedule.is_some());
        let defaults = merge_policy("", "").unwrap();
        assert_eq!(defaults, flotilla_policy::Settings::default());
        assert_eq!(
            policy_section("[secrets]\nbackend = \"auto\"\n").unwrap(),
            ""
        );
        let bad = merge_policy("[policy]\nactive_cpus = -1\n", "").unwrap_err();
        assert!(bad.contains("active_cpus"), "{bad}");
    }

    #[test]
    fn an_empty_or_missing_file_is_all_defaults() {
        assert_eq!(parse("", Path::new("x")).unwrap(), FileConfig::default());
        assert_eq!(
            load(Path::new("/nonexistent/flotilla.toml")).unwrap(),
            FileConfig::default()
        );
    }

    #[test]
    fn settings_are_read() {
        let c = parse(
            "[policy]\nactive_cpus = 3\nexclusive_apps = [\"zoom\"]\n\n[policy.schedule]\nmon = [\"18:00-08:00\"]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.policy.active_cpus, 3);
        assert_eq!(c.policy.exclusive_apps, ["zoom"]);
    }

    #[test]
    fn a_negative_cpu_count_names_file_line_and_what_is_accepted() {
        let e = err("# mine\n[policy]\nactive_cpus = -1\n");
        assert!(
            e.starts_with("/etc/flotilla.toml:3: policy.active_cpus: "),
            "{e}"
        );
        assert!(
            e.contains("-1 is negative: this setting takes a whole number, 0 or more"),
            "{e}"
        );
    }

    #[test]
    fn every_number_out_of_its_range_says_the_range_in_words() {
        // (setting = value, what the message must say); the type's own names never show.
        let cases = [
            (
                "active_cpus = 4294967296",
                "4294967296 is too large: the largest allowed is 4294967295",
            ),
            (
                "active_cpus = 99999999999999999999",
                "99999999999999999999 is too large: the largest allowed is 4294967295",
            ),
            (
                "battery_cpus = -3",
                "-3 is negative: this setting takes a whole number, 0 or more",
            ),
            ("keep_cpus_for_owner = 1.5", "1.5 is not a whole number"),
            (
                "ramp_up_after_secs = 18446744073709551616",
                "18446744073709551616 is too large: must be at most 86400 seconds",
            ),
            (
                "owner_load_trigger_secs = 18446744073709551616",
                "is too large: must be from 0 to 3600 seconds",
            ),
            (
                "active_after_input_secs = -1",
                "-1 is negative: must be from 1 to 86400 seconds",
            ),
            (
                "pause_below_battery_percent = 300",
                "300 is too large: must be from 0 (never) to 100",
            ),
            ("pause_below_battery_percent = -1", "-1 is negative"),
            ("owner_load_release_secs = 2.5", "2.5 is not a whole number"),
        ];
        for (line, said) in cases {
            let e = err(&format!("[policy]\n{line}\n"));
            let key = line.split(' ').next().unwrap();
            assert!(
                e.starts_with(&format!("/etc/flotilla.toml:2: policy.{key}: ")),
                "{line}: {e}"
            );
            assert!(e.contains(said), "{line}: {e}");
            for word in ["i128", "u32", "u64", "u8", "invalid"] {
                assert!(!e.contains(word), "{line}: {e}");
            }
        }
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let e = err("[policy]\nactive_cpus = 2\nactve_cpus = 3\n");
        assert!(
            e.starts_with("/etc/flotilla.toml:3: policy.actve_cpus: "),
            "{e}"
        );
        assert!(
            e.contains("actve_cpus") && e.contains("expected one of"),
            "{e}"
        );
        let e = err("[polcy]\n");
        assert!(e.contains("polcy"), "{e}");
    }

    #[test]
    fn the_backup_schedule_is_read_and_a_bad_period_named() {
        let c = parse(
            "[backup]\nevery = \"12h\"\nkeep = 3\ndir = \"/srv/b\"\n",
            Path::new("/etc/flotilla.toml"),
        )
        .unwrap();
        assert_eq!(
            c.backup.period(),
            Some(std::time::Duration::from_secs(43_200))
        );
        assert_eq!(c.backup.keep, 3);
        assert_eq!(c.backup.dir.as_deref(), Some(Path::new("/srv/b")));
        assert_eq!(FileConfig::default().backup.period(), None);
        assert_eq!(FileConfig::default().backup.keep, 7);
        let e = err("[backup]\nkeep = 2\nevery = \"daily\"\n");
        assert!(
            e.starts_with("/etc/flotilla.toml:3: backup.every: ") && e.contains("\"1d\""),
            "{e}"
        );
        let e = err("[backup]\nkeep = 0\n");
        assert!(e.starts_with("/etc/flotilla.toml:2: backup.keep: "), "{e}");
        for (text, secs) in [("30s", 30), ("30m", 1800), ("1d", 86_400), (" 2h ", 7200)] {
            assert_eq!(parse_every(text).map(|d| d.as_secs()), Some(secs), "{text}");
        }
        assert_eq!(format_every(std::time::Duration::from_secs(86_400)), "1d");
        assert_eq!(format_every(std::time::Duration::from_secs(5400)), "90m");
        for bad in ["", "0d", "d", "5", "1w", "-1h", "1.5h"] {
            assert_eq!(parse_every(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_impossible_schedule_names_its_line() {
        let e = err("[policy]\nactive_cpus = 2\n\n[policy.schedule]\nmonday = [\"25:00-08:00\"]\n");
        assert!(
            e.starts_with("/etc/flotilla.toml:5: policy.schedule.monday: "),
            "{e}"
        );
        assert!(e.contains("25:00"), "{e}");
    }

    #[test]
    fn validation_errors_carry_file_line_and_field() {
        let e = err("[policy]\nowner_load_threshold = 1.5\nexclusive_apps = [\"zoom\", \" \"]\n");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(
            lines[0].starts_with("/etc/flotilla.toml:2: policy.owner_load_threshold: "),
            "{e}"
        );
        assert!(lines[0].contains("at most 1"), "{e}");
        assert!(
            lines[1].starts_with("/etc/flotilla.toml:3: policy.exclusive_apps[1]: "),
            "{e}"
        );
    }

    #[test]
    fn secrets_settings_are_read_and_checked() {
        let c = parse(
            "[secrets]\nbackend = \"file\"\nfile_fallback = false\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.secrets.backend, SecretsBackend::File);
        assert!(!c.secrets.file_fallback);
        assert!(FileConfig::default().secrets.file_fallback);
        let e = err("[secrets]\nbackend = \"vault\"\n");
        assert!(
            e.starts_with("/etc/flotilla.toml:2: secrets.backend: "),
            "{e}"
        );
        assert!(e.contains("auto") && e.contains("keyring"), "{e}");
    }

    #[test]
    fn dotted_keys_and_subtables_are_found() {
        assert_eq!(
            line_of_key("policy.active_cpus = 2\n", "policy", "active_cpus"),
            Some(1)
        );
        assert_eq!(
            line_of_key("[policy]\n\n[policy.schedule]\n", "policy", "schedule"),
            Some(3)
        );
        assert_eq!(
            line_of_key("[other]\nactive_cpus = 1\n", "policy", "active_cpus"),
            None
        );
    }
}
