//! The politeness settings in the window: `[policy]` of `flotilla.toml`, shown as the agent
//! applies them (the fleet's defaults under this machine's own keys), checked by the same
//! validator that reads the file at start ([`flotilla_agent::config::parse`]), and written back
//! with every other section, comment and key left as it was.
//!
//! A field left empty removes this machine's key (the fleet's value or the default applies);
//! a field that still shows the value in force is not written, so a machine pins only what its
//! owner changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flotilla_agent::config;
use serde::{Deserialize, Serialize};

/// `[policy]` as the window edits it. Numbers are plain numbers (a wrong one, such as `-1`
/// CPUs or `1.5` seconds, reaches the validator, which names the field and what it accepts);
/// `None` is "not set here".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(default)]
pub struct PolicyView {
    pub active_after_input_secs: Option<f64>,
    pub active_cpus: Option<f64>,
    pub keep_cpus_for_owner: Option<f64>,
    pub ramp_up_after_secs: Option<f64>,
    /// `finish`, `pause_now`, `keep` or `ignore`.
    pub on_battery: Option<String>,
    pub battery_cpus: Option<f64>,
    pub pause_below_battery_percent: Option<f64>,
    pub owner_load_threshold: Option<f64>,
    pub owner_load_trigger_secs: Option<f64>,
    pub owner_load_release_secs: Option<f64>,
    pub min_free_memory_fraction: Option<f64>,
    pub max_temperature_c: Option<f64>,
    /// Weekday (`monday`..`sunday`) -> windows (`"HH:MM-HH:MM"`); `None`: any time.
    pub schedule: Option<BTreeMap<String, Vec<String>>>,
    pub exclusive_apps: Option<Vec<String>>,
    /// `hand_back` or `ignore`.
    pub on_sleep: Option<String>,
    pub keep_awake: Option<bool>,
}

/// One field the validator refused, named as in [`PolicyView`] (`active_cpus`,
/// `schedule.monday`, `exclusive_apps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// Why settings were not saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The whole message, file and lines included.
    pub message: String,
    pub problems: Vec<FieldProblem>,
}

pub fn file(dirs: &flotilla_host::Dirs) -> PathBuf {
    dirs.config.join(config::FILE_NAME)
}

fn read(path: &Path) -> Result<String, Refused> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(general(format!("cannot read {}: {e}", path.display()))),
    }
}

fn general(message: String) -> Refused {
    Refused {
        message,
        problems: vec![],
    }
}

/// The settings in force: the fleet's defaults (`fleet`, a `[policy]` document) under the
/// file's own keys.
pub fn effective(fleet: &str, path: &Path) -> Result<PolicyView, Refused> {
    let text = read(path)?;
    let settings = config::merge_policy(fleet, &text).map_err(general)?;
    let json = serde_json::to_value(settings).expect("plain data");
    serde_json::from_value(json).map_err(|e| general(e.to_string()))
}

/// `text` with the view's changes made to its `[policy]` (see the module's rules), everything
/// else untouched.
pub fn edit(text: &str, view: &PolicyView, effective: &PolicyView) -> Result<String, Refused> {
    let new = serde_json::to_value(view).expect("plain data");
    let now = serde_json::to_value(effective).expect("plain data");
    config::edit_policy(text, &new, &now).map_err(general)
}

/// The validator's problems, named as the window's fields.
fn problems(e: &config::ConfigError) -> Vec<FieldProblem> {
    e.problems
        .iter()
        .map(|p| {
            let field = p
                .field
                .as_deref()
                .map(|f| f.strip_prefix("policy.").unwrap_or(f))
                .map(|f| f.split('[').next().unwrap_or(f).to_string())
                .unwrap_or_default();
            FieldProblem {
                field,
                message: p.message.clone(),
            }
        })
        .collect()
}

/// Checks the view against the file and the fleet's defaults and, when every field is
/// accepted, writes the file (atomically); nothing is written otherwise. Returns the settings
/// now in force.
pub fn save(fleet: &str, path: &Path, view: &PolicyView) -> Result<PolicyView, Refused> {
    let text = read(path)?;
    let now = effective(fleet, path)?;
    let edited = edit(&text, view, &now)?;
    config::parse(&edited, path).map_err(|e| Refused {
        message: e.to_string(),
        problems: problems(&e),
    })?;
    // The file alone is valid; with the fleet's defaults under it, it must be too (a ramp-up
    // shorter than the fleet's idle threshold).
    config::merge_policy(fleet, &edited).map_err(general)?;
    if edited != text {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| general(format!("cannot create {}: {e}", dir.display())))?;
        }
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, &edited)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| general(format!("cannot write {}: {e}", path.display())))?;
    }
    effective(fleet, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Flotilla on my laptop\n\
        [policy]\n\
        active_cpus = 3 # while I work\n\
        \n\
        [secrets]\n\
        backend = \"auto\"\n";

    fn setup(text: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("flotilla.toml");
        if !text.is_empty() {
            std::fs::write(&path, text).unwrap();
        }
        (tmp, path)
    }

    #[test]
    fn the_view_has_every_key_of_the_policy() {
        let view = serde_json::to_value(PolicyView::default()).unwrap();
        let mut fields: Vec<&str> = view
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut keys: Vec<&str> = flotilla_policy::Settings::KEYS
            .iter()
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    #[test]
    fn the_view_shows_the_fleets_defaults_under_the_machines_keys() {
        let (_tmp, path) = setup(FILE);
        let v = effective("[policy]\nactive_cpus = 1\nbattery_cpus = 4\n", &path).unwrap();
        assert_eq!(v.active_cpus, Some(3.0));
        assert_eq!(v.battery_cpus, Some(4.0));
        assert_eq!(v.on_battery.as_deref(), Some("finish"));
        assert_eq!(v.schedule, None);
        assert_eq!(v.exclusive_apps, Some(vec![]));
        assert_eq!(v.on_sleep.as_deref(), Some("hand_back"));
        assert_eq!(v.keep_awake, Some(false));
    }

    #[test]
    fn a_change_is_written_with_the_rest_of_the_file_kept() {
        let (_tmp, path) = setup(FILE);
        let mut v = effective("", &path).unwrap();
        v.active_cpus = Some(1.0);
        v.exclusive_apps = Some(vec!["zoom".into()]);
        v.on_sleep = Some("ignore".into());
        v.keep_awake = Some(true);
        v.schedule = Some(BTreeMap::from([(
            "monday".to_string(),
            vec!["18:00-08:00".to_string()],
        )]));
        let saved = save("", &path, &v).unwrap();
        assert_eq!(saved.active_cpus, Some(1.0));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Flotilla on my laptop\n[policy]\n"),
            "{text}"
        );
        assert!(text.contains("active_cpus = 1 # while I work"), "{text}");
        assert!(text.contains("exclusive_apps = [\"zoom\"]"), "{text}");
        assert!(
            text.contains("[policy.schedule]\nmonday = [\"18:00-08:00\"]"),
            "{text}"
        );
        assert!(text.contains("[secrets]\nbackend = \"auto\""), "{text}");
        // Values left as they were are not pinned in the file.
        assert!(!text.contains("battery_cpus"), "{text}");
        // The agent's own reader agrees.
        let read = config::load(&path).unwrap().policy;
        assert_eq!(read.active_cpus, 1);
        assert_eq!(read.exclusive_apps, ["zoom"]);
        assert_eq!(read.on_sleep, flotilla_policy::OnSleep::Ignore);
        assert!(read.keep_awake);
        assert!(text.contains("keep_awake = true"), "{text}");
        // An empty field removes this machine's key.
        let mut v = saved;
        v.active_cpus = None;
        assert_eq!(save("", &path, &v).unwrap().active_cpus, Some(2.0));
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains("active_cpus")
        );
    }

    #[test]
    fn a_wrong_value_is_refused_by_field_and_nothing_is_written() {
        let (_tmp, path) = setup(FILE);
        let before = std::fs::read(&path).unwrap();
        let mut v = effective("", &path).unwrap();
        v.active_cpus = Some(-1.0);
        let e = save("", &path, &v).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e:?}");
        assert_eq!(e.problems[0].field, "active_cpus");
        assert!(e.problems[0].message.contains("whole number"), "{e:?}");
        let mut v = effective("", &path).unwrap();
        v.owner_load_threshold = Some(1.5);
        v.exclusive_apps = Some(vec!["zoom".into(), " ".into()]);
        v.schedule = Some(BTreeMap::from([(
            "monday".to_string(),
            vec!["25:00-08:00".to_string()],
        )]));
        let e = save("", &path, &v).unwrap_err();
        let fields: Vec<&str> = e.problems.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"schedule.monday"), "{e:?}");
        let mut v = effective("", &path).unwrap();
        v.owner_load_threshold = Some(1.5);
        v.exclusive_apps = Some(vec!["zoom".into(), " ".into()]);
        let e = save("", &path, &v).unwrap_err();
        let fields: Vec<&str> = e.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["owner_load_threshold", "exclusive_apps"], "{e:?}");
        let mut v = effective("", &path).unwrap();
        v.on_battery = Some("sleep".into());
        let e = save("", &path, &v).unwrap_err();
        assert_eq!(e.problems[0].field, "on_battery", "{e:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing was written");
    }

    #[test]
    fn a_missing_file_is_created_only_when_something_changes() {
        let (_tmp, path) = setup("");
        let v = effective("", &path).unwrap();
        save("", &path, &v).unwrap();
        assert!(!path.exists());
        let mut v = v;
        v.active_after_input_secs = Some(120.0);
        v.ramp_up_after_secs = Some(240.0);
        save("", &path, &v).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "[policy]\nactive_after_input_secs = 120\nramp_up_after_secs = 240\n"
        );
    }
}
