//! How far this computer is from running: the runtime's provisioning (the runtime manager's
//! own progress events, [`flotilla_ray::Progress`]) and then its node starting, for the
//! window's progress bar.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_ray::Progress;
use flotilla_ray::runtime::{ProgressFn, Step};
use serde::Serialize;
use tauri::{AppHandle, Emitter};

use crate::Desktop;

/// The step in progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ProvisionView {
    /// `check`, `repair`, `download_uv`, `create_env`, `install_ray`, `verify`, or
    /// `start_node` once the runtime is ready.
    pub step: String,
    /// The step in English, as the runtime manager words it.
    pub label: String,
    /// The runtime's Ray and Python versions.
    pub ray: String,
    pub python: String,
    /// Bytes done and expected in this step, when it counts bytes.
    pub done_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// How far the whole provisioning is, 0 to 1; `None` while it cannot be told.
    pub fraction: Option<f64>,
}

fn code(step: Step) -> &'static str {
    match step {
        Step::Check => "check",
        Step::Repair => "repair",
        Step::DownloadUv => "download_uv",
        Step::CreateEnv => "create_env",
        Step::InstallRay => "install_ray",
        Step::Verify => "verify",
    }
}

/// The view after `event`, given the one before.
pub fn next(
    prev: Option<&ProvisionView>,
    event: &Progress,
    runtime: &(String, String),
) -> ProvisionView {
    match event {
        Progress::Step { step, label } => {
            let (index, count) = step.position();
            ProvisionView {
                step: code(*step).into(),
                label: label.clone(),
                ray: runtime.0.clone(),
                python: runtime.1.clone(),
                done_bytes: None,
                total_bytes: None,
                fraction: Some(f64::from(index - 1) / f64::from(count)),
            }
        }
        Progress::Bytes { done, total } => {
            let mut v = prev.cloned().unwrap_or_else(|| ProvisionView {
                step: String::new(),
                label: String::new(),
                ray: runtime.0.clone(),
                python: runtime.1.clone(),
                done_bytes: None,
                total_bytes: None,
                fraction: None,
            });
            v.done_bytes = Some(*done);
            v.total_bytes = *total;
            let step = [
                Step::Check,
                Step::Repair,
                Step::DownloadUv,
                Step::CreateEnv,
                Step::InstallRay,
                Step::Verify,
            ]
            .into_iter()
            .find(|s| code(*s) == v.step);
            if let (Some(step), Some(total)) = (step, total.filter(|t| *t > 0)) {
                let (index, count) = step.position();
                let within = (*done as f64 / total as f64).clamp(0.0, 1.0);
                v.fraction = Some((f64::from(index - 1) + within) / f64::from(count));
            }
            v
        }
        Progress::Done { label } => ProvisionView {
            step: "start_node".into(),
            label: label.clone(),
            ray: runtime.0.clone(),
            python: runtime.1.clone(),
            done_bytes: None,
            total_bytes: None,
            fraction: Some(1.0),
        },
    }
}

/// How often byte counts reach the window (steps always do).
const EMIT_EVERY: Duration = Duration::from_millis(250);

/// A [`ProgressFn`] that keeps the app's view current and sends it to the window
/// (`flotilla://progress`).
/// `runtime`: the Ray and Python versions being provisioned.
pub fn sink(app: AppHandle, desktop: Arc<Desktop>, runtime: (String, String)) -> ProgressFn {
    let last = std::sync::Mutex::new(None::<Instant>);
    *crate::lock(&desktop.progress) = None;
    Arc::new(move |event: Progress| {
        let view = {
            let mut slot = crate::lock(&desktop.progress);
            let view = next(slot.as_ref(), &event, &runtime);
            *slot = Some(view.clone());
            view
        };
        let mut last = crate::lock(&last);
        let bytes = matches!(event, Progress::Bytes { .. });
        if !bytes || last.is_none_or(|t| t.elapsed() >= EMIT_EVERY) {
            *last = Some(Instant::now());
            let _ = app.emit("flotilla://progress", &view);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_moves_through_the_steps_and_their_bytes() {
        let rt = &("2.60.0".to_string(), "3.11".to_string());
        let v = next(
            None,
            &Progress::Step {
                step: Step::DownloadUv,
                label: "Downloading uv".into(),
            },
            rt,
        );
        assert_eq!((v.step.as_str(), v.fraction), ("download_uv", Some(0.2)));
        let v = next(
            Some(&v),
            &Progress::Bytes {
                done: 50,
                total: Some(100),
            },
            rt,
        );
        assert_eq!(v.fraction, Some(0.3));
        assert_eq!((v.done_bytes, v.total_bytes), (Some(50), Some(100)));
        let v = next(
            Some(&v),
            &Progress::Step {
                step: Step::InstallRay,
                label: "Installing Ray".into(),
            },
            rt,
        );
        assert_eq!((v.fraction, v.done_bytes), (Some(0.6), None));
        // Bytes without a total keep the step's place.
        let v = next(
            Some(&v),
            &Progress::Bytes {
                done: 7,
                total: None,
            },
            rt,
        );
        assert_eq!(v.fraction, Some(0.6));
        let v = next(
            Some(&v),
            &Progress::Done {
                label: "ready".into(),
            },
            rt,
        );
        assert_eq!((v.step.as_str(), v.fraction), ("start_node", Some(1.0)));
        assert_eq!((v.ray.as_str(), v.python.as_str()), ("2.60.0", "3.11"));
    }
}
