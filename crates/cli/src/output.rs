//! Standard output that a closed pipe never turns into a panic or an error message.
//!
//! Every `print!` and `println!` of this crate is the crate root's, which writes through
//! [`print`] (std's panics when the write fails), and raw bytes go through [`write_all`]. When
//! the reader has gone (`flotilla nodes | head -1`, `flotilla status | head`):
//!
//! - a command that prints and exits ends at once, quietly, with status 141: on Unix the
//!   conventional death by `SIGPIPE` that every member of a pipeline gets (see
//!   `flotilla_host::process::end_quietly_on_closed_pipe`, which usually ends it even before
//!   the write returns), elsewhere `exit(141)`;
//! - a long-running command (`up`, `join`, `worker`, `demo`, `submit`, `run`) and the desktop
//!   app, which embeds this crate, keep running and drop the rest of their output: a closed pipe
//!   never stops a node or leaves a job behind.
//!
//! Any other failure to write (a full disk) is said once on standard error; a printing command
//! then exits with status 1.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a closed standard output ends the process; set by `main` for printing commands.
static END_WHEN_CLOSED: AtomicBool = AtomicBool::new(false);
/// Standard output failed once: nothing more is written to it.
static GONE: AtomicBool = AtomicBool::new(false);

/// The status a command ends with when its standard output was closed early.
pub const CLOSED_STATUS: i32 = 141;

/// Makes a closed standard output end the process quietly (for commands that print and exit).
pub fn end_when_closed() {
    END_WHEN_CLOSED.store(true, Ordering::SeqCst);
    flotilla_host::process::end_quietly_on_closed_pipe();
}

/// Writes formatted text to standard output (what the crate's `print!` and `println!` call).
pub fn print(args: fmt::Arguments<'_>) {
    if GONE.load(Ordering::SeqCst) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        drop(out);
        failed(e);
    }
}

/// Writes bytes to standard output and flushes them.
pub fn write_all(bytes: &[u8]) {
    if GONE.load(Ordering::SeqCst) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        drop(out);
        failed(e);
    }
}

/// Whether `e` says the reader of the pipe (or the console) has gone.
fn is_closed(e: &io::Error) -> bool {
    // ERROR_NO_DATA (232): Windows' "the pipe is being closed", for a reader that went.
    e.kind() == io::ErrorKind::BrokenPipe || (cfg!(windows) && e.raw_os_error() == Some(232))
}

fn failed(e: io::Error) {
    let closed = is_closed(&e);
    if END_WHEN_CLOSED.load(Ordering::SeqCst) {
        if closed {
            end_quietly();
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
    if !GONE.swap(true, Ordering::SeqCst) && !closed {
        eprintln!("warning: cannot write to standard output ({e}); the rest of it is dropped");
    }
}

fn end_quietly() -> ! {
    #[cfg(unix)]
    // SAFETY: restoring SIGPIPE's default action and raising it have no memory-safety
    // preconditions; the process ends as a pipeline member whose reader left.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(CLOSED_STATUS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_reader_is_told_from_other_failures() {
        assert!(is_closed(&io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(!is_closed(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_closed(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
    }
}
