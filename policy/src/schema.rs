//! The JSON Schema of a policy file, generated from the raw serde types in
//! `parse` (so it cannot drift from what the parser accepts) and checked in
//! as `policies/policy.schema.json` for editors (taplo / Even Better TOML:
//! `#:schema ./policy.schema.json`). A test regenerates it.
//!
//! The schema says which keys exist and their types, and every value rule
//! of the parser that JSON Schema can say without lookahead (taplo's regex
//! engine has none): the required keys, name patterns, uid/gid range, one
//! source and one delivery per grant, file-only keys, ttl bounds for a
//! single `NUMBER UNIT`. What it cannot say stays the parser's alone, which
//! reports it with a location and a hint: `.`/`..` path segments, a
//! duplicate workload or target across grants or files, the bounds of a
//! compound ttl (`1h 30m`), capability spelling. tests/schema_sarif.rs runs
//! invalid policies through both and holds them to agreeing.

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// What the editor shows for each key, by dotted path (`grant.ttl`: a key
/// of every `[[grant]]`). Every path must exist in the schema.
const DESCRIPTIONS: &[(&str, &str)] = &[
    ("", "One workload's policy: who it is, who may start it, how it must be isolated, and which secrets it receives. One workload per file."),
    ("workload", "The workload's name: 1 to 63 lowercase letters, digits, `_`, `.` or `-`, starting with a letter or digit."),
    ("match", "Who may claim this workload: every selector listed must hold for the caller."),
    ("match.uids", "Host processes (or containers) running as one of these uids, by peer credentials on the broker socket."),
    ("match.gids", "Callers running with one of these gids, by peer credentials."),
    ("match.docker_labels", "Containers carrying every one of these labels. Never matches a process outside a container."),
    ("match.image", "Pin the container's image id: `sha256:` and 64 lowercase hex digits."),
    ("match.k8s_service_accounts", "Pods, by the service account (`namespace/name`) their projected token proves."),
    ("match.k8s_namespaces", "Pods, by the namespace their projected token proves."),
    ("launch", "Who may start this workload with `unbaked run` (peer credentials). Without it nobody may."),
    ("launch.uids", "Uids that may start the workload."),
    ("launch.gids", "Gids that may start the workload."),
    ("isolation", "Checked on the live container before anything is released. Absent keys take the safe defaults."),
    ("isolation.inter_container_traffic", "Allow traffic between containers on the workload's network (default false)."),
    ("isolation.privileged", "Allow a privileged container (default false)."),
    ("isolation.host_network", "Allow the host's network namespace (default false)."),
    ("isolation.host_pid", "Allow the host's PID namespace (default false)."),
    ("isolation.host_ipc", "Allow the host's IPC namespace (default false)."),
    ("isolation.docker_socket", "Allow the Docker socket mounted into the container (default false)."),
    ("isolation.read_only_rootfs", "Require a read-only root filesystem (default true)."),
    ("isolation.user_namespace", "Require a user namespace of its own: root in the container is not the host's root (the engine runs with userns-remap or rootless; default false)."),
    ("isolation.cap_add", "Capabilities the container may add, without `CAP_`, e.g. `NET_BIND_SERVICE`."),
    ("grant", "One secret (or issued credential) delivered to the workload: exactly one source and exactly one of `file`, `env`, `fd`."),
    ("grant.secret", "Path of a stored secret, e.g. `app/db` (memory store, or Vault KV v2 under the configured mount)."),
    ("grant.key", "The key inside the stored secret, e.g. `password`."),
    ("grant.pki", "A fresh Vault PKI certificate per lease: `MOUNT/issue/ROLE`."),
    ("grant.dynamic", "A Vault-leased credential per lease, e.g. `database/creds/ROLE`."),
    ("grant.field", "The field of an issued credential to deliver; a `file` grant without it is a directory of every field."),
    ("grant.common_name", "The certificate's common name (pki grants)."),
    ("grant.alt_names", "DNS subject alternative names of the certificate (pki grants)."),
    ("grant.ip_sans", "IP subject alternative names of the certificate (pki grants)."),
    ("grant.file", "A file relative to the secrets directory (tmpfs), mode 0400 unless `mode` says otherwise."),
    ("grant.env", "An environment variable of the workload's process (readable in /proc/PID/environ: prefer `fd`)."),
    ("grant.fd", "A variable holding the path of a sealed memfd, `/proc/self/fd/N` (the `_FILE` convention)."),
    ("grant.ttl", "How long a delivered copy lives unless renewed, \"1s\" to \"24h\" (default \"10m\")."),
    ("grant.mode", "File mode, in octal: `0o440` or \"0440\" (file grants only; default 0o400)."),
    ("grant.uid", "File owner (file grants only)."),
    ("grant.gid", "File group (file grants only)."),
    ("grant.on_change", "What the sidecar, the exec shim or (for a file grant of an unbaked run container) the broker through the engine does when the delivered content changes: \"none\" (default), \"signal\", \"command\" or \"restart\". A directory grant's files are one change."),
    ("grant.signal", "The signal for on_change = \"signal\", e.g. \"SIGHUP\"."),
    ("grant.command", "The command (argv, no shell) for on_change = \"command\"."),
    ("grant.signal_container", "For on_change = \"signal\" of a file: the app container (name or id) to signal instead, through the broker; it must be labelled io.unbaked.workload with this workload."),
    ("grant.debounce", "Changes closer together than this are coalesced into one action (default \"2s\", at most \"60s\")."),
    ("template", "One file or variable rendered from several secrets: `.env`, JSON, YAML, or a consul-template / Vault Agent text template. Every secret it reads is named here, so the workload is granted exactly those."),
    ("template.file", "A file relative to the secrets directory (tmpfs)."),
    ("template.env", "An environment variable (`format = \"env\"` or `text` only)."),
    ("template.fd", "A variable holding the path of a sealed memfd."),
    ("template.format", "\"env\", \"json\", \"yaml\" (with `values`) or \"text\" (with `contents`; the default)."),
    ("template.contents", "The text template, in consul-template / Vault Agent syntax: `{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password }}{{ end }}`."),
    ("template.values", "Name to `PATH#KEY`, e.g. `DB_PASSWORD = \"app/db#password\"`, for env, json and yaml."),
    ("template.ttl", "How long a delivered copy lives unless renewed (default \"10m\")."),
    ("template.mode", "File mode, in octal (file templates only; default 0o400)."),
    ("template.uid", "File owner (file templates only)."),
    ("template.gid", "File group (file templates only)."),
    ("template.on_change", "What the sidecar, the exec shim or (for a file template of an unbaked run container) the broker through the engine does when the rendered content changes: \"none\" (default), \"signal\", \"command\" or \"restart\"."),
    ("template.signal", "The signal for on_change = \"signal\", e.g. \"SIGHUP\"."),
    ("template.command", "The command (argv, no shell) for on_change = \"command\"."),
    ("template.signal_container", "For on_change = \"signal\" of a file: the app container (name or id) to signal instead, through the broker; it must be labelled io.unbaked.workload with this workload."),
    ("template.debounce", "Changes closer together than this are coalesced into one action (default \"2s\", at most \"60s\")."),
];

/// `mode = 0o440` or `mode = "0440"`: TOML integers are written in octal,
/// which JSON cannot show, so the schema only bounds the value.
pub(crate) struct Mode;

impl JsonSchema for Mode {
    fn schema_name() -> Cow<'static, str> {
        "Mode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0o400, "maximum": 0o777 },
                { "type": "string", "pattern": "^(0o)?0?[4-7][0-7]{2}$" }
            ]
        })
    }
}

/// The schema, ready to be written as pretty JSON.
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator
        .into_root_schema_for::<crate::parse::RawPolicy>()
        .to_value();
    no_null(&mut schema);
    for (path, text) in DESCRIPTIONS {
        let node = locate(&mut schema, path)
            .unwrap_or_else(|| panic!("schema has no {path:?}: update DESCRIPTIONS"));
        node.insert("description".into(), Value::from(*text));
    }
    let root = schema
        .as_object_mut()
        .expect("the root schema is an object");
    root.insert("title".into(), "unbaked policy".into());
    // Where the file itself is served as JSON (a blob URL serves HTML).
    root.insert(
        "$id".into(),
        "https://raw.githubusercontent.com/unbaked/unbaked/main/policies/policy.schema.json".into(),
    );
    value_rules(&mut schema);
    schema
}

/// The largest uid or gid (`u32`): 4294967296 is refused by the parser.
const MAX_ID: u32 = u32::MAX;

/// Adds `rules` to the node at the dotted `path` of the generated schema.
fn set(schema: &mut Value, path: &str, rules: Value) {
    let node = locate(schema, path)
        .unwrap_or_else(|| panic!("schema has no {path:?}: update value_rules"));
    if let Value::Object(rules) = rules {
        node.extend(rules);
    }
}

/// The parser's value rules, as JSON Schema (see the module comment).
fn value_rules(schema: &mut Value) {
    set(schema, "", json!({ "required": ["workload", "match"] }));
    set(
        schema,
        "workload",
        json!({ "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$" }),
    );
    set(schema, "match", json!({ "minProperties": 1 }));
    for ids in ["match.uids", "match.gids", "launch.uids", "launch.gids"] {
        let items = json!({ "type": "integer", "minimum": 0, "maximum": MAX_ID });
        set(schema, ids, json!({ "items": items }));
    }
    for list in [
        "match.uids",
        "match.gids",
        "match.k8s_service_accounts",
        "match.k8s_namespaces",
    ] {
        set(schema, list, json!({ "minItems": 1 }));
    }
    set(
        schema,
        "match.docker_labels",
        json!({ "minProperties": 1, "propertyNames": { "minLength": 1 } }),
    );
    set(
        schema,
        "match.image",
        json!({ "pattern": "^sha256:[0-9a-f]{64}$" }),
    );
    const DNS_LABEL: &str = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?";
    set(
        schema,
        "match.k8s_namespaces",
        json!({ "items": { "type": "string", "pattern": format!("^{DNS_LABEL}$") } }),
    );
    set(
        schema,
        "match.k8s_service_accounts",
        json!({ "items": { "type": "string", "pattern": format!("^{DNS_LABEL}/{DNS_LABEL}(\\.{DNS_LABEL})*$") } }),
    );
    set(
        schema,
        "isolation.cap_add",
        json!({ "items": { "type": "string", "enum": crate::validate::CAPABILITIES } }),
    );
    grant_rules(schema);
}

/// `[[grant]]`: each field's values, then which fields go together.
fn grant_rules(schema: &mut Value) {
    const SEGMENT: &str = "[A-Za-z0-9_.-]+";
    set(
        schema,
        "grant.secret",
        json!({ "pattern": format!("^{SEGMENT}(/{SEGMENT})*$") }),
    );
    set(
        schema,
        "grant.dynamic",
        json!({ "pattern": format!("^{SEGMENT}(/{SEGMENT})+$") }),
    );
    set(
        schema,
        "grant.pki",
        json!({ "pattern": format!("^{SEGMENT}(/{SEGMENT})*/issue/{SEGMENT}$") }),
    );
    set(schema, "grant.key", json!({ "minLength": 1 }));
    for var in ["grant.env", "grant.fd"] {
        set(
            schema,
            var,
            json!({
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                // What the loader or the shell acts on (dangerous-variable).
                "not": { "anyOf": [{ "pattern": "^LD_" }, { "enum": ["PATH", "HOME", "BASH_ENV"] }] },
            }),
        );
    }
    for id in ["grant.uid", "grant.gid"] {
        set(schema, id, json!({ "maximum": MAX_ID }));
    }
    set(schema, "grant.ttl", json!({ "pattern": TTL_PATTERN }));
    let any = |keys: &[&str]| -> Value {
        Value::Array(keys.iter().map(|k| json!({ "required": [k] })).collect())
    };
    let file_only = any(&["mode", "uid", "gid"]);
    let grant = locate(schema, "grant")
        .and_then(|g| g.get_mut("items"))
        .and_then(Value::as_object_mut)
        .expect("grant is an array of tables");
    grant.insert(
        "allOf".into(),
        json!([
            // Exactly one delivery; owner and mode for files only.
            { "oneOf": [
                { "required": ["file"] },
                { "required": ["env"], "not": { "anyOf": file_only.clone() } },
                { "required": ["fd"], "not": { "anyOf": file_only } },
            ] },
            // Exactly one source, with its own keys and no other kind's.
            { "oneOf": [
                { "required": ["secret", "key"],
                  "not": { "anyOf": any(&["pki", "dynamic", "field", "common_name", "alt_names", "ip_sans"]) } },
                { "required": ["pki", "common_name"],
                  "not": { "anyOf": any(&["secret", "dynamic", "key"]) } },
                { "required": ["dynamic"],
                  "not": { "anyOf": any(&["secret", "pki", "key", "common_name", "alt_names", "ip_sans"]) } },
            ] },
            // An issued credential in one variable names its field.
            { "if": { "anyOf": any(&["pki", "dynamic"]), "not": { "required": ["file"] } },
              "then": { "required": ["field"] } },
        ]),
    );
}

/// A ttl of one `NUMBER UNIT` between 1s and 24h (seconds up to 86400,
/// minutes up to 1440, hours up to 24, or 1d), or a compound duration
/// (`1h 30m`), whose bounds only the parser checks.
const TTL_PATTERN: &str = concat!(
    "^(",
    "([1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}|86400) ?(s|secs?|seconds?)",
    "|([1-9][0-9]{0,2}|1[0-3][0-9]{2}|14[0-3][0-9]|1440) ?(m|mins?|minutes?)",
    "|([1-9]|1[0-9]|2[0-4]) ?(h|hrs?|hours?)",
    "|1 ?(d|days?)",
    "|([0-9]+ ?[a-zA-Z]+ ?){2,}",
    ")$"
);

/// TOML has no null: an absent key is how a policy leaves a field out.
fn no_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(alts)) = map.get_mut("anyOf") {
                alts.retain(|a| a.get("type").is_none_or(|t| t != "null"));
                if alts.len() == 1 {
                    if let Some(Value::Object(only)) = alts.pop() {
                        map.remove("anyOf");
                        map.extend(only);
                    }
                }
            }
            map.values_mut().for_each(no_null);
        }
        Value::Array(items) => items.iter_mut().for_each(no_null),
        _ => {}
    }
}

/// The schema object of a dotted key path; array items are looked through.
fn locate<'v>(schema: &'v mut Value, path: &str) -> Option<&'v mut Map<String, Value>> {
    let mut node = schema;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        if node.get("items").is_some() {
            node = node.get_mut("items")?;
        }
        node = node.get_mut("properties")?.get_mut(key)?;
    }
    node.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_types_and_no_nulls() {
        let s = json_schema();
        let text = s.to_string();
        assert!(!text.contains("null"), "{text}");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], json!(["workload", "match"]));
        let grant = &s["properties"]["grant"]["items"];
        assert_eq!(grant["additionalProperties"], false);
        assert_eq!(grant["properties"]["uid"]["type"], "integer");
        assert_eq!(
            s["properties"]["match"]["properties"]["uids"]["type"],
            "array"
        );
        assert!(grant["properties"]["mode"]["anyOf"].is_array());
        assert!(
            s["properties"]["isolation"]["properties"]["privileged"]["description"]
                .as_str()
                .is_some()
        );
    }
}
