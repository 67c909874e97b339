//! Whether this process's standard error is connected to the systemd journal, so that log
//! lines can leave the timestamp to the journal and carry their priority instead.
//!
//! # Platform behavior
//!
//! - Linux: systemd sets `JOURNAL_STREAM` to the `device:inode` of the stream it connected to
//!   a service's standard output and error; standard error is the journal when its own
//!   `device:inode` is that one (a child that redirected it elsewhere inherits the variable
//!   but not the stream).
//! - Elsewhere: never.

/// Whether standard error goes to the systemd journal.
pub fn stderr_is_journal() -> bool {
    match std::env::var("JOURNAL_STREAM") {
        Ok(value) => imp(&value),
        Err(_) => false,
    }
}

/// `JOURNAL_STREAM`'s `device:inode`, as systemd writes it (decimal numbers).
pub fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

#[cfg(target_os = "linux")]
fn imp(value: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = parse_stream(value) else {
        return false;
    };
    // The descriptor's own file: fstat of fd 2 through procfs.
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| (m.dev(), m.ino()) == stream)
}

#[cfg(not(target_os = "linux"))]
fn imp(_value: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_variable_parses_as_systemd_writes_it() {
        assert_eq!(parse_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_stream("8:123456\n"), Some((8, 123456)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
        assert_eq!(parse_stream(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_stream_is_the_journal_only_when_it_is_standard_error() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/fd/2").unwrap();
        assert!(imp(&format!("{}:{}", m.dev(), m.ino())));
        assert!(!imp(&format!("{}:{}", m.dev(), m.ino().wrapping_add(1))));
        assert!(!imp("garbage"));
    }
}
