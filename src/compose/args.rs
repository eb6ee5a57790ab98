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
    // compose v2's hidden alias of --project-directory.
    "--workdir",
];

/// Global switches of either CLI (v2 takes the docker CLI's `--tls*`,
/// `-D`; 1.29 its own). Any other option is refused: taken for a switch,
/// an option with a value would shift what unbaked reads off what compose
/// runs.
const SWITCHES: &[&str] = &[
    "--verbose",
    "--no-ansi",
    "-v",
    "--version",
    "-h",
    "--help",
    "--tls",
    "--tlsverify",
    "--skip-hostname-check",
    "--compatibility",
    "--dry-run",
    "-D",
    "--debug",
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
/// An option neither CLI knows, or a short one written `-f=x` (docker-compose
/// 1.29 keeps the `=`, v2 drops it), is refused.
pub fn split(args: &[String]) -> Result<Split, String> {
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
        let (name, inline) = option(a)?;
        let mut value = inline;
        s.globals.push(a.clone());
        if WITH_VALUE.contains(&name.as_str()) {
            if value.is_none() {
                let v = args
                    .get(i + 1)
                    .ok_or_else(|| format!("compose option {name} needs a value"))?;
                s.globals.push(v.clone());
                value = Some(v.clone());
                i += 1;
            }
        } else if !SWITCHES.contains(&name.as_str()) || value.is_some() {
            return Err(format!(
                "{a}: not a global option of docker-compose 1.29 or compose v2 that unbaked compose knows, so it cannot tell which files and directory compose would read: leave it out"
            ));
        }
        match (name.as_str(), value) {
            ("-f" | "--file", Some(v)) => s.files.push(v),
            ("-p" | "--project-name", Some(v)) => s.project_name = Some(v),
            ("--project-directory" | "--workdir", Some(v)) => s.project_directory = Some(v),
            _ => {}
        }
        i += 1;
    }
    s.rest = args[i..].to_vec();
    Ok(s)
}

/// An option's name and its value written in the same word (`--file=x`,
/// `-fx`).
fn option(a: &str) -> Result<(String, Option<String>), String> {
    if a.starts_with("--") {
        return Ok(match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.to_string(), None),
        });
    }
    match a.get(..2) {
        Some(short @ ("-f" | "-p" | "-c" | "-H")) if a.len() > 2 => {
            if a[2..].starts_with('=') {
                return Err(format!(
                    "{a}: docker-compose 1.29 reads the value with its =, compose v2 without: write {short} {}",
                    &a[3..]
                ));
            }
            Ok((short.to_string(), Some(a[2..].to_string())))
        }
        _ => Ok((a.to_string(), None)),
    }
}

/// The files compose reads, in order, and whether the user named them with
/// `-f` (else they must be named for the real run, which gets `-f override`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub paths: Vec<PathBuf>,
    pub explicit: bool,
}

/// The file names compose looks for.
const DEFAULT_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// The override file names either CLI adds to a default file.
const OVERRIDE_NAMES: &[&str] = &[
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// `-f`, else `COMPOSE_FILE` (split by `COMPOSE_PATH_SEPARATOR`, default
/// `:`), else the default name found in the project directory (or the
/// working directory) or its nearest parent holding one, with the override
/// file there (two of either: refused).
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
        let found = |names: &[&str]| -> Vec<PathBuf> {
            names
                .iter()
                .map(|n| d.join(n))
                .filter(|p| p.is_file())
                .collect()
        };
        let mains = found(DEFAULT_NAMES);
        if mains.is_empty() {
            dir = d.parent();
            continue;
        }
        // docker-compose 1.29 prefers docker-compose.yml, v2 compose.yaml;
        // either takes any of the override names.
        let overrides = found(OVERRIDE_NAMES);
        if mains.len() > 1 || overrides.len() > 1 {
            return Err(format!(
                "{} holds more than one compose file or override file of compose's default names, which docker-compose 1.29 and compose v2 choose between differently: name the files with -f",
                d.display()
            ));
        }
        return Ok(Files {
            paths: mains.into_iter().chain(overrides).collect(),
            explicit: false,
        });
    }
    Err(format!(
        "no compose file in {} or its parents ({}): give one with -f",
        start.display(),
        DEFAULT_NAMES.join(", ")
    ))
}

/// The settings that choose the project's files and name. Set in an
/// environment file (which only compose reads), they would make compose
/// run another project than the one unbaked judged.
const COMPOSE_SETTINGS: &[&str] = &[
    "COMPOSE_FILE",
    "COMPOSE_PATH_SEPARATOR",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_PROFILES",
];

/// Refuse when an environment file either CLI could read (`.env` in the
/// working, project or first file's directory, each `--env-file`, each of
/// `COMPOSE_ENV_FILES`) names a setting of [`COMPOSE_SETTINGS`] on any
/// line that is not a comment (whatever the dotenv dialect).
pub fn compose_settings_in_env_files(split: &Split, files: &Files) -> Result<(), String> {
    let mut candidates: Vec<PathBuf> = vec![PathBuf::from(".env")];
    let dirs = split
        .project_directory
        .iter()
        .map(PathBuf::from)
        .chain(files.paths.first().map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }));
    let dirs: Vec<PathBuf> = dirs.collect();
    candidates.extend(dirs.iter().map(|d| d.join(".env")));
    let mut named = Vec::new();
    let mut next = false;
    for g in &split.globals {
        if std::mem::take(&mut next) {
            named.push(g.clone());
        }
        next = g == "--env-file";
        if let Some(v) = g.strip_prefix("--env-file=") {
            named.push(v.to_string());
        }
    }
    if let Ok(list) = std::env::var("COMPOSE_ENV_FILES") {
        named.extend(list.split(',').map(str::to_string));
    }
    for n in named {
        candidates.push(PathBuf::from(&n));
        candidates.extend(dirs.iter().map(|d| d.join(&n)));
    }
    for path in candidates {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let line = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .find_map(|l| COMPOSE_SETTINGS.iter().find(|k| l.contains(*k)));
        if let Some(k) = line {
            return Err(format!(
                "{}: sets {k}, which chooses the files or name of the project compose runs: unbaked compose reads only the process environment for it: export it instead",
                path.display()
            ));
        }
    }
    Ok(())
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
        ]))
        .unwrap();
        assert_eq!(sp.files, s(&["a.yml", "b.yml"]));
        assert_eq!(sp.project_name.as_deref(), Some("proj"));
        assert_eq!(
            sp.globals,
            s(&["-f", "a.yml", "--file=b.yml", "-p", "proj", "--verbose"])
        );
        assert_eq!(sp.rest, s(&["up", "-d", "--scale", "web=3"]));
        let sp = split(&s(&["-fx.yml", "--project-directory", "/p", "ps"])).unwrap();
        assert_eq!(sp.files, s(&["x.yml"]));
        assert_eq!(sp.project_directory.as_deref(), Some("/p"));
        assert_eq!(sp.rest, s(&["ps"]));
    }

    /// v2's hidden `--workdir` is the project directory; an option neither
    /// CLI has, a switch given a value, or `-p=x` is refused.
    #[test]
    fn unknown_options_are_refused() {
        let sp = split(&s(&["--workdir=other", "up"])).unwrap();
        assert_eq!(sp.project_directory.as_deref(), Some("other"));
        let sp = split(&s(&["--workdir", "other", "--verbose", "up"])).unwrap();
        assert_eq!(sp.project_directory.as_deref(), Some("other"));
        assert_eq!(sp.rest, s(&["up"]));
        for bad in [
            &["--wrkdir=other", "up"][..],
            &["--frobnicate", "up"],
            &["--verbose=1", "up"],
            &["-p=foo", "up"],
            &["-f=x.yml", "up"],
            &["-x", "up"],
            &["-f"],
        ] {
            assert!(split(&s(bad)).is_err(), "{bad:?}");
        }
        // Control: the known forms pass.
        assert!(split(&s(&["-pfoo", "--project-name=foo", "--dry-run", "up"])).is_ok());
    }

    /// `.env` (or an `--env-file`) choosing the files or the name is
    /// refused; other settings are not.
    #[test]
    fn compose_settings_in_an_env_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("docker-compose.yml");
        std::fs::write(&main, "services: {}\n").unwrap();
        let files = Files {
            paths: vec![main],
            explicit: false,
        };
        let sp = Split::default();
        std::fs::write(dir.path().join(".env"), "# COMPOSE_FILE=x\nA=1\n").unwrap();
        compose_settings_in_env_files(&sp, &files).unwrap();
        for line in [
            "COMPOSE_FILE=safe.yml",
            "export COMPOSE_PROJECT_NAME=x",
            " COMPOSE_PROFILES = debug",
            "COMPOSE_PATH_SEPARATOR=;",
        ] {
            std::fs::write(dir.path().join(".env"), format!("A=1\n{line}\n")).unwrap();
            let e = compose_settings_in_env_files(&sp, &files).unwrap_err();
            assert!(e.contains("COMPOSE_"), "{e}");
        }
        std::fs::remove_file(dir.path().join(".env")).unwrap();
        let other = dir.path().join("vars.env");
        std::fs::write(&other, "COMPOSE_FILE=safe.yml\n").unwrap();
        compose_settings_in_env_files(&sp, &files).unwrap();
        let sp = split(&s(&["--env-file", &other.display().to_string(), "up"])).unwrap();
        assert!(compose_settings_in_env_files(&sp, &files).is_err());
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
        // Both CLIs pair compose.yaml with docker-compose.override.yml.
        let mixed = tempfile::tempdir().unwrap();
        std::fs::write(mixed.path().join("compose.yaml"), "services: {}\n").unwrap();
        let over = mixed.path().join("docker-compose.override.yml");
        std::fs::write(&over, "services: {}\n").unwrap();
        let sp = Split {
            project_directory: Some(mixed.path().display().to_string()),
            ..Split::default()
        };
        assert_eq!(
            files(&sp, none).unwrap().paths,
            vec![mixed.path().join("compose.yaml"), over]
        );
        // Two default names: 1.29 takes docker-compose.yml, v2 compose.yaml.
        std::fs::write(mixed.path().join("docker-compose.yml"), "services: {}\n").unwrap();
        let e = files(&sp, none).unwrap_err();
        assert!(e.contains("more than one"), "{e}");
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
