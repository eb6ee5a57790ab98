//! The keys of a decrypted value: a JSON object's or a TOML table's
//! top-level fields, anything else as the one key [`WHOLE_VALUE_KEY`].
//!
//! **Invariant:** the value is a secret: every copy a parser makes is
//! zeroed before it is freed, and a value that does not parse leaves no
//! copy behind (the `toml` crate's error keeps the whole input to quote
//! it, so TOML is checked with `toml_parser`'s events first), and no parse
//! error surfaces.

use serde_json::Value;
use std::collections::BTreeMap;
use unbaked_api::Secret;
use zeroize::{Zeroize, Zeroizing};

/// The key of a value that is neither a JSON object nor a TOML table.
pub const WHOLE_VALUE_KEY: &str = "value";

/// The keys of a decoded value: a JSON object's or a TOML table's
/// top-level fields, else the whole value as [`WHOLE_VALUE_KEY`].
pub fn fields(value: Zeroizing<Vec<u8>>) -> BTreeMap<String, Secret> {
    let first = value.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        // Checked first without keeping anything: a parse that fails
        // half-way would free the strings it had already copied unzeroed.
        let valid = serde_json::from_slice::<serde::de::IgnoredAny>(&value).is_ok();
        if let Some(map) = valid
            .then(|| serde_json::from_slice::<serde_json::Map<String, Value>>(&value).ok())
            .flatten()
        {
            let mut out = BTreeMap::new();
            for (mut k, v) in map {
                let text = match &v {
                    Value::String(s) => Secret::from_slice(s.as_bytes()),
                    other => {
                        let mut buf = Zeroizing::new(Vec::with_capacity(value.len() + 64));
                        // Writing a Value to a Vec cannot fail.
                        let _ = serde_json::to_writer(&mut *buf, other);
                        Secret::from(buf)
                    }
                };
                out.insert(k.clone(), text);
                k.zeroize();
                wipe_json(v);
            }
            return out;
        }
    } else if let Ok(text) = std::str::from_utf8(&value) {
        if let Some(table) = parses_as_toml(text)
            .then(|| text.parse::<toml::Table>().ok())
            .flatten()
        {
            if !table.is_empty() {
                let mut out = BTreeMap::new();
                for (mut k, v) in table {
                    let text = match &v {
                        toml::Value::String(s) => Secret::from_slice(s.as_bytes()),
                        other => Secret::new(Zeroizing::new(other.to_string()).as_bytes().to_vec()),
                    };
                    out.insert(k.clone(), text);
                    k.zeroize();
                    wipe_toml(v);
                }
                return out;
            }
        }
    }
    BTreeMap::from([(WHOLE_VALUE_KEY.to_string(), Secret::from(value))])
}

/// Zero every string of a parsed JSON value before it is freed.
fn wipe_json(v: Value) {
    match v {
        Value::String(mut s) => s.zeroize(),
        Value::Array(a) => a.into_iter().for_each(wipe_json),
        Value::Object(m) => {
            for (mut k, v) in m {
                k.zeroize();
                wipe_json(v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Zero every string of a parsed TOML value before it is freed.
fn wipe_toml(v: toml::Value) {
    match v {
        toml::Value::String(mut s) => s.zeroize(),
        toml::Value::Array(a) => a.into_iter().for_each(wipe_toml),
        toml::Value::Table(t) => {
            for (mut k, v) in t {
                k.zeroize();
                wipe_toml(v);
            }
        }
        _ => {}
    }
}

/// Whether `text` is a TOML document `toml` would read, judged without
/// `toml`'s error (which copies the whole input): the grammar
/// (`toml_parser`), then each key and scalar decoded into one zeroed buffer
/// and each number and date read as `toml` reads them. Duplicate keys are
/// not looked for: such a document still reaches `toml`'s error.
fn parses_as_toml(text: &str) -> bool {
    use toml_parser::decoder::ScalarKind;
    use toml_parser::parser::{Event, EventKind};
    let source = toml_parser::Source::new(text);
    let tokens = source.lex().into_vec();
    let mut events: Vec<Event> = Vec::new();
    let mut failed = false;
    toml_parser::parser::parse_document(
        &tokens,
        &mut |e: Event| events.push(e),
        &mut |_: toml_parser::ParseError| failed = true,
    );
    // No decoded text is longer than its source: one buffer, never grown.
    let mut buf = Zeroizing::new(String::with_capacity(text.len()));
    for e in &events {
        if failed {
            break;
        }
        let Some(raw) = source.get(e) else {
            return false;
        };
        buf.clear();
        let mut sink = |_: toml_parser::ParseError| failed = true;
        failed |= match e.kind() {
            EventKind::SimpleKey => {
                raw.decode_key(&mut *buf, &mut sink);
                false
            }
            EventKind::Scalar => match raw.decode_scalar(&mut *buf, &mut sink) {
                ScalarKind::Integer(radix) => i64::from_str_radix(&buf, radix.value()).is_err(),
                ScalarKind::Float => buf.parse::<f64>().is_err(),
                ScalarKind::DateTime => buf.parse::<toml_datetime::Datetime>().is_err(),
                ScalarKind::String | ScalarKind::Boolean(_) => false,
            },
            _ => false,
        };
    }
    // `buf` is zeroed as it drops (Zeroizing), here or at an early return.
    !failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &BTreeMap<String, Secret>) -> Vec<(&str, &[u8])> {
        m.iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect()
    }

    #[test]
    fn json_objects_and_toml_tables_expose_their_fields_and_anything_else_is_value() {
        let v = |s: &str| Zeroizing::new(s.as_bytes().to_vec());
        let json = fields(v(
            r#" {"password": "pw-1", "port": 5432, "tls": {"on": true}, "n": null}"#,
        ));
        assert_eq!(
            keys(&json),
            [
                ("n", &b"null"[..]),
                ("password", b"pw-1"),
                ("port", b"5432"),
                ("tls", br#"{"on":true}"#)
            ]
        );
        let toml = fields(v("password = \"pw-2\"\nport = 5432\n[tls]\non = true\n"));
        assert_eq!(keys(&toml)[0], ("password", &b"pw-2"[..]));
        assert_eq!(keys(&toml)[1], ("port", &b"5432"[..]));
        assert_eq!(keys(&toml).len(), 3);
        for plain in [
            "hunter2",
            "",
            "# only a comment\n",
            "[1, 2]",
            "{not json",
            "\"str\"",
        ] {
            let f = fields(v(plain));
            assert_eq!(keys(&f), [(WHOLE_VALUE_KEY, plain.as_bytes())], "{plain:?}");
        }
        let bin = fields(Zeroizing::new(vec![0xff, 0xfe, b'{']));
        assert_eq!(keys(&bin), [(WHOLE_VALUE_KEY, &[0xff, 0xfe, b'{'][..])]);
    }

    #[test]
    fn toml_is_judged_as_the_toml_crate_judges_it() {
        for (doc, ok) in [
            ("a = 1\n", true),
            (
                "a = \"x\\ty\"\n[t]\nb = 1979-05-27T07:32:00Z\nc = [1.5, inf, 0x1f]\n",
                true,
            ),
            ("'quoted key' = 'v'\nd.e = true\n", true),
            ("hunter2", false),
            ("a = \"unterminated\n", false),
            ("a = \"bad \\q escape\"\n", false),
            ("a = 99999999999999999999\n", false),
            ("a = 1979-13-45\n", false),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
                false,
            ),
        ] {
            assert_eq!(parses_as_toml(doc), ok, "{doc:?}");
            // The control: the toml crate agrees on each.
            assert_eq!(doc.parse::<toml::Table>().is_ok(), ok, "{doc:?}");
        }
    }
}
