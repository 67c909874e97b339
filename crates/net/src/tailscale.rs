//! Tailscale's status, typed.
//!
//! The document is the one the LocalAPI serves at `GET /localapi/v0/status` and that
//! `tailscale status --json` prints (Go's `ipnstate.Status`). Only what Flotilla uses is read;
//! every other field is ignored, and every field read may be missing or `null`, except
//! `BackendState`, without which a document is not a Tailscale status.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::TailscaleError;

/// Go's zero `time.Time`, which Tailscale writes for "never".
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// What the Tailscale daemon is doing (`BackendState`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Connected to the tailnet: addresses are assigned and peers reachable.
    Running,
    /// Not logged in: someone must log in (`tailscale up`).
    NeedsLogin,
    /// Logged in, but an admin of the tailnet must approve this machine.
    NeedsMachineAuth,
    /// Logged in but switched off (`tailscale down`).
    Stopped,
    /// Connecting.
    Starting,
    /// The daemon has not started its backend yet.
    NoState,
    /// A state this version of Flotilla does not know, as Tailscale spelt it.
    Unknown(String),
}

impl BackendState {
    /// The state Tailscale names `s`.
    pub fn parse(s: &str) -> Self {
        match s {
            "Running" => Self::Running,
            "NeedsLogin" => Self::NeedsLogin,
            "NeedsMachineAuth" => Self::NeedsMachineAuth,
            "Stopped" => Self::Stopped,
            "Starting" => Self::Starting,
            "NoState" => Self::NoState,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// Tailscale's name for the state.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "Running",
            Self::NeedsLogin => "NeedsLogin",
            Self::NeedsMachineAuth => "NeedsMachineAuth",
            Self::Stopped => "Stopped",
            Self::Starting => "Starting",
            Self::NoState => "NoState",
            Self::Unknown(s) => s,
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One machine of the tailnet (this one or a peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Tailscale's stable node ID (`ID`), e.g. `nXb2kT5CNTRL`; empty if not given.
    pub id: String,
    /// The node's public key (`PublicKey`, or the key of the `Peer` map), e.g. `nodekey:…`.
    pub public_key: String,
    /// The machine's own host name (`HostName`).
    pub hostname: String,
    /// The MagicDNS name without the trailing dot (`DNSName`), e.g. `atlas.tail4e2a1.ts.net`;
    /// empty when Tailscale gives none.
    pub dns_name: String,
    /// The operating system Tailscale reports (`OS`): `linux`, `macOS`, `windows`, …
    pub os: String,
    /// The node's Tailscale addresses (`TailscaleIPs`), IPv4 first as Tailscale lists them.
    pub addresses: Vec<IpAddr>,
    /// Whether the coordination server sees the node as connected (`Online`).
    pub online: bool,
    /// When the node was last seen (`LastSeen`, RFC 3339 as Tailscale writes it); `None` when
    /// not given or "never" (Tailscale leaves it unset for nodes that are online).
    pub last_seen: Option<String>,
    /// The DERP relay region code the node is homed on (`Relay`), e.g. `fra`; `None` if empty.
    pub relay: Option<String>,
}

impl Peer {
    /// The node's first IPv4 Tailscale address.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv4)
    }

    /// The node's first IPv6 Tailscale address.
    pub fn ipv6(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv6)
    }
}

/// Tailscale's status on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// What the daemon is doing.
    pub backend_state: BackendState,
    /// The daemon's version (`Version`), e.g. `1.78.1-t2b8f6e1a0-g8a4c6e1d2`.
    pub version: String,
    /// Whether the tailnet has MagicDNS switched on (`CurrentTailnet.MagicDNSEnabled`).
    pub magic_dns_enabled: bool,
    /// The tailnet's DNS suffix without dots at either end, e.g. `tail4e2a1.ts.net`
    /// (`MagicDNSSuffix`, else `CurrentTailnet.MagicDNSSuffix`).
    pub magic_dns_suffix: Option<String>,
    /// The tailnet's name (`CurrentTailnet.Name`), e.g. `team@example.com` or `example.org`.
    pub tailnet: Option<String>,
    /// This machine (`Self`); `None` when logged out.
    pub self_node: Option<Peer>,
    /// This machine's Tailscale addresses as the document's top level lists them
    /// (`TailscaleIPs`); usually the same as `self_node`'s.
    pub tailscale_ips: Vec<IpAddr>,
    /// The other machines of the tailnet, sorted by host name.
    pub peers: Vec<Peer>,
    /// Tailscale's health warnings (`Health`), as it words them.
    pub health: Vec<String>,
    /// The URL to open to log in (`AuthURL`), when Tailscale has one.
    pub auth_url: Option<String>,
}

impl Status {
    /// Reads a status document (the LocalAPI's answer, or what `tailscale status --json`
    /// prints). Fields Flotilla does not use are ignored; a document without `BackendState`
    /// is refused.
    pub fn from_json(json: &[u8]) -> Result<Self, TailscaleError> {
        Self::from_json_at(json, "the status document")
    }

    /// As [`Status::from_json`], naming where the document came from in errors.
    pub(crate) fn from_json_at(json: &[u8], origin: &str) -> Result<Self, TailscaleError> {
        let parse_error = |detail: String| TailscaleError::Parse {
            origin: origin.to_owned(),
            detail,
        };
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err(parse_error("it is empty".into()));
        }
        let raw: RawStatus = serde_json::from_slice(json)
            .map_err(|e| parse_error(format!("it is not a status document as expected: {e}")))?;
        let Some(state) = raw.backend_state.filter(|s| !s.is_empty()) else {
            return Err(parse_error(
                "it has no BackendState, so it is not a Tailscale status".into(),
            ));
        };
        let tailnet = raw.current_tailnet.unwrap_or_default();
        let magic_dns_suffix = raw
            .magic_dns_suffix
            .into_iter()
            .chain(tailnet.magic_dns_suffix)
            .map(|s| s.trim_matches('.').to_owned())
            .find(|s| !s.is_empty());
        let mut peers: Vec<Peer> = raw
            .peer
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, peer)| peer.map(|p| p.into_peer(&key)))
            .collect();
        peers.sort_by(|a, b| {
            (a.hostname.to_ascii_lowercase(), &a.id).cmp(&(b.hostname.to_ascii_lowercase(), &b.id))
        });
        Ok(Status {
            backend_state: BackendState::parse(&state),
            version: raw.version.unwrap_or_default(),
            magic_dns_enabled: tailnet.magic_dns_enabled.unwrap_or(false),
            magic_dns_suffix,
            tailnet: non_empty(tailnet.name),
            self_node: raw.self_node.map(|p| p.into_peer("")),
            tailscale_ips: parse_addresses(raw.tailscale_ips, "this machine"),
            peers,
            health: raw.health.unwrap_or_default(),
            auth_url: non_empty(raw.auth_url),
        })
    }

    /// Whether Tailscale is connected (`Running`).
    pub fn is_running(&self) -> bool {
        self.backend_state == BackendState::Running
    }

    /// What the person at this machine should do for Tailscale to be usable, or `None` when it
    /// is running.
    pub fn guidance(&self) -> Option<String> {
        let text = match &self.backend_state {
            BackendState::Running => return None,
            BackendState::NeedsLogin => {
                let mut s = String::from(
                    "this machine is not logged in to Tailscale: run `tailscale up` \
                     (or open the Tailscale app and log in)",
                );
                if let Some(url) = &self.auth_url {
                    s.push_str(&format!(", or open {url} in a browser"));
                }
                s
            }
            BackendState::NeedsMachineAuth => "this machine is logged in to Tailscale but not \
                 approved yet: an admin of the tailnet must approve it in the admin console \
                 (Machines page; https://login.tailscale.com/admin/machines on tailscale.com)"
                .to_owned(),
            BackendState::Stopped => "Tailscale is stopped on this machine: run `tailscale up` \
                 (or switch it on in the Tailscale app)"
                .to_owned(),
            BackendState::Starting => {
                "Tailscale is still connecting: wait a few seconds and try again".to_owned()
            }
            BackendState::NoState => "Tailscale's daemon has not started yet: wait a few \
                 seconds and try again; if it stays like this, restart Tailscale"
                .to_owned(),
            BackendState::Unknown(s) => format!(
                "Tailscale reports the state {s:?}, which Flotilla does not know: run \
                 `tailscale status` to see what it needs"
            ),
        };
        Some(text)
    }

    /// This machine's first IPv4 Tailscale address (from `Self`, else the top level).
    pub fn self_ipv4(&self) -> Option<IpAddr> {
        self.self_addresses().find(IpAddr::is_ipv4)
    }

    /// This machine's first IPv6 Tailscale address (from `Self`, else the top level).
    pub fn self_ipv6(&self) -> Option<IpAddr> {
        self.self_addresses().find(IpAddr::is_ipv6)
    }

    fn self_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let from_self = self
            .self_node
            .as_ref()
            .map(|p| p.addresses.as_slice())
            .unwrap_or_default();
        let list = if from_self.is_empty() {
            self.tailscale_ips.as_slice()
        } else {
            from_self
        };
        list.iter().copied()
    }

    /// The peer called `name`: its MagicDNS name (with or without the tailnet suffix and the
    /// trailing dot) or its host name, compared case-insensitively. A full DNS name wins over a
    /// short one, and a short one over a host name (Tailscale makes DNS names unique, host names
    /// need not be). This machine itself is not among the peers.
    pub fn peer_by_name(&self, name: &str) -> Option<&Peer> {
        let query = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if query.is_empty() {
            return None;
        }
        let suffix = self
            .magic_dns_suffix
            .as_deref()
            .map(str::to_ascii_lowercase);
        let strip = |s: &str| -> String {
            let s = s.to_ascii_lowercase();
            match &suffix {
                Some(sfx) => match s
                    .strip_suffix(sfx.as_str())
                    .and_then(|h| h.strip_suffix('.'))
                {
                    Some(head) if !head.is_empty() => head.to_owned(),
                    _ => s,
                },
                None => s,
            }
        };
        let short_query = strip(&query);
        let short_dns = |p: &Peer| -> Option<String> {
            if p.dns_name.is_empty() {
                return None;
            }
            let short = strip(&p.dns_name);
            // Without a known suffix, a multi-label name's first label is its short form.
            Some(match short.split_once('.') {
                Some((first, _)) if suffix.is_none() => first.to_owned(),
                _ => short,
            })
        };
        self.peers
            .iter()
            .find(|p| !p.dns_name.is_empty() && p.dns_name.to_ascii_lowercase() == query)
            .or_else(|| {
                self.peers
                    .iter()
                    .find(|p| short_dns(p).is_some_and(|s| s == short_query))
            })
            .or_else(|| {
                self.peers.iter().find(|p| {
                    let host = p.hostname.to_ascii_lowercase();
                    !host.is_empty() && (host == query || host == short_query)
                })
            })
    }
}

/// What this machine's Tailscale says about a head it is about to join or reconnect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadPeer<'a> {
    /// None of the head's addresses is a tailnet address or MagicDNS name: a LAN head.
    NotOnTailnet,
    /// The head is this machine.
    ThisMachine,
    /// The head is a peer that Tailscale sees online.
    Online(&'a Peer),
}

impl Status {
    /// The peer with one of `hosts` (addresses or names, as join codes carry them).
    pub fn peer_for(&self, host: &str) -> Option<&Peer> {
        match host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.peers.iter().find(|p| p.addresses.contains(&ip)),
            Err(_) => self.peer_by_name(host),
        }
    }

    fn is_tailnet_host(&self, host: &str) -> bool {
        let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
        looks_tailnet(&h)
            || self
                .magic_dns_suffix
                .as_deref()
                .is_some_and(|sfx| h.ends_with(&format!(".{}", sfx.to_ascii_lowercase())))
    }

    /// Checks that a head at `hosts` (its addresses without ports) can be reached over the
    /// tailnet before trying it: Tailscale must be running here and the head's machine must be
    /// an online peer. The error says what to do.
    pub fn check_head<'a>(&'a self, hosts: &[&str]) -> Result<HeadPeer<'a>, String> {
        if !hosts.iter().any(|h| self.is_tailnet_host(h)) {
            return Ok(HeadPeer::NotOnTailnet);
        }
        if let Some(guidance) = self.guidance() {
            return Err(format!(
                "the head is on a tailnet, but Tailscale here is not ready: {guidance}"
            ));
        }
        let mine: Vec<IpAddr> = self.self_addresses().collect();
        let me = self.self_node.as_ref();
        let is_me = |h: &str| {
            let h = h.trim().trim_end_matches('.');
            h.parse::<IpAddr>().is_ok_and(|ip| mine.contains(&ip))
                || me.is_some_and(|m| !m.dns_name.is_empty() && m.dns_name.eq_ignore_ascii_case(h))
        };
        if hosts.iter().any(|h| is_me(h)) {
            return Ok(HeadPeer::ThisMachine);
        }
        let Some(peer) = hosts.iter().find_map(|h| self.peer_for(h)) else {
            let tailnet = self.tailnet.as_deref().unwrap_or("this machine's tailnet");
            return Err(format!(
                "the head ({}) is not in {tailnet}: log this machine in to the head's tailnet \
                 (`tailscale up`, or `tailscale switch` between accounts), or ask for a code \
                 for this network",
                hosts.join(", ")
            ));
        };
        if !peer.online {
            let name = if peer.dns_name.is_empty() {
                &peer.hostname
            } else {
                &peer.dns_name
            };
            let seen = peer
                .last_seen
                .as_deref()
                .map(|t| format!(" (last seen {t})"))
                .unwrap_or_default();
            return Err(format!(
                "the head's machine {name} is offline in the tailnet{seen}: wake it or start \
                 Tailscale on it, then try again"
            ));
        }
        Ok(HeadPeer::Online(peer))
    }
}

/// Whether `host` (an address or a name) is on a tailnet by its looks: a Tailscale address or
/// a `*.ts.net` MagicDNS name. (A tailnet with its own DNS suffix needs the status to tell.)
pub fn looks_tailnet(host: &str) -> bool {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    match h
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => is_tailscale_ip(ip),
        Err(_) => h.ends_with(".ts.net"),
    }
}

/// Before joining or reconnecting to a head at `hosts`: when the head looks like a tailnet
/// machine, asks this machine's Tailscale whether it can get there (running, logged in to the
/// same tailnet, the head's machine online). A LAN head is not checked, and neither is one
/// when Tailscale does not answer in time (the connection attempt will tell).
pub async fn precheck_head(hosts: &[&str]) -> Result<(), String> {
    if !hosts.iter().any(|h| looks_tailnet(h)) {
        return Ok(());
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), crate::status()).await {
        Err(_) => {
            tracing::warn!("Tailscale did not answer in 5 s; trying the head anyway");
            Ok(())
        }
        Ok(Err(e @ TailscaleError::NotInstalled { .. })) => Err(format!(
            "the head ({}) is on a tailnet, and {e}",
            hosts.join(", ")
        )),
        Ok(Err(e)) => Err(format!(
            "the head ({}) is on a tailnet, but Tailscale's status cannot be read: {e}",
            hosts.join(", ")
        )),
        Ok(Ok(status)) => status.check_head(hosts).map(|_| ()),
    }
}

/// Whether `ip` is in Tailscale's address ranges: `100.64.0.0/10` (shared with carrier-grade
/// NAT) or `fd7a:115c:a1e0::/48`.
pub fn is_tailscale_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 100 && (b & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd7a && s[1] == 0x115c && s[2] == 0xa1e0
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Parses Tailscale's address strings, skipping (and logging) any that is not an address.
fn parse_addresses(list: Option<Vec<String>>, whose: &str) -> Vec<IpAddr> {
    list.unwrap_or_default()
        .iter()
        .filter_map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::warn!(address = %s, node = whose, "ignoring a Tailscale address that is not an IP address");
                None
            }
        })
        .collect()
}

// The document as Tailscale writes it. Every field is optional so that a missing one and a
// `null` read the same.

#[derive(Deserialize)]
struct RawStatus {
    #[serde(rename = "Version", default)]
    version: Option<String>,
    #[serde(rename = "BackendState", default)]
    backend_state: Option<String>,
    #[serde(rename = "AuthURL", default)]
    auth_url: Option<String>,
    #[serde(rename = "TailscaleIPs", default)]
    tailscale_ips: Option<Vec<String>>,
    #[serde(rename = "Self", default)]
    self_node: Option<RawPeer>,
    #[serde(rename = "Health", default)]
    health: Option<Vec<String>>,
    #[serde(rename = "MagicDNSSuffix", default)]
    magic_dns_suffix: Option<String>,
    #[serde(rename = "CurrentTailnet", default)]
    current_tailnet: Option<RawTailnet>,
    #[serde(rename = "Peer", default)]
    peer: Option<BTreeMap<String, Option<RawPeer>>>,
}

#[derive(Deserialize, Default)]
struct RawTailnet {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "MagicDNSSuffix", default)]
    magic_dns_suffix: Option<String>,
    #[serde(rename = "MagicDNSEnabled", default)]
    magic_dns_enabled: Option<bool>,
}

#[derive(Deserialize)]
struct RawPeer {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "PublicKey", default)]
    public_key: Option<String>,
    #[serde(rename = "HostName", default)]
    hostname: Option<String>,
    #[serde(rename = "DNSName", default)]
    dns_name: Option<String>,
    #[serde(rename = "OS", default)]
    os: Option<String>,
    #[serde(rename = "TailscaleIPs", default)]
    tailscale_ips: Option<Vec<String>>,
    #[serde(rename = "Online", default)]
    online: Option<bool>,
    #[serde(rename = "LastSeen", default)]
    last_seen: Option<String>,
    #[serde(rename = "Relay", default)]
    relay: Option<String>,
}

impl RawPeer {
    fn into_peer(self, map_key: &str) -> Peer {
        let hostname = self.hostname.unwrap_or_default();
        let addresses = parse_addresses(self.tailscale_ips, &hostname);
        Peer {
            id: self.id.unwrap_or_default(),
            public_key: non_empty(self.public_key).unwrap_or_else(|| map_key.to_owned()),
            dns_name: self
                .dns_name
                .unwrap_or_default()
                .trim()
                .trim_end_matches('.')
                .to_owned(),
            hostname,
            os: self.os.unwrap_or_default(),
            addresses,
            online: self.online.unwrap_or(false),
            last_seen: non_empty(self.last_seen).filter(|t| t != GO_ZERO_TIME),
            relay: non_empty(self.relay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_states_round_trip_their_names() {
        for name in [
            "Running",
            "NeedsLogin",
            "NeedsMachineAuth",
            "Stopped",
            "Starting",
            "NoState",
            "InUseOtherUser",
        ] {
            assert_eq!(BackendState::parse(name).as_str(), name);
        }
        assert_eq!(
            BackendState::parse("InUseOtherUser"),
            BackendState::Unknown("InUseOtherUser".into())
        );
    }

    #[test]
    fn tailscale_ranges_are_recognised() {
        for ip in [
            "100.64.0.1",
            "100.127.255.254",
            "100.100.100.100",
            "fd7a:115c:a1e0::1",
        ] {
            assert!(is_tailscale_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "100.63.255.255",
            "100.128.0.1",
            "192.168.1.2",
            "fd7a:115c:a1e1::1",
            "::1",
        ] {
            assert!(!is_tailscale_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_minimal_document_reads_with_defaults() {
        let s = Status::from_json(br#"{"BackendState":"Starting"}"#).unwrap();
        assert_eq!(s.backend_state, BackendState::Starting);
        assert!(s.self_node.is_none() && s.peers.is_empty() && s.health.is_empty());
        assert!(s.guidance().unwrap().contains("wait"));
    }

    #[test]
    fn null_peers_and_addresses_are_tolerated() {
        let doc = br#"{"BackendState":"Running","TailscaleIPs":null,"Self":{"HostName":"a","TailscaleIPs":null,"Online":null},
            "Peer":{"nodekey:01":null,"nodekey:02":{"HostName":"b","TailscaleIPs":["100.64.0.2","not-an-ip"]}}}"#;
        let s = Status::from_json(doc).unwrap();
        assert!(s.self_node.as_ref().unwrap().addresses.is_empty());
        assert_eq!(s.peers.len(), 1);
        assert_eq!(s.peers[0].public_key, "nodekey:02");
        assert_eq!(
            s.peers[0].addresses,
            vec!["100.64.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.self_ipv4(), None);
    }

    #[test]
    fn self_addresses_fall_back_to_the_top_level() {
        let doc = br#"{"BackendState":"Running","TailscaleIPs":["100.64.0.9","fd7a:115c:a1e0::9"],"Self":{"HostName":"a"}}"#;
        let s = Status::from_json(doc).unwrap();
        assert_eq!(s.self_ipv4(), Some("100.64.0.9".parse().unwrap()));
        assert_eq!(s.self_ipv6(), Some("fd7a:115c:a1e0::9".parse().unwrap()));
    }

    #[test]
    fn unknown_states_get_generic_guidance() {
        let s = Status::from_json(br#"{"BackendState":"InUseOtherUser"}"#).unwrap();
        assert!(s.guidance().unwrap().contains("InUseOtherUser"));
    }
}
