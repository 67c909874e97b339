//! Which OS events are the owner's input, as plain functions that build on every OS, so that
//! each OS's choice is tested everywhere.

/// macOS `CGEventType` values (`<CoreGraphics/CGEventTypes.h>`) the tap listens to: presses,
/// not releases (a press came first), pointer moves and drags, the scroll wheel and modifier
/// keys alone.
pub mod macos {
    pub const LEFT_MOUSE_DOWN: u32 = 1;
    pub const RIGHT_MOUSE_DOWN: u32 = 3;
    pub const MOUSE_MOVED: u32 = 5;
    pub const LEFT_MOUSE_DRAGGED: u32 = 6;
    pub const RIGHT_MOUSE_DRAGGED: u32 = 7;
    pub const KEY_DOWN: u32 = 10;
    pub const FLAGS_CHANGED: u32 = 12;
    pub const SCROLL_WHEEL: u32 = 22;
    pub const OTHER_MOUSE_DOWN: u32 = 25;
    pub const OTHER_MOUSE_DRAGGED: u32 = 27;
    /// Sent to the tap itself when the system disabled it (`kCGEventTapDisabledByTimeout`,
    /// `kCGEventTapDisabledByUserInput`).
    pub const TAP_DISABLED_BY_TIMEOUT: u32 = 0xFFFF_FFFE;
    pub const TAP_DISABLED_BY_USER_INPUT: u32 = 0xFFFF_FFFF;

    const INPUT: [u32; 10] = [
        LEFT_MOUSE_DOWN,
        RIGHT_MOUSE_DOWN,
        MOUSE_MOVED,
        LEFT_MOUSE_DRAGGED,
        RIGHT_MOUSE_DRAGGED,
        KEY_DOWN,
        FLAGS_CHANGED,
        SCROLL_WHEEL,
        OTHER_MOUSE_DOWN,
        OTHER_MOUSE_DRAGGED,
    ];

    /// The tap's `CGEventMask`: `CGEventMaskBit(type)` of each input type.
    pub fn event_mask() -> u64 {
        INPUT.iter().fold(0, |mask, t| mask | (1u64 << t))
    }

    /// What the tap does with an event of type `t`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Tapped {
        Input,
        /// The system disabled the tap: enable it again.
        Reenable,
        Other,
    }

    pub fn tapped(t: u32) -> Tapped {
        match t {
            TAP_DISABLED_BY_TIMEOUT | TAP_DISABLED_BY_USER_INPUT => Tapped::Reenable,
            t if INPUT.contains(&t) => Tapped::Input,
            _ => Tapped::Other,
        }
    }
}

/// The window messages a Windows low-level hook is called with (`wParam`).
pub mod windows {
    pub const WM_KEYDOWN: usize = 0x0100;
    pub const WM_KEYUP: usize = 0x0101;
    pub const WM_SYSKEYDOWN: usize = 0x0104;
    pub const WM_SYSKEYUP: usize = 0x0105;
    pub const WM_MOUSEMOVE: usize = 0x0200;
    pub const WM_LBUTTONDOWN: usize = 0x0201;
    pub const WM_LBUTTONUP: usize = 0x0202;
    pub const WM_RBUTTONDOWN: usize = 0x0204;
    pub const WM_MBUTTONDOWN: usize = 0x0207;
    pub const WM_MOUSEWHEEL: usize = 0x020A;
    pub const WM_XBUTTONDOWN: usize = 0x020B;
    pub const WM_MOUSEHWHEEL: usize = 0x020E;

    /// Whether a `WH_KEYBOARD_LL` call with this message is input: key presses.
    pub fn key_is_input(message: usize) -> bool {
        matches!(message, WM_KEYDOWN | WM_SYSKEYDOWN)
    }

    /// Whether a `WH_MOUSE_LL` call with this message is input: moves, presses and wheels.
    pub fn mouse_is_input(message: usize) -> bool {
        matches!(
            message,
            WM_MOUSEMOVE
                | WM_LBUTTONDOWN
                | WM_RBUTTONDOWN
                | WM_MBUTTONDOWN
                | WM_XBUTTONDOWN
                | WM_MOUSEWHEEL
                | WM_MOUSEHWHEEL
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_macos_tap_listens_to_presses_moves_and_scrolls() {
        let mask = macos::event_mask();
        // CGEventMaskBit(kCGEventKeyDown) | ... as Apple's headers define it.
        assert_eq!(mask, 0x0A40_14EA);
        assert_eq!(macos::tapped(macos::KEY_DOWN), macos::Tapped::Input);
        assert_eq!(macos::tapped(macos::MOUSE_MOVED), macos::Tapped::Input);
        // Releases (key up 11, left mouse up 2) and null events (0) are not input.
        for t in [0, 2, 11] {
            assert_eq!(macos::tapped(t), macos::Tapped::Other, "{t}");
            assert_eq!(mask & (1 << t), 0, "{t}");
        }
        assert_eq!(
            macos::tapped(macos::TAP_DISABLED_BY_TIMEOUT),
            macos::Tapped::Reenable
        );
        assert_eq!(
            macos::tapped(macos::TAP_DISABLED_BY_USER_INPUT),
            macos::Tapped::Reenable
        );
    }

    #[test]
    fn windows_hooks_count_presses_and_moves_not_releases() {
        use windows::*;
        assert!(key_is_input(WM_KEYDOWN) && key_is_input(WM_SYSKEYDOWN));
        assert!(!key_is_input(WM_KEYUP) && !key_is_input(WM_SYSKEYUP));
        for m in [
            WM_MOUSEMOVE,
            WM_LBUTTONDOWN,
            WM_RBUTTONDOWN,
            WM_MOUSEWHEEL,
            WM_XBUTTONDOWN,
        ] {
            assert!(mouse_is_input(m), "{m:#x}");
        }
        assert!(!mouse_is_input(WM_LBUTTONUP));
    }
}
