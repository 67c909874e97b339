//! The join code: one copy-paste-safe string that lets a machine join a fleet.
//!
//! It carries the head's address(es), the join secret and the SHA-256 fingerprint of the head's
//! self-signed certificate (so the agent talks only to the real head, with no CA), and
//! optionally when it expires.
//!
//! # Format (`flot1`)
//!
//! `flot1-` followed by the payload in base32 (RFC 4648 alphabet `a-z2-7`, lower case, no
//! padding), in groups of 5 characters separated by `-`:
//!
//! ```text
//! flot1-aeaaf-eaqbb-... (about 160 characters for one address)
//! ```
//!
//! The payload, all integers big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | flags: bits 0-1 = number of addresses - 1, bit 2 = an expiry follows, bits 3-7 zero |
//! | 2 | length of the whole payload in bytes, checksum included |
//! | per address | kind (`4` = IPv4 + 4 bytes, `6` = IPv6 + 16 bytes, `0` = host name + 1 length byte + the name), then the port (2 bytes) |
//! | 32 | join secret |
//! | 32 | certificate fingerprint (SHA-256 of the DER certificate) |
//! | 8 | expiry, Unix seconds (only with flag bit 2) |
//! | 4 | CRC-32 (IEEE) of everything before it, little-endian (so the whole is a CRC code word) |
//!
//! The version is the digit in the visible prefix: a code of another format says so instead
//! of failing as a typo. The CRC-32 catches every change of a character or a swap of two
//! neighbouring characters (both are error bursts of at most 10 bits), and the length field
//! tells a code cut short from a corrupted one.
//!
//! Parsing forgives what terminals, chat and e-mail do to a long string: surrounding and
//! inserted whitespace (line breaks), upper case, missing or extra dashes (including the
//! typographic dashes word processors substitute), and the digits `0` and `1` typed for the
//! letters `o` and `l` (base32 has no `0` or `1`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// The visible start of every join code of this format.
pub const PREFIX: &str = "flot1-";
/// The format version this crate reads and writes (the digit in [`PREFIX`]).
pub const FORMAT_VERSION: u32 = 1;
/// How many head addresses a join code carries at most.
pub const MAX_ADDRESSES: usize = 4;
/// The longest host name a join code carries (the DNS limit).
pub const MAX_HOST_LEN: usize = 253;
/// The longest input [`JoinCode::parse`] looks at, in bytes (a code with four 253-character
/// host names is about 2,200 characters).
pub const MAX_INPUT_LEN: usize = 8 * 1024;

/// The most base32 characters a payload can take (4 longest addresses, expiry).
const MAX_BODY_CHARS: usize = 2048;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const GROUP: usize = 5;
const FLAG_EXPIRY: u8 = 0b100;
const FLAG_RESERVED: u8 = 0b1111_1000;
const KIND_NAME: u8 = 0;
const KIND_IPV4: u8 = 4;
const KIND_IPV6: u8 = 6;
const CRC_LEN: usize = 4;
/// Flags + length.
const HEADER_LEN: usize = 3;

/// Why a string is not a usable join code. Each variant's message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinCodeError {
    /// Nothing but whitespace and dashes.
    #[error("the join code is empty: paste the whole code, which starts with `{PREFIX}`")]
    Empty,
    /// The string does not start with `flot<digits>`.
    #[error(
        "this is not a Flotilla join code (join codes start with `{PREFIX}`): check that the whole code was copied"
    )]
    NotAJoinCode,
    /// A join code of another format version.
    #[error(
        "this join code has format version {version} (`flot{version}-`), but this Flotilla reads version {FORMAT_VERSION}: use the same Flotilla version on the head and this machine"
    )]
    UnknownVersion {
        /// The version digits as written in the code.
        version: String,
    },
    /// A character that no join code contains.
    #[error(
        "the join code contains {character:?} (character {position}), which cannot be part of a join code: check that the whole code was copied and nothing else"
    )]
    InvalidCharacter {
        /// The character.
        character: char,
        /// Its position in the input, counted in characters from 1.
        position: usize,
    },
    /// The code is shorter than it says it is.
    #[error("the join code is incomplete: check that the whole code was copied")]
    Truncated,
    /// The checksum does not match: a typo, a changed or missing character.
    #[error(
        "the join code is corrupted or has a typo: check that the whole code was copied exactly"
    )]
    Corrupted,
    /// The input is longer than any join code.
    #[error(
        "the text is too long to be a join code ({len} characters, at most {max}): copy only the code"
    )]
    TooLong {
        /// The input's length (bytes, or code characters once cleaned).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A head address that cannot be used.
    #[error("bad head address {address:?}: {reason}")]
    BadAddress {
        /// The address as given (or as decoded).
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not 1 to [`MAX_ADDRESSES`] addresses.
    #[error("a join code carries 1 to {MAX_ADDRESSES} head addresses, not {0}")]
    AddressCount(usize),
    /// The checksum matches but the contents do not follow the format: the code was made by a
    /// newer (or broken) Flotilla.
    #[error(
        "the join code is intact but its contents cannot be read ({0}): it may have been made by a newer Flotilla"
    )]
    Malformed(&'static str),
}

/// The host part of a head address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name: a host name, a MagicDNS name, a fully qualified name.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// One address of the head's control plane, `host:port`. Always valid: a host name of
/// letters, digits, `-` and `_` in dot-separated labels, or an IP address; a port from 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeadAddress {
    host: Host,
    port: u16,
}

impl HeadAddress {
    /// An address from a host (an IP address, with or without `[]` for IPv6, or a name) and a
    /// port.
    pub fn new(host: &str, port: u16) -> Result<Self, JoinCodeError> {
        let bad = |reason| JoinCodeError::BadAddress {
            address: format!("{host}:{port}"),
            reason,
        };
        if port == 0 {
            return Err(bad("port 0 cannot be used"));
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self {
                host: Host::Ip(ip),
                port,
            });
        }
        check_host_name(host).map_err(bad)?;
        Ok(Self {
            host: Host::Name(host.to_owned()),
            port,
        })
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for HeadAddress {
    /// `host:port`, with IPv6 addresses in brackets (`[::1]:7470`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

impl FromStr for HeadAddress {
    type Err = JoinCodeError;

    /// Parses `host:port` or `[ipv6]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| JoinCodeError::BadAddress {
            address: s.to_owned(),
            reason,
        };
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("an IPv6 address goes in brackets: [address]:port"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        Self::new(host, port)
    }
}

/// Checks a DNS name: 1 to 253 bytes, dot-separated labels of 1 to 63 letters, digits, `-`
/// and `_`, no label starting or ending with `-`.
fn check_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the host is empty");
    }
    if name.len() > MAX_HOST_LEN {
        return Err("the host name is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each part of a host name between dots has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a host name has only letters, digits, '-', '_' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a part of a host name cannot start or end with '-'");
        }
    }
    Ok(())
}

/// The SHA-256 fingerprint of the head's certificate (of its DER encoding).
///
/// Displays as upper-case hex pairs separated by colons (`AB:CD:...`), the way browsers and
/// `openssl x509 -fingerprint -sha256` show it; [`Fingerprint::to_hex`] gives plain lower-case
/// hex. Parses from either form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(certificate_der: &[u8]) -> Self {
        Self(Sha256::digest(certificate_der).into())
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Plain lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        crate::auth::encode_hex(&self.0)
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A fingerprint that is not 64 hex digits (colons and whitespace allowed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a certificate fingerprint is 64 hex digits (SHA-256), optionally in pairs separated by ':'"
)]
pub struct FingerprintError;

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| *b != b':' && !b.is_ascii_whitespace())
            .collect();
        if digits.len() != 64 {
            return Err(FingerprintError);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or(FingerprintError)?;
            let lo = hex_value(pair[1]).ok_or(FingerprintError)?;
            *o = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A join code: where the head is, the secret that admits a machine, and the fingerprint
/// that proves the head is the real one.
///
/// Always valid: built by [`JoinCode::new`] or [`JoinCode::parse`], so every value encodes and
/// parses back. `Debug` never shows the secret, and there is no `Display` (the encoded code
/// is itself a secret: [`JoinCode::encode`] is explicit). The secret is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinCode {
    addresses: Vec<HeadAddress>,
    secret: [u8; 32],
    fingerprint: Fingerprint,
    expires_unix: Option<u64>,
}

impl JoinCode {
    /// A join code. Fails unless there are 1 to [`MAX_ADDRESSES`] addresses.
    pub fn new(
        addresses: Vec<HeadAddress>,
        secret: [u8; 32],
        fingerprint: Fingerprint,
        expires_unix: Option<u64>,
    ) -> Result<Self, JoinCodeError> {
        if addresses.is_empty() || addresses.len() > MAX_ADDRESSES {
            return Err(JoinCodeError::AddressCount(addresses.len()));
        }
        Ok(Self {
            addresses,
            secret,
            fingerprint,
            expires_unix,
        })
    }

    /// The head's addresses, in order of preference.
    pub fn addresses(&self) -> &[HeadAddress] {
        &self.addresses
    }

    /// The join secret (32 random bytes), sent in `JoinRequest.join_secret`.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The fingerprint the head's certificate must have.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// When the code stops working, Unix seconds; `None` = it does not expire by itself.
    pub fn expires_unix(&self) -> Option<u64> {
        self.expires_unix
    }

    /// Whether the code has expired at `now_unix` (Unix seconds).
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_unix.is_some_and(|at| now_unix >= at)
    }

    /// The code as text: `flot1-` and the payload in groups of 5 base32 characters.
    pub fn encode(&self) -> String {
        let body = base32_encode(&self.to_bytes());
        let mut out = String::with_capacity(PREFIX.len() + body.len() * 6 / 5 + 1);
        out.push_str(PREFIX);
        for (i, c) in body.chars().enumerate() {
            if i > 0 && i % GROUP == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    /// Reads a join code out of pasted text: the code alone, as [`JoinCode::parse`] reads it,
    /// or a code with text around it (the sentence of a chat message, quotes or backticks, the
    /// line that said "valid for one machine"). The code is the longest stretch from a `flot`
    /// that reads as a valid code (its checksum decides where it ends). When no stretch does,
    /// the error is that of the first candidate, so a code that really is damaged says how.
    /// Never panics.
    pub fn find(input: &str) -> Result<Self, JoinCodeError> {
        let whole = Self::parse(input);
        if whole.is_ok() || input.len() > MAX_INPUT_LEN {
            return whole;
        }
        let lower = input.to_ascii_lowercase();
        let mut first_error = None;
        let mut from = 0;
        while let Some(found) = lower[from..].find("flot") {
            let start = from + found;
            from = start + 4;
            let starts_a_word = lower[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            if !starts_a_word {
                continue;
            }
            // The stretch a code could span: code characters, dashes and white space (a code
            // wrapped over lines), up to anything else (a quote, a full stop, a bracket).
            let rest = &input[start..];
            let end = rest
                .char_indices()
                .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c.is_whitespace() || is_dash(c)))
                .map_or(rest.len(), |(i, _)| i);
            let stretch = &rest[..end];
            // Longest first: each candidate ends at a word's end.
            let mut ends: Vec<usize> = stretch
                .char_indices()
                .filter(|&(i, c)| {
                    !c.is_whitespace()
                        && stretch[i + c.len_utf8()..]
                            .chars()
                            .next()
                            .is_none_or(char::is_whitespace)
                })
                .map(|(i, c)| i + c.len_utf8())
                .collect();
            ends.reverse();
            for end in ends {
                match Self::parse(&stretch[..end]) {
                    Ok(code) => return Ok(code),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) if whole == Err(JoinCodeError::NotAJoinCode) => Err(e),
            _ => whole,
        }
    }

    /// Reads a join code, forgiving whitespace, line breaks, case and dashes. Never panics.
    pub fn parse(input: &str) -> Result<Self, JoinCodeError> {
        if input.len() > MAX_INPUT_LEN {
            return Err(JoinCodeError::TooLong {
                len: input.len(),
                max: MAX_INPUT_LEN,
            });
        }
        // Whitespace and dashes removed, ASCII lower-cased; each char with its position.
        let cleaned: Vec<(usize, char)> = input
            .chars()
            .enumerate()
            .filter(|&(_, c)| !c.is_whitespace() && !is_dash(c))
            .map(|(i, c)| (i + 1, c.to_ascii_lowercase()))
            .collect();
        if cleaned.is_empty() {
            return Err(JoinCodeError::Empty);
        }
        let mut chars = cleaned.iter().map(|&(_, c)| c);
        if !chars.by_ref().take(4).eq("flot".chars()) {
            return Err(JoinCodeError::NotAJoinCode);
        }
        // One digit: the body may start with a digit, and the dash between may be missing.
        match chars.next() {
            Some('1') => {}
            Some(d) if d.is_ascii_digit() => {
                return Err(JoinCodeError::UnknownVersion {
                    version: d.to_string(),
                });
            }
            _ => return Err(JoinCodeError::NotAJoinCode),
        }

        let body = &cleaned[5..];
        if body.len() > MAX_BODY_CHARS {
            return Err(JoinCodeError::TooLong {
                len: body.len(),
                max: MAX_BODY_CHARS,
            });
        }
        let mut values = Vec::with_capacity(body.len());
        for &(position, c) in body {
            let c = match c {
                '0' => 'o',
                '1' => 'l',
                c => c,
            };
            let Some(v) = ALPHABET.iter().position(|&a| char::from(a) == c) else {
                return Err(JoinCodeError::InvalidCharacter {
                    character: input.chars().nth(position - 1).unwrap_or(c),
                    position,
                });
            };
            values.push(v as u8);
        }

        let (bytes, exact) = base32_decode(&values);
        if bytes.len() < HEADER_LEN {
            return Err(JoinCodeError::Truncated);
        }
        let declared = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
        let intact = exact && bytes.len() == declared && declared >= HEADER_LEN + CRC_LEN && {
            let (content, crc) = bytes.split_at(declared - CRC_LEN);
            crc32fast::hash(content).to_le_bytes() == crc
        };
        if !intact {
            return Err(if bytes.len() < declared {
                JoinCodeError::Truncated
            } else {
                JoinCodeError::Corrupted
            });
        }
        Self::from_content(&bytes[..declared - CRC_LEN])
    }

    /// The payload, checksum included.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let mut flags = (self.addresses.len() - 1) as u8 & 0b11;
        if self.expires_unix.is_some() {
            flags |= FLAG_EXPIRY;
        }
        out.push(flags);
        out.extend_from_slice(&[0, 0]); // The length, filled in below.
        for address in &self.addresses {
            match &address.host {
                Host::Ip(IpAddr::V4(ip)) => {
                    out.push(KIND_IPV4);
                    out.extend_from_slice(&ip.octets());
                }
                Host::Ip(IpAddr::V6(ip)) => {
                    out.push(KIND_IPV6);
                    out.extend_from_slice(&ip.octets());
                }
                Host::Name(name) => {
                    out.push(KIND_NAME);
                    // At most MAX_HOST_LEN (253) bytes: checked when the address was made.
                    out.push(name.len() as u8);
                    out.extend_from_slice(name.as_bytes());
                }
            }
            out.extend_from_slice(&address.port.to_be_bytes());
        }
        out.extend_from_slice(&self.secret);
        out.extend_from_slice(&self.fingerprint.0);
        if let Some(at) = self.expires_unix {
            out.extend_from_slice(&at.to_be_bytes());
        }
        // At most 3 + 4 * 258 + 64 + 8 + 4 bytes, far below u16::MAX.
        let len = (out.len() + CRC_LEN) as u16;
        out[1..3].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads the fields of a payload whose length and checksum are verified (checksum removed).
    fn from_content(content: &[u8]) -> Result<Self, JoinCodeError> {
        let mut r = Reader(content);
        let flags = r.u8()?;
        if flags & FLAG_RESERVED != 0 {
            return Err(JoinCodeError::Malformed("unknown flags"));
        }
        r.take(2)?; // The length, already checked.
        let count = usize::from(flags & 0b11) + 1;
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            let host = match r.u8()? {
                KIND_IPV4 => Host::Ip(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
                KIND_IPV6 => Host::Ip(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
                KIND_NAME => {
                    let len = usize::from(r.u8()?);
                    let name = std::str::from_utf8(r.take(len)?)
                        .map_err(|_| JoinCodeError::Malformed("a host name is not text"))?;
                    Host::Name(name.to_owned())
                }
                _ => return Err(JoinCodeError::Malformed("unknown kind of address")),
            };
            let port = u16::from_be_bytes(r.array::<2>()?);
            addresses.push(HeadAddress::new(&host.to_string(), port)?);
        }
        let secret = r.array::<32>()?;
        let fingerprint = Fingerprint(r.array::<32>()?);
        let expires_unix = if flags & FLAG_EXPIRY != 0 {
            Some(u64::from_be_bytes(r.array::<8>()?))
        } else {
            None
        };
        if !r.0.is_empty() {
            return Err(JoinCodeError::Malformed("unexpected data after the fields"));
        }
        Self::new(addresses, secret, fingerprint, expires_unix)
    }
}

impl Drop for JoinCode {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl fmt::Debug for JoinCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addresses: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        f.debug_struct("JoinCode")
            .field("addresses", &addresses)
            .field("secret", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

impl FromStr for JoinCode {
    type Err = JoinCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `-` and the typographic dashes word processors put in its place.
fn is_dash(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' | '\u{FF0D}'
    )
}

/// Reads fields from a verified payload; running out is `Malformed`.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], JoinCodeError> {
        if self.0.len() < n {
            return Err(JoinCodeError::Malformed("a field runs past the end"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, JoinCodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], JoinCodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// RFC 4648 base32, lower case, no padding.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buf: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
        buf &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes base32 digit values (0..32). The flag is false when the input is not exactly what
/// the encoder makes of the returned bytes: a character too many, or non-zero padding bits.
fn base32_decode(values: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(values.len() * 5 / 8);
    let mut buf: u32 = 0;
    let mut bits = 0u32;
    for &v in values {
        buf = (buf << 5) | u32::from(v & 31);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    let exact = bits < 5 && buf == 0;
    (out, exact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(addresses: &[&str], expires_unix: Option<u64>) -> JoinCode {
        let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let fingerprint = Fingerprint::of_der(b"a certificate");
        JoinCode::new(addresses, secret, fingerprint, expires_unix).unwrap()
    }

    fn samples() -> Vec<JoinCode> {
        vec![
            sample(&["192.168.1.20:7470"], None),
            sample(&["head.tail1234.ts.net:7470", "[fd7a:115c::1]:7470"], None),
            sample(
                &[
                    "10.0.0.2:7470",
                    "studio-mac:7470",
                    "100.64.0.9:1",
                    "[::1]:65535",
                ],
                Some(1_900_000_000),
            ),
        ]
    }

    #[test]
    fn a_code_is_found_in_the_text_pasted_around_it() {
        for code in samples() {
            let text = code.encode();
            let wrapped: String = text
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    (i > 0 && i % 40 == 0)
                        .then_some('\n')
                        .into_iter()
                        .chain(std::iter::once(c))
                })
                .collect();
            for pasted in [
                format!("Here is your code: {text}"),
                format!("{text} Treat it like a password."),
                format!("join with `{text}`, thanks!"),
                format!("\"{text}\""),
                format!("code:\n{wrapped}\n\nvalid for one machine, for 1 day(s)"),
                format!("(flotilla join {text})"),
                format!("On the machine to add, run `flotilla join {text}` (or paste it)"),
                format!("flotsam flot {text} end"),
            ] {
                assert_eq!(JoinCode::find(&pasted).as_ref(), Ok(&code), "{pasted:?}");
            }
            // A damaged code in a sentence says what is wrong with the code, not that the
            // sentence is not a code.
            let mut damaged = text.clone();
            let last = damaged.pop().unwrap();
            damaged.push(if last == 'a' { 'b' } else { 'a' });
            let err = JoinCode::find(&format!("here: {damaged} ok")).unwrap_err();
            assert_ne!(err, JoinCodeError::NotAJoinCode, "{err}");
        }
        assert_eq!(
            JoinCode::find("no code in here"),
            Err(JoinCodeError::NotAJoinCode)
        );
        assert_eq!(JoinCode::find("  "), Err(JoinCodeError::Empty));
    }

    #[test]
    fn encodes_with_prefix_and_groups_of_five() {
        let code = sample(&["192.168.1.20:7470"], None).encode();
        let body = code.strip_prefix(PREFIX).unwrap();
        let groups: Vec<&str> = body.split('-').collect();
        assert!(groups.len() > 10);
        for g in &groups[..groups.len() - 1] {
            assert_eq!(g.len(), GROUP, "{code}");
        }
        assert!((1..=GROUP).contains(&groups.last().unwrap().len()));
        assert!(
            body.chars()
                .all(|c| c == '-' || ALPHABET.contains(&(c as u8)))
        );
    }

    #[test]
    fn round_trips() {
        for code in samples() {
            assert_eq!(JoinCode::parse(&code.encode()).unwrap(), code);
        }
    }

    #[test]
    fn tolerates_what_copying_does_to_a_code() {
        let code = samples().remove(1);
        let text = code.encode();
        let variants = [
            format!("  {text}\n"),
            text.to_uppercase(),
            text.replace('-', ""),
            text.replace('-', "--"),
            text.replace('-', "\u{2013}"),
            format!("{}\r\n{}", &text[..40], &text[40..]),
            format!("{}\n  {}\n{}", &text[..17], &text[17..90], &text[90..]),
            format!(
                "{PREFIX}{}",
                text[PREFIX.len()..].replace('o', "0").replace('l', "1")
            ),
            text.replacen("flot1-", "FLOT1", 1),
            text.replace('-', " "),
        ];
        for v in variants {
            assert_eq!(JoinCode::parse(&v).as_ref(), Ok(&code), "{v:?}");
        }
    }

    #[test]
    fn says_which_problem() {
        let text = samples().remove(0).encode();
        assert_eq!(JoinCode::parse(""), Err(JoinCodeError::Empty));
        assert_eq!(JoinCode::parse(" - \n"), Err(JoinCodeError::Empty));
        assert_eq!(
            JoinCode::parse("hello world"),
            Err(JoinCodeError::NotAJoinCode)
        );
        assert_eq!(
            JoinCode::parse("flotilla-abcde"),
            Err(JoinCodeError::NotAJoinCode)
        );
        assert_eq!(
            JoinCode::parse(&text.replacen("flot1", "flot2", 1)),
            Err(JoinCodeError::UnknownVersion {
                version: "2".into()
            })
        );
        assert_eq!(
            JoinCode::parse(&text[..text.len() - 12]),
            Err(JoinCodeError::Truncated)
        );
        assert_eq!(JoinCode::parse(PREFIX), Err(JoinCodeError::Truncated));
        let mut typo: Vec<char> = text.chars().collect();
        typo[30] = if typo[30] == 'q' { 'r' } else { 'q' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(JoinCode::parse(&typo), Err(JoinCodeError::Corrupted));
        assert_eq!(
            JoinCode::parse(&format!("{text}aaaaa")),
            Err(JoinCodeError::Corrupted)
        );
        assert_eq!(
            JoinCode::parse(&format!("{text}9")),
            Err(JoinCodeError::InvalidCharacter {
                character: '9',
                position: text.chars().count() + 1
            })
        );
        assert_eq!(
            JoinCode::parse(&format!("{text}.")),
            Err(JoinCodeError::InvalidCharacter {
                character: '.',
                position: text.chars().count() + 1
            })
        );
        let long = format!("flot1-{}", "a".repeat(MAX_BODY_CHARS + 10));
        assert!(matches!(
            JoinCode::parse(&long),
            Err(JoinCodeError::TooLong { .. })
        ));
        let huge = "a".repeat(MAX_INPUT_LEN + 1);
        assert!(matches!(
            JoinCode::parse(&huge),
            Err(JoinCodeError::TooLong { .. })
        ));
        let msg = JoinCode::parse(&typo).unwrap_err().to_string();
        assert!(
            msg.contains("check that the whole code was copied"),
            "{msg}"
        );
    }

    /// A payload with a correct length and checksum around arbitrary content.
    fn sealed(mut content: Vec<u8>) -> String {
        if content.len() < HEADER_LEN {
            content.resize(HEADER_LEN, 0);
        }
        let len = (content.len() + CRC_LEN) as u16;
        content[1..3].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&content);
        content.extend_from_slice(&crc.to_le_bytes());
        format!("{PREFIX}{}", base32_encode(&content))
    }

    #[test]
    fn intact_but_unreadable_contents_are_malformed_or_bad_addresses() {
        let good = samples().remove(0).to_bytes();
        let content = good[..good.len() - CRC_LEN].to_vec();

        let mut flags = content.clone();
        flags[0] |= 0b1000_0000;
        assert_eq!(
            JoinCode::parse(&sealed(flags)),
            Err(JoinCodeError::Malformed("unknown flags"))
        );

        let mut kind = content.clone();
        kind[3] = 9;
        assert_eq!(
            JoinCode::parse(&sealed(kind)),
            Err(JoinCodeError::Malformed("unknown kind of address"))
        );

        let mut extra = content.clone();
        extra.push(0);
        assert_eq!(
            JoinCode::parse(&sealed(extra)),
            Err(JoinCodeError::Malformed("unexpected data after the fields"))
        );

        let mut short = content.clone();
        short.truncate(40);
        assert_eq!(
            JoinCode::parse(&sealed(short)),
            Err(JoinCodeError::Malformed("a field runs past the end"))
        );

        let mut port = content.clone();
        port[8..10].copy_from_slice(&[0, 0]);
        assert!(matches!(
            JoinCode::parse(&sealed(port)),
            Err(JoinCodeError::BadAddress { .. })
        ));

        let mut name = vec![0, 0, 0, KIND_NAME, 3];
        name.extend_from_slice(b"a b");
        name.extend_from_slice(&[0x1d, 0x2e]);
        name.extend_from_slice(&[7; 64]);
        assert!(matches!(
            JoinCode::parse(&sealed(name)),
            Err(JoinCodeError::BadAddress { .. })
        ));
    }

    #[test]
    fn every_single_character_change_is_detected() {
        let alphabet: Vec<char> = ALPHABET.iter().map(|&b| char::from(b)).collect();
        for code in samples() {
            let text: Vec<char> = code.encode().chars().collect();
            for i in 0..text.len() {
                for &c in alphabet.iter().chain(&['8', '9']) {
                    if c == text[i] || text[i] == '-' {
                        continue;
                    }
                    let mut changed = text.clone();
                    changed[i] = c;
                    let changed: String = changed.into_iter().collect();
                    assert!(JoinCode::parse(&changed).is_err(), "{changed}");
                }
            }
        }
    }

    #[test]
    fn every_swap_of_neighbours_is_detected() {
        for code in samples() {
            let text: Vec<char> = code.encode().chars().collect();
            for i in PREFIX.len()..text.len() - 1 {
                if text[i] == text[i + 1] || text[i] == '-' || text[i + 1] == '-' {
                    continue;
                }
                let mut changed = text.clone();
                changed.swap(i, i + 1);
                let changed: String = changed.into_iter().collect();
                assert!(JoinCode::parse(&changed).is_err(), "{changed}");
            }
        }
    }

    #[test]
    fn debug_redacts_the_secret() {
        let code = samples().remove(0);
        let debug = format!("{code:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("192.168.1.20:7470"), "{debug}");
        for window in code.secret().windows(4) {
            let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!debug.to_lowercase().contains(&hex), "{debug}");
        }
        let decimal = format!("{:?}", &code.secret()[..4]);
        assert!(!debug.contains(&decimal[1..decimal.len() - 1]), "{debug}");
    }

    #[test]
    fn expiry() {
        let code = sample(&["10.0.0.1:7470"], Some(1000));
        assert!(!code.is_expired(999));
        assert!(code.is_expired(1000));
        assert!(!sample(&["10.0.0.1:7470"], None).is_expired(u64::MAX));
    }

    #[test]
    fn address_count_is_checked() {
        let fp = Fingerprint([1; 32]);
        assert_eq!(
            JoinCode::new(vec![], [0; 32], fp, None),
            Err(JoinCodeError::AddressCount(0))
        );
        let five = vec!["h:1".parse::<HeadAddress>().unwrap(); 5];
        assert_eq!(
            JoinCode::new(five, [0; 32], fp, None),
            Err(JoinCodeError::AddressCount(5))
        );
    }

    #[test]
    fn head_addresses() {
        let ok = [
            ("192.168.1.20:7470", "192.168.1.20:7470"),
            ("[fd7a:115c:a1e0::1]:7470", "[fd7a:115c:a1e0::1]:7470"),
            ("head.tail1234.ts.net:7470", "head.tail1234.ts.net:7470"),
            ("my_host:1", "my_host:1"),
            ("Studio-Mac.local:65535", "Studio-Mac.local:65535"),
        ];
        for (input, shown) in ok {
            let a: HeadAddress = input.parse().unwrap();
            assert_eq!(a.to_string(), shown);
        }
        assert_eq!(
            "10.1.2.3:80".parse::<HeadAddress>().unwrap().host(),
            &Host::Ip("10.1.2.3".parse().unwrap())
        );
        let bad = [
            "",
            "head",
            "head:",
            "head:0",
            "head:65536",
            ":7470",
            "fd7a::1:7470",
            "-head:7470",
            "head-:7470",
            "he ad:7470",
            "a..b:7470",
            "fe80::1%eth0",
            "[fe80::1%eth0]:7470",
            "höst:7470",
        ];
        for input in bad {
            assert!(
                matches!(
                    input.parse::<HeadAddress>(),
                    Err(JoinCodeError::BadAddress { .. })
                ),
                "{input:?}"
            );
        }
        let long = format!("{}:7470", vec!["a".repeat(63); 4].join("."));
        assert!(long.parse::<HeadAddress>().is_err());
        let longest = format!(
            "{}.{}:7470",
            vec!["a".repeat(63); 3].join("."),
            "b".repeat(61)
        );
        assert!(longest.parse::<HeadAddress>().is_ok());
    }

    #[test]
    fn fingerprints() {
        let fp = Fingerprint::of_der(b"abc");
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(fp.to_hex(), hex);
        let display = fp.to_string();
        assert!(display.starts_with("BA:78:16:BF:"), "{display}");
        assert_eq!(display.len(), 32 * 3 - 1);
        assert_eq!(display.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(hex.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(hex.to_uppercase().parse::<Fingerprint>(), Ok(fp));
        assert_eq!(hex[2..].parse::<Fingerprint>(), Err(FingerprintError));
        assert_eq!(
            hex.replace('a', "g").parse::<Fingerprint>(),
            Err(FingerprintError)
        );
        assert_eq!(format!("{fp:?}"), format!("Fingerprint({display})"));
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base32_encode(plain.as_bytes()), encoded);
            let values: Vec<u8> = encoded
                .bytes()
                .map(|c| ALPHABET.iter().position(|&a| a == c).unwrap() as u8)
                .collect();
            assert_eq!(base32_decode(&values), (plain.as_bytes().to_vec(), true));
        }
    }

    fn address() -> impl Strategy<Value = HeadAddress> {
        let label = prop::collection::vec(
            prop::sample::select(b"abcdefghijklmnopqrstuvwxyzABCZ0123456789_".to_vec()),
            1..20,
        )
        .prop_map(|b| String::from_utf8(b).unwrap());
        let name = prop::collection::vec(label, 1..5).prop_map(|labels| labels.join("."));
        let host = prop_oneof![
            any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
            any::<[u8; 16]>().prop_map(|o| Ipv6Addr::from(o).to_string()),
            name,
        ];
        (host, 1..=u16::MAX).prop_map(|(h, p)| HeadAddress::new(&h, p).unwrap())
    }

    fn join_code() -> impl Strategy<Value = JoinCode> {
        (
            prop::collection::vec(address(), 1..=MAX_ADDRESSES),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<Option<u64>>(),
        )
            .prop_map(|(a, s, f, e)| JoinCode::new(a, s, Fingerprint(f), e).unwrap())
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            let _ = JoinCode::parse(&s);
            let _ = JoinCode::parse(&format!("{PREFIX}{s}"));
        }

        #[test]
        fn arbitrary_base32_never_panics(s in "[a-z2-7 -]{0,300}") {
            let _ = JoinCode::parse(&format!("{PREFIX}{s}"));
        }

        #[test]
        fn arbitrary_sealed_contents_never_panic(content in prop::collection::vec(any::<u8>(), 0..400)) {
            // Past the checksum: the field reader sees arbitrary bytes.
            if let Ok(code) = JoinCode::parse(&sealed(content)) {
                prop_assert_eq!(JoinCode::parse(&code.encode()), Ok(code));
            }
        }

        #[test]
        fn valid_codes_round_trip(code in join_code()) {
            prop_assert_eq!(JoinCode::parse(&code.encode()), Ok(code));
        }

        #[test]
        fn copying_damage_is_forgiven(
            code in join_code(),
            upper in any::<bool>(),
            dashes in 0..3u8,
            breaks in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut text = code.encode();
            if upper {
                text = text.to_uppercase();
            }
            match dashes {
                0 => {}
                1 => text = text.replace('-', ""),
                _ => text = text.replace('-', "--"),
            }
            for b in breaks {
                let at = b.index(text.len());
                text.insert_str(at, "\r\n ");
            }
            let text = format!("\t{text}  \n");
            prop_assert_eq!(JoinCode::parse(&text), Ok(code));
        }

        #[test]
        fn single_character_changes_are_detected(
            code in join_code(),
            at in any::<prop::sample::Index>(),
            with in prop::sample::select(b"abcdefghijklmnopqrstuvwxyz234567".to_vec()),
        ) {
            let text: Vec<char> = code.encode().chars().collect();
            let i = at.index(text.len());
            let with = char::from(with);
            prop_assume!(text[i] != with && text[i] != '-');
            let mut changed = text;
            changed[i] = with;
            let changed: String = changed.into_iter().collect();
            prop_assert!(JoinCode::parse(&changed).is_err());
        }

        #[test]
        fn deleted_characters_are_detected(code in join_code(), at in any::<prop::sample::Index>()) {
            let mut text = code.encode();
            let i = at.index(text.len());
            prop_assume!(text.as_bytes()[i] != b'-');
            text.remove(i);
            prop_assert!(JoinCode::parse(&text).is_err());
        }
    }
}
