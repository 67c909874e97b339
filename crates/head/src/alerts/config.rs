//! `[alerts]` in the head's `flotilla.toml`: the rules' settings and the targets, checked whole
//! before the head starts, each problem named by its key.

use std::time::Duration;

use serde::Deserialize;

use super::targets::Kind;

/// The rules' settings, with their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How often the rules look at the fleet (events such as a join are sent at once).
    pub check_every: Duration,
    /// A node offline longer than this fires `node_offline`; `None`: off.
    pub offline_after: Option<Duration>,
    pub job_failed: bool,
    pub join_code_used: bool,
    pub node_revoked: bool,
    /// The fleet's lendable CPUs (what connected nodes offer Ray) below this for
    /// [`Settings::lendable_for`] fires `lendable_cpus_low`; 0: off.
    pub lendable_cpus_below: f64,
    pub lendable_for: Duration,
    /// Free space on the head's state disk below this share (0 to 1) fires `head_disk_low`;
    /// 0: off.
    pub head_disk_free_below: f64,
    /// Available memory of the head's machine below this share for [`MEMORY_FOR`] fires
    /// `head_memory_low`; 0: off.
    pub head_memory_free_below: f64,
    /// One alert stops being retried to a target after this long.
    pub give_up_after: Duration,
}

/// How long the head's memory must stay short before `head_memory_low` fires: a moment's peak
/// is not an incident.
pub const MEMORY_FOR: Duration = Duration::from_secs(60);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            check_every: Duration::from_secs(15),
            offline_after: Some(Duration::from_secs(10 * 60)),
            job_failed: true,
            join_code_used: true,
            node_revoked: true,
            lendable_cpus_below: 0.0,
            lendable_for: Duration::from_secs(10 * 60),
            head_disk_free_below: 0.10,
            head_memory_free_below: 0.05,
            give_up_after: Duration::from_secs(3600),
        }
    }
}

/// One target as configured; its URL is either in the file (`url`, only for a `json`
/// receiver without a token) or in the secret store (`url_secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: String,
    pub kind: Kind,
    pub url: UrlFrom,
    /// Telegram's chat (`chat_id` of `sendMessage`).
    pub chat_id: Option<String>,
}

/// Where a target's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlFrom {
    /// Written in `flotilla.toml`.
    File(String),
    /// The secret of this name.
    Secret(String),
}

/// `[alerts]` checked: the settings and the targets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertsConfig {
    pub settings: Settings,
    pub targets: Vec<TargetSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    check_every: Option<String>,
    offline_after: Option<String>,
    job_failed: Option<bool>,
    join_code_used: Option<bool>,
    node_revoked: Option<bool>,
    lendable_cpus_below: Option<f64>,
    lendable_for: Option<String>,
    head_disk_free_below: Option<f64>,
    head_memory_free_below: Option<f64>,
    give_up_after: Option<String>,
    #[serde(default)]
    target: Vec<RawTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    kind: String,
    url: Option<String>,
    url_secret: Option<String>,
    chat_id: Option<toml::Value>,
}

impl AlertsConfig {
    /// `[alerts]` of a whole `flotilla.toml` text: `None` when it has none. An error is one
    /// line naming the key and what is accepted.
    pub fn from_file_text(text: &str) -> Result<Option<AlertsConfig>, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
        match table.get("alerts") {
            None => Ok(None),
            Some(toml::Value::Table(t)) => AlertsConfig::from_table(t.clone()).map(Some),
            Some(_) => Err("alerts: must be a table ([alerts])".into()),
        }
    }

    /// The `[alerts]` table, checked.
    pub fn from_table(table: toml::Table) -> Result<AlertsConfig, String> {
        let raw: Raw = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("alerts: {}", e.message().trim()))?;
        let d = Settings::default();
        let duration = |key: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(text) => parse_duration(&text).map_err(|e| format!("alerts.{key}: {e}")),
        };
        let share = |key: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(p) if p.is_finite() && (0.0..100.0).contains(&p) => Ok(p / 100.0),
            Some(p) => Err(format!(
                "alerts.{key}: {p} is not a percentage from 0 (off) to 99"
            )),
        };
        let check_every = duration("check_every", raw.check_every, d.check_every)?;
        if check_every < Duration::from_secs(1) {
            return Err("alerts.check_every: at least 1s".into());
        }
        let offline_after = match raw.offline_after.as_deref().map(str::trim) {
            Some("off") => None,
            other => Some(duration(
                "offline_after",
                other.map(str::to_string),
                d.offline_after.expect("on by default"),
            )?),
        };
        let lendable_cpus_below = match raw.lendable_cpus_below {
            None => d.lendable_cpus_below,
            Some(n) if n.is_finite() && n >= 0.0 => n,
            Some(n) => {
                return Err(format!(
                    "alerts.lendable_cpus_below: {n} is not a number of CPUs (0 turns it off)"
                ));
            }
        };
        let settings = Settings {
            check_every,
            offline_after,
            job_failed: raw.job_failed.unwrap_or(d.job_failed),
            join_code_used: raw.join_code_used.unwrap_or(d.join_code_used),
            node_revoked: raw.node_revoked.unwrap_or(d.node_revoked),
            lendable_cpus_below,
            lendable_for: duration("lendable_for", raw.lendable_for, d.lendable_for)?,
            head_disk_free_below: share(
                "head_disk_free_below",
                raw.head_disk_free_below,
                d.head_disk_free_below,
            )?,
            head_memory_free_below: share(
                "head_memory_free_below",
                raw.head_memory_free_below,
                d.head_memory_free_below,
            )?,
            give_up_after: duration("give_up_after", raw.give_up_after, d.give_up_after)?,
        };
        let mut targets: Vec<TargetSpec> = Vec::new();
        for (i, t) in raw.target.into_iter().enumerate() {
            let spec = target(i, t)?;
            if targets.iter().any(|o| o.name == spec.name) {
                return Err(format!(
                    "alerts.target[{i}]: another target is named {:?}; give each a name = \"...\"",
                    spec.name
                ));
            }
            targets.push(spec);
        }
        Ok(AlertsConfig { settings, targets })
    }
}

fn target(i: usize, t: RawTarget) -> Result<TargetSpec, String> {
    let at = format!("alerts.target[{i}]");
    let kind = Kind::parse(&t.kind).ok_or_else(|| {
        format!(
            "{at}.kind: {:?} is not a kind of target; use \"json\", \"slack\", \"discord\" or \
             \"telegram\"",
            t.kind
        )
    })?;
    let url = match (t.url, t.url_secret) {
        (Some(_), Some(_)) => {
            return Err(format!("{at}: give url or url_secret, not both"));
        }
        (None, None) => {
            return Err(format!(
                "{at}: no URL; store it with `flotilla secret set alerts.{}` and write \
                 url_secret = \"alerts.{}\"",
                kind.as_str(),
                kind.as_str()
            ));
        }
        (Some(url), None) => {
            if kind != Kind::Json {
                return Err(format!(
                    "{at}.url: a {} URL carries a token, so it belongs in the secret store: \
                     `flotilla secret set alerts.{}`, then url_secret = \"alerts.{}\"",
                    kind.as_str(),
                    kind.as_str(),
                    kind.as_str()
                ));
            }
            check_url(&url).map_err(|e| format!("{at}.url: {e}"))?;
            UrlFrom::File(url)
        }
        (None, Some(name)) => {
            let name = name.trim().to_string();
            if name.is_empty() {
                return Err(format!(
                    "{at}.url_secret: empty; name a secret of `flotilla secret list`"
                ));
            }
            UrlFrom::Secret(name)
        }
    };
    let chat_id = match t.chat_id {
        None => None,
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(toml::Value::Integer(n)) => Some(n.to_string()),
        Some(_) => return Err(format!("{at}.chat_id: a chat id, like \"-1001234567890\"")),
    };
    match (kind, &chat_id) {
        (Kind::Telegram, None) => {
            return Err(format!(
                "{at}: a telegram target needs chat_id = \"...\" (the chat the bot writes to)"
            ));
        }
        (k, Some(_)) if k != Kind::Telegram => {
            return Err(format!(
                "{at}.chat_id: only a telegram target takes a chat_id"
            ));
        }
        _ => {}
    }
    let name = match t.name {
        Some(n) if n.trim().is_empty() => return Err(format!("{at}.name: empty")),
        Some(n) => n.trim().to_string(),
        None => format!("{}-{}", kind.as_str(), i + 1),
    };
    Ok(TargetSpec {
        name,
        kind,
        url,
        chat_id,
    })
}

/// An `http://` or `https://` URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("not a URL ({e}); write it as https://host/path"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("only http:// and https:// URLs with a host are sent to".into());
    }
    Ok(())
}

/// `500ms`, `30s`, `10m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: write a number and a unit, like 30s, 10m or 1h"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<AlertsConfig>, String> {
        AlertsConfig::from_file_text(text)
    }

    #[test]
    fn no_section_means_no_alerts_and_an_empty_one_the_defaults() {
        assert_eq!(parse("[policy]\nactive_cpus = 2\n").unwrap(), None);
        let c = parse("[alerts]\n").unwrap().unwrap();
        assert_eq!(c.settings, Settings::default());
        assert!(c.targets.is_empty());
    }

    #[test]
    fn settings_and_targets_are_read() {
        let c = parse(
            r#"
[alerts]
check_every = "2s"
offline_after = "30s"
job_failed = false
lendable_cpus_below = 4
lendable_for = "1m"
head_disk_free_below = 5
head_memory_free_below = 0

[[alerts.target]]
name = "ops"
kind = "slack"
url_secret = "alerts.slack"

[[alerts.target]]
kind = "json"
url = "http://10.0.0.5:9000/hook"

[[alerts.target]]
kind = "telegram"
url_secret = "alerts.telegram"
chat_id = -1001234
"#,
        )
        .unwrap()
        .unwrap();
        let s = &c.settings;
        assert_eq!(s.check_every, Duration::from_secs(2));
        assert_eq!(s.offline_after, Some(Duration::from_secs(30)));
        assert!(!s.job_failed && s.join_code_used && s.node_revoked);
        assert_eq!(s.lendable_cpus_below, 4.0);
        assert_eq!(s.lendable_for, Duration::from_secs(60));
        assert!((s.head_disk_free_below - 0.05).abs() < 1e-9);
        assert_eq!(s.head_memory_free_below, 0.0);
        let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ops", "json-2", "telegram-3"]);
        assert_eq!(c.targets[0].url, UrlFrom::Secret("alerts.slack".into()));
        assert_eq!(
            c.targets[1].url,
            UrlFrom::File("http://10.0.0.5:9000/hook".into())
        );
        assert_eq!(c.targets[2].chat_id.as_deref(), Some("-1001234"));
        assert_eq!(
            parse("[alerts]\noffline_after = \"off\"\n")
                .unwrap()
                .unwrap()
                .settings
                .offline_after,
            None
        );
    }

    #[test]
    fn mistakes_are_named_with_what_to_do() {
        for (text, says) in [
            ("[alerts]\noffline_afer = \"1m\"\n", "offline_afer"),
            (
                "[alerts]\noffline_after = \"ten\"\n",
                "alerts.offline_after",
            ),
            ("[alerts]\ncheck_every = \"10ms\"\n", "at least 1s"),
            ("[alerts]\nhead_disk_free_below = 120\n", "percentage"),
            (
                "[alerts]\nlendable_cpus_below = -1\n",
                "lendable_cpus_below",
            ),
            (
                "[[alerts.target]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/x\"\n",
                "flotilla secret set alerts.slack",
            ),
            (
                "[[alerts.target]]\nkind = \"pager\"\nurl = \"http://a\"\n",
                "kind of target",
            ),
            ("[[alerts.target]]\nkind = \"json\"\n", "url_secret"),
            (
                "[[alerts.target]]\nkind = \"json\"\nurl = \"ftp://a/b\"\n",
                "http://",
            ),
            (
                "[[alerts.target]]\nkind = \"telegram\"\nurl_secret = \"t\"\n",
                "chat_id",
            ),
            (
                "[[alerts.target]]\nkind = \"json\"\nurl = \"http://a\"\nchat_id = \"1\"\n",
                "only a telegram",
            ),
            (
                "[[alerts.target]]\nname = \"a\"\nkind = \"json\"\nurl = \"http://a\"\n\
                 [[alerts.target]]\nname = \"a\"\nkind = \"json\"\nurl = \"http://b\"\n",
                "another target",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration(" 2h ").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
