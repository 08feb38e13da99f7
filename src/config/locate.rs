//! Turning "which field" into "which line": every error of proxy.toml names
//! the file, the 1-based line and column, and the field as a user writes it.

use std::fmt::Write as _;
use std::ops::Range;

use super::ConfigError;

/// One step of a field path: `route[1].bypass_query[0]` is
/// `[Key("route"), Index(1), Key("bypass_query"), Index(0)]`.
#[derive(Clone, Copy, Debug)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

pub fn field_name(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => write!(out, ".{k}").expect("writing to a String"),
            Seg::Index(i) => write!(out, "[{i}]").expect("writing to a String"),
        }
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The text of one config file, for errors found after deserializing.
pub struct Locator<'a> {
    text: &'a str,
    path: String,
    /// Parsed lazily and only on the error path: a second parse of a valid
    /// file would be wasted work.
    doc: std::cell::OnceCell<Option<toml_edit::Document<&'a str>>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str, path: String) -> Self {
        Locator {
            text,
            path,
            doc: std::cell::OnceCell::new(),
        }
    }

    /// An error at byte range `span` (start of the file when unknown).
    pub fn error_at_span(
        &self,
        span: Option<Range<usize>>,
        field: String,
        message: String,
    ) -> ConfigError {
        let (line, column) = line_col(self.text, span.map_or(0, |s| s.start));
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            column,
            field,
            message,
        }
    }

    /// An error at the value of `path` (a table's header when the value is a
    /// table), falling back to the nearest enclosing item that exists.
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        self.error_at_span(self.span_of(path), field_name(path), message.into())
    }

    fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        let doc = self
            .doc
            .get_or_init(|| toml_edit::Document::parse(self.text).ok())
            .as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => item.get(*k),
                Seg::Index(i) => item.get(*i),
            };
            match next {
                Some(next) => {
                    item = next;
                    best = item.span().or(best);
                }
                None => break,
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 11), (2, 6));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(line_col("é = 1", 3), (1, 3));
    }

    #[test]
    fn field_names_read_like_toml() {
        let path = [
            Seg::Key("route"),
            Seg::Index(1),
            Seg::Key("bypass_query"),
            Seg::Index(0),
        ];
        assert_eq!(field_name(&path), "route[1].bypass_query[0]");
    }

    #[test]
    fn errors_point_at_the_value() {
        let text = "[cache]\nttl = \"1h\"\n";
        let loc = Locator::new(text, "p.toml".into());
        let err = loc.error(&[Seg::Key("cache"), Seg::Key("ttl")], "bad");
        assert_eq!(err.to_string(), "p.toml:2:7: cache.ttl: bad");
    }
}
