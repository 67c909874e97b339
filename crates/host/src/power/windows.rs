//! Windows: suspend and resume through powrprof's `PowerRegisterSuspendResumeNotification`, and
//! keeping the machine awake through a power request.
//!
//! The watch registers a callback (`DEVICE_NOTIFY_CALLBACK`), which Windows calls on a thread of
//! its own with the `PBT_*` event of each `WM_POWERBROADCAST`; [`from_power_broadcast`] turns it
//! into a [`PowerEvent`] and the callback hands it to [`Watch::next`] through a channel. The
//! callback's context (the channel's sender) lives in a box of its own, freed only after the
//! registration is withdrawn.
//!
//! Windows has no delay lock: after `PBT_APMSUSPEND` an application gets about 2 seconds, and
//! the machine suspends then whatever it does. So [`Watch::release`] has nothing to let go and
//! [`Watch::holds_sleep`] is always false; the agent hands back what it can in those seconds.
//!
//! [`Awake`] is a power request (`PowerCreateRequest`, then `PowerSetRequest` with
//! `PowerRequestSystemRequired`), which `powercfg /requests` lists under the program's name with
//! `config.why` as its reason.

use std::ffi::c_void;
use std::ptr::null_mut;

use tokio::sync::mpsc;
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_SUCCESS, HANDLE, INVALID_HANDLE_VALUE, WIN32_ERROR,
};
use windows_sys::Win32::System::Power::{
    DEVICE_NOTIFY_SUBSCRIBE_PARAMETERS, HPOWERNOTIFY, PowerClearRequest, PowerCreateRequest,
    PowerRegisterSuspendResumeNotification, PowerRequestSystemRequired, PowerSetRequest,
    PowerUnregisterSuspendResumeNotification,
};
use windows_sys::Win32::System::Threading::{POWER_REQUEST_CONTEXT_SIMPLE_STRING, REASON_CONTEXT};
use windows_sys::Win32::UI::WindowsAndMessaging::DEVICE_NOTIFY_CALLBACK;

use super::{PowerError, PowerEvent, WatchConfig, from_power_broadcast};

/// `POWER_REQUEST_CONTEXT_VERSION` from `WinNT.h`.
const POWER_REQUEST_CONTEXT_VERSION: u32 = 0;

/// What Windows is given at registration: the parameters (the callback and a pointer to this
/// very box) and the sender the callback reports to.
struct Subscription {
    params: DEVICE_NOTIFY_SUBSCRIBE_PARAMETERS,
    events: mpsc::UnboundedSender<PowerEvent>,
}

/// The boxed [`Subscription`], owned by the watch and borrowed by Windows' callback thread.
#[derive(Debug)]
struct SubscriptionPtr(*mut Subscription);

// SAFETY: the subscription is created before registration and freed only after it is withdrawn
// (or never, when that fails); between the two it is only read, by the watch and by Windows'
// callback thread, and what it holds (a function pointer, its own address and an unbounded
// sender) may be read from any thread.
unsafe impl Send for SubscriptionPtr {}
// SAFETY: as above: the subscription is only read while shared.
unsafe impl Sync for SubscriptionPtr {}

/// Called by Windows for each power broadcast, on a thread of its own.
///
/// # Safety
///
/// `context` must point to a live [`Subscription`].
unsafe extern "system" fn on_power_broadcast(
    context: *const c_void,
    event: u32,
    _setting: *const c_void,
) -> u32 {
    // SAFETY: Windows passes back the context the watch registered, a `Subscription` that lives
    // until the registration is withdrawn.
    let subscription = unsafe { &*context.cast::<Subscription>() };
    if let Some(event) = from_power_broadcast(event) {
        // The receiver goes only with the watch, which withdraws the registration first.
        let _ = subscription.events.send(event);
    }
    ERROR_SUCCESS
}

fn os_error(status: WIN32_ERROR) -> std::io::Error {
    std::io::Error::from_raw_os_error(status as i32)
}

#[derive(Debug)]
pub(super) struct Watch {
    registration: HPOWERNOTIFY,
    subscription: SubscriptionPtr,
    events: mpsc::UnboundedReceiver<PowerEvent>,
}

impl Watch {
    pub(super) async fn start(_config: &WatchConfig) -> Result<Watch, PowerError> {
        let (sender, events) = mpsc::unbounded_channel();
        let subscription = Box::into_raw(Box::new(Subscription {
            params: DEVICE_NOTIFY_SUBSCRIBE_PARAMETERS {
                Callback: Some(on_power_broadcast),
                Context: null_mut(),
            },
            events: sender,
        }));
        // SAFETY: `subscription` was just allocated and nothing else sees it yet.
        let params = unsafe {
            (*subscription).params.Context = subscription.cast();
            &raw const (*subscription).params
        };
        let mut registration: *mut c_void = null_mut();
        // SAFETY: `params` points to parameters whose callback has the required signature and
        // whose context outlives the registration (it is freed only after it is withdrawn).
        let status = unsafe {
            PowerRegisterSuspendResumeNotification(
                DEVICE_NOTIFY_CALLBACK,
                params.cast_mut().cast(),
                &mut registration,
            )
        };
        if status != ERROR_SUCCESS {
            // SAFETY: the registration failed, so Windows holds no pointer to the subscription.
            drop(unsafe { Box::from_raw(subscription) });
            return Err(PowerError::Service(format!(
                "PowerRegisterSuspendResumeNotification: {}",
                os_error(status)
            )));
        }
        Ok(Watch {
            registration: registration as HPOWERNOTIFY,
            subscription: SubscriptionPtr(subscription),
            events,
        })
    }

    pub(super) async fn next(&mut self) -> Result<PowerEvent, PowerError> {
        self.events
            .recv()
            .await
            .ok_or_else(|| PowerError::Service("the suspend and resume notification ended".into()))
    }

    /// Nothing to let go: Windows holds no sleep back for an application.
    pub(super) fn release(&mut self) {}

    /// Never: Windows suspends about 2 seconds after `PBT_APMSUSPEND` whatever the watch does.
    pub(super) fn holds_sleep(&self) -> bool {
        false
    }

    /// Calls the callback Windows was given, with the context Windows was given, as Windows
    /// does for a power broadcast.
    #[cfg(test)]
    fn deliver(&self, event: u32) {
        // SAFETY: the subscription lives as long as the watch.
        let params = unsafe { (*self.subscription.0).params };
        let callback = params.Callback.expect("the callback the watch registered");
        // SAFETY: the context is the watch's live subscription.
        unsafe { callback(params.Context, event, std::ptr::null()) };
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: the registration was made by `start` and is withdrawn only here.
        let status = unsafe { PowerUnregisterSuspendResumeNotification(self.registration) };
        if status == ERROR_SUCCESS {
            // SAFETY: the registration is withdrawn, so Windows no longer calls back with the
            // subscription; it was made by `Box::into_raw` in `start` and is freed only here.
            drop(unsafe { Box::from_raw(self.subscription.0) });
        } else {
            // Windows may still call back with it: the subscription is left allocated.
            tracing::warn!(
                "PowerUnregisterSuspendResumeNotification: {}",
                os_error(status)
            );
        }
    }
}

/// A power request's handle.
#[derive(Debug)]
struct Request(HANDLE);

// SAFETY: a kernel handle may be used and closed from any thread.
unsafe impl Send for Request {}
// SAFETY: as above; the handle is only read while shared.
unsafe impl Sync for Request {}

/// A power request that keeps the machine from sleeping by itself.
#[derive(Debug)]
pub(super) struct Awake {
    request: Request,
    /// The reason, as a NUL-terminated wide string, kept while the request lives.
    _reason: Vec<u16>,
}

impl Awake {
    pub(super) async fn hold(config: &WatchConfig) -> Result<Awake, PowerError> {
        let mut reason: Vec<u16> = config
            .why
            .encode_utf16()
            .filter(|&unit| unit != 0)
            .chain([0])
            .collect();
        let context = REASON_CONTEXT {
            Version: POWER_REQUEST_CONTEXT_VERSION,
            Flags: POWER_REQUEST_CONTEXT_SIMPLE_STRING,
            Reason: windows_sys::Win32::System::Threading::REASON_CONTEXT_0 {
                SimpleReasonString: reason.as_mut_ptr(),
            },
        };
        // SAFETY: `context` points to a NUL-terminated wide string that outlives the request.
        let request = unsafe { PowerCreateRequest(&context) };
        if request.is_null() || request == INVALID_HANDLE_VALUE {
            return Err(PowerError::Service(format!(
                "PowerCreateRequest: {}",
                std::io::Error::last_os_error()
            )));
        }
        let request = Request(request);
        // SAFETY: `request` is the handle just created.
        if unsafe { PowerSetRequest(request.0, PowerRequestSystemRequired) } == 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: the handle is ours and closed once.
            unsafe { CloseHandle(request.0) };
            return Err(PowerError::Service(format!("PowerSetRequest: {err}")));
        }
        Ok(Awake {
            request,
            _reason: reason,
        })
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        // SAFETY: the request was created and set by `hold`; it is cleared and closed once.
        unsafe {
            PowerClearRequest(self.request.0, PowerRequestSystemRequired);
            CloseHandle(self.request.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use windows_sys::Win32::Foundation::{ERROR_CALL_NOT_IMPLEMENTED, GetHandleInformation};

    use super::super::{KeepAwake, PowerError, PowerEvent, PowerWatch, WatchConfig, pbt};
    use crate::windows_tests::under_wine;

    /// Registers for suspend and resume, then plays a suspend and a resume through the callback
    /// and context that Windows was given, as Windows calls them. Under Wine (8) the
    /// registration is a stub that succeeds and never calls back, so the events come from the
    /// test alone there; on Windows the registration is real as well.
    #[tokio::test]
    async fn the_watch_registers_and_reports_what_its_callback_hears() {
        let config = WatchConfig::new("flotilla-test");
        let mut watch = PowerWatch::start(&config).await.unwrap();
        // Windows holds no sleep back: nothing to release.
        assert!(!watch.holds_sleep());
        watch.release();
        // A suspend, then a resume with a user present and a power-source change: one sleep,
        // one wake.
        for event in [
            pbt::APM_SUSPEND,
            pbt::APM_RESUME_AUTOMATIC,
            pbt::APM_RESUME_SUSPEND,
            pbt::APM_POWER_STATUS_CHANGE,
        ] {
            watch.inner.deliver(event);
        }
        assert_eq!(watch.next().await.unwrap(), PowerEvent::WillSleep);
        assert_eq!(watch.next().await.unwrap(), PowerEvent::Woke);
        assert!(watch.inner.events.try_recv().is_err());
        // Withdraws the registration and frees the context.
        drop(watch);
    }

    /// On Windows the power request is an open handle while it is held. Wine (8) has no power
    /// requests: `PowerCreateRequest` fails with `ERROR_CALL_NOT_IMPLEMENTED`, and holding must
    /// fail saying so.
    #[tokio::test]
    async fn keeping_awake_holds_a_power_request_until_dropped() {
        let mut config = WatchConfig::new("flotilla-test");
        config.why = "Runs a flotilla test".into();
        let awake = match KeepAwake::hold(&config).await {
            Ok(awake) => awake,
            Err(PowerError::Service(message)) if under_wine() => {
                let not_implemented =
                    std::io::Error::from_raw_os_error(ERROR_CALL_NOT_IMPLEMENTED as i32);
                assert_eq!(message, format!("PowerCreateRequest: {not_implemented}"));
                eprintln!("under Wine, as expected: {message}");
                return;
            }
            Err(e) => panic!("the power request was refused: {e}"),
        };
        let mut flags = 0;
        // SAFETY: the handle is the live power request's; the call only reads its flags.
        let open = unsafe { GetHandleInformation(awake._inner.request.0, &mut flags) };
        assert_ne!(open, 0, "the power request is an open handle");
        let reason = String::from_utf16(&awake._inner._reason).unwrap();
        assert_eq!(reason, "Runs a flotilla test\0");
        drop(awake);
    }
}
