//! What a `compose run` or `compose exec` command line asks of one service
//! beyond its files: `run -v /var/run/docker.sock:/s`, `run --cap-add`,
//! `run -u`, `run -l`, `exec --privileged`. For a workload service these
//! are judged by its plan like the service's own fields; `run
//! --entrypoint` (it would replace the shim) is refused; an option this
//! file does not know is refused, since whether it takes a value (and so
//! which word is the service) is unknown.

/// A `run` or `exec` of `service`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Asked {
    pub service: String,
    /// `docker run` options (`volume`, `cap-add`...) with their values.
    pub options: Vec<(String, Option<String>)>,
    /// `run SERVICE CMD...`: the command, which replaces the service's.
    pub command: Vec<String>,
    /// `run --entrypoint`.
    pub entrypoint: bool,
    /// The compose arguments up to the service: compose gets the command
    /// through the override (the shim's arguments around it).
    pub rest_without_command: Vec<String>,
}

/// One option of `compose run`/`exec`: its spellings, whether it takes a
/// value, and the `docker run` option a workload service is judged with
/// (`""`: nothing to judge).
struct Spec {
    long: &'static str,
    short: Option<char>,
    value: bool,
    judged_as: &'static str,
}

const fn o(long: &'static str, short: Option<char>, value: bool, judged_as: &'static str) -> Spec {
    Spec {
        long,
        short,
        value,
        judged_as,
    }
}

/// `docker-compose` 1.29 and compose v2.
const RUN: &[Spec] = &[
    o("volume", Some('v'), true, "volume"),
    o("cap-add", None, true, "cap-add"),
    o("cap-drop", None, true, "cap-drop"),
    o("user", Some('u'), true, "user"),
    o("label", Some('l'), true, "label"),
    o("env", Some('e'), true, "env"),
    o("entrypoint", None, true, "entrypoint"),
    o("name", None, true, ""),
    o("publish", Some('p'), true, ""),
    o("workdir", Some('w'), true, ""),
    o("pull", None, true, ""),
    o("detach", Some('d'), false, ""),
    o("rm", None, false, ""),
    o("no-deps", None, false, ""),
    o("service-ports", Some('P'), false, ""),
    o("use-aliases", None, false, ""),
    o("no-TTY", Some('T'), false, ""),
    o("interactive", Some('i'), false, ""),
    o("tty", Some('t'), false, ""),
    o("build", None, false, ""),
    o("quiet-pull", None, false, ""),
    o("remove-orphans", None, false, ""),
];

const EXEC: &[Spec] = &[
    o("privileged", None, false, "privileged"),
    o("user", Some('u'), true, ""),
    o("env", Some('e'), true, ""),
    o("workdir", Some('w'), true, ""),
    o("index", None, true, ""),
    o("detach", Some('d'), false, ""),
    o("no-TTY", Some('T'), false, ""),
    o("interactive", Some('i'), false, ""),
    o("tty", Some('t'), false, ""),
];

/// The `run`/`exec` in `rest` (the compose command and its arguments), or
/// `None` for any other command. An option it does not know is an error.
pub fn parse(rest: &[String]) -> Result<Option<Asked>, String> {
    let Some((cmd, args)) = rest.split_first() else {
        return Ok(None);
    };
    let specs = match cmd.as_str() {
        "run" => RUN,
        "exec" => EXEC,
        _ => return Ok(None),
    };
    let mut asked = Asked::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        i += option(specs, cmd, args, i, &mut asked)?;
    }
    let Some(service) = args.get(i) else {
        return Err(format!("compose {cmd}: no service named"));
    };
    asked.service = service.clone();
    if *cmd == "run" {
        asked.command = args[i + 1..].to_vec();
    }
    asked.rest_without_command = rest[..i + 2].to_vec();
    Ok(Some(asked))
}

/// One option at `args[i]` (long, `--x=v`, short, `-xv`, or switches
/// together, `-dT`); how many words it took.
fn option(
    specs: &[Spec],
    cmd: &str,
    args: &[String],
    i: usize,
    asked: &mut Asked,
) -> Result<usize, String> {
    let a = &args[i];
    let unknown = || {
        format!("compose {cmd} {a}: not an option unbaked compose knows, so it cannot tell whether it weakens isolation (or which word is the service): leave it out")
    };
    let (spec, inline) = if let Some(long) = a.strip_prefix("--") {
        let (name, v) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        (
            specs.iter().find(|s| s.long == name).ok_or_else(unknown)?,
            v,
        )
    } else {
        let mut chars = a[1..].chars();
        let first = chars.next().ok_or_else(unknown)?;
        let spec = specs
            .iter()
            .find(|s| s.short == Some(first))
            .ok_or_else(unknown)?;
        let tail: String = chars.collect();
        if !spec.value && !tail.is_empty() {
            // `-dT`: switches together, each one known.
            for c in tail.chars() {
                let s = specs
                    .iter()
                    .find(|s| s.short == Some(c))
                    .ok_or_else(unknown)?;
                if s.value {
                    return Err(unknown());
                }
                record(s, None, asked);
            }
        }
        (spec, (spec.value && !tail.is_empty()).then_some(tail))
    };
    let (value, used) = match (spec.value, inline) {
        (false, _) => (None, 1),
        (true, Some(v)) => (Some(v), 1),
        (true, None) => (
            Some(
                args.get(i + 1)
                    .cloned()
                    .ok_or_else(|| format!("compose {cmd} {a}: no value"))?,
            ),
            2,
        ),
    };
    record(spec, value, asked);
    Ok(used)
}

fn record(spec: &Spec, value: Option<String>, asked: &mut Asked) {
    match spec.judged_as {
        "" => {}
        "entrypoint" => asked.entrypoint = true,
        // Names only: a value may be a secret of the user's.
        "env" => {
            let v = value.unwrap_or_default();
            let name = v.split('=').next().unwrap_or_default().to_string();
            asked.options.push(("env".into(), Some(name)));
        }
        other => asked.options.push((other.into(), value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn run_and_exec_options_are_read() {
        let a = parse(&s(&[
            "run",
            "--rm",
            "-v",
            "/var/run/docker.sock:/s",
            "--cap-add=SYS_ADMIN",
            "-dT",
            "-uroot",
            "-e",
            "TOKEN=hunter2",
            "web",
            "sh",
            "-c",
            "id",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(a.service, "web");
        assert_eq!(
            a.options,
            vec![
                (
                    "volume".to_string(),
                    Some("/var/run/docker.sock:/s".to_string())
                ),
                ("cap-add".to_string(), Some("SYS_ADMIN".to_string())),
                ("user".to_string(), Some("root".to_string())),
                ("env".to_string(), Some("TOKEN".to_string())),
            ]
        );
        // Names only: the value stays in the arguments compose gets.
        assert!(!format!("{:?}", a.options).contains("hunter2"));
        assert_eq!(a.command, s(&["sh", "-c", "id"]));
        assert_eq!(
            a.rest_without_command.last().map(String::as_str),
            Some("web")
        );
        let e = parse(&s(&["exec", "--privileged", "-u", "0", "web", "cat", "/x"]))
            .unwrap()
            .unwrap();
        assert_eq!(e.options, vec![("privileged".to_string(), None)]);
        assert!(e.command.is_empty());
        assert!(
            parse(&s(&["run", "--entrypoint", "sh", "web"]))
                .unwrap()
                .unwrap()
                .entrypoint
        );
        // Unknown options are refused; other commands are not read.
        assert!(parse(&s(&["run", "--weird", "x", "web"])).is_err());
        assert!(parse(&s(&["run", "-dX", "web"])).is_err());
        assert_eq!(parse(&s(&["up", "-d", "--weird"])).unwrap(), None);
    }
}
