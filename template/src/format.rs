//! Structured formats from `(name, value)` pairs, in the caller's order.
//!
//! - `.env`: `NAME='value'` for POSIX `sh` (`set -a; . ./app.env`) and
//!   Docker Compose's `env_file`, which read single quotes literally: no
//!   `$` expansion, no backslash escapes, newlines kept. A `'` inside a
//!   value closes the quote, writes `\'`, and reopens it (`'it'\''s'`).
//!   A NUL cannot be in an environment variable, so it is refused.
//! - JSON: one object, Go's escaping (HTML-safe), keys in the given order.
//! - YAML: `"name": "value"`, double-quoted with YAML escapes for every
//!   non-printable character, so no value can start a new key, a comment
//!   or a document.
//!
//! Every value must be UTF-8 for JSON and YAML (refused otherwise, never
//! guessed): names, not values, appear in the errors.

use crate::buf::Buf;
use crate::gojson;
use unbaked_api::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Env,
    Json,
    Yaml,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{name}: a value with a NUL byte cannot be an environment variable: deliver it as a file or fd grant instead")]
    Nul { name: String },
    #[error("{name}: the value is not UTF-8, which {format} cannot hold: deliver it as a file grant instead")]
    NotUtf8 { name: String, format: &'static str },
}

pub fn render(format: Format, values: &[(String, Secret)]) -> Result<Buf, FormatError> {
    match format {
        Format::Env => env(values),
        Format::Json => json(values),
        Format::Yaml => yaml(values),
    }
}

pub fn env(values: &[(String, Secret)]) -> Result<Buf, FormatError> {
    let mut out = Buf::new();
    for (name, v) in values {
        let b = v.expose_secret();
        if b.contains(&0) {
            return Err(FormatError::Nul { name: name.clone() });
        }
        out.push_str(name);
        out.push(b"='");
        for part in b.split_inclusive(|&c| c == b'\'') {
            match part.strip_suffix(b"'") {
                Some(head) => {
                    out.push(head);
                    out.push(b"'\\''");
                }
                None => out.push(part),
            }
        }
        out.push(b"'\n");
    }
    Ok(out)
}

fn utf8<'a>(name: &str, v: &'a Secret, format: &'static str) -> Result<&'a str, FormatError> {
    std::str::from_utf8(v.expose_secret()).map_err(|_| FormatError::NotUtf8 {
        name: name.to_string(),
        format,
    })
}

pub fn json(values: &[(String, Secret)]) -> Result<Buf, FormatError> {
    let mut out = Buf::new();
    out.push(b"{");
    for (i, (name, v)) in values.iter().enumerate() {
        let s = utf8(name, v, "JSON")?;
        out.push(if i == 0 { b"\n  " } else { b",\n  " });
        gojson::string(name.as_bytes(), &mut out);
        out.push(b": ");
        gojson::string(s.as_bytes(), &mut out);
    }
    out.push(if values.is_empty() { b"}\n" } else { b"\n}\n" });
    Ok(out)
}

pub fn yaml(values: &[(String, Secret)]) -> Result<Buf, FormatError> {
    let mut out = Buf::new();
    for (name, v) in values {
        let s = utf8(name, v, "YAML")?;
        yaml_string(name, &mut out);
        out.push(b": ");
        yaml_string(s, &mut out);
        out.push(b"\n");
    }
    Ok(out)
}

/// A YAML double-quoted scalar: `"` and `\` escaped, every character YAML
/// would not print as itself (C0, DEL, C1, the line and paragraph
/// separators, a BOM, surrogates cannot occur in `str`) as `\uXXXX`.
fn yaml_string(s: &str, out: &mut Buf) {
    out.push(b"\"");
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<String> = match c {
            '"' => Some("\\\"".into()),
            '\\' => Some("\\\\".into()),
            '\n' => Some("\\n".into()),
            '\t' => Some("\\t".into()),
            '\r' => Some("\\r".into()),
            '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                Some(format!("\\u{:04x}", c as u32))
            }
            _ => None,
        };
        if let Some(e) = esc {
            out.push(&s.as_bytes()[start..i]);
            out.push_str(&e);
            start = i + c.len_utf8();
        }
    }
    out.push(&s.as_bytes()[start..]);
    out.push(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &[u8])]) -> Vec<(String, Secret)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), Secret::from_slice(v)))
            .collect()
    }

    fn text(b: Buf) -> String {
        String::from_utf8(b.as_bytes().to_vec()).unwrap()
    }

    const HARD: &[u8] = b"it's \"$HOME\" `id` \\n $(x)\nline2\t\\";

    #[test]
    fn env_quotes_single_and_breaks_out_for_quotes() {
        let out = text(env(&pairs(&[("A", b"plain"), ("B", HARD), ("C", b"")])).unwrap());
        assert_eq!(
            out,
            "A='plain'\nB='it'\\''s \"$HOME\" `id` \\n $(x)\nline2\t\\'\nC=''\n"
        );
        let e = env(&pairs(&[("NUL_VALUE", b"a\0b")])).unwrap_err();
        assert_eq!(
            e,
            FormatError::Nul {
                name: "NUL_VALUE".into()
            }
        );
        assert!(!e.to_string().contains("a\0b"));
    }

    /// The real reader: sh sources the file and prints each variable back.
    #[test]
    fn env_round_trips_through_sh() {
        let values = pairs(&[
            ("A", HARD),
            ("B", b"'"),
            ("C", b"''x''"),
            ("D", b"\n\n"),
            ("E", "ünï $1 ${X:-y} !".as_bytes()),
        ]);
        let file = tempfile_path();
        std::fs::write(&file, env(&values).unwrap().as_bytes()).unwrap();
        for (name, value) in &values {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(". \"$1\"; printf %s \"${name}\""))
                .arg("sh")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, value.expose_secret(), "{name}");
        }
        std::fs::remove_file(&file).unwrap();
    }

    fn tempfile_path() -> std::path::PathBuf {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        // tmpfs when there is one: even a test value stays off disk.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("unbaked-template-env-{}-{n}", std::process::id()))
    }

    #[test]
    fn json_escapes_and_round_trips() {
        let values = pairs(&[("b", HARD), ("a", "<&>\u{2028}\u{1}".as_bytes())]);
        let out = text(json(&values).unwrap());
        assert!(out.starts_with("{\n  \"b\": \"it's \\\"$HOME\\\""), "{out}");
        assert!(out.contains("\\u003c\\u0026\\u003e\\u2028\\u0001"), "{out}");
        let back: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&out).unwrap();
        let keys: Vec<&String> = back.keys().collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(back["b"].as_str().unwrap().as_bytes(), HARD);
        assert_eq!(text(json(&[]).unwrap()), "{}\n");
        let e = json(&pairs(&[("bin", b"\xff")])).unwrap_err();
        assert!(matches!(e, FormatError::NotUtf8 { .. }));
    }

    #[test]
    fn yaml_double_quotes_everything_unprintable() {
        let out = text(
            yaml(&pairs(&[
                ("key: x", b"v\n- injected: 1\n# c"),
                ("b", "\u{85}\u{2028}\u{feff}\"\\\u{1b}é".as_bytes()),
            ]))
            .unwrap(),
        );
        assert_eq!(
            out,
            "\"key: x\": \"v\\n- injected: 1\\n# c\"\n\"b\": \"\\u0085\\u2028\\ufeff\\\"\\\\\\u001bé\"\n"
        );
        // A real YAML parser (PyYAML, YAML 1.1) reads every value back.
        let values = pairs(&[
            ("a", HARD),
            ("b", "\u{85}\u{2028}\u{feff}\u{1b}\u{7f}é: #x".as_bytes()),
            ("c", b"- x\n---\n... &a *a !!str"),
            ("yes", b"no"),
            ("d", b""),
        ]);
        let file = tempfile_path();
        std::fs::write(&file, yaml(&values).unwrap().as_bytes()).unwrap();
        let read_back = std::process::Command::new("python3")
            .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))"])
            .arg(&file)
            .output()
            .expect("python3 (scripts/test installs python3-yaml)");
        std::fs::remove_file(&file).unwrap();
        assert!(
            read_back.status.success(),
            "{}",
            String::from_utf8_lossy(&read_back.stderr)
        );
        let back: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&read_back.stdout).unwrap();
        assert_eq!(back.len(), values.len());
        for (name, value) in &values {
            assert_eq!(
                back[name].as_str().unwrap().as_bytes(),
                value.expose_secret(),
                "{name}"
            );
        }
        // YAML's double-quoted escapes used here are also JSON's, so each
        // line's scalars read back with a JSON parser.
        for line in out.lines() {
            let (k, v) = line.split_once("\": \"").unwrap();
            let k: String = serde_json::from_str(&format!("{k}\"")).unwrap();
            let v: String = serde_json::from_str(&format!("\"{v}")).unwrap();
            assert!(!k.is_empty() && !v.is_empty());
        }
    }
}
