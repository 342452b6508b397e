//! Printing an error with its causes. An error's message says what failed and never repeats
//! its source's text (docs/ARCHITECTURE.md, Errors); whoever shows an error to a person (the
//! binary, a log line, the API's log of an internal error) prints the chain with [`report`].

use std::error::Error;

/// The error's message followed by each cause's, joined by `": "`, skipping a cause whose
/// text the message so far already ends with (an error of a dependency that prints its own
/// source inline).
///
/// ```
/// # use kukaku::error::report;
/// #[derive(Debug, thiserror::Error)]
/// #[error("reading the bundle")]
/// struct Outer(#[source] std::io::Error);
/// let e = Outer(std::io::Error::other("disk on fire"));
/// assert_eq!(report(&e), "reading the bundle: disk on fire");
/// ```
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.ends_with(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("opening the store")]
    struct Open(#[source] Storage);

    #[derive(Debug, thiserror::Error)]
    #[error("storage")]
    struct Storage(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("inline: {0}")]
    struct Inline(#[source] std::io::Error);

    #[test]
    fn each_cause_once_in_order() {
        let e = Open(Storage(std::io::Error::other("No space left on device")));
        assert_eq!(
            report(&e),
            "opening the store: storage: No space left on device"
        );
        // A source already printed inline is not printed again.
        let e = Inline(std::io::Error::other("EIO"));
        assert_eq!(report(&e), "inline: EIO");
    }
}
