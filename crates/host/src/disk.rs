//! How much room the disk holding a path has left: what the head's alerts watch for the
//! registry's and the logs' disk.
//!
//! # Platform behavior
//!
//! - Unix (Linux, macOS): `statvfs`; "available" is what an unprivileged process may still
//!   write (`f_bavail`), not the blocks reserved for root.
//! - Windows: `GetDiskFreeSpaceExW`, which counts the caller's quota the same way.
//! - Elsewhere: an `Unsupported` error.

use std::path::Path;

/// The size of the file system holding a path, and what is left of it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl DiskSpace {
    /// `available / total`, from 0 to 1; `None` for a file system of size 0.
    pub fn available_fraction(&self) -> Option<f64> {
        (self.total_bytes > 0)
            .then(|| self.available_bytes.min(self.total_bytes) as f64 / self.total_bytes as f64)
    }
}

/// The space of the file system that holds `path` (which must exist).
pub fn space(path: &Path) -> std::io::Result<DiskSpace> {
    imp::space(path)
}

#[cfg(unix)]
mod imp {
    use super::DiskSpace;
    use std::path::Path;

    pub fn space(path: &Path) -> std::io::Result<DiskSpace> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the path")
        })?;
        // SAFETY: statvfs writes only into the zeroed struct we own; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let unit = st.f_frsize as u64;
        Ok(DiskSpace {
            total_bytes: (st.f_blocks as u64).saturating_mul(unit),
            available_bytes: (st.f_bavail as u64).saturating_mul(unit),
        })
    }
}

#[cfg(windows)]
mod imp {
    use super::DiskSpace;
    use std::path::Path;

    pub fn space(path: &Path) -> std::io::Result<DiskSpace> {
        use std::os::windows::ffi::OsStrExt;
        use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
        let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
        let (mut available, mut total, mut free) = (0u64, 0u64, 0u64);
        // SAFETY: the path is NUL-terminated; the three outputs are u64s we own.
        let ok =
            unsafe { GetDiskFreeSpaceExW(wide.as_ptr(), &mut available, &mut total, &mut free) };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(DiskSpace {
            total_bytes: total,
            available_bytes: available,
        })
    }
}

#[cfg(not(any(unix, windows)))]
mod imp {
    use super::DiskSpace;
    use std::path::Path;

    pub fn space(_path: &Path) -> std::io::Result<DiskSpace> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "free disk space is not read on this OS",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_of_a_directory_has_a_size_and_room_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = space(dir.path()).unwrap();
        assert!(s.total_bytes > 0, "{s:?}");
        assert!(s.available_bytes <= s.total_bytes, "{s:?}");
        let f = s.available_fraction().unwrap();
        assert!((0.0..=1.0).contains(&f), "{f}");
    }

    #[test]
    fn a_missing_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(space(&dir.path().join("not-there")).is_err());
    }

    #[test]
    fn the_fraction_of_an_empty_file_system_is_unknown() {
        let s = DiskSpace {
            total_bytes: 0,
            available_bytes: 0,
        };
        assert_eq!(s.available_fraction(), None);
    }
}
