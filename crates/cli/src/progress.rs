//! What a long command (`up`, `join`, `worker`) tells on standard error: the
//! [`flotilla_app::Event`]s of hosting, joining and the worker, as lines, a progress bar while
//! the runtime is provisioned and a spinner while a Ray node starts.

use std::sync::{Arc, Mutex};

use flotilla_app::{Event, Events};
use flotilla_ray::runtime::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// The terminal's side of the events: clones share the bars.
#[derive(Debug, Clone, Default)]
pub struct Terminal {
    state: Arc<Mutex<Bars>>,
}

#[derive(Debug, Default)]
struct Bars {
    /// The runtime's provisioning.
    runtime: Option<ProgressBar>,
    /// A wait with no steps to count.
    waiting: Option<ProgressBar>,
}

impl Terminal {
    pub fn new() -> Terminal {
        Terminal::default()
    }

    /// Where the events go: drawn here.
    pub fn events(&self) -> Events {
        let me = self.clone();
        Arc::new(move |e| me.show(e))
    }

    /// Removes any bar still drawn (an operation that failed halfway).
    pub fn clear(&self) {
        let mut bars = self.lock();
        for pb in [bars.runtime.take(), bars.waiting.take()]
            .into_iter()
            .flatten()
        {
            pb.finish_and_clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bars> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn show(&self, event: Event) {
        let mut bars = self.lock();
        let line = match event {
            Event::Runtime(p) => {
                runtime(&mut bars.runtime, p);
                return;
            }
            Event::Waiting(message) => {
                // Printed as a line first, so that a log (not a terminal) says what the wait
                // is.
                eprintln!("{message}");
                bars.waiting = Some(spinner(&message));
                return;
            }
            Event::WaitOver => {
                if let Some(pb) = bars.waiting.take() {
                    pb.finish_and_clear();
                }
                return;
            }
            Event::Info(text) => text,
            Event::Warning(text) => format!("warning: {text}"),
            Event::Problem(text) => format!("error: {text}"),
        };
        match bars.runtime.as_ref().or(bars.waiting.as_ref()) {
            Some(pb) => pb.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

fn runtime(bar: &mut Option<ProgressBar>, event: Progress) {
    let handle = bar.get_or_insert_with(|| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(spinner_style());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    });
    match event {
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
        Progress::Done { .. } => {
            handle.finish_and_clear();
            *bar = None;
        }
    }
}

/// A spinner with `message` and the time spent.
fn spinner(message: &str) -> ProgressBar {
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

/// A [`ProgressFn`](flotilla_ray::runtime::ProgressFn) that draws the runtime's provisioning,
/// and the terminal to clear once it returns.
pub fn bar() -> (flotilla_ray::runtime::ProgressFn, Terminal) {
    let terminal = Terminal::new();
    (flotilla_app::runtime_progress(&terminal.events()), terminal)
}
