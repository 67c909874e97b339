//! The X11 idle time: the MIT-SCREEN-SAVER extension's `idle`, milliseconds since the last input
//! event the X server saw, read with `XScreenSaverQueryInfo`.
//!
//! libX11 and libXss are loaded with `dlopen` at run time, not linked: the build needs no `-dev`
//! packages, and on a machine without X libraries the X backend is simply absent. The libraries
//! are loaded once per process and never unloaded, because Xlib keeps process-wide state
//! (handlers, the connection's callbacks) that must outlive every connection.
//!
//! Xlib's default reaction to a lost connection (the user logged out, the X server crashed) is
//! `exit(1)`, which would take the agent down with the desktop session. It exits from two places:
//! the process-wide I/O error handler (`XSetIOErrorHandler`), which we replace, once, with one
//! that returns; and, when that returns, the connection's exit handler, which libX11 1.7 (2020)
//! made replaceable (`XSetIOErrorExitHandler`): ours only marks the connection dead. An older
//! libX11 lacks the latter, and is not used. Taking over the process-wide handler is fine because
//! this module is the process's only Xlib user.

use std::ffi::{CStr, CString, c_char, c_int, c_ulong, c_void};
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

type IoErrorExitHandler = unsafe extern "C" fn(*mut Display, *mut c_void);
type IoErrorHandler = unsafe extern "C" fn(*mut Display) -> c_int;

type OpenDisplay = unsafe extern "C" fn(*const c_char) -> *mut Display;
type CloseDisplay = unsafe extern "C" fn(*mut Display) -> c_int;
type DefaultRootWindow = unsafe extern "C" fn(*mut Display) -> Xid;
type SetIoErrorExitHandler =
    unsafe extern "C" fn(*mut Display, Option<IoErrorExitHandler>, *mut c_void);
type SetIoErrorHandler = unsafe extern "C" fn(Option<IoErrorHandler>) -> Option<IoErrorHandler>;
type QueryExtension = unsafe extern "C" fn(*mut Display, *mut c_int, *mut c_int) -> c_int;
type QueryInfo = unsafe extern "C" fn(*mut Display, Xid, *mut ScreenSaverInfo) -> c_int;

/// The functions this module uses, resolved from libX11.so.6 and libXss.so.1.
struct Lib {
    open_display: OpenDisplay,
    close_display: CloseDisplay,
    default_root_window: DefaultRootWindow,
    set_io_error_exit_handler: SetIoErrorExitHandler,
    set_io_error_handler: SetIoErrorHandler,
    query_extension: QueryExtension,
    query_info: QueryInfo,
}

/// Xlib is not initialised for threads (`XInitThreads` must be the first Xlib call of the
/// process, which a library cannot promise), so every Xlib call of the process that goes through
/// this module holds this lock.
static XLIB: Mutex<()> = Mutex::new(());

fn lib() -> Result<&'static Lib, &'static str> {
    static LIB: OnceLock<Result<Lib, &'static str>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(|e| *e)
}

fn dlopen(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `name` is a NUL-terminated string; loading libX11/libXss runs only their ELF
    // constructors, which have no preconditions.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    (!handle.is_null()).then_some(handle)
}

fn dlsym(handle: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `handle` came from a successful dlopen that is never closed, and `name` is
    // NUL-terminated.
    let sym = unsafe { libc::dlsym(handle, name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

fn load() -> Result<Lib, &'static str> {
    let x11 = dlopen(c"libX11.so.6").ok_or("libX11.so.6 not found")?;
    let xss = dlopen(c"libXss.so.1").ok_or("libXss.so.1 not found")?;
    let sym = |handle, name: &'static CStr| dlsym(handle, name);
    let missing = "libX11 or libXss lacks a function";
    let open_display = sym(x11, c"XOpenDisplay").ok_or(missing)?;
    let close_display = sym(x11, c"XCloseDisplay").ok_or(missing)?;
    let default_root_window = sym(x11, c"XDefaultRootWindow").ok_or(missing)?;
    let set_io_error_exit_handler = sym(x11, c"XSetIOErrorExitHandler")
        .ok_or("libX11 older than 1.7 (no XSetIOErrorExitHandler; a lost display would exit)")?;
    let set_io_error_handler = sym(x11, c"XSetIOErrorHandler").ok_or(missing)?;
    let query_extension = sym(xss, c"XScreenSaverQueryExtension").ok_or(missing)?;
    let query_info = sym(xss, c"XScreenSaverQueryInfo").ok_or(missing)?;
    // SAFETY: each pointer is the named function of the library, whose C prototype (Xlib.h,
    // scrnsaver.h) the field's type spells out; function and data pointers have the same size
    // and representation on every platform Linux runs on.
    unsafe {
        Ok(Lib {
            open_display: std::mem::transmute::<*mut c_void, OpenDisplay>(open_display),
            close_display: std::mem::transmute::<*mut c_void, CloseDisplay>(close_display),
            default_root_window: std::mem::transmute::<*mut c_void, DefaultRootWindow>(
                default_root_window,
            ),
            set_io_error_exit_handler: std::mem::transmute::<*mut c_void, SetIoErrorExitHandler>(
                set_io_error_exit_handler,
            ),
            set_io_error_handler: std::mem::transmute::<*mut c_void, SetIoErrorHandler>(
                set_io_error_handler,
            ),
            query_extension: std::mem::transmute::<*mut c_void, QueryExtension>(query_extension),
            query_info: std::mem::transmute::<*mut c_void, QueryInfo>(query_info),
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
}

// SAFETY: the `Display` is used only through `&mut Connection` (callers keep it behind a Mutex)
// and with the process-wide `XLIB` lock held, so it is never used by two threads at once, which
// is all a non-threaded Xlib asks.
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
    /// Connects to `name` (e.g. `":0"`) and checks that the server has the screen saver
    /// extension. The error says why not, for the reading's `from`.
    pub fn open(name: &str) -> Result<Connection, String> {
        let lib = lib().map_err(str::to_owned)?;
        let c_name = CString::new(name).map_err(|_| "display name contains NUL".to_owned())?;
        let _xlib = XLIB.lock().unwrap_or_else(|e| e.into_inner());
        static HANDLER: OnceLock<()> = OnceLock::new();
        HANDLER.get_or_init(|| {
            // SAFETY: `on_io_error` has the C prototype Xlib expects and touches nothing; the
            // XLIB lock is held, so no other Xlib call of this module runs meanwhile.
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
        let (mut event_base, mut error_base) = (0, 0);
        // SAFETY: `display` is open and the out-pointers are valid locals.
        let has = unsafe { (lib.query_extension)(display, &mut event_base, &mut error_base) };
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
    /// then, most likely, the connection is dead).
    pub fn idle(&mut self) -> Option<Duration> {
        if self.is_dead() {
            return None;
        }
        let _xlib = XLIB.lock().unwrap_or_else(|e| e.into_inner());
        let mut info = ScreenSaverInfo::default();
        // SAFETY: the display is open (not yet closed: that happens only in Drop), `root` is its
        // root window, and `info` is a valid `XScreenSaverInfo`.
        let ok = unsafe { (self.lib.query_info)(self.display, self.root, &mut info) };
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
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _xlib = XLIB.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the display is open and closed only here. On a lost connection, closing runs
        // into the I/O error again, which our handlers turn into a return (tests/idle_x11.rs
        // kills the server to check), and `dead`, which the handler may store into, is freed
        // only after this function.
        unsafe { (self.lib.close_display)(self.display) };
    }
}
