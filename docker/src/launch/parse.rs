//! `docker run`'s argument grammar, as docker's flag parser (pflag) reads
//! it: `--flag value`, `--flag=value`, short clusters (`-it`, `-dite K=V`,
//! `-eK=V`, `-e=K=V`), `--` before the image, nothing after the image.
//! Pure: no I/O, so it is fuzzed (`fuzz/`, `launch_args`).

use super::flags::Flag;

/// One option as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// The option, `None` when docker's table does not know it.
    pub flag: Option<Flag>,
    /// The long name, canonical (`net` is `network`), or the unknown name.
    pub name: String,
    /// The value; for a switch only when written `--flag=value`.
    pub value: Option<String>,
    /// The argument(s) it came from, passed on unchanged.
    pub raw: Vec<String>,
}

impl Opt {
    /// Not a `docker run` option the table knows.
    pub fn unknown(&self) -> bool {
        self.flag.is_none()
    }
}

/// `docker run [OPTIONS] IMAGE [COMMAND] [ARG...]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub options: Vec<Opt>,
    pub image: String,
    pub command: Vec<String>,
}

/// A refused argument: the rule it breaks and why, saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    /// For the caller: never another workload's name or selector.
    pub reason: String,
    /// For the operator's log and the audit record only (e.g. the other
    /// workload a label would have matched); never sent to the caller.
    pub detail: Option<String>,
}

pub(crate) fn refusal(rule: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        rule,
        reason: reason.into(),
        detail: None,
    }
}

/// Split the arguments the way docker's flag parser does. Every error is
/// reported at once.
pub fn parse(args: &[String]) -> Result<Parsed, Vec<Refusal>> {
    let mut options = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        let step = if let Some(long) = arg.strip_prefix("--") {
            parse_long(long, args, i, &mut options)
        } else if arg.len() > 1 && arg.starts_with('-') {
            parse_cluster(args, i, &mut options)
        } else {
            break;
        };
        match step {
            Ok(next) => i = next,
            Err(e) => {
                errors.push(e);
                // The rest cannot be read reliably: report what we have.
                if !matches!(errors.last(), Some(r) if r.rule == "launch.unknown_option") {
                    break;
                }
                i += 1;
            }
        }
    }
    let Some(image) = args.get(i) else {
        errors.push(refusal(
            "launch.args",
            "no image given: unbaked run [--workload NAME] -- [DOCKER RUN OPTIONS] IMAGE [COMMAND]",
        ));
        return Err(errors);
    };
    // After `--` any word is the image, but the plan drops the `--`: docker
    // would then read a leading '-' as an option (found by fuzzing).
    if image.starts_with('-') {
        errors.push(refusal(
            "launch.args",
            format!("{image:?} is not an image name: an image never starts with '-'"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Parsed {
        options,
        image: image.clone(),
        command: args[i + 1..].to_vec(),
    })
}

/// `--name`, `--name=value` or `--name value` at `args[i]`; the index of
/// the next argument.
fn parse_long(long: &str, args: &[String], i: usize, out: &mut Vec<Opt>) -> Result<usize, Refusal> {
    let (name, inline) = match long.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (long, None),
    };
    let flag = Flag::from_long(name);
    let mut raw = vec![args[i].clone()];
    let value = match flag {
        Some(f) if f.takes_value() && inline.is_none() => {
            let v = args.get(i + 1).ok_or_else(|| {
                refusal(
                    "launch.args",
                    format!("--{name} needs a value: give it as --{name} VALUE"),
                )
            })?;
            raw.push(v.clone());
            Some(v.clone())
        }
        None if inline.is_none() => {
            return Err(refusal(
                "launch.unknown_option",
                format!("--{name} is not a docker run option unbaked knows, so it cannot tell whether it takes a value or weakens isolation: leave it out"),
            ));
        }
        _ => inline,
    };
    let next = i + raw.len();
    out.push(Opt {
        flag,
        name: flag.map_or_else(|| name.to_string(), |f| f.name().to_string()),
        value,
        raw,
    });
    Ok(next)
}

/// A short cluster at `args[i]`: switches, then at most one option that
/// takes the rest of the cluster (or the next argument) as its value.
fn parse_cluster(args: &[String], i: usize, out: &mut Vec<Opt>) -> Result<usize, Refusal> {
    let arg = &args[i];
    let cluster: Vec<char> = arg[1..].chars().collect();
    let mut raw = vec![arg.clone()];
    let mut found: Vec<(Flag, Option<String>)> = Vec::new();
    for (j, &c) in cluster.iter().enumerate() {
        let flag = Flag::from_short(c).ok_or_else(|| {
            refusal(
                "launch.unknown_option",
                format!("-{c} (in {arg}) is not a docker run option: check the spelling"),
            )
        })?;
        if !flag.takes_value() {
            found.push((flag, None));
            continue;
        }
        let rest: String = cluster[j + 1..].iter().collect();
        let rest = rest.strip_prefix('=').map(str::to_string).unwrap_or(rest);
        let value = if !rest.is_empty() {
            rest
        } else {
            let v = args.get(i + 1).ok_or_else(|| {
                refusal(
                    "launch.args",
                    format!("-{c} needs a value: give it as -{c} VALUE"),
                )
            })?;
            raw.push(v.clone());
            v.clone()
        };
        found.push((flag, Some(value)));
        break;
    }
    let next = i + raw.len();
    // One option per letter; the raw arguments are passed once (on the first).
    for (k, (flag, value)) in found.into_iter().enumerate() {
        out.push(Opt {
            flag: Some(flag),
            name: flag.name().to_string(),
            value,
            raw: if k == 0 {
                std::mem::take(&mut raw)
            } else {
                vec![]
            },
        });
    }
    Ok(next)
}

/// The fields of a `--mount` value, as docker reads them: CSV (a field may
/// be quoted, `""` is a quote inside one), keys in any case. `Err` when
/// docker's CSV reader would refuse it too.
pub fn mount_fields(spec: &str) -> Result<Vec<(String, String)>, String> {
    csv_fields(spec)?
        .into_iter()
        .map(|field| {
            let (k, v) = field.split_once('=').unwrap_or((&field, ""));
            Ok((k.trim().to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

/// Go's encoding/csv on one line, without lazy quotes.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".into()),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("text after a closing quote".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("a quote inside an unquoted field".into());
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parse_long_short_and_clusters() {
        let p = parse(&s(&[
            "-it",
            "--rm",
            "-e",
            "A=1",
            "--name=x",
            "-dve=B",
            "-p8080:80",
            "-e=C=3",
            "--net",
            "none",
            "img:1",
            "sh",
            "-c",
            "--privileged",
        ]))
        .unwrap();
        assert_eq!(p.image, "img:1");
        assert_eq!(p.command, s(&["sh", "-c", "--privileged"]));
        let names: Vec<(&str, Option<&str>)> = p
            .options
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("interactive", None),
                ("tty", None),
                ("rm", None),
                ("env", Some("A=1")),
                ("name", Some("x")),
                ("detach", None),
                ("volume", Some("e=B")),
                ("publish", Some("8080:80")),
                ("env", Some("C=3")),
                ("network", Some("none")),
            ]
        );
        assert_eq!(p.options[9].flag, Some(Flag::Network));
        // `--` ends the options, but no image starts with '-' (the plan
        // drops the `--`, so docker would read it as an option).
        let e = parse(&s(&["--rm", "--", "-weird", "x"])).unwrap_err();
        assert_eq!(e[0].rule, "launch.args");
    }

    #[test]
    fn parse_errors_name_their_rule() {
        assert_eq!(parse(&s(&["--rm"])).unwrap_err()[0].rule, "launch.args");
        assert_eq!(parse(&s(&["--env"])).unwrap_err()[0].rule, "launch.args");
        assert_eq!(
            parse(&s(&["-z", "img"])).unwrap_err()[0].rule,
            "launch.unknown_option"
        );
        assert_eq!(
            parse(&s(&["--frobnicate", "img"])).unwrap_err()[0].rule,
            "launch.unknown_option"
        );
        // With its value attached, an unknown option parses (the plan refuses it).
        let p = parse(&s(&["--frobnicate=1", "img"])).unwrap();
        assert!(p.options[0].unknown());
    }

    #[test]
    fn mount_fields_read_csv_like_docker() {
        let f = mount_fields(r#""type=bind","SRC=/var/run",Dst=/x,"bind-propagation=rshared""#)
            .unwrap();
        assert_eq!(
            f,
            [
                ("type".to_string(), "bind".to_string()),
                ("src".to_string(), "/var/run".to_string()),
                ("dst".to_string(), "/x".to_string()),
                ("bind-propagation".to_string(), "rshared".to_string()),
            ]
        );
        let f = mount_fields(r#"type=bind,"source=/a,b""c",target=/y,readonly"#).unwrap();
        assert_eq!(f[1], ("source".to_string(), "/a,b\"c".to_string()));
        assert_eq!(f[3], ("readonly".to_string(), String::new()));
        assert!(mount_fields(r#"type=bind,source=/a"b"#).is_err());
        assert!(mount_fields(r#""type=bind"x"#).is_err());
        assert!(mount_fields(r#""type=bind"#).is_err());
    }
}
