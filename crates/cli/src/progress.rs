//! A terminal progress bar fed by runtime-provisioning progress events.

use std::sync::Arc;

use flotilla_ray::runtime::{Progress, ProgressFn};
use indicatif::{ProgressBar, ProgressStyle};

/// A [`ProgressFn`] that draws on standard error (quietly, when it is not a terminal), and
/// clears itself when the runtime is ready.
pub fn bar() -> (ProgressFn, ProgressBar) {
    let pb = ProgressBar::new_spinner();
    pb.set_style(spinner_style());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    let handle = pb.clone();
    let f: ProgressFn = Arc::new(move |event| match event {
        Progress::Step { label, .. } => {
            handle.set_style(spinner_style());
            handle.set_length(0);
            handle.set_position(0);
            handle.set_message(label);
        }
        Progress::Bytes { done, total } => {
            if let Some(total) = total
                && handle.length() != Some(total)
            {
                handle.set_style(bytes_style());
                handle.set_length(total);
            }
            handle.set_position(done);
        }
        // Ready: the bar goes, so that what the command prints next is not drawn under it.
        Progress::Done { .. } => handle.finish_and_clear(),
    });
    (f, pb)
}

/// A spinner with `message` and the time spent, for a wait with no steps to count (a Ray node
/// starting). The message is also printed as a line first, so that a log (not a terminal)
/// says what the wait is.
pub fn spinner(message: &str) -> ProgressBar {
    eprintln!("{message}");
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    pb.set_message(message.trim_end_matches("...").to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg}").expect("valid template")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes}")
        .expect("valid template")
        .progress_chars("=> ")
}

/// A [`ProgressFn`] that hands every event to `also` as well as to the terminal's bar.
pub fn tee(also: Option<ProgressFn>) -> (ProgressFn, ProgressBar) {
    let (bar_fn, pb) = bar();
    let Some(also) = also else {
        return (bar_fn, pb);
    };
    let f: ProgressFn = Arc::new(move |event: Progress| {
        also(event.clone());
        bar_fn(event);
    });
    (f, pb)
}
