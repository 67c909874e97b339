//! The app's own settings, in `desktop.json` beside `flotilla.toml`: notifications on or off,
//! the language (the OS locale unless chosen), the price of a cloud vCPU-hour that contribution
//! is compared with, and whether this computer hosts the cluster (so that it hosts again after
//! a restart). Start at login lives with the OS (the autostart plugin) and is read from there.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub notifications: bool,
    /// `en` or `es`; `None` follows the OS.
    pub language: Option<String>,
    /// What a cloud vCPU-hour costs, in US dollars, for the contribution's equivalent.
    pub price_per_vcpu_hour: f64,
    /// This computer hosts the cluster (the head and its own worker run in the app).
    pub hosting: bool,
}

/// A typical on-demand price of one vCPU-hour, in US dollars.
pub const DEFAULT_PRICE_PER_VCPU_HOUR: f64 = 0.04;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            notifications: true,
            language: None,
            price_per_vcpu_hour: DEFAULT_PRICE_PER_VCPU_HOUR,
            hosting: false,
        }
    }
}

fn path(dirs: &flotilla_host::Dirs) -> PathBuf {
    dirs.config.join("desktop.json")
}

/// The stored settings; the defaults when there are none or they are unreadable.
pub fn load(dirs: &flotilla_host::Dirs) -> Settings {
    std::fs::read(path(dirs))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save(dirs: &flotilla_host::Dirs, s: &Settings) -> std::io::Result<()> {
    if let Some(lang) = &s.language
        && lang != "en"
        && lang != "es"
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("language {lang:?}: expected en or es"),
        ));
    }
    if !(s.price_per_vcpu_hour.is_finite() && (0.0..=100.0).contains(&s.price_per_vcpu_hour)) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "price per vCPU-hour {}: expected a number of dollars from 0 to 100, such as 0.04",
                s.price_per_vcpu_hour
            ),
        ));
    }
    std::fs::create_dir_all(&dirs.config)?;
    let tmp = path(dirs).with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path(dirs))
}

/// The language to speak: the chosen one, else the OS locale's when it is Spanish.
pub fn language(s: &Settings) -> &'static str {
    match s.language.as_deref() {
        Some("es") => "es",
        Some(_) => "en",
        None => {
            let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
                .iter()
                .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
                .unwrap_or_default();
            if locale.starts_with("es") { "es" } else { "en" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_refuse_an_unknown_language() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = flotilla_host::Dirs::under(tmp.path());
        assert_eq!(load(&dirs), Settings::default());
        let s = Settings {
            notifications: false,
            language: Some("es".into()),
            price_per_vcpu_hour: 0.05,
            hosting: true,
        };
        save(&dirs, &s).unwrap();
        assert_eq!(load(&dirs), s);
        assert_eq!(language(&s), "es");
        let bad = Settings {
            language: Some("fr".into()),
            ..Settings::default()
        };
        assert!(save(&dirs, &bad).unwrap_err().to_string().contains("fr"));
        assert_eq!(load(&dirs), s, "a refused setting changes nothing");
        let bad = Settings {
            price_per_vcpu_hour: -1.0,
            ..Settings::default()
        };
        assert!(save(&dirs, &bad).unwrap_err().to_string().contains("price"));
        // A file from before these settings reads with their defaults.
        std::fs::write(
            dirs.config.join("desktop.json"),
            r#"{"notifications": false}"#,
        )
        .unwrap();
        let old = load(&dirs);
        assert_eq!(old.price_per_vcpu_hour, DEFAULT_PRICE_PER_VCPU_HOUR);
        assert!(!old.notifications && !old.hosting);
    }
}
