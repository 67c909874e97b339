//! Each OS's notification as a [`PowerEvent`]: plain functions, built and tested on every OS.

use super::PowerEvent;

/// logind's signals on `org.freedesktop.login1.Manager`: `member` is the signal's name and
/// `start` its one boolean argument. `None` for any other signal.
pub fn from_logind(member: &str, start: bool) -> Option<PowerEvent> {
    match (member, start) {
        ("PrepareForSleep", true) => Some(PowerEvent::WillSleep),
        ("PrepareForSleep", false) => Some(PowerEvent::Woke),
        ("PrepareForShutdown", true) => Some(PowerEvent::WillShutDown),
        ("PrepareForShutdown", false) => Some(PowerEvent::ShutdownCalledOff),
        _ => None,
    }
}

/// The message types of IOKit's root power domain, from `<IOKit/IOMessage.h>`:
/// `iokit_common_msg(x)` is `sys_iokit | sub_iokit_common | x`, where `sys_iokit` is
/// `err_system(0x38)` = `0x38 << 26` = `0xE000_0000` and `sub_iokit_common` is 0.
pub mod iokit {
    /// `kIOMessageCanSystemSleep`: an idle sleep is proposed and may be refused.
    pub const CAN_SYSTEM_SLEEP: u32 = 0xE000_0270;
    /// `kIOMessageSystemWillSleep`: sleep is beginning; acknowledge with `IOAllowPowerChange`.
    pub const SYSTEM_WILL_SLEEP: u32 = 0xE000_0280;
    /// `kIOMessageSystemWillNotSleep`: a proposed idle sleep was called off.
    pub const SYSTEM_WILL_NOT_SLEEP: u32 = 0xE000_0290;
    /// `kIOMessageSystemHasPoweredOn`: the system finished waking.
    pub const SYSTEM_HAS_POWERED_ON: u32 = 0xE000_0300;
    /// `kIOMessageSystemWillPowerOn`: the system began waking (drivers are not yet up).
    pub const SYSTEM_WILL_POWER_ON: u32 = 0xE000_0320;
}

/// What the macOS watcher does with a message of `IORegisterForSystemPower`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IokitAction {
    /// A question the watch never says no to (`kIOMessageCanSystemSleep`, an idle sleep is
    /// proposed): answer `IOAllowPowerChange` at once. Keeping the machine awake is
    /// [`KeepAwake`](super::KeepAwake)'s job.
    AllowNow,
    /// Sleep is beginning (`kIOMessageSystemWillSleep`): report [`PowerEvent::WillSleep`] and
    /// keep the acknowledgement until the caller releases the watch; macOS waits for it (up to
    /// 30 s).
    Hold,
    /// Report this event; nothing is answered.
    Event(PowerEvent),
    /// Nothing to report or answer.
    Ignore,
}

/// The watcher's action for a message of `IORegisterForSystemPower`. Only the announcements that
/// sleep is happening and that it is over are events: `kIOMessageCanSystemSleep` is a question,
/// and `kIOMessageSystemWillPowerOn` comes before the machine is usable, so wake is
/// `kIOMessageSystemHasPoweredOn`.
pub fn iokit_action(message_type: u32) -> IokitAction {
    match message_type {
        iokit::CAN_SYSTEM_SLEEP => IokitAction::AllowNow,
        iokit::SYSTEM_WILL_SLEEP => IokitAction::Hold,
        iokit::SYSTEM_HAS_POWERED_ON => IokitAction::Event(PowerEvent::Woke),
        _ => IokitAction::Ignore,
    }
}

/// The event a message of `IORegisterForSystemPower` reports (see [`iokit_action`]), if any.
pub fn from_iokit_message(message_type: u32) -> Option<PowerEvent> {
    match iokit_action(message_type) {
        IokitAction::Hold => Some(PowerEvent::WillSleep),
        IokitAction::Event(event) => Some(event),
        IokitAction::AllowNow | IokitAction::Ignore => None,
    }
}

/// The `wParam` events of `WM_POWERBROADCAST`, from `WinUser.h`.
pub mod pbt {
    /// `PBT_APMSUSPEND`: the computer is about to suspend.
    pub const APM_SUSPEND: u32 = 0x4;
    /// `PBT_APMRESUMESUSPEND`: resumed, and a user is present (comes after the automatic one).
    pub const APM_RESUME_SUSPEND: u32 = 0x7;
    /// `PBT_APMPOWERSTATUSCHANGE`: AC or battery changed.
    pub const APM_POWER_STATUS_CHANGE: u32 = 0xA;
    /// `PBT_APMRESUMEAUTOMATIC`: resumed, sent on every resume.
    pub const APM_RESUME_AUTOMATIC: u32 = 0x12;
}

/// A `WM_POWERBROADCAST` event. Windows sends `PBT_APMRESUMEAUTOMATIC` on every resume and
/// `PBT_APMRESUMESUSPEND` after it only when a user is there, so only the automatic one is
/// [`PowerEvent::Woke`]: one wake, one event.
pub fn from_power_broadcast(event: u32) -> Option<PowerEvent> {
    match event {
        pbt::APM_SUSPEND => Some(PowerEvent::WillSleep),
        pbt::APM_RESUME_AUTOMATIC => Some(PowerEvent::Woke),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logind_signals() {
        assert_eq!(
            from_logind("PrepareForSleep", true),
            Some(PowerEvent::WillSleep)
        );
        assert_eq!(
            from_logind("PrepareForSleep", false),
            Some(PowerEvent::Woke)
        );
        assert_eq!(
            from_logind("PrepareForShutdown", true),
            Some(PowerEvent::WillShutDown)
        );
        assert_eq!(
            from_logind("PrepareForShutdown", false),
            Some(PowerEvent::ShutdownCalledOff)
        );
        assert_eq!(from_logind("SessionNew", true), None);
    }

    #[test]
    fn iokit_messages_as_recorded() {
        // A sleep and wake as IORegisterForSystemPower delivers them, in order.
        let recorded = [0xE000_0270, 0xE000_0280, 0xE000_0320, 0xE000_0300];
        let events: Vec<_> = recorded
            .into_iter()
            .filter_map(from_iokit_message)
            .collect();
        assert_eq!(events, [PowerEvent::WillSleep, PowerEvent::Woke]);
        assert_eq!(from_iokit_message(iokit::SYSTEM_WILL_NOT_SLEEP), None);
        assert_eq!(from_iokit_message(0), None);
    }

    #[test]
    fn iokit_actions_as_recorded() {
        // A sleep and wake as IORegisterForSystemPower delivers them, in order: the idle-sleep
        // question is answered at once, the sleep itself is held for release.
        let recorded = [0xE000_0270, 0xE000_0280, 0xE000_0320, 0xE000_0300];
        let actions: Vec<_> = recorded.into_iter().map(iokit_action).collect();
        assert_eq!(
            actions,
            [
                IokitAction::AllowNow,
                IokitAction::Hold,
                IokitAction::Ignore,
                IokitAction::Event(PowerEvent::Woke),
            ]
        );
        // A proposed idle sleep called off: nothing to answer or report.
        assert_eq!(
            iokit_action(iokit::SYSTEM_WILL_NOT_SLEEP),
            IokitAction::Ignore
        );
        assert_eq!(iokit_action(0), IokitAction::Ignore);
    }

    #[test]
    fn iokit_constants_follow_the_header_macro() {
        let sys_iokit = (0x38u32 & 0x3f) << 26;
        assert_eq!(sys_iokit, 0xE000_0000);
        assert_eq!(iokit::CAN_SYSTEM_SLEEP, sys_iokit | 0x270);
        assert_eq!(iokit::SYSTEM_WILL_SLEEP, sys_iokit | 0x280);
        assert_eq!(iokit::SYSTEM_WILL_NOT_SLEEP, sys_iokit | 0x290);
        assert_eq!(iokit::SYSTEM_HAS_POWERED_ON, sys_iokit | 0x300);
        assert_eq!(iokit::SYSTEM_WILL_POWER_ON, sys_iokit | 0x320);
    }

    #[test]
    fn power_broadcasts_as_recorded() {
        // Suspend, then a resume with a user present: automatic, then suspend-resume.
        let recorded = [0x4, 0x12, 0x7, 0xA];
        let events: Vec<_> = recorded
            .into_iter()
            .filter_map(from_power_broadcast)
            .collect();
        assert_eq!(events, [PowerEvent::WillSleep, PowerEvent::Woke]);
        // A remote wake sends the automatic resume alone.
        assert_eq!(from_power_broadcast(0x12), Some(PowerEvent::Woke));
        assert_eq!(from_power_broadcast(pbt::APM_RESUME_SUSPEND), None);
        assert_eq!(from_power_broadcast(pbt::APM_POWER_STATUS_CHANGE), None);
    }

    #[cfg(windows)]
    #[test]
    fn pbt_constants_match_windows_sys() {
        use windows_sys::Win32::UI::WindowsAndMessaging as w;
        assert_eq!(pbt::APM_SUSPEND, w::PBT_APMSUSPEND);
        assert_eq!(pbt::APM_RESUME_SUSPEND, w::PBT_APMRESUMESUSPEND);
        assert_eq!(pbt::APM_RESUME_AUTOMATIC, w::PBT_APMRESUMEAUTOMATIC);
        assert_eq!(pbt::APM_POWER_STATUS_CHANGE, w::PBT_APMPOWERSTATUSCHANGE);
    }
}
