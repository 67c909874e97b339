//! Which of this machine's addresses the cluster should use.
//!
//! [`choose_bind`] picks the address a Ray node binds and advertises: the machine's Tailscale
//! address, or the LAN address the OS would use to reach the head (or, without a head, the
//! address of the default route). Routes are read with the UDP "connect" trick: connecting a
//! UDP socket only consults the routing table, no packet is sent.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use crate::{NetError, Status};

/// A TEST-NET-1 address (RFC 5737): routed like any address on the internet, never answered.
/// Only its route is looked up; nothing is sent to it.
pub const DEFAULT_ROUTE_PROBE: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);

/// How the cluster's machines reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Over Tailscale: bind this machine's Tailscale address.
    Tailscale,
    /// Over the local network: bind the address that routes to the head.
    Lan,
    /// Tailscale when it is running here, else the local network.
    #[default]
    Auto,
}

impl Mode {
    /// The mode's name, as [`Mode::from_str`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tailscale => "tailscale",
            Mode::Lan => "lan",
            Mode::Auto => "auto",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Mode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network mode {0:?}: expected `tailscale`, `lan` or `auto`")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tailscale" => Ok(Mode::Tailscale),
            "lan" => Ok(Mode::Lan),
            "auto" => Ok(Mode::Auto),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// The local address the OS would use to reach `dest`. Nothing is sent: connecting a UDP
/// socket only looks up the route.
pub fn route_to(dest: SocketAddr) -> io::Result<IpAddr> {
    flotilla_host::addr::route_to(dest)
}

/// The address this machine binds for the cluster in `mode`.
///
/// - [`Mode::Tailscale`]: this machine's Tailscale IPv4 address, else its IPv6 one; an error
///   saying what to do when Tailscale is not running (or `status` is `None`: unknown).
/// - [`Mode::Lan`]: the address that routes to `head`, or without a head the address of the
///   default route.
/// - [`Mode::Auto`]: as Tailscale when `status` says it is running and has an address, else as
///   LAN.
pub fn choose_bind(
    mode: Mode,
    head: Option<SocketAddr>,
    status: Option<&Status>,
) -> Result<IpAddr, NetError> {
    choose_bind_with(mode, head, status, &route_to)
}

/// [`choose_bind`] with the route lookup given, so that tests do not depend on the machine's
/// routes.
fn choose_bind_with(
    mode: Mode,
    head: Option<SocketAddr>,
    status: Option<&Status>,
    route: &dyn Fn(SocketAddr) -> io::Result<IpAddr>,
) -> Result<IpAddr, NetError> {
    match mode {
        Mode::Tailscale => tailscale_address(status),
        Mode::Lan => lan_address(head, route),
        Mode::Auto => match status {
            Some(s) if s.is_running() => match tailscale_address(Some(s)) {
                Ok(ip) => Ok(ip),
                Err(e) => {
                    tracing::warn!(error = %e, "Tailscale runs but has no address; using the LAN");
                    lan_address(head, route)
                }
            },
            _ => lan_address(head, route),
        },
    }
}

fn tailscale_address(status: Option<&Status>) -> Result<IpAddr, NetError> {
    let status = status.ok_or(NetError::TailscaleUnknown)?;
    if let Some(guidance) = status.guidance() {
        return Err(NetError::TailscaleNotReady {
            state: status.backend_state.to_string(),
            guidance,
        });
    }
    status
        .self_ipv4()
        .or_else(|| status.self_ipv6())
        .ok_or(NetError::NoTailscaleAddress)
}

fn lan_address(
    head: Option<SocketAddr>,
    route: &dyn Fn(SocketAddr) -> io::Result<IpAddr>,
) -> Result<IpAddr, NetError> {
    match head {
        Some(dest) => route(dest).map_err(|source| NetError::NoRoute { dest, source }),
        None => route(DEFAULT_ROUTE_PROBE).map_err(|source| NetError::NoDefaultRoute { source }),
    }
}

/// `EHOSTUNREACH` on macOS ("No route to host").
pub const MACOS_EHOSTUNREACH: i32 = 65;

/// What to do when macOS's Local Network privacy (macOS 15 and later) is the likely reason a
/// connection to `dest` failed with the OS error `os_error`; `None` when it is not.
///
/// That privacy setting makes the kernel refuse connections to addresses on the local network
/// (private and link-local ranges) from an app the owner has not allowed, and from processes a
/// launchd agent starts, with a plain `EHOSTUNREACH`, as though there were no route: nothing
/// tells the user why. Tailscale's addresses (100.64.0.0/10) are not the local network and are
/// not blocked, nor is loopback.
pub fn local_network_privacy_hint(
    macos_major: Option<u32>,
    os_error: Option<i32>,
    dest: IpAddr,
) -> Option<&'static str> {
    let blocked_kind = match dest {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        // Unique local (fc00::/7) and link-local (fe80::/10).
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    (macos_major.is_some_and(|m| m >= 15)
        && os_error == Some(MACOS_EHOSTUNREACH)
        && blocked_kind
        && !crate::tailscale::is_tailscale_ip(dest))
    .then_some(
        "macOS's Local Network privacy is blocking Flotilla: in System Settings > Privacy & \
         Security > Local Network, turn on Flotilla (or the terminal that runs `flotilla`), then \
         try again; or join the head over Tailscale, which macOS does not block",
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn local_network_privacy_is_named_only_where_macos_blocks_it() {
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let hint = |major, err, ip| local_network_privacy_hint(major, err, ip).is_some();
        // macOS 15 and 26 refusing a LAN peer with EHOSTUNREACH: the privacy setting.
        assert!(hint(Some(15), Some(MACOS_EHOSTUNREACH), lan));
        assert!(hint(Some(26), Some(MACOS_EHOSTUNREACH), lan));
        assert!(hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "10.0.0.7".parse().unwrap()
        ));
        assert!(hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "169.254.10.1".parse().unwrap()
        ));
        assert!(hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "fe80::1".parse().unwrap()
        ));
        assert!(hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "fd7a:1::5".parse().unwrap()
        ));
        // Older macOS, another OS, another error: a real network problem.
        assert!(!hint(Some(14), Some(MACOS_EHOSTUNREACH), lan));
        assert!(!hint(None, Some(MACOS_EHOSTUNREACH), lan));
        assert!(!hint(Some(15), Some(61), lan)); // ECONNREFUSED: something answered
        assert!(!hint(Some(15), None, lan));
        // The tailnet, the internet and loopback are not the local network.
        assert!(!hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "100.101.102.103".parse().unwrap()
        ));
        assert!(!hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "fd7a:115c:a1e0::1".parse().unwrap()
        ));
        assert!(!hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "8.8.8.8".parse().unwrap()
        ));
        assert!(!hint(
            Some(15),
            Some(MACOS_EHOSTUNREACH),
            "127.0.0.1".parse().unwrap()
        ));
    }
    use super::*;

    fn fixture(name: &str) -> Status {
        let path = format!(
            "{}/tests/fixtures/tailscale/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap();
        Status::from_json(&bytes).unwrap()
    }

    /// A routing table with one LAN address, 192.168.1.20, and loopback.
    fn fake_route(dest: SocketAddr) -> io::Result<IpAddr> {
        if dest.ip().is_loopback() {
            Ok(dest.ip())
        } else {
            Ok(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)))
        }
    }

    fn no_route(_: SocketAddr) -> io::Result<IpAddr> {
        Err(io::Error::new(
            io::ErrorKind::NetworkUnreachable,
            "Network is unreachable",
        ))
    }

    const LAN: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tailscale_mode_binds_the_tailscale_ipv4_address() {
        let running = fixture("running");
        let got = choose_bind_with(Mode::Tailscale, None, Some(&running), &fake_route).unwrap();
        assert_eq!(got, ip("100.101.7.12"));
    }

    #[test]
    fn tailscale_mode_falls_back_to_ipv6_on_an_ipv6_only_tailnet() {
        let v6 = fixture("ipv6-only");
        let got = choose_bind_with(Mode::Tailscale, None, Some(&v6), &fake_route).unwrap();
        assert_eq!(got, ip("fd7a:115c:a1e0::6b01:2c0d"));
    }

    #[test]
    fn tailscale_mode_explains_what_to_do_when_not_ready() {
        for (name, hint) in [("logged-out", "tailscale up"), ("stopped", "tailscale up")] {
            let status = fixture(name);
            let err =
                choose_bind_with(Mode::Tailscale, None, Some(&status), &fake_route).unwrap_err();
            assert!(
                matches!(err, NetError::TailscaleNotReady { .. }),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains(hint), "{name}: {err}");
        }
        let err = choose_bind_with(Mode::Tailscale, None, None, &fake_route).unwrap_err();
        assert!(matches!(err, NetError::TailscaleUnknown), "{err:?}");
        assert!(err.to_string().contains("tailscale status"), "{err}");
    }

    #[test]
    fn tailscale_mode_without_an_address_is_an_error() {
        let bare =
            Status::from_json(br#"{"BackendState":"Running","Self":{"HostName":"x"}}"#).unwrap();
        let err = choose_bind_with(Mode::Tailscale, None, Some(&bare), &fake_route).unwrap_err();
        assert!(matches!(err, NetError::NoTailscaleAddress), "{err:?}");
        assert!(err.to_string().contains("tailscale ip"), "{err}");
    }

    #[test]
    fn lan_mode_routes_to_the_head_or_the_default_route() {
        let running = fixture("running");
        let head: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        let with_head = choose_bind_with(Mode::Lan, Some(head), Some(&running), &fake_route);
        assert_eq!(with_head.unwrap(), ip("127.0.0.1"));
        let without = choose_bind_with(Mode::Lan, None, Some(&running), &fake_route);
        assert_eq!(without.unwrap(), LAN);
    }

    #[test]
    fn lan_mode_without_routes_says_so() {
        let head: SocketAddr = "10.1.2.3:6379".parse().unwrap();
        let err = choose_bind_with(Mode::Lan, Some(head), None, &no_route).unwrap_err();
        assert!(matches!(err, NetError::NoRoute { .. }), "{err:?}");
        assert!(err.to_string().contains("10.1.2.3:6379"), "{err}");
        let err = choose_bind_with(Mode::Lan, None, None, &no_route).unwrap_err();
        assert!(matches!(err, NetError::NoDefaultRoute { .. }), "{err:?}");
        assert!(err.to_string().contains("Connect it to a network"), "{err}");
    }

    #[test]
    fn auto_mode_prefers_a_running_tailscale() {
        let running = fixture("running");
        let got = choose_bind_with(Mode::Auto, None, Some(&running), &fake_route).unwrap();
        assert_eq!(got, ip("100.101.7.12"));
        let v6 = fixture("ipv6-only");
        let got = choose_bind_with(Mode::Auto, None, Some(&v6), &fake_route).unwrap();
        assert_eq!(got, ip("fd7a:115c:a1e0::6b01:2c0d"));
    }

    #[test]
    fn auto_mode_falls_back_to_the_lan() {
        for name in ["logged-out", "stopped"] {
            let status = fixture(name);
            let got = choose_bind_with(Mode::Auto, None, Some(&status), &fake_route).unwrap();
            assert_eq!(got, LAN, "{name}");
        }
        assert_eq!(
            choose_bind_with(Mode::Auto, None, None, &fake_route).unwrap(),
            LAN
        );
        let bare = Status::from_json(br#"{"BackendState":"Running"}"#).unwrap();
        assert_eq!(
            choose_bind_with(Mode::Auto, None, Some(&bare), &fake_route).unwrap(),
            LAN
        );
    }

    #[test]
    fn the_real_route_to_loopback_is_loopback() {
        let got = route_to("127.0.0.1:6379".parse().unwrap()).unwrap();
        assert_eq!(got, ip("127.0.0.1"));
        let head: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(choose_bind(Mode::Lan, Some(head), None).unwrap(), got);
    }

    #[test]
    fn modes_read_and_print_their_names() {
        for mode in [Mode::Tailscale, Mode::Lan, Mode::Auto] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        assert_eq!(" LAN ".parse::<Mode>(), Ok(Mode::Lan));
        let err = "wifi".parse::<Mode>().unwrap_err();
        assert!(err.to_string().contains("`tailscale`, `lan` or `auto`"));
    }
}
