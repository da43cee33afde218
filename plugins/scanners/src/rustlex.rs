//! A small Rust lexer that tells code from comments and string contents, so
//! that rules about Rust code do not fire on prose.

/// One source line seen two ways. Both views have exactly the byte length of
/// the original line, so byte offsets (and therefore columns) carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MaskedLine {
    /// Comments and the contents of string and character literals replaced
    /// by spaces (the quotes stay).
    pub code: String,
    /// Only comments replaced by spaces; string literals kept.
    pub no_comments: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Code,
    Comment,
    Literal,
}

#[derive(Clone, Copy)]
enum State {
    Normal,
    LineComment,
    BlockComment(u32),
    Str,
    RawStr(usize),
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Splits `src` into lines (without `\n` or a trailing `\r`) and masks each.
pub(crate) fn mask_rust(src: &str) -> Vec<MaskedLine> {
    let bytes = src.as_bytes();
    let mut classes = vec![Class::Code; bytes.len()];
    let mut state = State::Normal;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match state {
            State::Normal => {
                let next = bytes.get(i + 1).copied();
                if b == b'/' && next == Some(b'/') {
                    state = State::LineComment;
                    classes[i] = Class::Comment;
                } else if b == b'/' && next == Some(b'*') {
                    state = State::BlockComment(1);
                    classes[i] = Class::Comment;
                    classes[i + 1] = Class::Comment;
                    i += 1;
                } else if b == b'"' {
                    state = State::Str;
                } else if let Some((hashes, len)) = raw_string_start(bytes, i) {
                    // `r`, the hashes and the opening quote are code.
                    state = State::RawStr(hashes);
                    i += len - 1;
                } else if b == b'\''
                    // A character literal; otherwise a lifetime or label (code).
                    && let Some(end) = char_literal_end(bytes, i)
                {
                    for c in &mut classes[i + 1..end] {
                        *c = Class::Literal;
                    }
                    i = end; // the closing quote stays code
                }
            }
            State::LineComment => {
                if b == b'\n' {
                    state = State::Normal;
                } else {
                    classes[i] = Class::Comment;
                }
            }
            State::BlockComment(depth) => {
                classes[i] = Class::Comment;
                let next = bytes.get(i + 1).copied();
                if b == b'/' && next == Some(b'*') {
                    classes[i + 1] = Class::Comment;
                    state = State::BlockComment(depth + 1);
                    i += 1;
                } else if b == b'*' && next == Some(b'/') {
                    classes[i + 1] = Class::Comment;
                    state = if depth == 1 {
                        State::Normal
                    } else {
                        State::BlockComment(depth - 1)
                    };
                    i += 1;
                }
            }
            State::Str => {
                if b == b'\\' {
                    classes[i] = Class::Literal;
                    if let Some(c) = classes.get_mut(i + 1) {
                        *c = Class::Literal;
                    }
                    i += 1;
                } else if b == b'"' {
                    state = State::Normal;
                } else {
                    classes[i] = Class::Literal;
                }
            }
            State::RawStr(hashes) => {
                if b == b'"'
                    && bytes.len() >= i + 1 + hashes
                    && bytes[i + 1..i + 1 + hashes].iter().all(|&h| h == b'#')
                {
                    state = State::Normal;
                    i += hashes;
                } else {
                    classes[i] = Class::Literal;
                }
            }
        }
        i += 1;
    }

    let mut out = Vec::new();
    let mut start = 0;
    for line in src.split('\n') {
        let end = start + line.len();
        let line_classes = &classes[start..end];
        let text = line.strip_suffix('\r').unwrap_or(line);
        let n = text.len();
        out.push(MaskedLine {
            code: render(text, &line_classes[..n], |c| c == Class::Code),
            no_comments: render(text, &line_classes[..n], |c| c != Class::Comment),
        });
        start = end + 1;
    }
    out
}

/// Keeps the bytes whose class passes `keep`, replacing the others with
/// spaces. Every byte of a multi-byte character has the same class, so the
/// result is valid UTF-8 of the same length.
fn render(text: &str, classes: &[Class], keep: impl Fn(Class) -> bool) -> String {
    let mut buf = String::with_capacity(text.len());
    for (idx, ch) in text.char_indices() {
        if keep(classes[idx]) {
            buf.push(ch);
        } else {
            for _ in 0..ch.len_utf8() {
                buf.push(' ');
            }
        }
    }
    buf
}

/// At `i`, a raw string opener `r"`, `r#"`, `br##"`, `cr"`...: returns the
/// number of hashes and the opener's length from `i`.
fn raw_string_start(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if bytes[j] == b'b' || bytes[j] == b'c' {
        j += 1;
    }
    if bytes.get(j) != Some(&b'r') {
        return None;
    }
    if i > 0 && is_ident_byte(bytes[i - 1]) {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while bytes.get(j) == Some(&b'#') {
        hashes += 1;
        j += 1;
    }
    (bytes.get(j) == Some(&b'"')).then_some((hashes, j + 1 - i))
}

/// At a `'` in code: the index of the closing quote if this is a character
/// literal (`'a'`, `'\n'`, `'\u{1F600}'`, `'é'`), `None` for a lifetime.
fn char_literal_end(bytes: &[u8], i: usize) -> Option<usize> {
    let first = *bytes.get(i + 1)?;
    if first == b'\\' {
        // Escaped: the closing quote is within a few bytes (`'\u{10FFFF}'`).
        let limit = (i + 12).min(bytes.len());
        return (i + 3..limit).find(|&j| bytes[j] == b'\'' && bytes[j - 1] != b'\n');
    }
    if first == b'\n' || first == b'\'' {
        return None;
    }
    let width = utf8_width(first);
    let close = i + 1 + width;
    (bytes.get(close) == Some(&b'\'')).then_some(close)
}

fn utf8_width(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(src: &str) -> Vec<String> {
        mask_rust(src).into_iter().map(|l| l.code).collect()
    }

    #[test]
    fn masks_line_and_block_comments() {
        let src = "let a = 1; // unsafe { x }\n/* unsafe {\n /* nested */ unsafe fn\n*/ unsafe {}";
        let lines = code(src);
        assert_eq!(lines[0].trim_end(), "let a = 1;");
        assert_eq!(lines[1].trim(), "");
        assert_eq!(lines[2].trim(), "");
        assert_eq!(lines[3].trim(), "unsafe {}");
        for (masked, orig) in lines.iter().zip(src.split('\n')) {
            assert_eq!(masked.len(), orig.len());
        }
    }

    #[test]
    fn masks_string_contents_but_keeps_them_in_no_comments() {
        let src = r#"let s = "unsafe { // not a comment"; // real"#;
        let m = &mask_rust(src)[0];
        assert_eq!(m.code.trim_end(), "let s = \"                         \";");
        assert_eq!(
            m.no_comments.trim_end(),
            "let s = \"unsafe { // not a comment\";"
        );
    }

    #[test]
    fn handles_escapes_raw_strings_and_multiline_strings() {
        let src = "let a = \"q\\\" unsafe {\";\nlet b = r#\"unsafe { \"# ;\nlet c = \"line one\nunsafe { still string\";\nunsafe { real }";
        let lines = code(src);
        assert!(!lines[0].contains("unsafe"), "{:?}", lines[0]);
        assert!(!lines[1].contains("unsafe"), "{:?}", lines[1]);
        assert!(lines[1].ends_with(" ;"));
        assert!(!lines[3].contains("unsafe"), "{:?}", lines[3]);
        assert_eq!(lines[4], "unsafe { real }");
    }

    #[test]
    fn tells_char_literals_from_lifetimes() {
        let src = "fn f<'a>(x: &'a str) -> char { let q = '\"'; let e = '\\''; 'é' }\nunsafe {}";
        let lines = code(src);
        assert!(lines[0].contains("fn f<'a>(x: &'a str)"));
        // The quote inside the char literal must not open a string.
        assert_eq!(lines[1], "unsafe {}");
    }

    #[test]
    fn keeps_multibyte_code_and_crlf() {
        let src = "let é = 1; // ünsafe\r\nlet s = \"ñ\";\r\n";
        let m = mask_rust(src);
        assert_eq!(m[0].code.trim_end(), "let é = 1;");
        assert_eq!(m[0].code.len(), "let é = 1; // ünsafe".len());
        assert_eq!(m[1].code, "let s = \"  \";");
        assert_eq!(m[2].code, "");
    }
}
