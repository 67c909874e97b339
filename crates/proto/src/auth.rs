//! Who a call is from: the `authorization` header of the control plane's calls.
//!
//! An enrolled node sends `authorization: Node <id>:<credential in lower-case hex>` on every
//! call after `Join`; an admin sends `authorization: Admin <admin token>`. This module is the
//! one place that writes and reads that format, so the agents, the head and the command line
//! agree on it. It does not check anything: whether a credential or token is right is the
//! head's business.

use std::fmt;

/// The metadata key every authenticated call carries.
pub const HEADER: &str = "authorization";

/// The longest credential a `Node` header may carry, in hex digits (256 bytes).
pub const MAX_CREDENTIAL_HEX: usize = 512;

/// Who a call says it is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// An enrolled node: `Node <id>:<credential hex>`.
    Node,
    /// The head's admin: `Admin <token>`.
    Admin,
}

impl Scheme {
    /// The word that opens the header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Node => "Node",
            Scheme::Admin => "Admin",
        }
    }

    /// What follows `<scheme> ` in `value`, if `value` is of this scheme.
    pub fn strip(self, value: &str) -> Option<&str> {
        value
            .strip_prefix(self.as_str())
            .and_then(|v| v.strip_prefix(' '))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The header value of a node's calls.
pub fn node(node_id: &str, credential: &[u8]) -> String {
    format!("{} {node_id}:{}", Scheme::Node, encode_hex(credential))
}

/// The header value of an admin's calls.
pub fn admin(token: &str) -> String {
    format!("{} {token}", Scheme::Admin)
}

/// A `Node` header's parts, read by [`parse_node`].
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCredential {
    pub id: i64,
    pub credential: Vec<u8>,
}

impl fmt::Debug for NodeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredential")
            .field("id", &self.id)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// Why a `Node` header's value could not be read; the texts are what the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedNode {
    #[error("malformed node credential: expected `Node <id>:<hex>`")]
    Shape,
    #[error("malformed node id")]
    Id,
    #[error("malformed node credential")]
    Credential,
}

/// Reads the part of a `Node` header after `Node `: `<id>:<credential hex>`.
pub fn parse_node(value: &str) -> Result<NodeCredential, MalformedNode> {
    let (id, credential) = value.split_once(':').ok_or(MalformedNode::Shape)?;
    let id = id.parse().map_err(|_| MalformedNode::Id)?;
    if credential.len() > MAX_CREDENTIAL_HEX {
        return Err(MalformedNode::Credential);
    }
    let credential = decode_hex(credential).ok_or(MalformedNode::Credential)?;
    Ok(NodeCredential { id, credential })
}

/// Lower-case hex, two digits a byte.
pub fn encode_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The bytes of hex text (either case); `None` for an odd length or a non-hex character.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode_hex(&bytes), "0001abff");
        assert_eq!(decode_hex(&encode_hex(&bytes)).unwrap(), bytes);
        assert_eq!(decode_hex("ABff").unwrap(), [0xab, 0xff]);
        assert!(decode_hex("abc").is_none());
        assert!(decode_hex("zz").is_none());
        assert!(decode_hex("é1").is_none());
        assert!(decode_hex("+1").is_none());
    }

    #[test]
    fn a_node_header_reads_back_as_written() {
        let value = node("42", &[0xde, 0xad]);
        assert_eq!(value, "Node 42:dead");
        let rest = Scheme::Node.strip(&value).unwrap();
        assert_eq!(
            parse_node(rest).unwrap(),
            NodeCredential {
                id: 42,
                credential: vec![0xde, 0xad]
            }
        );
        assert_eq!(Scheme::Admin.strip(&value), None);
        assert_eq!(Scheme::Admin.strip(&admin("t0k")), Some("t0k"));
        // The scheme needs its space: `Nodes 1:00` is not a node's header.
        assert_eq!(Scheme::Node.strip("Nodes 1:00"), None);
    }

    #[test]
    fn a_malformed_node_header_says_which_part_is_wrong() {
        assert_eq!(parse_node("42"), Err(MalformedNode::Shape));
        assert_eq!(parse_node("x:00"), Err(MalformedNode::Id));
        assert_eq!(parse_node("1:0g"), Err(MalformedNode::Credential));
        let long = "0".repeat(MAX_CREDENTIAL_HEX + 2);
        assert_eq!(
            parse_node(&format!("1:{long}")),
            Err(MalformedNode::Credential)
        );
        assert!(parse_node(&format!("1:{}", &long[2..])).is_ok());
    }
}
