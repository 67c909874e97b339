//! Handing freed heap memory back to the operating system.
//!
//! The head and the agent run for weeks with a live heap of about two megabytes, yet their
//! resident memory crept up by about 1% every ten minutes, partly because the allocator kept the
//! pages that freed fragments sat on, spread over one arena per busy thread.
//! [`limit_arenas`] keeps the arenas few, and [`keep_releasing`] gives the free pages back once a
//! minute ([`RELEASE_EVERY`]).
//!
//! # Platform behavior
//!
//! - Linux with glibc: `mallopt(M_ARENA_MAX, 2)` and `malloc_trim(0)`, which returns every whole
//!   free page, not only those at the top of the heap.
//! - macOS: `malloc_zone_pressure_relief(NULL, 0)`, which asks every malloc zone to return what
//!   it can; the arenas are left alone.
//! - Windows: `HeapCompact` on the process heap, which the Rust allocator uses.
//! - Elsewhere (musl and others): nothing.

use std::time::Duration;

/// How often [`keep_releasing`] hands free pages back.
pub const RELEASE_EVERY: Duration = Duration::from_secs(60);

/// Caps the number of allocator arenas, so that memory freed by one thread is reused by the
/// next instead of sitting in an arena of its own. Call it first thing in `main`, before any
/// thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; it has no memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the heap's free pages to the operating system now.
pub fn release_free() {
    imp::release_free();
}

/// Calls [`release_free`] every [`RELEASE_EVERY`] until `stop` completes.
pub async fn keep_releasing(stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(RELEASE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing has been freed yet.
    tick.tick().await;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => release_free(),
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub fn release_free() {
        // SAFETY: malloc_trim takes the allocator's own locks and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(target_os = "macos")]
mod imp {
    unsafe extern "C" {
        /// `<malloc/malloc.h>`: a null zone means every zone; a goal of 0 means all it can.
        fn malloc_zone_pressure_relief(zone: *mut std::ffi::c_void, goal: usize) -> usize;
    }

    pub fn release_free() {
        // SAFETY: a null zone is documented to mean every registered zone.
        unsafe {
            malloc_zone_pressure_relief(std::ptr::null_mut(), 0);
        }
    }
}

#[cfg(windows)]
mod imp {
    use windows_sys::Win32::System::Memory::{GetProcessHeap, HeapCompact};

    pub fn release_free() {
        // SAFETY: the process heap handle is valid for the life of the process; HeapCompact
        // takes the heap's lock itself (flags 0 = serialized).
        unsafe {
            HeapCompact(GetProcessHeap(), 0);
        }
    }
}

#[cfg(not(any(
    all(target_os = "linux", target_env = "gnu"),
    target_os = "macos",
    windows
)))]
mod imp {
    pub fn release_free() {}
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn anonymous_kib() -> u64 {
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Anonymous:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[tokio::test]
    async fn the_release_loop_ends_when_told() {
        let stop = stop_soon();
        tokio::time::timeout(std::time::Duration::from_secs(5), keep_releasing(stop))
            .await
            .expect("keep_releasing returns once its stop future completes");
    }

    /// A stop that completes a moment after the loop starts.
    async fn stop_soon() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    #[test]
    fn freed_fragments_go_back_to_the_system() {
        // 64 MB in blocks small enough to come from the heap rather than mmap, each touched;
        // then every block but one in 64 is freed, which leaves no free space at the top of the
        // heap for an ordinary trim to return.
        let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![(i % 251) as u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| (i % 64 == 63).then_some(b))
            .collect();
        let before = anonymous_kib();
        release_free();
        let after = anonymous_kib();
        assert_eq!(kept.len(), 256);
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "at least half of the 64 MB freed goes back: {before} kB -> {after} kB"
        );
    }
}
