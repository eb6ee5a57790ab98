//! The compose command line as the user gave it: the global options
//! (before the compose command) split from the command and its arguments,
//! and the compose files those options (or `COMPOSE_FILE`, or compose's
//! default names) select.

use std::path::{Path, PathBuf};

/// Global options of `docker-compose` 1.29 and `docker compose` v2 that take
/// a value (long and short spellings).
const WITH_VALUE: &[&str] = &[
    "-f",
    "--file",
    "-p",
    "--project-name",
    "-c",
    "--context",
    "--log-level",
    "--ansi",
    "-H",
    "--host",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--project-directory",
    "--env-file",
    "--profile",
    "--parallel",
    "--progress",
];

/// The user's compose arguments, split.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// The global options, as given (passed to `config` and to the real run).
    pub globals: Vec<String>,
    /// The compose command and its arguments (`up -d`, `ps`, ...).
    pub rest: Vec<String>,
    /// `-f` / `--file` values, in order.
    pub files: Vec<String>,
    pub project_name: Option<String>,
    pub project_directory: Option<String>,
}

/// Split at the first word that is not a global option or its value.
pub fn split(args: &[String]) -> Split {
    let mut s = Split::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if !a.starts_with('-') || a == "-" {
            break;
        }
        if a == "--" {
            i += 1;
            break;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => match a.get(..2) {
                // `-fFILE`, `-pNAME`
                Some(short @ ("-f" | "-p" | "-c" | "-H")) if a.len() > 2 => {
                    (short.to_string(), Some(a[2..].to_string()))
                }
                _ => (a.clone(), None),
            },
        };
        let mut value = inline;
        s.globals.push(a.clone());
        if value.is_none() && WITH_VALUE.contains(&name.as_str()) {
            if let Some(v) = args.get(i + 1) {
                s.globals.push(v.clone());
                value = Some(v.clone());
                i += 1;
            }
        }
        match (name.as_str(), value) {
            ("-f" | "--file", Some(v)) => s.files.push(v),
            ("-p" | "--project-name", Some(v)) => s.project_name = Some(v),
            ("--project-directory", Some(v)) => s.project_directory = Some(v),
            _ => {}
        }
        i += 1;
    }
    s.rest = args[i..].to_vec();
    s
}

/// The files compose reads, in order, and whether the user named them with
/// `-f` (else they must be named for the real run, which gets `-f override`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub paths: Vec<PathBuf>,
    pub explicit: bool,
}

/// The file names compose looks for, in its order of preference, and
/// their override files.
const DEFAULT_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// `-f`, else `COMPOSE_FILE` (split by `COMPOSE_PATH_SEPARATOR`, default
/// `:`), else the first default name found in the project directory (or the
/// working directory) or a parent, with its `.override` file.
pub fn files(split: &Split, env: impl Fn(&str) -> Option<String>) -> Result<Files, String> {
    if !split.files.is_empty() {
        return Ok(Files {
            paths: split.files.iter().map(PathBuf::from).collect(),
            explicit: true,
        });
    }
    if let Some(list) = env("COMPOSE_FILE").filter(|v| !v.is_empty()) {
        let sep = env("COMPOSE_PATH_SEPARATOR").unwrap_or_else(|| ":".into());
        return Ok(Files {
            paths: list
                .split(sep.as_str())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            explicit: false,
        });
    }
    let start = match &split.project_directory {
        Some(d) => PathBuf::from(d),
        None => std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))?,
    };
    let mut dir: Option<&Path> = Some(&start);
    while let Some(d) = dir {
        for name in DEFAULT_NAMES {
            let main = d.join(name);
            if main.is_file() {
                let mut paths = vec![main];
                let stem = name.rsplit_once('.').map_or(*name, |(s, _)| s);
                for ext in ["yml", "yaml"] {
                    let o = d.join(format!("{stem}.override.{ext}"));
                    if o.is_file() {
                        paths.push(o);
                        break;
                    }
                }
                return Ok(Files {
                    paths,
                    explicit: false,
                });
            }
        }
        dir = d.parent();
    }
    Err(format!(
        "no compose file in {} or its parents ({}): give one with -f",
        start.display(),
        DEFAULT_NAMES.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn globals_end_at_the_compose_command() {
        let sp = split(&s(&[
            "-f",
            "a.yml",
            "--file=b.yml",
            "-p",
            "proj",
            "--verbose",
            "up",
            "-d",
            "--scale",
            "web=3",
        ]));
        assert_eq!(sp.files, s(&["a.yml", "b.yml"]));
        assert_eq!(sp.project_name.as_deref(), Some("proj"));
        assert_eq!(
            sp.globals,
            s(&["-f", "a.yml", "--file=b.yml", "-p", "proj", "--verbose"])
        );
        assert_eq!(sp.rest, s(&["up", "-d", "--scale", "web=3"]));
        let sp = split(&s(&["-fx.yml", "--project-directory", "/p", "ps"]));
        assert_eq!(sp.files, s(&["x.yml"]));
        assert_eq!(sp.project_directory.as_deref(), Some("/p"));
        assert_eq!(sp.rest, s(&["ps"]));
    }

    #[test]
    fn compose_file_and_default_names() {
        let none = |_: &str| None;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docker-compose.yml"), "services: {}\n").unwrap();
        std::fs::write(
            dir.path().join("docker-compose.override.yaml"),
            "services: {}\n",
        )
        .unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        let sp = Split {
            project_directory: Some(nested.display().to_string()),
            ..Split::default()
        };
        let f = files(&sp, none).unwrap();
        assert!(!f.explicit);
        assert_eq!(
            f.paths,
            vec![
                dir.path().join("docker-compose.yml"),
                dir.path().join("docker-compose.override.yaml")
            ]
        );
        let env = |k: &str| (k == "COMPOSE_FILE").then(|| "x.yml:y.yml".to_string());
        assert_eq!(
            files(&sp, env).unwrap().paths,
            vec![PathBuf::from("x.yml"), PathBuf::from("y.yml")]
        );
        let empty = tempfile::tempdir().unwrap();
        let sp = Split {
            project_directory: Some(empty.path().display().to_string()),
            ..Split::default()
        };
        // Only when no parent of the temp dir has a compose file.
        if let Err(e) = files(&sp, none) {
            assert!(e.contains("no compose file"), "{e}");
        }
    }
}
