//! Where a field sits in a policy file's text.
//!
//! The validated `Policy` carries no spans (the broker has no use for them),
//! so lints find their line again from the dotted field path the parser's
//! diagnostics use: `grant[2].env`, `match.uids[0]`, `isolation.privileged`.
//! The text is parsed once, lazily: a file without findings costs nothing.

use std::cell::OnceCell;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub(crate) struct Locator<'a> {
    text: &'a str,
    root: OnceCell<Option<Spanned<DeTable<'a>>>>,
}

enum Segment<'f> {
    Key(&'f str),
    Index(usize),
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator {
            text,
            root: OnceCell::new(),
        }
    }

    fn root(&self) -> Option<&DeTable<'a>> {
        self.root
            .get_or_init(|| DeTable::parse(self.text).ok())
            .as_ref()
            .map(Spanned::get_ref)
    }

    /// Whether `field` is written in the file.
    pub fn has(&self, field: &str) -> bool {
        matches!(self.offset(field), Some((_, true)))
    }

    /// 1-based line and column of `field`: its key, or for an array item
    /// the item. A field that is not written falls back to the nearest
    /// written parent, then to `workload`, then to 1:1.
    pub fn locate(&self, field: &str) -> (usize, usize) {
        let offset = match self.offset(field) {
            Some((offset, _)) => offset,
            None => self.offset("workload").map_or(0, |(o, _)| o),
        };
        unbaked_policy::line_column(self.text, offset)
    }

    /// The offset of `field` or its nearest written parent, and whether
    /// the whole path was found.
    fn offset(&self, field: &str) -> Option<(usize, bool)> {
        let mut table = self.root()?;
        let mut value: Option<&Spanned<DeValue<'a>>> = None;
        let mut found: Option<usize> = None;
        for segment in segments(field) {
            let next = match segment {
                Segment::Key(key) => {
                    if let Some(v) = value {
                        match v.get_ref() {
                            DeValue::Table(t) => table = t,
                            _ => return found.map(|o| (o, false)),
                        }
                    }
                    table
                        .iter()
                        .find(|(k, _)| k.get_ref() == key)
                        .map(|(k, v)| (k.span().start, v))
                }
                Segment::Index(i) => match value.map(Spanned::get_ref) {
                    Some(DeValue::Array(items)) => {
                        items.get(i).map(|item| (item_start(self.text, item), item))
                    }
                    _ => None,
                },
            };
            match next {
                Some((offset, v)) => {
                    found = Some(offset);
                    value = Some(v);
                }
                None => return found.map(|o| (o, false)),
            }
        }
        found.map(|o| (o, true))
    }
}

/// An item's own start; for a `[[grant]]` table its header line rather
/// than its first key.
fn item_start(text: &str, item: &Spanned<DeValue<'_>>) -> usize {
    let start = item.span().start;
    if matches!(item.get_ref(), DeValue::Table(_)) {
        let line_start = text[..start.min(text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let header = text[line_start..].trim_start();
        if header.starts_with("[[") {
            return line_start + (text[line_start..].len() - header.len());
        }
    }
    start
}

/// `grant[2].env` -> Key(grant), Index(2), Key(env); a key may be quoted,
/// as the parser writes labels with dots: `docker_labels."com.example.tier"`.
fn segments(field: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = field;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            if let Ok(i) = r[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = r.get(end + 1..).unwrap_or_default();
        } else if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            out.push(Segment::Key(&r[..end]));
            rest = r.get(end + 1..).unwrap_or_default();
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Segment::Key(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# c\nworkload = \"w\"\nmatch = { uids = [0, 1000], docker_labels = { \"a.b\" = \"x\" } }\n\n[isolation]\nprivileged = true\n\n[[grant]]\nsecret = \"s\"\nkey = \"k\"\nfile = \"f\"\n\n  [[grant]]\nsecret = \"t\"\nkey = \"k\"\nenv = \"E\"\n";

    #[test]
    fn keys_items_and_tables() {
        let l = Locator::new(TEXT);
        assert_eq!(l.locate("workload"), (2, 1));
        assert_eq!(l.locate("match.uids"), (3, 11));
        assert_eq!(l.locate("match.uids[1]"), (3, 22));
        assert_eq!(l.locate("match.docker_labels.\"a.b\""), (3, 47));
        assert_eq!(l.locate("isolation.privileged"), (6, 1));
        assert_eq!(l.locate("grant[0]"), (8, 1));
        assert_eq!(l.locate("grant[1]"), (13, 3));
        assert_eq!(l.locate("grant[1].env"), (16, 1));
        assert!(l.has("isolation") && l.has("grant[1].env"));
        assert!(!l.has("launch") && !l.has("grant[1].ttl") && !l.has("grant[5]"));
    }

    #[test]
    fn missing_fields_fall_back_to_the_parent_then_workload() {
        let l = Locator::new(TEXT);
        assert_eq!(l.locate("grant[1].ttl"), (13, 3));
        assert_eq!(l.locate("isolation.cap_add[0]"), (5, 2));
        assert_eq!(l.locate("launch.uids"), (2, 1));
        assert_eq!(Locator::new("not toml [").locate("workload"), (1, 1));
    }
}
