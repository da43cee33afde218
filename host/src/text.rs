//! Cutting and cleaning text that came from a guest, a tool or a user.
//!
//! Such text is never trusted to be ASCII, short or free of control
//! characters. Everything here cuts on character boundaries (a byte index
//! inside a multi-byte character would panic or corrupt the text) and never
//! panics, whatever the input.

/// The mark left where text was cut.
pub const ELLIPSIS: char = '…';

/// `s` cut to at most `max` bytes on a character boundary, with
/// [`ELLIPSIS`] appended when it was cut (the result may then be up to 3
/// bytes longer than `max`).
pub fn clip_bytes(mut s: String, max: usize) -> String {
    if s.len() > max {
        s.truncate(floor_char_boundary(&s, max));
        s.push(ELLIPSIS);
    }
    s
}

/// The largest index `<= at` that is a character boundary of `s`.
pub fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut end = at;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// The length of the longest prefix of `bytes` (at most `max` long) that
/// does not end inside a UTF-8 sequence; for splitting a byte stream into
/// pieces that each decode cleanly.
pub fn utf8_prefix_len(bytes: &[u8], max: usize) -> usize {
    let max = max.min(bytes.len());
    if max == bytes.len() {
        return max;
    }
    // Step back over at most 3 continuation bytes to the start of the
    // sequence that crosses `max`, and cut before it.
    let mut start = max;
    while start > 0 && max - start < 4 && bytes[start] & 0xC0 == 0x80 {
        start -= 1;
    }
    if bytes[start] & 0xC0 == 0x80 {
        // Not UTF-8 at all here: any cut is as good as another.
        max
    } else {
        start
    }
}

/// `text` cut to `width` characters, ending with [`ELLIPSIS`] when cut.
pub fn truncate_end(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push(ELLIPSIS);
    cut
}

/// `text` cut to its last `width` characters, starting with [`ELLIPSIS`]
/// when cut.
pub fn truncate_start(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    let skip = count - width.saturating_sub(1);
    std::iter::once(ELLIPSIS)
        .chain(text.chars().skip(skip))
        .collect()
}

/// `text` on one line and safe for a terminal: control characters that are
/// whitespace become spaces, other control characters (escape sequences
/// included) U+FFFD; leading and trailing spaces go.
pub fn one_line(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            c if c.is_control() && c.is_whitespace() => ' ',
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect();
    cleaned.trim().to_owned()
}

/// `text` safe for a terminal, keeping its lines: control characters other
/// than newline and tab (escape sequences included) become U+FFFD.
pub fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect()
}

/// `text` as one terminal-safe line of at most `width` characters.
pub fn display_line(text: &str, width: usize) -> String {
    truncate_end(&one_line(text), width)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 99 ASCII bytes, then a 3-byte character across byte 100.
    fn crossing() -> String {
        format!("{}€ and more", "a".repeat(99))
    }

    #[test]
    fn clip_bytes_cuts_on_a_char_boundary() {
        let s = crossing();
        assert!(!s.is_char_boundary(100));
        let cut = clip_bytes(s.clone(), 100);
        assert_eq!(cut, format!("{}{ELLIPSIS}", "a".repeat(99)));
        assert_eq!(clip_bytes("short".into(), 100), "short");
        assert_eq!(clip_bytes("€€".into(), 1), format!("{ELLIPSIS}"));
        for max in 0..s.len() + 2 {
            let _ = clip_bytes(s.clone(), max);
        }
    }

    #[test]
    fn display_line_counts_characters_and_neutralises_escapes() {
        let s = crossing();
        let line = display_line(&s, 100);
        assert_eq!(line.chars().count(), 100);
        assert!(line.ends_with(ELLIPSIS));
        assert_eq!(
            display_line("\x1b[2Jboom\nnext", 50),
            "\u{fffd}[2Jboom next"
        );
        assert_eq!(truncate_start("αβγδε", 3), format!("{ELLIPSIS}δε"));
        assert_eq!(truncate_end("αβγδε", 3), format!("αβ{ELLIPSIS}"));
        assert_eq!(terminal_safe("a\x1b[31mb\nc\td"), "a\u{fffd}[31mb\nc\td");
    }

    #[test]
    fn utf8_prefix_never_ends_inside_a_sequence() {
        let s = crossing();
        let bytes = s.as_bytes();
        for max in 0..bytes.len() + 3 {
            let n = utf8_prefix_len(bytes, max);
            assert!(n <= max.min(bytes.len()));
            assert!(std::str::from_utf8(&bytes[..n]).is_ok(), "cut at {n}");
            assert!(max.min(bytes.len()) - n < 4);
        }
        let binary = [0x80u8; 10];
        assert_eq!(utf8_prefix_len(&binary, 5), 5);
    }
}
