//! Small text helpers.

/// `text` cut to at most `max` bytes on a character boundary, with `…` marking a cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let budget = max.saturating_sub('…'.len_utf8());
    let cut = (0..=budget)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}…", &text[..cut])
}

/// An error with its whole source chain ("error sending request: connection refused"): the top level of a
/// transport error rarely says why.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clips_on_a_char_boundary_within_the_limit() {
        assert_eq!(clip("short", 10), "short");
        let clipped = clip(&"é".repeat(100), 11);
        assert!(clipped.len() <= 11 && clipped.ends_with('…'), "{clipped}");
    }
}
