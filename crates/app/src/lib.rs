//! What Flotilla's two front ends, the `flotilla` command and the desktop app, share: hosting
//! a cluster ([`host`]), joining one ([`join`]), this machine's worker once it joined
//! ([`worker`]) and the secret store with Flotilla's own secrets protected ([`secrets`]).
//!
//! This crate composes the head and the agent; the front ends parse, print and draw. Nothing
//! here writes to the terminal: what happens is told as [`Event`]s to a callback that each
//! front end renders its own way (the command as lines and progress bars on standard error,
//! the app as its log and its window's progress bar).

pub mod admin;
pub mod alerts;
pub mod backup;
pub mod cluster;
pub mod doctor;
pub mod driver;
pub mod host;
pub mod jobs;
pub mod join;
pub mod logs;
pub mod secrets;
pub mod service;
pub mod worker;

use std::sync::Arc;

use flotilla_ray::runtime::{Progress, ProgressFn};

/// Something a long operation (hosting, joining, running the worker) has to tell a person.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// How far provisioning the Python + Ray runtime is.
    Runtime(Progress),
    /// A wait begins that has no steps to count (a Ray node starting), described in words; it
    /// lasts until [`Event::WaitOver`].
    Waiting(String),
    /// The wait [`Event::Waiting`] announced is over (done or failed).
    WaitOver,
    /// What happens, in words.
    Info(String),
    /// Something is off, and the operation goes on.
    Warning(String),
    /// Something failed; the operation tries again or ends (it says which).
    Problem(String),
}

/// Where [`Event`]s go.
pub type Events = Arc<dyn Fn(Event) + Send + Sync>;

/// Events nobody hears.
pub fn no_events() -> Events {
    Arc::new(|_| {})
}

/// The runtime's progress, as [`Event::Runtime`] to `events`.
pub fn runtime_progress(events: &Events) -> ProgressFn {
    let events = events.clone();
    Arc::new(move |p| events(Event::Runtime(p)))
}

/// `e` and its causes, joined with ": ", each cause left out when the text so far already
/// contains it. Many errors quote their cause in their own message (and still name it as the
/// source), so the whole chain would say the same thing twice.
pub fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Cancelled on Ctrl-C, or on SIGTERM (a service manager stopping the process, a session
/// logging out).
pub fn shutdown_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        t.cancel();
    });
    token
}

/// The value of the environment variable `name` read as a `T`; `None` when it is unset, and
/// (with a warning in the log) when it does not read as one.
pub(crate) fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    let value = text.trim().parse().ok();
    if value.is_none() {
        tracing::warn!("{name}={text:?} is not usable: the default applies");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::describe;

    /// An error that quotes its cause and names it as its source too.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}\n  Copy it again", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_is_said_once() {
        let io = || std::io::Error::other("the disk is full");
        let quoted = anyhow::Error::new(Quoting(io()));
        assert_eq!(describe(&quoted), "the disk is full\n  Copy it again");
        let context = anyhow::Error::new(io()).context("cannot write the file");
        assert_eq!(
            describe(&context),
            "cannot write the file: the disk is full"
        );
        let both = anyhow::Error::new(Quoting(io())).context("cannot join");
        assert_eq!(
            describe(&both),
            "cannot join: the disk is full\n  Copy it again"
        );
    }
}
