//! Small text helpers shared by the renderers.

use std::path::Path;
use std::time::Duration;

/// `1 error`, `2 errors`.
pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `1h 30m`, the way policies write durations.
pub(crate) fn human_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `a, b and c`; past five names, `a, b, c, d, e and 7 more`.
pub(crate) fn name_list(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        _ if names.len() > SHOWN => format!(
            "{} and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        ),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Text safe inside a Markdown table cell: no row or column breaks, no
/// HTML from a policy file reaching a pull-request comment.
pub(crate) fn md_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `text` as inline code in a cell; backticks inside cannot close it early.
pub(crate) fn md_code(text: &str) -> String {
    let fence = if text.contains('`') { "`` " } else { "`" };
    let close = if text.contains('`') { " ``" } else { "`" };
    format!("{fence}{}{close}", md_cell(text).replace("``", "` `"))
}

/// A SARIF `artifactLocation.uri`: a relative path as a relative URI
/// reference (what code scanning resolves against the checkout), an
/// absolute one as a `file://` URI.
pub(crate) fn uri(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    let text = text.strip_prefix("./").unwrap_or(&text);
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if path.is_absolute() {
        format!("file://{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_lists_and_durations() {
        assert_eq!(plural(1, "error"), "1 error");
        assert_eq!(plural(0, "error"), "0 errors");
        assert_eq!(name_list(&["a"]), "a");
        assert_eq!(name_list(&["a", "b", "c"]), "a, b and c");
        assert_eq!(
            name_list(&["a", "b", "c", "d", "e", "f", "g"]),
            "a, b, c, d, e and 2 more"
        );
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h 30m");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table_or_inject_html() {
        assert_eq!(md_cell("a|b<script>\nc"), "a\\|b&lt;script&gt; c");
        assert_eq!(md_code("API_TOKEN"), "`API_TOKEN`");
        assert_eq!(md_code("a`b"), "`` a`b ``");
    }

    #[test]
    fn sarif_uris() {
        assert_eq!(
            uri(Path::new("policies/billing.toml")),
            "policies/billing.toml"
        );
        assert_eq!(uri(Path::new("./p/a b.toml")), "p/a%20b.toml");
        assert_eq!(uri(Path::new("/srv/p/ü.toml")), "file:///srv/p/%C3%BC.toml");
    }
}
