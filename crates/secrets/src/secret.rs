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

/// The first character that would make `text` ambiguous as a name shown on a screen or typed
/// in a command, with what it is: anything but ASCII's printable characters, a single ASCII space
/// between words, and other Unicode that shows as itself. That refuses invisible characters (zero-width
/// spaces and joiners, soft hyphens, byte-order marks), bidirectional controls (which reorder
/// what is shown), spaces that look like a space but are not one, control characters and
/// the generic combining accents (so `e` + U+0301 cannot pose as `é`). Letters and marks of
/// any script stay allowed. Node names and secret names both go through it.
pub fn ambiguous_character(text: &str) -> Option<(char, &'static str)> {
    let mut previous = ' ';
    for c in text.chars() {
        let problem = if c == ' ' {
            (previous == ' ').then_some("a space at the start or next to another")
        } else if c.is_control() {
            Some("a control character")
        } else if c.is_ascii() {
            None
        } else if c.is_whitespace() {
            Some("a space that is not the ASCII space")
        } else if matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}')
        {
            Some("a bidirectional control")
        } else if matches!(c,
            '\u{ad}' | '\u{34f}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}' | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2064}' | '\u{206a}'..='\u{206f}' | '\u{2800}'
            | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}'
            | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}')
        {
            Some("an invisible character")
        } else if matches!(c, '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
        {
            Some("a combining accent (write the accented letter itself)")
        } else if matches!(c, '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..) {
            Some("a private-use character")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Some((c, problem));
        }
        previous = c;
    }
    (previous == ' ' && !text.is_empty()).then_some((' ', "a space at the end"))
}

/// Checks a secret name: not empty, at most [`MAX_NAME_CHARS`] characters, and nothing that
/// [`ambiguous_character`] refuses.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ambiguous;
    let reason: Option<&str> = if name.is_empty() {
        Some("it is empty")
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some("it is longer than 128 characters")
    } else if let Some((c, what)) = ambiguous_character(name) {
        ambiguous = format!(
            "it contains {what} (U+{:04X}); use letters, digits and ASCII punctuation",
            c as u32
        );
        Some(&ambiguous)
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.escape_debug().to_string(),
            reason: reason.to_string(),
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
            "café-é",
            "नमस्ते",
            "Ελληνικά_1.2",
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
            "two  spaces",
            &"x".repeat(129),
            "vm\u{200b}",
            "a\u{2060}b",
            "soft\u{ad}hyphen",
            "\u{feff}bom",
            "abc\u{202e}gpj.exe",
            "x\u{2067}y",
            "e\u{301}",
            "no\u{a0}break",
            "ideographic\u{3000}space",
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
