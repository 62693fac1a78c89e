//! Where each key of the parsed file is, and the error list that turns byte offsets into
//! `file:line:column: key: message`.
//!
//! The index is built once from the `DeTable` tree (every key and value there carries a byte
//! span), so both the serde pass and the semantic checks can name a dotted key and point at
//! the line it is on, including keys of `[port.NAME]` header tables and inline tables.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::load::ConfigError;

/// One key of the file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Dotted path from the root, e.g. `port.radio1.ptt.line`.
    pub path: String,
    /// Number of path segments (the path alone is ambiguous when a quoted key holds a dot).
    pub depth: usize,
    pub key: Range<usize>,
    /// For `[header]` tables this is the header, for dotted-key tables the key.
    pub value: Range<usize>,
    /// Spans of the elements when the value is an array.
    pub elements: Vec<Range<usize>>,
    /// A `[header]` table.
    pub header: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: Vec<Entry>,
}

impl Index {
    pub fn build(root: &DeTable<'_>, text: &str) -> Self {
        let mut index = Index::default();
        index.add_table(root, text, "", 0);
        index
    }

    fn add_table(&mut self, table: &DeTable<'_>, text: &str, prefix: &str, depth: usize) {
        for (key, value) in table.iter() {
            let path =
                if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
            let elements = match value.get_ref() {
                DeValue::Array(a) => a.iter().map(|e| e.span()).collect(),
                _ => Vec::new(),
            };
            let is_table = value.get_ref().is_table();
            let header = is_table && text.get(value.span().start..).is_some_and(|t| t.starts_with('['));
            self.entries.push(Entry {
                path: path.clone(),
                depth: depth + 1,
                key: key.span(),
                value: value.span(),
                elements,
                header,
            });
            if let DeValue::Table(t) = value.get_ref() {
                self.add_table(t, text, &path, depth + 1);
            }
        }
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// Names of the direct children of the table at `path` (in file-independent key order).
    pub fn children<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let depth = self.get(path).map_or(usize::MAX, |e| e.depth + 1);
        self.entries
            .iter()
            .filter(move |e| e.depth == depth)
            .filter_map(move |e| e.path.strip_prefix(path).and_then(|rest| rest.strip_prefix('.')))
    }

    /// The deepest key whose key or value span holds `offset`.
    pub fn innermost(&self, offset: usize) -> Option<&Entry> {
        let holds = |r: &Range<usize>| r.start <= offset && offset < r.end;
        self.entries.iter().filter(|e| holds(&e.key) || holds(&e.value)).max_by_key(|e| e.depth)
    }

    /// The deepest, then last, key written inside `range`.
    pub fn last_key_in(&self, range: Range<usize>) -> Option<&Entry> {
        self.entries.iter().filter(|e| range.contains(&e.key.start)).max_by_key(|e| (e.depth, e.key.start))
    }

    /// The `[header]` table in effect at `offset`, if any.
    pub fn section_at(&self, offset: usize) -> Option<&Entry> {
        self.entries.iter().filter(|e| e.header && e.value.start <= offset).max_by_key(|e| e.value.start)
    }
}

/// Longest key an error names (a real key path is far shorter).
const MAX_KEY_CHARS: usize = 120;

/// Most errors reported for one file. Placing an error costs a scan of the text before it, so
/// a file of garbage (40,000 broken lines took 66 s) would cost the square of its size; and
/// nobody reads past the first screenful. The rest are counted in one last error.
pub(crate) const MAX_ERRORS: usize = 100;

/// Collects errors against one file.
pub(crate) struct Report<'a> {
    file: &'a str,
    text: &'a str,
    pub index: Index,
    pub errors: Vec<ConfigError>,
    /// Errors past [`MAX_ERRORS`], counted only.
    more: usize,
}

impl<'a> Report<'a> {
    pub fn new(file: &'a str, text: &'a str, index: Index) -> Self {
        Self { file, text, index, errors: Vec::new(), more: 0 }
    }

    /// Whether [`MAX_ERRORS`] are placed already; if so, the error at hand is counted instead
    /// of placed. Callers that work to find an error's key ask first.
    pub fn skip_when_full(&mut self) -> bool {
        let full = self.errors.len() >= MAX_ERRORS;
        if full {
            self.more += 1;
        }
        full
    }

    /// An error at a byte offset.
    pub fn at(&mut self, offset: usize, key: &str, message: impl Into<String>) {
        if self.skip_when_full() {
            return;
        }
        let (line, column) = position(self.text, offset);
        // A key recovered from a garbled line can be the whole line, and every syntax error on
        // that line names it: cut it, or errors grow with the square of the line's length.
        let key = match key.char_indices().nth(MAX_KEY_CHARS) {
            Some((cut, _)) => format!("{}…", &key[..cut]),
            None => key.to_string(),
        };
        self.errors.push(ConfigError { file: self.file.to_string(), line, column, key, message: message.into() });
    }

    /// An error about `path`, placed at its value, or at the nearest enclosing key that is in
    /// the file (a missing key is reported where its table is), or at the top of the file.
    pub fn key(&mut self, path: &str, message: impl Into<String>) {
        if self.skip_when_full() {
            return;
        }
        let offset = self.offset_of(path);
        self.at(offset, path, message);
    }

    /// An error about element `i` of the array at `path`.
    pub fn element(&mut self, path: &str, i: usize, message: impl Into<String>) {
        if self.skip_when_full() {
            return;
        }
        let offset = self.index.get(path).and_then(|e| e.elements.get(i)).map(|r| r.start);
        let offset = offset.unwrap_or_else(|| self.offset_of(path));
        self.at(offset, path, message);
    }

    /// An error named `key` (e.g. `hub.ice_servers[0].urls`), placed at element `i` of the
    /// array at `path` (a key inside an inline table of an array is not indexed).
    pub fn element_key(&mut self, path: &str, i: usize, key: &str, message: impl Into<String>) {
        if self.skip_when_full() {
            return;
        }
        let offset = self.index.get(path).and_then(|e| e.elements.get(i)).map(|r| r.start);
        let offset = offset.unwrap_or_else(|| self.offset_of(path));
        self.at(offset, key, message);
    }

    pub fn has_error(&self, key: &str) -> bool {
        self.errors.iter().any(|e| e.key == key)
    }

    pub fn offset_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(e) = self.index.get(p) {
                return e.value.start;
            }
            match p.rfind('.') {
                Some(dot) => p = &p[..dot],
                None => return 0,
            }
        }
    }

    /// In file order, each error once (two checks may find the same fault).
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| (e.line, e.column));
        let mut seen = std::collections::HashSet::new();
        self.errors.retain(|e| seen.insert(e.clone()));
        if self.more > 0 {
            let (line, column) = self.errors.last().map_or((1, 1), |e| (e.line, e.column));
            let message = format!("{} more errors not shown (the first {MAX_ERRORS} are above)", self.more);
            self.errors.push(ConfigError { file: self.file.to_string(), line, column, key: "errors".into(), message });
        }
        self.errors
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "device_id = \"x\"\n[port.r1]\nkeying.tx_delay_ms = 5\nptt = { line = \"sim:a\" }\nchannels = [\"a\", \"b\"]\n";

    fn index() -> Index {
        let (doc, errors) = DeTable::parse_recoverable(TEXT);
        assert!(errors.is_empty());
        Index::build(doc.get_ref(), TEXT)
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        assert_eq!(position("ab\ncdé f", 0), (1, 1));
        assert_eq!(position("ab\ncdé f", 3), (2, 1));
        assert_eq!(position("ab\ncdé f", 8), (2, 5));
        assert_eq!(position("ab", 99), (1, 3));
    }

    #[test]
    fn innermost_finds_nested_keys() {
        let idx = index();
        let at = |needle: &str| idx.innermost(TEXT.find(needle).unwrap()).map(|e| e.path.clone());
        assert_eq!(at("[port.r1]").as_deref(), Some("port.r1"));
        assert_eq!(at("tx_delay_ms").as_deref(), Some("port.r1.keying.tx_delay_ms"));
        assert_eq!(at("5\n").as_deref(), Some("port.r1.keying.tx_delay_ms"));
        assert_eq!(at("\"sim:a\"").as_deref(), Some("port.r1.ptt.line"));
        assert_eq!(at("\"b\"").as_deref(), Some("port.r1.channels"));
        let section = |needle: &str| idx.section_at(TEXT.find(needle).unwrap()).map(|e| e.path.clone());
        assert_eq!(section("device_id"), None);
        assert_eq!(section("keying").as_deref(), Some("port.r1"));
    }

    #[test]
    fn children_and_missing_keys_fall_back_to_their_table() {
        let idx = index();
        let mut kids: Vec<_> = idx.children("port.r1").collect();
        kids.sort();
        assert_eq!(kids, ["channels", "keying", "ptt"]);
        let mut r = Report::new("f.toml", TEXT, idx);
        r.key("port.r1.ptt.bias", "x");
        r.key("hub.listen", "y");
        r.element("port.r1.channels", 1, "z");
        let got: Vec<_> = r.into_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            ["f.toml:1:1: hub.listen: y", "f.toml:4:7: port.r1.ptt.bias: x", "f.toml:5:18: port.r1.channels: z"]
        );
    }
}
