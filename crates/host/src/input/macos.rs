//! macOS: a listen-only `CGEventTap` at the session level, for the input events of
//! [`super::events::macos`]. The tap is a Mach port whose run-loop source is added to a run loop
//! of the watch's own thread; the window server calls back there for each event, and the
//! callback notes it and passes it on unchanged (a listen-only tap cannot change or hold input).
//!
//! A listen-only tap needs the Input Monitoring permission (macOS 10.15 and newer): without it
//! `CGEventTapCreate` returns null and there is no watch, the reason naming the permission. If
//! the system disables the tap (it was slow, or secure input), the callback enables it again.
//! `CFRunLoopStop` from the dropping thread ends the run loop.
//!
//! The bindings are declared here by hand: a handful of CoreGraphics and CoreFoundation
//! functions.

use std::ffi::c_void;
use std::ptr::null;
use std::sync::mpsc;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::thread::JoinHandle;

use super::events::macos::{Tapped, event_mask, tapped};

/// The C declarations, from `<CoreGraphics/CGEvent.h>`, `<CoreGraphics/CGEventTypes.h>` and
/// CoreFoundation's `CFMachPort.h`, `CFRunLoop.h` and `CFBase.h`.
#[allow(non_camel_case_types, non_upper_case_globals)]
mod ffi {
    use std::ffi::c_void;

    pub type CFMachPortRef = *mut c_void;
    pub type CFRunLoopRef = *mut c_void;
    pub type CFRunLoopSourceRef = *mut c_void;
    pub type CFStringRef = *const c_void;
    pub type CFAllocatorRef = *const c_void;
    pub type CGEventRef = *mut c_void;
    pub type CGEventTapProxy = *mut c_void;

    /// `CGEventTapCallBack`.
    pub type TapCallback = unsafe extern "C" fn(
        proxy: CGEventTapProxy,
        kind: u32,
        event: CGEventRef,
        user_info: *mut c_void,
    ) -> CGEventRef;

    /// `kCGSessionEventTap`: where events enter the login session.
    pub const SESSION_EVENT_TAP: u32 = 1;
    /// `kCGHeadInsertEventTap`.
    pub const HEAD_INSERT_EVENT_TAP: u32 = 0;
    /// `kCGEventTapOptionListenOnly`.
    pub const TAP_OPTION_LISTEN_ONLY: u32 = 1;

    #[link(name = "CoreGraphics", kind = "framework")]
    unsafe extern "C" {
        pub fn CGEventTapCreate(
            tap: u32,
            place: u32,
            options: u32,
            events_of_interest: u64,
            callback: TapCallback,
            user_info: *mut c_void,
        ) -> CFMachPortRef;
        pub fn CGEventTapEnable(tap: CFMachPortRef, enable: bool);
    }

    #[link(name = "CoreFoundation", kind = "framework")]
    unsafe extern "C" {
        pub static kCFRunLoopCommonModes: CFStringRef;
        pub fn CFMachPortCreateRunLoopSource(
            allocator: CFAllocatorRef,
            port: CFMachPortRef,
            order: isize,
        ) -> CFRunLoopSourceRef;
        pub fn CFMachPortInvalidate(port: CFMachPortRef);
        pub fn CFRunLoopGetCurrent() -> CFRunLoopRef;
        pub fn CFRunLoopAddSource(rl: CFRunLoopRef, source: CFRunLoopSourceRef, mode: CFStringRef);
        pub fn CFRunLoopRun();
        pub fn CFRunLoopStop(rl: CFRunLoopRef);
        pub fn CFRetain(cf: *const c_void) -> *const c_void;
        pub fn CFRelease(cf: *const c_void);
    }
}

type Note = Box<dyn FnMut() + Send>;

/// What the tap's callback reaches through `user_info`; lives on the watch's thread for as long
/// as the tap.
struct TapState {
    note: Note,
    tap: AtomicPtr<c_void>,
}

#[derive(Debug)]
pub(super) struct Watch {
    /// The thread's run loop (retained), to stop it.
    run_loop: usize,
    thread: Option<JoinHandle<()>>,
}

unsafe extern "C" fn on_event(
    _proxy: ffi::CGEventTapProxy,
    kind: u32,
    event: ffi::CGEventRef,
    user_info: *mut c_void,
) -> ffi::CGEventRef {
    // SAFETY: `user_info` is the `TapState` the thread created the tap with; it outlives the
    // tap, and only the thread's run loop, which is running this call, touches it.
    let state = unsafe { &mut *user_info.cast::<TapState>() };
    match tapped(kind) {
        Tapped::Input => (state.note)(),
        Tapped::Reenable => {
            let tap = state.tap.load(Ordering::Relaxed);
            if !tap.is_null() {
                // SAFETY: the tap is valid until the thread invalidates it after its run loop.
                unsafe { ffi::CGEventTapEnable(tap, true) };
            }
        }
        Tapped::Other => {}
    }
    event
}

impl Watch {
    pub(super) fn start(_display: Option<String>, note: Note) -> Result<(Watch, String), String> {
        let (run_loop, thread) = super::start_thread(move |started| run(note, started))?;
        Ok((
            Watch {
                run_loop,
                thread: Some(thread),
            },
            "cg-event-tap".to_owned(),
        ))
    }

    pub(super) fn stop(&mut self) {
        let run_loop = self.run_loop as ffi::CFRunLoopRef;
        // SAFETY: the run loop was retained for us; stopping a run loop from another thread is
        // allowed, and a stop before it runs makes its run return at once.
        unsafe {
            ffi::CFRunLoopStop(run_loop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // SAFETY: releases the retain taken for us, after the thread is done with the loop.
        unsafe { ffi::CFRelease(run_loop.cast_const()) };
    }
}

/// The watch's thread: create the tap, hand out the run loop (or why not), run it until
/// stopped, remove the tap.
fn run(note: Note, started: mpsc::Sender<Result<usize, String>>) {
    let mut state = Box::new(TapState {
        note,
        tap: AtomicPtr::new(std::ptr::null_mut()),
    });
    let user_info: *mut TapState = &mut *state;
    // SAFETY: `on_event` has the CGEventTapCallBack prototype, and `user_info` points at
    // `state`, which outlives the tap (invalidated and released below, before `state` drops).
    let tap = unsafe {
        ffi::CGEventTapCreate(
            ffi::SESSION_EVENT_TAP,
            ffi::HEAD_INSERT_EVENT_TAP,
            ffi::TAP_OPTION_LISTEN_ONLY,
            event_mask(),
            on_event,
            user_info.cast(),
        )
    };
    if tap.is_null() {
        let _ = started.send(Err(
            "cannot listen to input: allow Input Monitoring for Flotilla (System Settings > \
             Privacy & Security)"
                .to_owned(),
        ));
        return;
    }
    state.tap.store(tap, Ordering::Relaxed);
    // SAFETY: `tap` is a valid Mach port; the calls add its source to this thread's run loop,
    // which is retained for the watch's `stop`.
    let (source, run_loop) = unsafe {
        let source = ffi::CFMachPortCreateRunLoopSource(null(), tap, 0);
        let run_loop = ffi::CFRunLoopGetCurrent();
        ffi::CFRunLoopAddSource(run_loop, source, ffi::kCFRunLoopCommonModes);
        ffi::CFRetain(run_loop.cast_const());
        (source, run_loop)
    };
    let _ = started.send(Ok(run_loop as usize));
    // SAFETY: runs this thread's run loop until `stop` stops it; then the tap is invalidated
    // and both objects released, so the callback can no longer run when `state` drops.
    unsafe {
        ffi::CFRunLoopRun();
        ffi::CFMachPortInvalidate(tap);
        ffi::CFRelease(source.cast_const());
        ffi::CFRelease(tap.cast_const());
    }
    drop(state);
}
