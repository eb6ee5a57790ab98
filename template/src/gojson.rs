//! Go's `encoding/json` output, byte for byte, as consul-template's
//! `toJSON` (`json.Marshal`) and `toJSONPretty` (`json.MarshalIndent(v, "",
//! "  ")`) produce it: keys sorted, `<`, `>`, `&`, U+2028 and U+2029
//! escaped as `\u00XX` / `\u20XX`, `\b` and `\f` short (Go 1.22+), other
//! control characters `\u00XX`, invalid UTF-8 as U+FFFD.

use crate::buf::Buf;
use crate::value::Value;

pub(crate) fn encode(v: &Value, pretty: bool, out: &mut Buf) {
    value(v, pretty, 0, out);
}

fn newline(out: &mut Buf, depth: usize) {
    out.push(b"\n");
    for _ in 0..depth {
        out.push(b"  ");
    }
}

fn value(v: &Value, pretty: bool, depth: usize, out: &mut Buf) {
    match v {
        Value::Nil => out.push(b"null"),
        Value::Bool(b) => out.push(if *b { b"true" } else { b"false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Str(s) => string(s.expose_secret(), out),
        Value::Map(m) => {
            if m.is_empty() {
                return out.push(b"{}");
            }
            out.push(b"{");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b",");
                }
                if pretty {
                    newline(out, depth + 1);
                }
                string(k.as_bytes(), out);
                out.push(if pretty { b": " } else { b":" });
                value(v, pretty, depth + 1, out);
            }
            if pretty {
                newline(out, depth);
            }
            out.push(b"}");
        }
        Value::List(l) => {
            if l.is_empty() {
                return out.push(b"[]");
            }
            out.push(b"[");
            for (i, v) in l.iter().enumerate() {
                if i > 0 {
                    out.push(b",");
                }
                if pretty {
                    newline(out, depth + 1);
                }
                value(v, pretty, depth + 1, out);
            }
            if pretty {
                newline(out, depth);
            }
            out.push(b"]");
        }
    }
}

/// A JSON string the way Go writes it (HTML-safe).
pub(crate) fn string(bytes: &[u8], out: &mut Buf) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b"\"");
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, c) in valid.char_indices() {
            let esc: Option<&[u8]> = match c {
                '"' => Some(b"\\\""),
                '\\' => Some(b"\\\\"),
                '\n' => Some(b"\\n"),
                '\r' => Some(b"\\r"),
                '\t' => Some(b"\\t"),
                '\u{8}' => Some(b"\\b"),
                '\u{c}' => Some(b"\\f"),
                _ => None,
            };
            let unicode = matches!(
                c,
                '\0'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}'
            );
            if esc.is_none() && !unicode {
                continue;
            }
            out.push(&valid.as_bytes()[start..i]);
            start = i + c.len_utf8();
            match esc {
                Some(e) => out.push(e),
                None => {
                    let n = c as u32;
                    let u = [
                        b'\\',
                        b'u',
                        HEX[(n >> 12) as usize & 15],
                        HEX[(n >> 8) as usize & 15],
                        HEX[(n >> 4) as usize & 15],
                        HEX[n as usize & 15],
                    ];
                    out.push(&u);
                }
            }
        }
        out.push(&valid.as_bytes()[start..]);
        if !chunk.invalid().is_empty() {
            out.push("\u{fffd}".as_bytes());
        }
    }
    out.push(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn enc(v: &Value, pretty: bool) -> String {
        let mut b = Buf::new();
        encode(v, pretty, &mut b);
        String::from_utf8(b.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn strings_escape_like_go() {
        let v = Value::str("a\"b\\c\nd\te\u{1}<>&\u{2028}\u{8}\u{c}é");
        assert_eq!(
            enc(&v, false),
            r#""a\"b\\c\nd\te\u0001\u003c\u003e\u0026\u2028\b\fé""#
        );
        let bad = Value::Str(unbaked_api::Secret::from_slice(b"a\xffb"));
        assert_eq!(enc(&bad, false), "\"a\u{fffd}b\"");
    }

    #[test]
    fn maps_sorted_compact_and_pretty() {
        let m = Value::Map(BTreeMap::from([
            ("b".to_string(), Value::Int(2)),
            (
                "a".to_string(),
                Value::List(vec![Value::Bool(true), Value::Nil]),
            ),
            ("c".to_string(), Value::Map(BTreeMap::new())),
        ]));
        assert_eq!(enc(&m, false), r#"{"a":[true,null],"b":2,"c":{}}"#);
        assert_eq!(
            enc(&m, true),
            "{\n  \"a\": [\n    true,\n    null\n  ],\n  \"b\": 2,\n  \"c\": {}\n}"
        );
    }

    #[test]
    fn compact_output_is_valid_json_with_the_same_content() {
        let s = "quote\" back\\ nl\n ctl\u{7f}\u{1b} html<&> uni\u{2029}";
        let mut b = Buf::new();
        string(s.as_bytes(), &mut b);
        let back: String = serde_json::from_slice(b.as_bytes()).unwrap();
        assert_eq!(back, s);
    }
}
