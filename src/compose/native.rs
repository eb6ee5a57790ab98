//! The project read by unbaked itself, for the common case, instead of a
//! `compose config` process (docker-compose 1.29's Python start-up is most
//! of a second). It reads what compose reads: the files `args::files`
//! found, the `.env` file, the environment, `${VAR}` interpolation with
//! its defaults, and the merge of override files.
//!
//! **Invariant:** anything it does not implement exactly as both compose
//! CLIs do is a [`Fallback`]: the caller then asks `compose config`. A
//! labelled service is never missed and a field never read differently:
//! `extends`, `include`, YAML merge keys and tags, a scalar YAML 1.1
//! (PyYAML) reads otherwise than YAML 1.2, a `.env` line beyond
//! `NAME=word`, a `COMPOSE_*` setting in `.env`, `--env-file`, an
//! interpolation form beyond `$VAR ${VAR} ${VAR-d} ${VAR:-d}`, a variable
//! compose would refuse, a list or mapping written for one service in two
//! files (but `labels` and `environment` mappings), a list-or-string field
//! written in two files, a null in an override file, a `Null`/`True`
//! spelling yaml-rust2 reads as text, a switch or `external` that is not a
//! YAML boolean, all fall back.

use super::args::{Files, Split};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

/// Why the project is left to `compose config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback(pub String);

fn fallback<T>(why: impl Into<String>) -> Result<T, Fallback> {
    Err(Fallback(why.into()))
}

/// The project as `compose config` would print it for what
/// `service::convert` reads, with relative bind sources left relative to
/// `base` (the project directory).
#[derive(Debug)]
pub struct Native {
    pub doc: Yaml,
    pub base: PathBuf,
}

/// The top-level keys of a compose file.
const TOP: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "secrets", "configs",
];

/// Service fields merged key by key across files (the names are all
/// unbaked reads of `environment`).
const MERGED: &[&str] = &["labels", "environment"];

/// Service switches `service::convert` reads as YAML booleans
/// (`as_bool`: a string such as `"true"` reads as unset).
const SWITCHES: &[&str] = &["privileged", "read_only", "init", "use_api_socket"];

/// Service fields compose takes as a list or one string: written as a
/// string in two files, compose merges the two into a list (a later file
/// does not replace the earlier one's), so they fall back.
const LISTS: &[&str] = &[
    "tmpfs",
    "dns",
    "dns_search",
    "dns_opt",
    "env_file",
    "label_file",
    "cap_add",
    "cap_drop",
    "security_opt",
    "device_cgroup_rules",
    "links",
    "external_links",
    "volumes_from",
    "devices",
    "volumes",
    "configs",
    "secrets",
    "post_start",
    "pre_stop",
    "networks",
    "ports",
    "expose",
    "extra_hosts",
    "group_add",
    "profiles",
    "depends_on",
    "sysctls",
    "ulimits",
];

/// Read the project, or say why not. `env` is the process environment.
pub fn read(
    split: &Split,
    files: &Files,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Native, Fallback> {
    if split
        .globals
        .iter()
        .any(|g| g == "--env-file" || g.starts_with("--env-file="))
    {
        return fallback("--env-file");
    }
    if env("COMPOSE_ENV_FILES").is_some() {
        return fallback("COMPOSE_ENV_FILES");
    }
    let cwd = std::env::current_dir().map_err(|e| Fallback(format!("working directory: {e}")))?;
    if split.project_directory.is_some() && files.paths.iter().any(|p| p.is_relative()) {
        return fallback("--project-directory with a relative compose file");
    }
    let first = files.paths.first().ok_or(Fallback("no file".into()))?;
    let base = std::path::absolute(match &split.project_directory {
        Some(d) => PathBuf::from(d),
        None => parent(first),
    })
    .map_err(|e| Fallback(format!("project directory: {e}")))?;
    let dotenv = dotenv(&env_dir(split, files, &base, &cwd)?)?;
    let vars = |k: &str| env(k).or_else(|| dotenv.get(k).cloned());
    let mut docs = Vec::new();
    for path in &files.paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Fallback(format!("{}: {e}", path.display())))?;
        let mut doc =
            load(&text).map_err(|Fallback(w)| Fallback(format!("{}: {w}", path.display())))?;
        interpolate_tree(&mut doc, &vars)?;
        // compose v2 merges a null of an override as "unset here" (the
        // earlier file's value stays), docker-compose 1.29 refuses some.
        if !docs.is_empty() && has_null(&doc) {
            return fallback(format!(
                "{}: a null value in an override file",
                path.display()
            ));
        }
        docs.push(doc);
    }
    let doc = merge(docs)?;
    normal_forms(&doc)?;
    Ok(Native { doc, base })
}

/// Whether a null (`null`, `~`, an empty value) is anywhere in the tree.
fn has_null(y: &Yaml) -> bool {
    match y {
        Yaml::Null => true,
        Yaml::Array(a) => a.iter().any(has_null),
        Yaml::Hash(h) => h.values().any(has_null),
        _ => false,
    }
}

/// A path's directory (`.` for a bare name).
fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The directory whose `.env` compose reads. docker-compose 1.29 reads
/// the working directory's unless `-f`/`COMPOSE_FILE` or
/// `--project-directory` name another; compose v2 the project
/// directory's. Where the two differ and either has a `.env`, fall back.
fn env_dir(split: &Split, files: &Files, base: &Path, cwd: &Path) -> Result<PathBuf, Fallback> {
    let v1 = match (&split.project_directory, files.explicit) {
        (Some(_), _) => base.to_path_buf(),
        (None, true) => base.to_path_buf(),
        (None, false) if std::env::var_os("COMPOSE_FILE").is_some() => base.to_path_buf(),
        (None, false) => cwd.to_path_buf(),
    };
    let same = std::fs::canonicalize(&v1).ok() == std::fs::canonicalize(base).ok();
    if !same && (v1.join(".env").exists() || base.join(".env").exists()) {
        return fallback("docker-compose 1.29 and compose v2 read different .env files here");
    }
    Ok(base.to_path_buf())
}

/// `DIR/.env` as `NAME=word` lines (comments and blank lines skipped).
/// Quotes, `$`, spaces, `export` and the rest of the dotenv dialects
/// differ between the CLIs: fall back.
fn dotenv(dir: &Path) -> Result<HashMap<String, String>, Fallback> {
    let path = dir.join(".env");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return fallback(format!("{}: {e}", path.display())),
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return fallback(".env: a line without =");
        };
        let word = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+,".contains(c);
        if !is_name(k) || !v.chars().all(word) {
            return fallback(".env: a line beyond NAME=word");
        }
        if k.starts_with("COMPOSE_") || k.starts_with("DOCKER_") {
            return fallback(format!(".env sets {k}"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// What the YAML events of a file show that the loaded tree does not.
#[derive(Default)]
struct Scan {
    /// The first construct compose reads otherwise, and its line.
    first: Option<(usize, &'static str)>,
    documents: usize,
}

impl MarkedEventReceiver for Scan {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let why = match &ev {
            Event::DocumentStart => {
                self.documents += 1;
                None
            }
            Event::Scalar(_, _, _, Some(_))
            | Event::SequenceStart(_, Some(_))
            | Event::MappingStart(_, Some(_)) => Some("a YAML tag"),
            // Never the value: a compose file's scalar may be a password,
            // and this reason is logged and shown.
            Event::Scalar(v, TScalarStyle::Plain, _, None) if yaml11_differs(v) => {
                Some("a plain scalar YAML 1.1 reads otherwise (a boolean word, a number in another base or in base 60)")
            }
            Event::Scalar(v, TScalarStyle::Plain, _, None) if core_schema_differs(v) => {
                Some("a plain Null, True or False spelling (in any case), text to yaml-rust2, not to compose")
            }
            _ => None,
        };
        if self.first.is_none() {
            self.first = why.map(|w| (mark.line(), w));
        }
    }
}

/// A plain scalar PyYAML (YAML 1.1, docker-compose 1.29) reads as
/// something else than YAML 1.2 does: a boolean word (`yes`, `on`...), a
/// sexagesimal number (`22:22` is 1342), an octal (`010`) or underscored
/// (`1_000`) one, a base prefix. Conservative: a near miss also counts.
fn yaml11_differs(v: &str) -> bool {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off"];
    let lower = v.to_ascii_lowercase();
    if WORDS.contains(&lower.as_str()) {
        return true;
    }
    let digits = lower.trim_start_matches(['-', '+']);
    if ["0x", "0o", "0b"].iter().any(|p| digits.starts_with(p)) {
        return true;
    }
    let numeric = digits.starts_with(|c: char| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || "_:.".contains(c));
    if !numeric {
        return false;
    }
    let mut parts = digits.split(':');
    let head = parts.next().unwrap_or_default();
    let sexagesimal = parts.clone().next().is_some()
        && parts.all(|p| {
            let p = p.split('.').next().unwrap_or_default();
            !p.is_empty() && p.len() <= 2 && p.parse::<u8>().is_ok_and(|n| n < 60)
        });
    sexagesimal
        || head.contains('_')
        || (head.len() > 1 && head.starts_with('0') && !head.contains('.'))
}

/// A plain scalar YAML 1.2's core schema (compose v2) and YAML 1.1
/// (docker-compose 1.29) read as a null or a boolean, and yaml-rust2 as
/// text: `network_mode: Null` is unset to compose.
fn core_schema_differs(v: &str) -> bool {
    ["Null", "NULL", "True", "TRUE", "False", "FALSE"].contains(&v)
}

/// The first scalar or tag of `text` that compose reads otherwise than
/// yaml-rust2 does (a YAML 1.1 word, `True`, a tag), with its line: for
/// `policy check --compose`, which reads the file with yaml-rust2.
pub(super) fn read_otherwise(text: &str) -> Option<(usize, String)> {
    let mut scan = Scan::default();
    Parser::new_from_str(text).load(&mut scan, true).ok()?;
    scan.first.map(|(line, w)| (line, w.to_string()))
}

/// One file's single document, with no construct compose resolves in a
/// way yaml-rust2 does not.
fn load(text: &str) -> Result<Yaml, Fallback> {
    let mut scan = Scan::default();
    if let Err(e) = Parser::new_from_str(text).load(&mut scan, true) {
        return fallback(format!("not YAML: {e}"));
    }
    if let Some((line, w)) = scan.first {
        return fallback(format!("line {line}: {w}"));
    }
    if scan.documents > 1 {
        return fallback("more than one YAML document");
    }
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| Fallback(e.to_string()))?;
    let doc = if docs.is_empty() {
        Yaml::Hash(Hash::new())
    } else {
        docs.swap_remove(0)
    };
    plain_tree(&doc)?;
    let Some(top) = doc.as_hash() else {
        return fallback("the file is not a mapping");
    };
    for k in top.keys() {
        let k = k.as_str().unwrap_or_default();
        if !TOP.contains(&k) && !k.starts_with("x-") {
            return fallback(format!("top-level {k:?}"));
        }
    }
    if !matches!(doc["services"], Yaml::Hash(_) | Yaml::BadValue) {
        return fallback("services: not a mapping");
    }
    for (name, svc) in doc["services"].as_hash().into_iter().flatten() {
        if name.as_str().is_none() {
            return fallback("a service name that is not text");
        }
        if !svc["extends"].is_badvalue() {
            return fallback("extends");
        }
    }
    Ok(doc)
}

/// No merge key (`<<`), unresolved alias or non-text key anywhere.
fn plain_tree(y: &Yaml) -> Result<(), Fallback> {
    match y {
        Yaml::BadValue | Yaml::Alias(_) => fallback("an alias yaml-rust2 does not resolve"),
        Yaml::Array(a) => a.iter().try_for_each(plain_tree),
        Yaml::Hash(h) => h.iter().try_for_each(|(k, v)| match k {
            Yaml::String(s) if s == "<<" => fallback("a YAML merge key (<<)"),
            Yaml::String(s) if s.contains('$') => fallback("a $ in a key"),
            Yaml::String(_) | Yaml::Integer(_) => plain_tree(v),
            _ => fallback("a key that is not text"),
        }),
        _ => Ok(()),
    }
}

/// Interpolate every text value (not keys, not `x-` extension fields,
/// as compose does).
fn interpolate_tree(doc: &mut Yaml, vars: &dyn Fn(&str) -> Option<String>) -> Result<(), Fallback> {
    fn walk(y: &mut Yaml, vars: &dyn Fn(&str) -> Option<String>) -> Result<(), Fallback> {
        match y {
            Yaml::String(s) if s.contains('$') => *s = interpolate(s, vars)?,
            Yaml::Array(a) => a.iter_mut().try_for_each(|i| walk(i, vars))?,
            Yaml::Hash(h) => h.values_mut().try_for_each(|v| walk(v, vars))?,
            _ => {}
        }
        Ok(())
    }
    let Yaml::Hash(top) = doc else { return Ok(()) };
    for (k, v) in top.iter_mut() {
        if k.as_str()
            .is_some_and(|k| k != "version" && !k.starts_with("x-"))
        {
            walk(v, vars)?;
        }
    }
    Ok(())
}

/// `$$`, `$VAR`, `${VAR}`, `${VAR-default}`, `${VAR:-default}`; an
/// unset variable is empty (compose warns). Anything else falls back.
pub fn interpolate(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, Fallback> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return fallback("an unclosed ${");
            };
            out.push_str(&braced(&body[..end], vars)?);
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if !is_name(&after[..len]) {
                return fallback("a $ compose reads as an invalid interpolation");
            }
            out.push_str(&vars(&after[..len]).unwrap_or_default());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The inside of `${...}`.
fn braced(body: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, Fallback> {
    let len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(len);
    if !is_name(name) || body.contains(['$', '{']) {
        return fallback(format!("the interpolation ${{{body}}}"));
    }
    let value = vars(name);
    Ok(match op {
        "" => value.unwrap_or_default(),
        _ if op.starts_with(":-") => value
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| op[2..].to_string()),
        _ if op.starts_with('-') => value.unwrap_or_else(|| op[1..].to_string()),
        // `?` (an error when unset) and `+` (not in docker-compose 1.29):
        // compose says what they do.
        _ => return fallback(format!("the interpolation ${{{body}}}")),
    })
}

/// The files merged as compose merges an override: a later file's value
/// replaces an earlier one's, `labels`/`environment` mappings merge by
/// key; any other field two files both write falls back.
fn merge(docs: Vec<Yaml>) -> Result<Yaml, Fallback> {
    let mut out = Hash::new();
    let mut services = Hash::new();
    for doc in docs {
        let Yaml::Hash(top) = doc else { continue };
        for (k, v) in top {
            let name = k.as_str().unwrap_or_default().to_string();
            match name.as_str() {
                "services" => merge_services(&mut services, v)?,
                _ if name.starts_with("x-") => {}
                "version" | "name" => match out.get(&k) {
                    Some(old) if *old != v => {
                        return fallback(format!("{name} differs between files"))
                    }
                    _ => {
                        out.insert(k, v);
                    }
                },
                _ => merge_resources(&mut out, k, v)?,
            }
        }
    }
    out.insert(Yaml::String("services".into()), Yaml::Hash(services));
    Ok(Yaml::Hash(out))
}

/// `networks`, `volumes`, `secrets`, `configs`: by name; the same name
/// declared twice only when alike.
fn merge_resources(out: &mut Hash, k: Yaml, v: Yaml) -> Result<(), Fallback> {
    let entry = out.entry(k).or_insert_with(|| Yaml::Hash(Hash::new()));
    let (Yaml::Hash(have), Yaml::Hash(new)) = (entry, v) else {
        return fallback("a top-level section is not a mapping");
    };
    for (name, decl) in new {
        match have.get(&name) {
            Some(old) if *old != decl => return fallback("a network or volume declared twice"),
            _ => {
                have.insert(name, decl);
            }
        }
    }
    Ok(())
}

fn merge_services(services: &mut Hash, v: Yaml) -> Result<(), Fallback> {
    let Yaml::Hash(new) = v else { return Ok(()) };
    for (name, svc) in new {
        let Yaml::Hash(fields) = svc else {
            return fallback("a service that is not a mapping");
        };
        let entry = services
            .entry(name)
            .or_insert_with(|| Yaml::Hash(Hash::new()));
        let Yaml::Hash(have) = entry else { continue };
        for (field, value) in fields {
            let f = field.as_str().unwrap_or_default();
            let old = have.get(&field);
            match (old, &value) {
                (None, _) => {}
                (Some(Yaml::Hash(o)), Yaml::Hash(n)) if MERGED.contains(&f) => {
                    let mut m = o.clone();
                    m.extend(n.clone());
                    have.insert(field, Yaml::Hash(m));
                    continue;
                }
                (Some(o), n) if is_scalar(o) && is_scalar(n) && !LISTS.contains(&f) => {}
                (Some(_), _) if matches!(f, "command" | "entrypoint") => {}
                _ => return fallback(format!("{f}: written for one service in two files")),
            }
            have.insert(field, value);
        }
    }
    Ok(())
}

fn is_scalar(y: &Yaml) -> bool {
    matches!(
        y,
        Yaml::String(_) | Yaml::Integer(_) | Yaml::Real(_) | Yaml::Boolean(_) | Yaml::Null
    )
}

/// The switches `service::convert` reads are YAML booleans (compose would
/// cast `"true"` or an interpolated value; unbaked would not see it), no
/// host path starts with `~`, no service reads a file of variables or
/// labels.
fn normal_forms(doc: &Yaml) -> Result<(), Fallback> {
    for (name, svc) in doc["services"].as_hash().into_iter().flatten() {
        let mut checks: Vec<&Yaml> = SWITCHES.iter().map(|s| &svc[*s]).collect();
        for list in ["volumes", "post_start", "pre_stop"] {
            for item in svc[list].as_vec().into_iter().flatten() {
                checks.push(&item["read_only"]);
                checks.push(&item["privileged"]);
            }
        }
        if checks
            .iter()
            .any(|v| !matches!(v, Yaml::Boolean(_) | Yaml::BadValue | Yaml::Null))
        {
            return fallback(format!(
                "service {name:?}: a switch that is not a YAML boolean"
            ));
        }
        // `~` is the user's home to compose; `env_file` adds environment
        // names compose reads (`label_file`: refused by the caller).
        let home = svc["volumes"].as_vec().into_iter().flatten().any(|v| {
            v.as_str()
                .or(v["source"].as_str())
                .is_some_and(|s| s.starts_with('~'))
        });
        if home {
            return fallback(format!("service {name:?}: a ~ path"));
        }
        if !svc["env_file"].is_badvalue() {
            return fallback(format!("service {name:?}: env_file"));
        }
    }
    // `service.rs` reads `external` with `as_bool` too.
    for kind in ["volumes", "networks"] {
        for (name, decl) in doc[kind].as_hash().into_iter().flatten() {
            if !matches!(
                decl["external"],
                Yaml::Boolean(_) | Yaml::BadValue | Yaml::Null | Yaml::Hash(_)
            ) {
                return fallback(format!("{kind} {name:?}: external is not a YAML boolean"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
