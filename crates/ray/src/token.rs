//! The cluster's Ray authentication token.

use std::fmt;

/// Ray's token for `RAY_AUTH_MODE=token`. Its `Debug` and `Display` never show the value, and it
/// is handed to Ray processes through their environment, never their command line.
#[derive(Clone, PartialEq, Eq)]
pub struct RayToken(String);

impl RayToken {
    /// Makes a new random token: 32 bytes from a CSPRNG seeded by the OS, as hex.
    pub fn generate() -> RayToken {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        RayToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Wraps a token read from a trusted store. Surrounding white space is dropped.
    pub fn new(value: &str) -> Option<RayToken> {
        let v = value.trim();
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())).then(|| RayToken(v.into()))
    }

    /// The value, for the few places that must hand it to Ray.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The environment Ray needs on every node, driver and CLI call.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [("RAY_AUTH_MODE", "token"), ("RAY_AUTH_TOKEN", &self.0)]
    }
}

impl fmt::Debug for RayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RayToken(<redacted>)")
    }
}

impl fmt::Display for RayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_never_printed() {
        let a = RayToken::generate();
        let b = RayToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(!format!("{a:?} {a}").contains(a.expose()));
    }

    #[test]
    fn new_trims_and_refuses_garbage() {
        assert_eq!(RayToken::new(" abc\n").unwrap().expose(), "abc");
        assert!(RayToken::new("").is_none());
        assert!(RayToken::new("a b").is_none());
    }
}
