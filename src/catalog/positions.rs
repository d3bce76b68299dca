//! Where each product starts in a catalog file (line:column), for error messages.

use super::FilePosition;

/// Finds where each product entry starts: the position of each `id` field name outside strings
/// and comments. Falls back to no positions if the count does not match the parsed products.
///
/// It must skip every literal the RON parser skips, as the parser does: one string read wrong
/// (a raw string's `"`, a nested comment's `*/`) shifts every later match and costs all positions.
pub(super) fn product_positions(text: &str, expected: usize) -> Vec<FilePosition> {
    let bytes = text.as_bytes();
    let mut found = Vec::with_capacity(expected);
    let mut here = FilePosition { line: 1, col: 1 };
    let mut i = 0;
    while i < bytes.len() {
        let end = match bytes[i] {
            // Strings, and char literals (`'"'`, `'\''`); a `b` prefix is a word of its own.
            quote @ (b'"' | b'\'') => quoted_end(bytes, i + 1, quote),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i + bytes[i..].iter().take_while(|&&b| b != b'\n').count()
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => block_comment_end(bytes, i),
            b if is_ident(b) => {
                let word = i + bytes[i..].iter().take_while(|&&b| is_ident(b)).count();
                match &bytes[i..word] {
                    // `r"…"`, `r#"…"#`, `br##"…"##`; `r#id` is a raw identifier, not a string.
                    b"r" | b"br" => raw_string_end(bytes, word).unwrap_or(word),
                    b"id" => {
                        if text[word..].trim_start().starts_with(':') {
                            found.push(here);
                        }
                        word
                    }
                    _ => word,
                }
            }
            _ => i + 1,
        };
        let end = end.min(bytes.len());
        for &b in &bytes[i..end] {
            if b == b'\n' {
                here.line += 1;
                here.col = 1;
            } else if b & 0xC0 != 0x80 {
                // Columns count characters, as the parser's do (UTF-8 continuation bytes don't).
                here.col += 1;
            }
        }
        i = end;
    }
    if found.len() == expected {
        found
    } else {
        Vec::new()
    }
}

/// The end of a string or char literal whose body starts at `i`, honouring `\` escapes.
fn quoted_end(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            _ if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The end of a raw string whose `#`s or `"` start at `i`: it has no escapes and ends at the
/// first `"` followed by as many `#`s as it opened with. `None` if no `"` follows the `#`s.
fn raw_string_end(bytes: &[u8], i: usize) -> Option<usize> {
    let hashes = bytes[i..].iter().take_while(|&&b| b == b'#').count();
    let body = i + hashes;
    if bytes.get(body) != Some(&b'"') {
        return None;
    }
    let mut at = body + 1;
    while at < bytes.len() {
        if bytes[at] == b'"' && bytes[at + 1..].starts_with(&bytes[i..body]) {
            return Some(at + 1 + hashes);
        }
        at += 1;
    }
    Some(at)
}

/// The end of the block comment starting at `i`; RON block comments nest.
fn block_comment_end(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
