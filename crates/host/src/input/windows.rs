//! Windows: low-level keyboard and mouse hooks (`WH_KEYBOARD_LL`, `WH_MOUSE_LL`), installed by
//! a thread of the watch's own that then runs a message loop: Windows calls a low-level hook on
//! the thread that installed it, from that thread's message loop. A hook must return quickly
//! (Windows drops a hook that keeps input waiting longer than `LowLevelHooksTimeout`), so it only
//! notes the event (the coalesced callback) and passes it on. Posting `WM_QUIT` to the thread
//! ends the loop, and the hooks are removed.
//!
//! Windows runs these hooks for the desktop of the session the process runs in: a service in
//! session 0 sees no input, as with `GetLastInputInfo`.

use std::cell::RefCell;
use std::ptr::{null, null_mut};
use std::sync::mpsc;
use std::thread::JoinHandle;

use windows_sys::Win32::Foundation::{LPARAM, LRESULT, WPARAM};
use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::System::Threading::GetCurrentThreadId;
use windows_sys::Win32::UI::WindowsAndMessaging::{
    CallNextHookEx, GetMessageW, HC_ACTION, MSG, PM_NOREMOVE, PeekMessageW, PostThreadMessageW,
    SetWindowsHookExW, UnhookWindowsHookEx, WH_KEYBOARD_LL, WH_MOUSE_LL, WM_QUIT,
};

use super::events::windows::{key_is_input, mouse_is_input};

type Note = Box<dyn FnMut() + Send>;

#[derive(Debug)]
pub(super) struct Watch {
    thread_id: u32,
    thread: Option<JoinHandle<()>>,
}

thread_local! {
    /// The callback of the watch whose thread this is (a hook runs on the thread that set it).
    static NOTE: RefCell<Option<Note>> = const { RefCell::new(None) };
}

fn note_input() {
    NOTE.with(|n| {
        if let Ok(mut n) = n.try_borrow_mut()
            && let Some(note) = n.as_mut()
        {
            note();
        }
    });
}

unsafe extern "system" fn keyboard_hook(code: i32, wparam: WPARAM, lparam: LPARAM) -> LRESULT {
    if code == HC_ACTION as i32 && key_is_input(wparam) {
        note_input();
    }
    // SAFETY: passes the call on as the hook contract asks; the hook handle argument is
    // ignored by Windows.
    unsafe { CallNextHookEx(null_mut(), code, wparam, lparam) }
}

unsafe extern "system" fn mouse_hook(code: i32, wparam: WPARAM, lparam: LPARAM) -> LRESULT {
    if code == HC_ACTION as i32 && mouse_is_input(wparam) {
        note_input();
    }
    // SAFETY: as in `keyboard_hook`.
    unsafe { CallNextHookEx(null_mut(), code, wparam, lparam) }
}

impl Watch {
    pub(super) fn start(_display: Option<String>, note: Note) -> Result<(Watch, String), String> {
        let (thread_id, thread) = super::start_thread(move |started| run(note, started))?;
        Ok((
            Watch {
                thread_id,
                thread: Some(thread),
            },
            "windows-low-level-hooks".to_owned(),
        ))
    }

    pub(super) fn stop(&mut self) {
        // SAFETY: posts WM_QUIT to our own thread, whose queue exists (it was created before
        // the thread id was handed out).
        unsafe { PostThreadMessageW(self.thread_id, WM_QUIT, 0, 0) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watch's thread: install the hooks, report the thread id (or why not), run the message
/// loop until `WM_QUIT`, remove the hooks.
fn run(note: Note, started: mpsc::Sender<Result<u32, String>>) {
    NOTE.with(|n| *n.borrow_mut() = Some(note));
    // SAFETY: MSG is plain data, for which all zeroes is a valid value.
    let mut msg: MSG = unsafe { std::mem::zeroed() };
    // SAFETY: creates this thread's message queue (so that WM_QUIT can be posted to it) without
    // taking a message; `msg` is a valid MSG.
    unsafe { PeekMessageW(&mut msg, null_mut(), 0, 0, PM_NOREMOVE) };
    // SAFETY: the module handle of the running program; low-level hooks run in the installing
    // thread, so any module handle of this process will do.
    let module = unsafe { GetModuleHandleW(null()) };
    // SAFETY: both procedures have the HOOKPROC prototype and live as long as the program.
    let keyboard = unsafe { SetWindowsHookExW(WH_KEYBOARD_LL, Some(keyboard_hook), module, 0) };
    // SAFETY: as above.
    let mouse = unsafe { SetWindowsHookExW(WH_MOUSE_LL, Some(mouse_hook), module, 0) };
    if keyboard.is_null() || mouse.is_null() {
        let err = std::io::Error::last_os_error();
        for hook in [keyboard, mouse] {
            if !hook.is_null() {
                // SAFETY: a hook this thread installed.
                unsafe { UnhookWindowsHookEx(hook) };
            }
        }
        let _ = started.send(Err(format!("SetWindowsHookExW: {err}")));
        return;
    }
    // SAFETY: plain call.
    let _ = started.send(Ok(unsafe { GetCurrentThreadId() }));
    // SAFETY: `msg` is a valid MSG; 0 is WM_QUIT, -1 an error, both end the loop. No window
    // belongs to this thread, so there is nothing to dispatch.
    while unsafe { GetMessageW(&mut msg, null_mut(), 0, 0) } > 0 {}
    // SAFETY: hooks this thread installed.
    unsafe {
        UnhookWindowsHookEx(keyboard);
        UnhookWindowsHookEx(mouse);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_callback_reaches_the_threads_note_only() {
        let (tx, rx) = mpsc::channel();
        NOTE.with(|n| {
            *n.borrow_mut() = Some(Box::new(move || {
                let _ = tx.send(());
            }))
        });
        note_input();
        assert!(rx.try_recv().is_ok());
        // Another thread has no note: its hook calls do nothing.
        std::thread::spawn(note_input).join().unwrap();
        assert!(rx.try_recv().is_err());
        NOTE.with(|n| *n.borrow_mut() = None);
    }
}
