//! The Ray and Python versions Flotilla runs, pinned in one place.

use std::fmt;

/// The Ray version a new cluster runs.
pub const DEFAULT_RAY_VERSION: &str = "2.60.0";
/// The Python minor version a new cluster runs. Ray requires the same minor on every node.
pub const DEFAULT_PYTHON_VERSION: &str = "3.11";
/// Packages installed into every runtime beside Ray, so that every node can run the same jobs.
/// `pip` and `uv` are what Ray's `runtime_env` runs to install a job's own dependencies
/// (`{"pip": [...]}` runs `python -m pip`, `{"uv": [...]}` runs `python -m uv`, each in a
/// virtualenv cloned from the runtime); `virtualenv` comes with Ray.
pub const EXTRA_PACKAGES: &[&str] = &["numpy", "pip", "uv"];

/// The environment variable that sets how closely a Ray process's Python must match the
/// cluster's: `patch` (Ray's default) or `minor`.
pub const MATCH_LEVEL_VAR: &str = "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL";

/// The match level for every Ray process Flotilla starts: Ray's own `minor`, so that a machine
/// that can only offer another patch of the cluster's Python still joins (Ray logs a warning).
/// A value set in Flotilla's own environment wins.
pub fn match_level() -> String {
    std::env::var(MATCH_LEVEL_VAR)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "minor".into())
}

/// `3.11` of `3.11.7` (or of `3.11`).
pub fn minor_of(python: &str) -> String {
    python.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// A (Ray version, Python version) pair: one runtime on disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RuntimeSpec {
    pub ray: String,
    pub python: String,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            ray: DEFAULT_RAY_VERSION.into(),
            python: DEFAULT_PYTHON_VERSION.into(),
        }
    }
}

impl RuntimeSpec {
    /// Checks that both versions look like versions, so they are safe in paths and commands.
    pub fn validate(&self) -> crate::Result<()> {
        let ok = |v: &str, parts: std::ops::RangeInclusive<usize>| {
            let n = v.split('.').count();
            parts.contains(&n)
                && v.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        if !ok(&self.ray, 2..=3) {
            return Err(crate::Error::InvalidVersion {
                what: "Ray",
                value: self.ray.clone(),
                example: DEFAULT_RAY_VERSION,
            });
        }
        if !ok(&self.python, 2..=3) {
            return Err(crate::Error::InvalidVersion {
                what: "Python",
                value: self.python.clone(),
                example: DEFAULT_PYTHON_VERSION,
            });
        }
        Ok(())
    }

    /// The directory name of this runtime, e.g. `ray-2.60.0-py3.11`.
    pub fn dir_name(&self) -> String {
        format!("ray-{}-py{}", self.ray, self.python)
    }

    /// Parses a directory name made by [`dir_name`](Self::dir_name).
    pub fn from_dir_name(name: &str) -> Option<RuntimeSpec> {
        let rest = name.strip_prefix("ray-")?;
        let (ray, python) = rest.split_once("-py")?;
        let spec = RuntimeSpec {
            ray: ray.into(),
            python: python.into(),
        };
        spec.validate().ok().map(|_| spec)
    }
}

impl fmt::Display for RuntimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ray {} on Python {}", self.ray, self.python)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_round_trip() {
        let spec = RuntimeSpec::default();
        assert_eq!(spec.dir_name(), "ray-2.60.0-py3.11");
        assert_eq!(RuntimeSpec::from_dir_name(&spec.dir_name()), Some(spec));
        assert_eq!(
            RuntimeSpec::from_dir_name("ray-2.60.0-py3.11.partial"),
            None
        );
        assert_eq!(RuntimeSpec::from_dir_name("something-else"), None);
        let exact = RuntimeSpec {
            ray: "2.60.0".into(),
            python: "3.11.7".into(),
        };
        assert_eq!(exact.dir_name(), "ray-2.60.0-py3.11.7");
        assert_eq!(
            RuntimeSpec::from_dir_name("ray-2.60.0-py3.11.7"),
            Some(exact)
        );
    }

    #[test]
    fn minors_of_versions() {
        assert_eq!(minor_of("3.11.7"), "3.11");
        assert_eq!(minor_of("3.11"), "3.11");
        assert_eq!(minor_of("3.12.0rc1"), "3.12");
    }

    #[test]
    fn versions_that_could_escape_a_path_are_refused() {
        for bad in ["../2.60", "2", "2.60.0; rm", "", "2..0"] {
            let spec = RuntimeSpec {
                ray: bad.into(),
                python: "3.11".into(),
            };
            assert!(spec.validate().is_err(), "{bad}");
        }
        assert!(
            RuntimeSpec {
                ray: "2.60.0".into(),
                python: "3.11.7".into()
            }
            .validate()
            .is_ok()
        );
    }
}
