//! Which of this machine's addresses other machines reach it at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// The local address the OS would use to reach `dest`. A UDP "connect" only consults the
/// routing table: no packet is sent.
pub fn route_to(dest: SocketAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = if dest.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(dest)?;
    let ip = sock.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("the OS chose no local address for {dest}"),
        ));
    }
    Ok(ip)
}

/// The address this machine offers a LAN: the one on its default route, or, on a network
/// without one (an isolated LAN, a lab), the first address of an interface that is up and not
/// loopback. `None` when the machine has only loopback.
pub fn lan_address() -> Option<IpAddr> {
    // A TEST-NET-1 address: routed like any other, never answered.
    let probe: SocketAddr = (Ipv4Addr::new(192, 0, 2, 1), 9).into();
    match route_to(probe) {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => interface_addresses()
            .into_iter()
            .find(|ip| !ip.is_loopback()),
    }
}

/// The IPv4 addresses of the interfaces that are up, in the order the OS lists them.
#[cfg(unix)]
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we free below, once.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, still allocated.
        let entry = unsafe { &*cur };
        let up = entry.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if up && !entry.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
        }
        cur = entry.ifa_next;
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

/// The IPv4 addresses of the interfaces that are up (not enumerated on this OS yet: the
/// default route's address is what [`lan_address`] uses there).
#[cfg(not(unix))]
pub fn interface_addresses() -> Vec<IpAddr> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_to_loopback_is_loopback() {
        assert!(
            route_to("127.0.0.1:6379".parse().unwrap())
                .unwrap()
                .is_loopback()
        );
    }

    #[cfg(unix)]
    #[test]
    fn loopback_is_among_the_interfaces_and_never_the_lan_address() {
        assert!(interface_addresses().iter().any(|ip| ip.is_loopback()));
        if let Some(ip) = lan_address() {
            assert!(!ip.is_loopback());
            assert!(interface_addresses().contains(&ip) || ip.is_ipv6(), "{ip}");
        }
    }
}
