//! Parsing a large catalog on several threads. Entries of the canonical shape `(products: [ (…),
//! (…), … ])` are found by a scan that knows strings or comments; each thread deserializes a share
//! of them. Anything else — another shape, extension attributes, an entry that does not parse —
//! returns `None`: the caller parses the whole file as usual, which also gives the precise error.

use std::ops::Range;

use super::ProductDefinition;

/// Below this many entries one thread is faster than starting more.
const MIN_ENTRIES_PER_THREAD: usize = 4096;

/// The products of `text`, parsed in parallel, or `None` to parse it the usual way.
pub(super) fn parse_products(text: &str, options: &ron::Options) -> Option<Vec<ProductDefinition>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || text.len() < MIN_ENTRIES_PER_THREAD * 32 {
        return None;
    }
    let entries = canonical_entries(text)?;
    let threads = threads.min(entries.len() / MIN_ENTRIES_PER_THREAD);
    if threads < 2 {
        return None;
    }
    let share = entries.len().div_ceil(threads);
    let parse = |chunk: &[Range<usize>]| {
        chunk
            .iter()
            .map(|span| {
                options
                    .from_str::<ProductDefinition>(&text[span.clone()])
                    .ok()
            })
            .collect::<Option<Vec<_>>>()
    };
    let mut chunks = entries.chunks(share);
    let first = chunks.next()?;
    std::thread::scope(|scope| {
        // Helpers take the later shares; this thread (whose allocator is warm) takes the first.
        let helpers: Vec<_> = chunks
            .map(|chunk| scope.spawn(move || parse(chunk)))
            .collect();
        let mut products = parse(first)?;
        products.reserve(entries.len() - products.len());
        for helper in helpers {
            products.extend(helper.join().ok()??);
        }
        Some(products)
    })
}

/// Byte ranges of the entries if `text` is exactly `(products: [ entry, … ])` with optional
/// whitespace, comments and trailing commas; `None` otherwise.
fn canonical_entries(text: &str) -> Option<Vec<Range<usize>>> {
    let bytes = text.as_bytes();
    let mut scan = Scanner { bytes, at: 0 };
    scan.expect(b"(")?;
    scan.expect(b"products")?;
    scan.expect(b":")?;
    scan.expect(b"[")?;
    let mut entries = Vec::new();
    loop {
        scan.skip_trivia()?;
        match bytes.get(scan.at)? {
            b']' => break,
            b'(' => {
                let start = scan.at;
                scan.skip_group()?;
                entries.push(start..scan.at);
                scan.skip_trivia()?;
                match bytes.get(scan.at)? {
                    b',' => scan.at += 1,
                    b']' => break,
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    scan.expect(b"]")?;
    scan.skip_trivia()?;
    if bytes.get(scan.at) == Some(&b',') {
        scan.at += 1;
    }
    scan.expect(b")")?;
    scan.skip_trivia()?;
    (scan.at == bytes.len()).then_some(entries)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    /// Skips whitespace and comments; `None` on an unterminated block comment.
    fn skip_trivia(&mut self) -> Option<()> {
        loop {
            match (self.bytes.get(self.at), self.bytes.get(self.at + 1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.at += 1,
                (Some(b'/'), Some(b'/')) => {
                    while self.bytes.get(self.at).is_some_and(|&b| b != b'\n') {
                        self.at += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    // RON block comments nest.
                    let mut depth = 0usize;
                    loop {
                        match (self.bytes.get(self.at)?, self.bytes.get(self.at + 1)) {
                            (b'/', Some(b'*')) => {
                                depth += 1;
                                self.at += 2;
                            }
                            (b'*', Some(b'/')) => {
                                depth -= 1;
                                self.at += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => self.at += 1,
                        }
                    }
                }
                _ => return Some(()),
            }
        }
    }

    fn expect(&mut self, token: &[u8]) -> Option<()> {
        self.skip_trivia()?;
        let end = self.at + token.len();
        if self.bytes.get(self.at..end)? != token {
            return None;
        }
        // A word must end there (`products` is not `products_2`).
        if token[0].is_ascii_alphabetic()
            && self
                .bytes
                .get(end)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        self.at = end;
        Some(())
    }

    /// Skips a bracketed group starting at `(`, through strings, raw strings, chars and comments.
    fn skip_group(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match *self.bytes.get(self.at)? {
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    self.at += 1;
                }
                b')' | b']' | b'}' => {
                    depth -= 1;
                    self.at += 1;
                    if depth == 0 {
                        return Some(());
                    }
                }
                b'"' => self.skip_string()?,
                // Raw strings (`r"…"`, `r#"…"#`) and char literals are rare in catalogs: let the
                // full parser handle them.
                b'r' if matches!(self.bytes.get(self.at + 1), Some(b'"' | b'#')) => return None,
                b'\'' => return None,
                b'/' if matches!(self.bytes.get(self.at + 1), Some(b'/' | b'*')) => {
                    self.skip_trivia()?
                }
                _ => self.at += 1,
            }
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            match *self.bytes.get(self.at)? {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                _ => self.at += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_entries;

    #[test]
    fn finds_entries_through_strings_and_comments() {
        let text = r#"
            // a catalog
            (products: [
                (id: 1, name: "A (\"quoted\") ]", price: 1), /* one ( */
                (id: 2, name: "B", /* nested /* ] */ */ price: 2),
            ],)
        "#;
        let entries = canonical_entries(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(text[entries[0].clone()].starts_with("(id: 1"));
        assert!(text[entries[1].clone()].ends_with("price: 2)"));
    }

    #[test]
    fn other_shapes_are_left_to_the_full_parser() {
        for text in [
            "#![enable(unwrap_newtypes)] (products: [(id: 1)])",
            "CatalogFile(products: [(id: 1)])",
            "(products: [(id: 1)], extra: 2)",
            "(products_2: [(id: 1)])",
            "(products: [(id: 1)]) trailing",
            "(products: [(id: 1, name: r\"raw\")])",
            "(products: [(id: 1, name: \"unterminated)])",
        ] {
            assert_eq!(canonical_entries(text), None, "{text}");
        }
    }
}
