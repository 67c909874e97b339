//! How an error reads on the terminal: its message, then each cause that says something the
//! message has not said already. Many errors quote their cause in their own message (and
//! still name it as the source), so printing the whole chain would say the same thing twice.

/// `e` and its causes, joined with ": ", each cause left out when the text so far already
/// contains it.
pub fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::describe;

    /// An error that quotes its cause and names it as its source too.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}\n  Copy it again", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_is_said_once() {
        let io = || std::io::Error::other("the disk is full");
        let quoted = anyhow::Error::new(Quoting(io()));
        assert_eq!(describe(&quoted), "the disk is full\n  Copy it again");
        let context = anyhow::Error::new(io()).context("cannot write the file");
        assert_eq!(
            describe(&context),
            "cannot write the file: the disk is full"
        );
        let both = anyhow::Error::new(Quoting(io())).context("cannot join");
        assert_eq!(
            describe(&both),
            "cannot join: the disk is full\n  Copy it again"
        );
    }
}
