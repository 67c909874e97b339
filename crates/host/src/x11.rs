//! The process's one Xlib user: connections to an X display for the idle sensor (the
//! MIT-SCREEN-SAVER extension's `idle`, milliseconds since the last input event the X server saw,
//! read with `XScreenSaverQueryInfo`) and for the input watch (XInput2 raw events, see
//! [`crate::input`]).
//!
//! libX11, libXss and libXi are loaded with `dlopen` at run time, not linked: the build needs no
//! `-dev` packages, and on a machine without X libraries the X backends are simply absent (libXss
//! and libXi only matter to the part that uses them). The libraries are loaded once per process
//! and never unloaded, because Xlib keeps process-wide state (handlers, the connection's
//! callbacks) that must outlive every connection.
//!
//! Xlib's default reaction to a lost connection (the user logged out, the X server crashed) is
//! `exit(1)`, which would take the agent down with the desktop session. It exits from two places:
//! the process-wide I/O error handler (`XSetIOErrorHandler`), which we replace, once, with one
//! that returns; and, when that returns, the connection's exit handler, which libX11 1.7 (2020)
//! made replaceable (`XSetIOErrorExitHandler`): ours only marks the connection dead. An older
//! libX11 lacks the latter, and is not used. Taking over the process-wide handler is fine because
//! this module is the process's only Xlib user.

use std::ffi::{CStr, CString, c_char, c_int, c_long, c_uchar, c_ulong, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Opaque Xlib `Display`.
type Display = c_void;
/// Xlib `Window` / `Drawable`: an XID, `unsigned long` in C.
type Xid = c_ulong;

/// `XScreenSaverInfo` from `<X11/extensions/scrnsaver.h>`; laid out as in C.
#[repr(C)]
#[derive(Default)]
struct ScreenSaverInfo {
    window: Xid,
    state: c_int,
    kind: c_int,
    til_or_since: c_ulong,
    /// Milliseconds since the last input event.
    idle: c_ulong,
    event_mask: c_ulong,
}

/// `XEvent`: a union of every event type, padded to 24 longs.
#[repr(C)]
struct XEvent {
    pad: [c_long; 24],
}

/// The head of an `XGenericEventCookie` (`<X11/Xlib.h>`), the shape of every extension event
/// of type `GenericEvent`, which XInput2 uses.
#[repr(C)]
struct GenericEventHead {
    kind: c_int,
    serial: c_ulong,
    send_event: c_int,
    display: *mut Display,
    extension: c_int,
    evtype: c_int,
}

/// `XIEventMask` from `<X11/extensions/XInput2.h>`.
#[repr(C)]
struct XiEventMask {
    deviceid: c_int,
    mask_len: c_int,
    mask: *mut c_uchar,
}

/// `GenericEvent` in `<X11/X.h>`.
const GENERIC_EVENT: c_int = 35;
/// `XIAllMasterDevices`: the events of every master pointer and keyboard.
const XI_ALL_MASTER_DEVICES: c_int = 1;
/// The XInput2 raw events that are the owner's input (`XI_RawKeyPress`, `XI_RawButtonPress`,
/// `XI_RawMotion`; `XI_RawTouchBegin` from XInput 2.2). Releases are left out: a press came first.
const XI_RAW_KEY_PRESS: c_int = 13;
const XI_RAW_BUTTON_PRESS: c_int = 15;
const XI_RAW_MOTION: c_int = 17;
const XI_RAW_TOUCH_BEGIN: c_int = 22;

type IoErrorExitHandler = unsafe extern "C" fn(*mut Display, *mut c_void);
type IoErrorHandler = unsafe extern "C" fn(*mut Display) -> c_int;

type OpenDisplay = unsafe extern "C" fn(*const c_char) -> *mut Display;
type CloseDisplay = unsafe extern "C" fn(*mut Display) -> c_int;
type DefaultRootWindow = unsafe extern "C" fn(*mut Display) -> Xid;
type SetIoErrorExitHandler =
    unsafe extern "C" fn(*mut Display, Option<IoErrorExitHandler>, *mut c_void);
type SetIoErrorHandler = unsafe extern "C" fn(Option<IoErrorHandler>) -> Option<IoErrorHandler>;
type ConnectionNumber = unsafe extern "C" fn(*mut Display) -> c_int;
type Pending = unsafe extern "C" fn(*mut Display) -> c_int;
type NextEvent = unsafe extern "C" fn(*mut Display, *mut XEvent) -> c_int;
type Flush = unsafe extern "C" fn(*mut Display) -> c_int;
type QueryExtensionByName =
    unsafe extern "C" fn(*mut Display, *const c_char, *mut c_int, *mut c_int, *mut c_int) -> c_int;
type SsQueryExtension = unsafe extern "C" fn(*mut Display, *mut c_int, *mut c_int) -> c_int;
type SsQueryInfo = unsafe extern "C" fn(*mut Display, Xid, *mut ScreenSaverInfo) -> c_int;
type XiQueryVersion = unsafe extern "C" fn(*mut Display, *mut c_int, *mut c_int) -> c_int;
type XiSelectEvents = unsafe extern "C" fn(*mut Display, Xid, *mut XiEventMask, c_int) -> c_int;

/// The libX11 functions this module uses, resolved from libX11.so.6.
struct Lib {
    open_display: OpenDisplay,
    close_display: CloseDisplay,
    default_root_window: DefaultRootWindow,
    set_io_error_exit_handler: SetIoErrorExitHandler,
    set_io_error_handler: SetIoErrorHandler,
    connection_number: ConnectionNumber,
    pending: Pending,
    next_event: NextEvent,
    flush: Flush,
    query_extension: QueryExtensionByName,
}

/// The MIT-SCREEN-SAVER client functions, from libXss.so.1.
struct Xss {
    query_extension: SsQueryExtension,
    query_info: SsQueryInfo,
}

/// The XInput2 client functions, from libXi.so.6.
struct Xi {
    query_version: XiQueryVersion,
    select_events: XiSelectEvents,
}

/// Xlib is not initialised for threads (`XInitThreads` must be the first Xlib call of the
/// process, which a library cannot promise), so every Xlib call of the process holds this lock:
/// the idle sensor's and the input watch's, on their separate connections.
static XLIB: Mutex<()> = Mutex::new(());

fn xlib() -> std::sync::MutexGuard<'static, ()> {
    XLIB.lock().unwrap_or_else(|e| e.into_inner())
}

fn dlopen(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `name` is a NUL-terminated string; loading libX11/libXss/libXi runs only their ELF
    // constructors, which have no preconditions.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    (!handle.is_null()).then_some(handle)
}

/// The named function of `handle`, as the function pointer type `F`.
///
/// # Safety
///
/// `F` must be an `extern "C"` function pointer type whose prototype is the C prototype of
/// `name` in the library's headers.
unsafe fn dlsym<F: Copy>(handle: *mut c_void, name: &CStr) -> Option<F> {
    const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
    // SAFETY: `handle` came from a successful dlopen that is never closed, and `name` is
    // NUL-terminated.
    let sym = unsafe { libc::dlsym(handle, name.as_ptr()) };
    // SAFETY: function and data pointers have the same size and representation on every
    // platform Linux runs on, and the caller vouches for the prototype.
    (!sym.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&sym) })
}

fn lib() -> Result<&'static Lib, &'static str> {
    static LIB: OnceLock<Result<Lib, &'static str>> = OnceLock::new();
    LIB.get_or_init(load_x11).as_ref().map_err(|e| *e)
}

fn xss() -> Result<&'static Xss, &'static str> {
    static XSS: OnceLock<Result<Xss, &'static str>> = OnceLock::new();
    XSS.get_or_init(load_xss).as_ref().map_err(|e| *e)
}

fn xi() -> Result<&'static Xi, &'static str> {
    static XI: OnceLock<Result<Xi, &'static str>> = OnceLock::new();
    XI.get_or_init(load_xi).as_ref().map_err(|e| *e)
}

fn load_x11() -> Result<Lib, &'static str> {
    let x11 = dlopen(c"libX11.so.6").ok_or("libX11.so.6 not found")?;
    let missing = "libX11 lacks a function";
    // SAFETY: each field's type spells out the C prototype (Xlib.h) of the function named.
    unsafe {
        Ok(Lib {
            open_display: dlsym(x11, c"XOpenDisplay").ok_or(missing)?,
            close_display: dlsym(x11, c"XCloseDisplay").ok_or(missing)?,
            default_root_window: dlsym(x11, c"XDefaultRootWindow").ok_or(missing)?,
            set_io_error_exit_handler: dlsym(x11, c"XSetIOErrorExitHandler").ok_or(
                "libX11 older than 1.7 (no XSetIOErrorExitHandler; a lost display would exit)",
            )?,
            set_io_error_handler: dlsym(x11, c"XSetIOErrorHandler").ok_or(missing)?,
            connection_number: dlsym(x11, c"XConnectionNumber").ok_or(missing)?,
            pending: dlsym(x11, c"XPending").ok_or(missing)?,
            next_event: dlsym(x11, c"XNextEvent").ok_or(missing)?,
            flush: dlsym(x11, c"XFlush").ok_or(missing)?,
            query_extension: dlsym(x11, c"XQueryExtension").ok_or(missing)?,
        })
    }
}

fn load_xss() -> Result<Xss, &'static str> {
    let xss = dlopen(c"libXss.so.1").ok_or("libXss.so.1 not found")?;
    let missing = "libXss lacks a function";
    // SAFETY: each field's type spells out the C prototype (scrnsaver.h) of the function named.
    unsafe {
        Ok(Xss {
            query_extension: dlsym(xss, c"XScreenSaverQueryExtension").ok_or(missing)?,
            query_info: dlsym(xss, c"XScreenSaverQueryInfo").ok_or(missing)?,
        })
    }
}

fn load_xi() -> Result<Xi, &'static str> {
    let xi = dlopen(c"libXi.so.6").ok_or("libXi.so.6 not found")?;
    let missing = "libXi lacks a function";
    // SAFETY: each field's type spells out the C prototype (XInput2.h) of the function named.
    unsafe {
        Ok(Xi {
            query_version: dlsym(xi, c"XIQueryVersion").ok_or(missing)?,
            select_events: dlsym(xi, c"XISelectEvents").ok_or(missing)?,
        })
    }
}

/// Xlib's process-wide I/O error handler: returning (instead of printing and exiting, as the
/// default does) hands over to the connection's exit handler, [`on_lost_connection`].
unsafe extern "C" fn on_io_error(_display: *mut Display) -> c_int {
    0
}

/// Called by Xlib, instead of `exit(1)`, after the connection was lost. Returning is allowed
/// (libX11 >= 1.7): the call that hit the error returns, and the connection is unusable.
unsafe extern "C" fn on_lost_connection(_display: *mut Display, dead: *mut c_void) {
    // SAFETY: `dead` is the `AtomicBool` the `Connection` boxed for this display; the box lives
    // until after `XCloseDisplay`, after which Xlib no longer calls this handler.
    let dead = unsafe { &*dead.cast::<AtomicBool>() };
    dead.store(true, Ordering::Relaxed);
}

/// An open connection to one X display, kept across readings: opening one costs a round trip
/// and an authentication, a query is one small request.
pub struct Connection {
    display: *mut Display,
    root: Xid,
    /// Set by [`on_lost_connection`]; boxed so that its address is stable for Xlib.
    dead: Box<AtomicBool>,
    lib: &'static Lib,
    /// The XInput extension's major opcode, once raw events were selected.
    xi_opcode: Option<c_int>,
}

// SAFETY: the `Display` is used only through `&mut Connection` (callers keep it behind a Mutex
// or on one thread) and with the process-wide `XLIB` lock held, so it is never used by two
// threads at once, which is all a non-threaded Xlib asks.
unsafe impl Send for Connection {}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("root", &self.root)
            .field("dead", &self.dead.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `name` (e.g. `":0"`), with the lost-connection handlers in place. The error
    /// says why not, for a reading's `from` or a log line.
    pub fn open(name: &str) -> Result<Connection, String> {
        let lib = lib().map_err(str::to_owned)?;
        let c_name = CString::new(name).map_err(|_| "display name contains NUL".to_owned())?;
        let _xlib = xlib();
        static HANDLER: OnceLock<()> = OnceLock::new();
        HANDLER.get_or_init(|| {
            // SAFETY: `on_io_error` has the C prototype Xlib expects and touches nothing; the
            // XLIB lock is held, so no other Xlib call runs meanwhile.
            unsafe { (lib.set_io_error_handler)(Some(on_io_error)) };
        });
        // SAFETY: `c_name` is NUL-terminated and outlives the call.
        let display = unsafe { (lib.open_display)(c_name.as_ptr()) };
        if display.is_null() {
            return Err("cannot open display".into());
        }
        let conn = Connection {
            display,
            // SAFETY: `display` is an open connection.
            root: unsafe { (lib.default_root_window)(display) },
            dead: Box::new(AtomicBool::new(false)),
            lib,
            xi_opcode: None,
        };
        let dead: *const AtomicBool = &*conn.dead;
        // SAFETY: `display` is open; the handler only stores into `dead`, which the connection
        // owns and frees after closing the display.
        unsafe {
            (lib.set_io_error_exit_handler)(
                display,
                Some(on_lost_connection),
                dead.cast_mut().cast(),
            )
        };
        Ok(conn)
    }

    /// [`Connection::open`], for the idle time: the server must have the screen saver
    /// extension.
    pub fn open_screen_saver(name: &str) -> Result<Connection, String> {
        let xss = xss().map_err(str::to_owned)?;
        let conn = Connection::open(name)?;
        let _xlib = xlib();
        let (mut event_base, mut error_base) = (0, 0);
        // SAFETY: the display is open and the out-pointers are valid locals.
        let has = unsafe { (xss.query_extension)(conn.display, &mut event_base, &mut error_base) };
        if has == 0 || conn.is_dead() {
            // Dropping closes the display; the lock is re-entered there, so release it first.
            drop(_xlib);
            drop(conn);
            return Err("no MIT-SCREEN-SAVER extension".into());
        }
        Ok(conn)
    }

    /// Whether the connection was lost; a dead connection only waits to be dropped.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// The time since the last input event on the display; `None` when the query failed (and
    /// then, most likely, the connection is dead). The connection comes from
    /// [`Connection::open_screen_saver`].
    pub fn idle(&mut self) -> Option<Duration> {
        if self.is_dead() {
            return None;
        }
        let xss = xss().ok()?;
        let _xlib = xlib();
        let mut info = ScreenSaverInfo::default();
        // SAFETY: the display is open (not yet closed: that happens only in Drop), `root` is its
        // root window, and `info` is a valid `XScreenSaverInfo`.
        let ok = unsafe { (xss.query_info)(self.display, self.root, &mut info) };
        if ok == 0 || self.is_dead() {
            return None;
        }
        #[allow(
            clippy::unnecessary_cast,
            reason = "`unsigned long` is u64 on 64-bit Linux only; never narrows"
        )]
        let ms = info.idle as u64;
        Some(Duration::from_millis(ms))
    }

    /// Asks the server for the owner's input as XInput2 raw events (key and button presses,
    /// pointer motion, touches) of every master device, delivered to the root window: raw
    /// events reach a client whatever window has the focus or a grab (XInput 2.1 and newer).
    pub fn select_raw_input(&mut self) -> Result<(), String> {
        let xi = xi().map_err(str::to_owned)?;
        let _xlib = xlib();
        let (mut opcode, mut event, mut error) = (0, 0, 0);
        // SAFETY: the display is open, the name NUL-terminated, the out-pointers valid locals.
        let has = unsafe {
            (self.lib.query_extension)(
                self.display,
                c"XInputExtension".as_ptr(),
                &mut opcode,
                &mut event,
                &mut error,
            )
        };
        if has == 0 || self.is_dead() {
            return Err("no XInputExtension".into());
        }
        // Announce the version this client speaks (2.2, for touches); the server answers with
        // what it has, and raw events need at least 2.0.
        let (mut major, mut minor) = (2, 2);
        // SAFETY: the display is open and the in/out pointers are valid locals.
        let status = unsafe { (xi.query_version)(self.display, &mut major, &mut minor) };
        if status != 0 || major < 2 || self.is_dead() {
            return Err(format!("XInput {major}.{minor}: raw events need 2.0"));
        }
        let mut mask = raw_event_mask(minor >= 2 || major > 2);
        let mut xmask = XiEventMask {
            deviceid: XI_ALL_MASTER_DEVICES,
            mask_len: mask.len() as c_int,
            mask: mask.as_mut_ptr(),
        };
        // SAFETY: the display is open, `root` is its root window, and `xmask` points at `mask`,
        // which outlives the call (Xlib copies it into the request).
        unsafe { (xi.select_events)(self.display, self.root, &mut xmask, 1) };
        // SAFETY: the display is open.
        unsafe { (self.lib.flush)(self.display) };
        if self.is_dead() {
            return Err("connection lost".into());
        }
        self.xi_opcode = Some(opcode);
        Ok(())
    }

    /// The connection's socket, to wait on with `poll` for the server's next event.
    pub fn fd(&self) -> c_int {
        let _xlib = xlib();
        // SAFETY: the display is open; this reads a field of it.
        unsafe { (self.lib.connection_number)(self.display) }
    }

    /// Takes every event the server sent so far, without blocking; how many were XInput2 raw
    /// input events. `None` once the connection is lost.
    pub fn drain_input(&mut self) -> Option<usize> {
        if self.is_dead() {
            return None;
        }
        let _xlib = xlib();
        let mut count = 0;
        // SAFETY (both calls): the display is open; `XPending` reads what the socket holds
        // without blocking and `XNextEvent` then returns a queued event without blocking,
        // written into `event`, which is as large as Xlib's `XEvent`.
        while unsafe { (self.lib.pending)(self.display) } > 0 && !self.is_dead() {
            let mut event = XEvent { pad: [0; 24] };
            unsafe { (self.lib.next_event)(self.display, &mut event) };
            // SAFETY: every XEvent starts with its type, and a GenericEvent is laid out as an
            // `XGenericEventCookie`, whose head `GenericEventHead` repeats. The cookie's data
            // is not claimed (`XGetEventData`): Xlib frees it at the next `XNextEvent`.
            let head = unsafe { &*(&raw const event).cast::<GenericEventHead>() };
            if head.kind == GENERIC_EVENT && Some(head.extension) == self.xi_opcode {
                count += 1;
            }
        }
        (!self.is_dead()).then_some(count)
    }
}

/// The XInput2 event mask of the raw events that are input: one bit per event type, 4 bytes
/// (`XIMaskLen` of the last event type of XInput 2.2).
fn raw_event_mask(touch: bool) -> [c_uchar; 4] {
    let mut mask = [0; 4];
    let mut set = |event: c_int| mask[(event >> 3) as usize] |= 1 << (event & 7);
    set(XI_RAW_KEY_PRESS);
    set(XI_RAW_BUTTON_PRESS);
    set(XI_RAW_MOTION);
    if touch {
        set(XI_RAW_TOUCH_BEGIN);
    }
    mask
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _xlib = xlib();
        // SAFETY: the display is open and closed only here. On a lost connection, closing runs
        // into the I/O error again, which our handlers turn into a return (tests/idle_x11.rs
        // kills the server to check), and `dead`, which the handler may store into, is freed
        // only after this function.
        unsafe { (self.lib.close_display)(self.display) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_event_mask_has_one_bit_per_input_event() {
        // XI_RawKeyPress 13 and XI_RawButtonPress 15 in byte 1; XI_RawMotion 17 and
        // XI_RawTouchBegin 22 in byte 2.
        assert_eq!(raw_event_mask(false), [0, 0b1010_0000, 0b0000_0010, 0]);
        assert_eq!(raw_event_mask(true), [0, 0b1010_0000, 0b0100_0010, 0]);
    }

    #[test]
    fn the_generic_event_head_is_laid_out_as_xlibs_cookie() {
        // type, serial, send_event, display, extension, evtype on LP64.
        assert_eq!(std::mem::offset_of!(GenericEventHead, extension), 32);
        assert_eq!(std::mem::offset_of!(GenericEventHead, evtype), 36);
        assert_eq!(size_of::<XEvent>(), 192);
        assert_eq!(std::mem::offset_of!(XiEventMask, mask), 8);
    }
}
