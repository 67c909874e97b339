//! The secret value type and secret names.

use std::fmt;

use zeroize::Zeroize;

use crate::Error;

/// A secret value. Its `Debug` and `Display` never show it, and its memory is zeroed when it is
/// dropped. It deliberately implements neither `PartialEq` nor `serde` traits: the only way to
/// the value is [`Secret::expose`] or [`Secret::expose_str`], so every use is visible in review.
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes. The vector's buffer is taken over, not copied.
    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The value, for the few places that must hand it on.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, or `None` if it is not UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value.into_bytes())
    }
}

impl From<Vec<u8>> for Secret {
    fn from(value: Vec<u8>) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.as_bytes().to_vec())
    }
}

impl Clone for Secret {
    fn clone(&self) -> Secret {
        Secret(self.0.clone())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Zeroes the whole allocation, spare capacity included.
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The longest secret name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Checks a secret name: not empty, at most [`MAX_NAME_CHARS`] characters, no control characters
/// and no surrounding white space. Any other Unicode is allowed.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some("it is longer than 128 characters")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.trim() != name {
        Some("it starts or ends with white space")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.escape_debug().to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::from("hunter2-very-secret".to_string());
        let shown = format!("{s:?} {s} {s:#?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let bytes = Secret::from(b"raw-bytes-value".to_vec());
        assert!(!format!("{bytes:?}{bytes}").contains("raw-bytes"));
    }

    #[test]
    fn exposes_the_value_it_was_given() {
        let s = Secret::from("clé".to_string());
        assert_eq!(s.expose(), "clé".as_bytes());
        assert_eq!(s.expose_str(), Some("clé"));
        assert_eq!(s.len(), 4);
        let b = Secret::from_bytes(vec![0xff, 0x00]);
        assert_eq!(b.expose_str(), None);
        assert_eq!(b.clone().expose(), &[0xff, 0x00]);
        assert!(Secret::from("").is_empty());
    }

    #[test]
    fn names_are_validated() {
        for good in [
            "ray-token",
            "clé-API-交易所",
            "a",
            &"x".repeat(128),
            "with space",
        ] {
            validate_name(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        for bad in [
            "",
            "a\nb",
            "tab\there",
            "nul\0",
            " lead",
            "trail ",
            &"x".repeat(129),
        ] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid secret name"), "{err}");
        }
        assert!(
            validate_name("a\u{7}b")
                .unwrap_err()
                .to_string()
                .contains("control character")
        );
    }
}
