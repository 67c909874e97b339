//! macOS: sleep and wake through IOKit's root power domain (`IORegisterForSystemPower`), and
//! keeping the machine awake through a power assertion.
//!
//! The watch runs a thread of its own: it registers for the system's power messages, adds the
//! notification port's source to its run loop and runs that loop; IOKit calls back on it.
//! [`iokit_action`] decides what each message does. The idle-sleep question
//! (`kIOMessageCanSystemSleep`) is answered at once with `IOAllowPowerChange`.
//! `kIOMessageSystemWillSleep` is reported as [`PowerEvent::WillSleep`] and its acknowledgement
//! is kept: macOS waits for it (up to 30 s) before sleeping, and [`Watch::release`] gives it.
//! `kIOMessageSystemHasPoweredOn` is [`PowerEvent::Woke`]. Every sleep waits for a release, so
//! [`Watch::holds_sleep`] is true while the thread runs.
//!
//! [`Awake`] is an `IOPMAssertion` of type `PreventUserIdleSystemSleep`, named with
//! `config.why` (`pmset -g assertions` lists it under the program's name).
//!
//! The bindings are declared here by hand: a handful of IOKit and CoreFoundation functions.

use std::ffi::c_void;
use std::ptr::{null, null_mut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{IokitAction, PowerError, PowerEvent, WatchConfig, iokit_action};

/// The C declarations, from `<IOKit/pwr_mgt/IOPMLib.h>`, `<IOKit/IOKitLib.h>` and
/// CoreFoundation's `CFRunLoop.h`, `CFString.h` and `CFBase.h`.
#[allow(non_camel_case_types, non_upper_case_globals)]
mod ffi {
    use std::ffi::c_void;

    /// A Mach port naming a kernel object (`io_object_t`, `io_connect_t`, `io_service_t`).
    pub type io_object_t = u32;
    pub type io_connect_t = u32;
    pub type io_service_t = u32;
    pub type IOReturn = i32;
    pub type IOPMAssertionID = u32;
    pub type IONotificationPortRef = *mut c_void;
    pub type CFTypeRef = *const c_void;
    pub type CFStringRef = *const c_void;
    pub type CFAllocatorRef = *const c_void;
    pub type CFRunLoopRef = *mut c_void;
    pub type CFRunLoopSourceRef = *mut c_void;

    /// `IOServiceInterestCallback`.
    pub type InterestCallback = unsafe extern "C" fn(
        refcon: *mut c_void,
        service: io_service_t,
        message_type: u32,
        message_argument: *mut c_void,
    );

    /// `kIOPMAssertionLevelOn`.
    pub const ASSERTION_LEVEL_ON: u32 = 255;
    /// `kCFStringEncodingUTF8`.
    pub const STRING_ENCODING_UTF8: u32 = 0x0800_0100;

    #[link(name = "IOKit", kind = "framework")]
    unsafe extern "C" {
        pub fn IORegisterForSystemPower(
            refcon: *mut c_void,
            the_port_ref: *mut IONotificationPortRef,
            callback: InterestCallback,
            notifier: *mut io_object_t,
        ) -> io_connect_t;
        pub fn IODeregisterForSystemPower(notifier: *mut io_object_t) -> IOReturn;
        pub fn IOAllowPowerChange(kernel_port: io_connect_t, notification_id: isize) -> IOReturn;
        pub fn IONotificationPortGetRunLoopSource(
            notify: IONotificationPortRef,
        ) -> CFRunLoopSourceRef;
        pub fn IONotificationPortDestroy(notify: IONotificationPortRef);
        pub fn IOServiceClose(connect: io_connect_t) -> IOReturn;
        pub fn IOPMAssertionCreateWithName(
            assertion_type: CFStringRef,
            assertion_level: u32,
            assertion_name: CFStringRef,
            assertion_id: *mut IOPMAssertionID,
        ) -> IOReturn;
        pub fn IOPMAssertionRelease(assertion_id: IOPMAssertionID) -> IOReturn;
    }

    #[link(name = "CoreFoundation", kind = "framework")]
    unsafe extern "C" {
        pub static kCFRunLoopDefaultMode: CFStringRef;
        pub fn CFRunLoopGetCurrent() -> CFRunLoopRef;
        pub fn CFRunLoopAddSource(rl: CFRunLoopRef, source: CFRunLoopSourceRef, mode: CFStringRef);
        pub fn CFRunLoopRemoveSource(
            rl: CFRunLoopRef,
            source: CFRunLoopSourceRef,
            mode: CFStringRef,
        );
        pub fn CFRunLoopRunInMode(
            mode: CFStringRef,
            seconds: f64,
            return_after_source_handled: u8,
        ) -> i32;
        pub fn CFRunLoopStop(rl: CFRunLoopRef);
        pub fn CFRetain(cf: CFTypeRef) -> CFTypeRef;
        pub fn CFRelease(cf: CFTypeRef);
        pub fn CFStringCreateWithBytes(
            alloc: CFAllocatorRef,
            bytes: *const u8,
            num_bytes: isize,
            encoding: u32,
            is_external_representation: u8,
        ) -> CFStringRef;
    }
}

/// How long the thread's run loop runs before it looks whether the watch is gone; a drop stops
/// it at once, this only bounds a stop that came just before the loop started.
const RUN_SLICE_SECONDS: f64 = 1.0;

/// What the watch and its thread share.
#[derive(Debug, Default)]
struct State {
    /// The root power domain's port, which acknowledgements go to (0 until registered).
    root_port: ffi::io_connect_t,
    /// The notification id of a sleep reported and not yet acknowledged.
    pending: Option<isize>,
    /// The watch is going: acknowledge every sleep at once and end the thread.
    stopping: bool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lets a sleep (or the proposal of one) proceed.
fn allow(root_port: ffi::io_connect_t, notification_id: isize) {
    // SAFETY: `root_port` is the connection `IORegisterForSystemPower` returned, still open (it
    // is closed by the thread after its run loop ended, with `stopping` set).
    let status = unsafe { ffi::IOAllowPowerChange(root_port, notification_id) };
    if status != 0 {
        tracing::warn!("IOAllowPowerChange: IOReturn {status:#x}");
    }
}

/// What IOKit's callback reaches through its `refcon`: it lives on the thread's stack while the
/// run loop, the only place the callback is called from, runs.
struct Listener {
    state: Arc<Mutex<State>>,
    events: mpsc::UnboundedSender<PowerEvent>,
}

impl Listener {
    fn on_message(&self, message_type: u32, notification_id: isize) {
        let mut state = lock(&self.state);
        match iokit_action(message_type) {
            IokitAction::AllowNow => allow(state.root_port, notification_id),
            IokitAction::Hold => {
                if state.stopping || self.events.send(PowerEvent::WillSleep).is_err() {
                    allow(state.root_port, notification_id);
                } else if let Some(earlier) = state.pending.replace(notification_id) {
                    // A sleep still held is over by now: one sleep at a time.
                    allow(state.root_port, earlier);
                }
            }
            IokitAction::Event(event) => {
                let _ = self.events.send(event);
            }
            IokitAction::Ignore => {}
        }
    }
}

/// IOKit's callback for the root power domain's messages.
///
/// # Safety
///
/// `refcon` must point to a live [`Listener`].
unsafe extern "C" fn on_power_message(
    refcon: *mut c_void,
    _service: ffi::io_service_t,
    message_type: u32,
    message_argument: *mut c_void,
) {
    // SAFETY: `refcon` is the `Listener` on the stack of the thread whose run loop is calling.
    let listener = unsafe { &*refcon.cast::<Listener>() };
    // The argument is the notification id that `IOAllowPowerChange` answers with.
    listener.on_message(message_type, message_argument as isize);
}

/// The watch thread's run loop, retained until the thread is joined.
#[derive(Debug)]
struct RunLoop(ffi::CFRunLoopRef);

// SAFETY: the run loop is retained while the watch holds it, and the watch only calls
// `CFRunLoopStop` on it, which CoreFoundation allows from any thread.
unsafe impl Send for RunLoop {}
// SAFETY: as above.
unsafe impl Sync for RunLoop {}

#[derive(Debug)]
pub(super) struct Watch {
    state: Arc<Mutex<State>>,
    events: mpsc::UnboundedReceiver<PowerEvent>,
    run_loop: RunLoop,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    pub(super) async fn start(_config: &WatchConfig) -> Result<Watch, PowerError> {
        let state = Arc::new(Mutex::new(State::default()));
        let (sender, events) = mpsc::unbounded_channel();
        let (ready, registered) = oneshot::channel();
        let listener = Listener {
            state: state.clone(),
            events: sender,
        };
        let thread = std::thread::Builder::new()
            .name("flotilla-power".into())
            .spawn(move || listen(listener, ready))
            .map_err(|e| PowerError::Service(format!("starting the sleep watch's thread: {e}")))?;
        let run_loop = match registered.await {
            Ok(Ok(run_loop)) => run_loop,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(PowerError::Service(
                    "the sleep watch's thread ended before registering".into(),
                ));
            }
        };
        Ok(Watch {
            state,
            events,
            run_loop,
            thread: Some(thread),
        })
    }

    pub(super) async fn next(&mut self) -> Result<PowerEvent, PowerError> {
        self.events
            .recv()
            .await
            .ok_or_else(|| PowerError::Service("the sleep watch's thread ended".into()))
    }

    pub(super) fn release(&mut self) {
        let mut state = lock(&self.state);
        if let Some(notification_id) = state.pending.take() {
            allow(state.root_port, notification_id);
        }
    }

    /// Every sleep waits for [`Watch::release`] while the thread runs.
    pub(super) fn holds_sleep(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.state);
            state.stopping = true;
            if let Some(notification_id) = state.pending.take() {
                allow(state.root_port, notification_id);
            }
        }
        // SAFETY: the run loop is retained by the watch until below.
        unsafe { ffi::CFRunLoopStop(self.run_loop.0) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // SAFETY: the reference `listen` retained for the watch, released once.
        unsafe { ffi::CFRelease(self.run_loop.0.cast_const()) };
    }
}

/// The watch's thread: registers, sends its run loop (retained) or the error through `ready`,
/// runs the loop until the watch is dropped, then acknowledges any sleep still held and
/// deregisters.
fn listen(listener: Listener, ready: oneshot::Sender<Result<RunLoop, PowerError>>) {
    let refcon = (&raw const listener).cast_mut().cast::<c_void>();
    let mut port: ffi::IONotificationPortRef = null_mut();
    let mut notifier: ffi::io_object_t = 0;
    // SAFETY: `refcon` points to `listener`, which outlives the registration (it is withdrawn
    // below, before `listener` goes); the out-pointers are valid.
    let root_port = unsafe {
        ffi::IORegisterForSystemPower(refcon, &mut port, on_power_message, &mut notifier)
    };
    if root_port == 0 {
        let _ = ready.send(Err(PowerError::Service(
            "IORegisterForSystemPower refused to register for sleep and wake".into(),
        )));
        return;
    }
    lock(&listener.state).root_port = root_port;
    // SAFETY: the notification port was just created; the current run loop and the default
    // mode are CoreFoundation's own, and the run loop is retained for the watch.
    let (run_loop, source, mode) = unsafe {
        let run_loop = ffi::CFRunLoopGetCurrent();
        let source = ffi::IONotificationPortGetRunLoopSource(port);
        let mode = ffi::kCFRunLoopDefaultMode;
        ffi::CFRunLoopAddSource(run_loop, source, mode);
        ffi::CFRetain(run_loop.cast_const());
        (run_loop, source, mode)
    };
    if let Err(Ok(RunLoop(run_loop))) = ready.send(Ok(RunLoop(run_loop))) {
        // Nobody waits for the watch any more.
        lock(&listener.state).stopping = true;
        // SAFETY: the reference retained above for the watch, which never got it.
        unsafe { ffi::CFRelease(run_loop.cast_const()) };
    }
    while !lock(&listener.state).stopping {
        // SAFETY: runs this thread's own run loop; the callback it calls reaches `listener`.
        unsafe { ffi::CFRunLoopRunInMode(mode, RUN_SLICE_SECONDS, 0) };
    }
    let pending = lock(&listener.state).pending.take();
    if let Some(notification_id) = pending {
        allow(root_port, notification_id);
    }
    // SAFETY: what `IORegisterForSystemPower` made, withdrawn and freed once, in the order
    // IOKit's documentation gives; the source is removed before its port is destroyed.
    unsafe {
        ffi::CFRunLoopRemoveSource(run_loop, source, mode);
        ffi::IODeregisterForSystemPower(&mut notifier);
        ffi::IOServiceClose(root_port);
        ffi::IONotificationPortDestroy(port);
    }
}

/// A CoreFoundation string, released on drop.
struct CfString(ffi::CFStringRef);

impl CfString {
    fn new(text: &str) -> Result<CfString, PowerError> {
        let len = isize::try_from(text.len())
            .map_err(|_| PowerError::Service("a string too long for CoreFoundation".into()))?;
        // SAFETY: the bytes are valid UTF-8 of the given length; CoreFoundation copies them.
        let string = unsafe {
            ffi::CFStringCreateWithBytes(null(), text.as_ptr(), len, ffi::STRING_ENCODING_UTF8, 0)
        };
        if string.is_null() {
            return Err(PowerError::Service(format!(
                "CFStringCreateWithBytes refused {text:?}"
            )));
        }
        Ok(CfString(string))
    }
}

impl Drop for CfString {
    fn drop(&mut self) {
        // SAFETY: the string was created by `new` and is released once.
        unsafe { ffi::CFRelease(self.0) };
    }
}

/// `kIOPMAssertionTypePreventUserIdleSystemSleep`'s value.
const PREVENT_USER_IDLE_SYSTEM_SLEEP: &str = "PreventUserIdleSystemSleep";
/// The longest name an assertion may have, in characters.
const ASSERTION_NAME_MAX: usize = 128;

/// A power assertion that keeps the machine from sleeping by itself.
#[derive(Debug)]
pub(super) struct Awake {
    assertion: ffi::IOPMAssertionID,
}

impl Awake {
    pub(super) async fn hold(config: &WatchConfig) -> Result<Awake, PowerError> {
        let kind = CfString::new(PREVENT_USER_IDLE_SYSTEM_SLEEP)?;
        let name: String = config.why.chars().take(ASSERTION_NAME_MAX).collect();
        let name = CfString::new(&name)?;
        let mut assertion = 0;
        // SAFETY: both strings are live CFStrings (IOKit keeps what it needs of them) and the
        // out-pointer is valid.
        let status = unsafe {
            ffi::IOPMAssertionCreateWithName(
                kind.0,
                ffi::ASSERTION_LEVEL_ON,
                name.0,
                &mut assertion,
            )
        };
        if status != 0 {
            return Err(PowerError::Service(format!(
                "IOPMAssertionCreateWithName: IOReturn {status:#x}"
            )));
        }
        Ok(Awake { assertion })
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        // SAFETY: the assertion was created by `hold` and is released once.
        let status = unsafe { ffi::IOPMAssertionRelease(self.assertion) };
        if status != 0 {
            tracing::warn!("IOPMAssertionRelease: IOReturn {status:#x}");
        }
    }
}
