//! The operating-system edge of Flotilla.
//!
//! This crate owns everything that differs between Linux, macOS and Windows: where Flotilla keeps
//! its files ([`dirs`]), how it starts a process tree that cannot outlive the process that
//! started it ([`process`]), what it senses of the machine ([`sensors`]), how it holds a tree
//! back ([`throttle`]), how it hears the owner's input as it happens ([`input`]), how its
//! processes talk on one machine ([`ipc`]) and how it hears the machine go to sleep and wake
//! ([`power`]). It knows nothing
//! about Ray, the policy or the control plane: callers hand it a program and arguments.
//!
//! Each capability is one facade type whose behaviour comes from a per-OS module (`linux`,
//! `macos`, `windows`, `unsupported`), chosen at compile time, so that callers never write
//! `cfg` themselves.

/// Declares `mod imp` from the file of this OS beside the calling facade (`linux.rs`,
/// `macos.rs`, `windows.rs`, else `unsupported.rs`): every per-OS capability is one facade
/// over one such module.
#[macro_export]
macro_rules! os_module {
    () => {
        #[cfg(target_os = "linux")]
        #[path = "linux.rs"]
        mod imp;
        #[cfg(target_os = "macos")]
        #[path = "macos.rs"]
        mod imp;
        #[cfg(windows)]
        #[path = "windows.rs"]
        mod imp;
        #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
        #[path = "unsupported.rs"]
        mod imp;
    };
}

pub mod addr;
pub mod clock;
pub mod dirs;
pub mod disk;
pub mod input;
pub mod ipc;
pub mod journal;
pub mod memory;
pub mod power;
pub mod process;
pub mod sensors;
pub mod throttle;
#[cfg(target_os = "linux")]
mod x11;

#[cfg(all(test, windows))]
mod windows_tests;

pub use dirs::Dirs;
pub use process::{ProcessTree, TreeSpec};

/// This machine's host name, as a node name: the first label only, or `"node"` if the OS does
/// not say.
pub fn hostname() -> String {
    let raw = raw_hostname().unwrap_or_default();
    let first = raw.split('.').next().unwrap_or("").trim();
    let clean: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "node".into()
    } else {
        clean
    }
}

#[cfg(unix)]
fn raw_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at most that many
    // bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(windows)]
fn raw_hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

#[cfg(not(any(unix, windows)))]
fn raw_hostname() -> Option<String> {
    None
}

/// The major version of macOS (15 for Sequoia, 26 for Tahoe), or `None` on another OS or when
/// it cannot be read. Some of macOS's rules depend on it (Local Network privacy, from 15).
pub fn macos_major() -> Option<u32> {
    macos_product_version()?.split('.').next()?.parse().ok()
}

#[cfg(target_os = "macos")]
fn macos_product_version() -> Option<String> {
    let mut buf = [0u8; 64];
    let mut len = buf.len();
    // SAFETY: the name is a C string; `buf` is writable for `len` bytes and `len` says so.
    let rc = unsafe {
        libc::sysctlbyname(
            c"kern.osproductversion".as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let text = &buf[..len.min(buf.len())];
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    Some(String::from_utf8_lossy(&text[..end]).into_owned())
}

#[cfg(not(target_os = "macos"))]
fn macos_product_version() -> Option<String> {
    None
}
