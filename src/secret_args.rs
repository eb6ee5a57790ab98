//! `KEY=VALUE`, `KEY=-` (stdin) and `KEY=@FILE` for `unbaked secret put`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use unbaked_api::Secret;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// Names the argument by position: the text itself may be a value.
    #[error("argument {0} after the path is not KEY=VALUE, KEY=- or KEY=@FILE")]
    Shape(usize),
    #[error("key {0} is given twice")]
    Duplicate(String),
    #[error("only one key may read stdin (KEY=-)")]
    TwoStdin,
    #[error("cannot read the value of {key} from {from}: {source}")]
    Read {
        key: String,
        from: String,
        source: std::io::Error,
    },
}

/// Parse the pairs; `warn` hears of values given inline (visible in `ps`).
pub fn parse(
    pairs: &[OsString],
    mut stdin: impl Read,
    mut warn: impl FnMut(&str),
) -> Result<BTreeMap<String, Secret>, PairError> {
    let mut out = BTreeMap::new();
    let mut stdin_used = false;
    for (i, pair) in pairs.iter().enumerate() {
        let bytes = pair.as_bytes();
        let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
            return Err(PairError::Shape(i + 1));
        };
        let key = String::from_utf8_lossy(&bytes[..eq]).into_owned();
        if key.is_empty() {
            return Err(PairError::Shape(i + 1));
        }
        let rest = &bytes[eq + 1..];
        let value = if rest == b"-" {
            if std::mem::replace(&mut stdin_used, true) {
                return Err(PairError::TwoStdin);
            }
            let mut buf = Zeroizing::new(Vec::new());
            stdin
                .read_to_end(&mut buf)
                .map_err(|source| PairError::Read {
                    key: key.clone(),
                    from: "stdin".into(),
                    source,
                })?;
            Secret::from(buf)
        } else if let Some(file) = rest.strip_prefix(b"@") {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(file));
            let buf = std::fs::read(path).map_err(|source| PairError::Read {
                key: key.clone(),
                from: path.display().to_string(),
                source,
            })?;
            Secret::new(buf)
        } else {
            warn(&format!(
                "the value of {key} was given on the command line, where ps and shell history can see it: prefer {key}=- or {key}=@FILE"
            ));
            Secret::from_slice(rest)
        };
        if out.insert(key.clone(), value).is_some() {
            return Err(PairError::Duplicate(key));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn stdin_file_and_inline_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v");
        std::fs::write(&f, b"from-file").unwrap();
        let mut warnings = vec![];
        let pairs = os(&["a=-", &format!("b=@{}", f.display()), "c=inline"]);
        let m = parse(&pairs, &b"from-stdin"[..], |w| warnings.push(w.to_string())).unwrap();
        assert_eq!(m["a"].expose_secret(), b"from-stdin");
        assert_eq!(m["b"].expose_secret(), b"from-file");
        assert_eq!(m["c"].expose_secret(), b"inline");
        assert_eq!(warnings.len(), 1);
        assert!(!warnings[0].contains("inline"));
    }

    #[test]
    fn bad_pairs_are_refused_without_echoing_values() {
        assert!(matches!(
            parse(&os(&["a=-", "b=-"]), &b""[..], |_| {}),
            Err(PairError::TwoStdin)
        ));
        assert!(matches!(
            parse(&os(&["a=1", "a=2"]), &b""[..], |_| {}),
            Err(PairError::Duplicate(_))
        ));
        let e = parse(&os(&["a=1", "hunter2"]), &b""[..], |_| {}).unwrap_err();
        assert!(matches!(e, PairError::Shape(2)));
        assert!(!e.to_string().contains("hunter2"));
        let e = parse(&os(&["k=@/nonexistent/x"]), &b""[..], |_| {}).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x"));
    }
}
