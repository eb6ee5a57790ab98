//! `[[template]]` tables: one file or variable rendered from several
//! secrets, with what to do when its content changes.
//!
//! ```toml
//! [[template]]
//! file = "app.env"                  # or env / fd, like a grant
//! format = "env"                    # env | json | yaml | text
//! values = { DB_PASSWORD = "app/db#password", API_TOKEN = "app/api#token" }
//! on_change = "signal"              # none | signal | command | restart
//! signal = "SIGHUP"
//! debounce = "2s"
//!
//! [[template]]
//! file = "db.conf"                  # format = "text": consul-template syntax
//! contents = '''
//! {{ with secret "secret/data/app/db" }}password={{ .Data.data.password }}{{ end }}
//! '''
//! ```

use super::action::RawAction;
use super::{Checker, RawMode};
use crate::diagnostic::rule;
use crate::model::{
    Format, GrantDelivery, Template, TemplateBody, TemplateValue, TextTemplate, DEFAULT_MODE,
    DEFAULT_TTL,
};
use crate::validate::{self, Problem};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use toml::Spanned;

/// Largest template text: a policy file is at most 256 KiB anyway.
const MAX_CONTENTS: usize = 64 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawTemplate {
    #[schemars(with = "Option<String>")]
    file: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    env: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    fd: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    format: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    contents: Option<Spanned<String>>,
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    values: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    #[schemars(with = "Option<String>")]
    ttl: Option<Spanned<String>>,
    #[schemars(with = "Option<crate::schema::Mode>")]
    mode: Option<Spanned<RawMode>>,
    #[schemars(with = "Option<u32>")]
    uid: Option<Spanned<u32>>,
    #[schemars(with = "Option<u32>")]
    gid: Option<Spanned<u32>>,
    #[schemars(with = "Option<String>")]
    on_change: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    signal: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    command: Option<Spanned<Vec<String>>>,
    #[schemars(with = "Option<String>")]
    signal_container: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    debounce: Option<Spanned<String>>,
}

impl RawTemplate {
    fn action(&self, i: usize) -> RawAction<'_> {
        RawAction {
            table: format!("template[{i}]"),
            on_change: self.on_change.as_ref(),
            signal: self.signal.as_ref(),
            command: self.command.as_ref(),
            signal_container: self.signal_container.as_ref(),
            debounce: self.debounce.as_ref(),
        }
    }
}

fn problem(rule: &'static str, message: String, hint: &str) -> Problem {
    Problem {
        rule,
        message,
        hint: Some(hint.to_owned()),
    }
}

/// `PATH#KEY` of a `values` entry.
fn value_source(text: &str) -> Result<(String, String), Problem> {
    let Some((path, key)) = text.split_once('#') else {
        return Err(problem(
            rule::TEMPLATE_SOURCE,
            format!("{text:?} does not name a key"),
            "write the store path and the key as \"PATH#KEY\", e.g. \"app/db#password\"",
        ));
    };
    validate::secret_path(path).map_err(|p| Problem {
        rule: rule::TEMPLATE_SOURCE,
        ..p
    })?;
    validate::secret_key(key).map_err(|p| Problem {
        rule: rule::TEMPLATE_SOURCE,
        ..p
    })?;
    Ok((path.to_string(), key.to_string()))
}

/// Where the template's text starts inside its TOML string: after the
/// opening quotes and the newline TOML drops after triple quotes. Exact for
/// literal strings ('''...'''), close for basic strings with escapes.
fn contents_start(text: &str, span_start: usize) -> usize {
    let lit = text.get(span_start..).unwrap_or("");
    let delim = if lit.starts_with("'''") || lit.starts_with("\"\"\"") {
        3
    } else {
        1
    };
    let after = &lit[delim.min(lit.len())..];
    let newline = if delim == 3 {
        if after.starts_with("\r\n") {
            2
        } else {
            usize::from(after.starts_with('\n'))
        }
    } else {
        0
    };
    span_start + delim + newline
}

impl Checker<'_> {
    pub(super) fn templates(
        &mut self,
        raw: &[Spanned<RawTemplate>],
        grant_targets: &[Option<GrantDelivery>],
    ) -> Vec<Template> {
        let mut taken: Vec<(String, GrantDelivery)> = grant_targets
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.clone().map(|d| (format!("grant[{i}]"), d)))
            .collect();
        let mut out = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            let before = self.diags.len();
            let (template, delivery) = self.template(i, t);
            if let Some(d) = delivery {
                self.template_target(i, t, &d, &taken);
                taken.push((format!("template[{i}]"), d));
            }
            if let (Some(t), true) = (template, self.diags.len() == before) {
                out.push(t);
            }
        }
        out
    }

    /// A template's file or variable must not be another's.
    fn template_target(
        &mut self,
        i: usize,
        raw: &Spanned<RawTemplate>,
        d: &GrantDelivery,
        taken: &[(String, GrantDelivery)],
    ) {
        let t = raw.get_ref();
        let at = [&t.file, &t.env, &t.fd]
            .into_iter()
            .flatten()
            .next()
            .map_or(raw.span().start, |s| s.span().start);
        for (who, other) in taken {
            let clash = match (other, d) {
                (GrantDelivery::File(a), GrantDelivery::File(b)) => {
                    a == b || super::under(a, b) || super::under(b, a)
                }
                (
                    GrantDelivery::Env(a) | GrantDelivery::Fd(a),
                    GrantDelivery::Env(b) | GrantDelivery::Fd(b),
                ) => a == b,
                _ => false,
            };
            if clash {
                let message = format!(
                    "{} {:?} is already delivered by {who}",
                    d.kind(),
                    d.target()
                );
                self.error(
                    at,
                    format!("template[{i}].{}", d.kind()),
                    rule::DUPLICATE_TARGET,
                    &message,
                    "give each grant and template its own target",
                );
                return;
            }
        }
    }

    fn template(
        &mut self,
        i: usize,
        raw: &Spanned<RawTemplate>,
    ) -> (Option<Template>, Option<GrantDelivery>) {
        let field = |name: &str| format!("template[{i}].{name}");
        let t = raw.get_ref();
        let delivery = self.template_delivery(i, raw);
        let format = self.template_format(i, raw);
        if let (Some(Some(Format::Json | Format::Yaml)), Some(GrantDelivery::Env(_))) =
            (&format, &delivery)
        {
            self.error(
                raw.span().start,
                field("env"),
                rule::TEMPLATE_FORMAT,
                "a JSON or YAML document in an environment variable is hard to read back safely",
                "deliver it as a file or an fd",
            );
        }
        let body = format.and_then(|format| self.template_body(i, raw, format));
        let ttl = match &t.ttl {
            Some(v) => self.check(v, &field("ttl"), validate::ttl),
            None => Some(DEFAULT_TTL),
        };
        let mode = match &t.mode {
            None => Some(DEFAULT_MODE),
            Some(m) => self.mode(m, field("mode")),
        };
        if !matches!(delivery, Some(GrantDelivery::File(_)) | None) {
            self.file_only(i, t);
        }
        let action = self.change_action(&t.action(i), delivery.as_ref());
        let template = match (delivery.clone(), body, ttl, mode, action) {
            (Some(delivery), Some(body), Some(ttl), Some(mode), Some((on_change, debounce))) => {
                Some(Template {
                    delivery,
                    body,
                    ttl,
                    mode,
                    uid: t.uid.as_ref().map(|u| *u.get_ref()),
                    gid: t.gid.as_ref().map(|g| *g.get_ref()),
                    on_change,
                    debounce,
                })
            }
            _ => None,
        };
        (template, delivery)
    }

    /// Where it goes: exactly one of file, env, fd.
    fn template_delivery(&mut self, i: usize, raw: &Spanned<RawTemplate>) -> Option<GrantDelivery> {
        let t = raw.get_ref();
        let targets: Vec<(&str, &Spanned<String>)> =
            [("file", &t.file), ("env", &t.env), ("fd", &t.fd)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
        match targets.as_slice() {
            [(kind, target)] => self.delivery(kind, target, &format!("template[{i}].{kind}")),
            _ => {
                self.error(
                    raw.span().start,
                    format!("template[{i}]"),
                    rule::GRANT_DELIVERY,
                    "a template needs exactly one of `file`, `env`, `fd`",
                    "add file = \"NAME\" to render into a file (or env / fd for a variable)",
                );
                None
            }
        }
    }

    /// `None`: an error (reported); `Some(None)`: a text template;
    /// `Some(Some(f))`: `values` rendered as `f`.
    fn template_format(&mut self, i: usize, raw: &Spanned<RawTemplate>) -> Option<Option<Format>> {
        let t = raw.get_ref();
        let field = format!("template[{i}].format");
        match &t.format {
            None if t.values.is_some() && t.contents.is_none() => {
                self.error(
                    raw.span().start,
                    field,
                    rule::TEMPLATE_FORMAT,
                    "a template with `values` needs a `format`",
                    "add format = \"env\", \"json\" or \"yaml\"",
                );
                None
            }
            None => Some(None),
            Some(f) => match f.get_ref().as_str() {
                "text" => Some(None),
                "env" => Some(Some(Format::Env)),
                "json" => Some(Some(Format::Json)),
                "yaml" => Some(Some(Format::Yaml)),
                other => {
                    let message = format!("unknown template format {other:?}");
                    self.error(
                        f.span().start,
                        field,
                        rule::TEMPLATE_FORMAT,
                        &message,
                        "use \"env\", \"json\", \"yaml\", or \"text\" with `contents`",
                    );
                    None
                }
            },
        }
    }

    /// What it renders: `contents` (text) or `values` (a format), never both.
    fn template_body(
        &mut self,
        i: usize,
        raw: &Spanned<RawTemplate>,
        format: Option<Format>,
    ) -> Option<TemplateBody> {
        let at = raw.span().start;
        let field = |name: &str| format!("template[{i}].{name}");
        let t = raw.get_ref();
        let (span, name, message, hint) = match (format, &t.contents, &t.values) {
            (None, Some(c), None) => return self.text(i, c),
            (Some(f), None, Some(v)) => return self.values(i, f, v),
            (None, None, _) => (
                at,
                "contents",
                "a text template needs `contents`",
                "write the template in contents = '''...''' (consul-template syntax), or use format = \"env\" with `values`",
            ),
            (_, Some(_), Some(v)) => (
                v.span().start,
                "values",
                "a template has `contents` or `values`, not both",
                "keep `contents` with format = \"text\", or `values` with env, json or yaml",
            ),
            (Some(_), Some(c), None) => (
                c.span().start,
                "contents",
                "`contents` is a text template, but the format is not \"text\"",
                "drop `format`, or list the values in `values`",
            ),
            (Some(_), None, None) => (
                at,
                "values",
                "the template has no `values`",
                "list what it renders, e.g. values = { DB_PASSWORD = \"app/db#password\" }",
            ),
        };
        self.error(span, field(name), rule::TEMPLATE_SYNTAX, message, hint);
        None
    }

    /// Owner and mode mean nothing for a variable.
    fn file_only(&mut self, i: usize, t: &RawTemplate) {
        for (name, span) in [
            ("mode", t.mode.as_ref().map(Spanned::span)),
            ("uid", t.uid.as_ref().map(Spanned::span)),
            ("gid", t.gid.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                self.error(
                    span.start,
                    format!("template[{i}].{name}"),
                    rule::FILE_ONLY,
                    &format!("`{name}` applies to file templates only"),
                    &format!("remove `{name}`: a variable has no owner or mode"),
                );
            }
        }
    }

    fn text(&mut self, i: usize, contents: &Spanned<String>) -> Option<TemplateBody> {
        let field = format!("template[{i}].contents");
        let text = contents.get_ref();
        if text.len() > MAX_CONTENTS {
            self.error(
                contents.span().start,
                field,
                rule::TEMPLATE_SYNTAX,
                &format!("the template is {} bytes, over {MAX_CONTENTS}", text.len()),
                "split it into several templates",
            );
            return None;
        }
        match unbaked_template::Template::parse(text) {
            Ok(parsed) => {
                let mut ok = true;
                for r in parsed.references() {
                    if let unbaked_template::ReferenceKind::Kv { path, .. } = &r.kind {
                        if let Err(p) = validate::secret_path(path) {
                            ok = false;
                            let p = Problem {
                                rule: rule::TEMPLATE_SOURCE,
                                ..p
                            };
                            self.report(contents.span().start, field.clone(), p);
                        }
                    }
                }
                ok.then(|| {
                    TemplateBody::Text(TextTemplate {
                        contents: text.clone(),
                        parsed: Arc::new(parsed),
                    })
                })
            }
            Err(e) => {
                let start = contents_start(self.src.text, contents.span().start);
                let offset = (start + e.offset).min(contents.span().end.saturating_sub(1));
                let source = e.message.contains("string literals only")
                    || e.message.contains("path")
                    || e.message.contains("parameter")
                    || e.message.contains("common_name");
                let rule = if source {
                    rule::TEMPLATE_SOURCE
                } else {
                    rule::TEMPLATE_SYNTAX
                };
                self.report(
                    offset,
                    field,
                    Problem {
                        rule,
                        message: format!("template: {}", e.message),
                        hint: Some("unbaked reads the consul-template subset documented in README.md (Templates): fix the template text".into()),
                    },
                );
                None
            }
        }
    }

    fn values(
        &mut self,
        i: usize,
        format: Format,
        raw: &Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    ) -> Option<TemplateBody> {
        if raw.get_ref().is_empty() {
            self.error(
                raw.span().start,
                format!("template[{i}].values"),
                rule::TEMPLATE_SYNTAX,
                "`values` is empty",
                "list what the template renders, e.g. values = { DB_PASSWORD = \"app/db#password\" }",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (name, source) in raw.get_ref() {
            let field = format!("template[{i}].values.{}", name.get_ref());
            let name_ok = match format {
                Format::Env => self
                    .check(name, &field, |n| validate::variable_name(n, "env"))
                    .is_some(),
                _ => {
                    let n = name.get_ref();
                    if n.is_empty() || n.chars().any(char::is_control) {
                        self.error(
                            name.span().start,
                            field.clone(),
                            rule::TEMPLATE_SOURCE,
                            "a value name is empty or holds a control character",
                            "use a printable name",
                        );
                        false
                    } else {
                        true
                    }
                }
            };
            let src = self.check(source, &field, value_source);
            match (name_ok, src) {
                (true, Some((secret, key))) => out.push(TemplateValue {
                    name: name.get_ref().clone(),
                    secret,
                    key,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(TemplateBody::Values {
            format,
            values: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{from_sources, rule, Format, TemplateBody, TemplateSource};
    use std::path::PathBuf;
    use unbaked_api::wire::OnChange;

    const HEAD: &str = "workload = \"w\"\n[match]\nuids = [1]\n";

    fn load(body: &str) -> Result<crate::Policy, Vec<(usize, String, &'static str, String)>> {
        let text = format!("{HEAD}{body}");
        from_sources(&[(PathBuf::from("p/w.toml"), text)])
            .map(|s| s.get("w").cloned().expect("w"))
            .map_err(|d| {
                d.0.into_iter()
                    .map(|d| (d.line, d.field, d.rule, d.message))
                    .collect()
            })
    }

    #[test]
    fn env_template_with_values_and_a_signal() {
        let p = load(
            "[[template]]\nfile = \"app.env\"\nformat = \"env\"\nvalues = { DB_PASSWORD = \"app/db#password\", API = \"app/api#token\" }\non_change = \"signal\"\nsignal = \"hup\"\n",
        )
        .unwrap();
        let t = &p.templates[0];
        assert_eq!(t.id(), "file:app.env");
        assert!(
            matches!(&t.body, TemplateBody::Values { format: Format::Env, values } if values.len() == 2 && values[0].name == "API")
        );
        assert_eq!(
            t.on_change,
            Some(OnChange::Signal {
                signal: "SIGHUP".into(),
                container: None,
            })
        );
        assert_eq!(t.debounce, crate::DEFAULT_DEBOUNCE);
        assert_eq!(
            t.sources(),
            [
                TemplateSource::Kv {
                    secret: "app/api".into(),
                    key: "token".into()
                },
                TemplateSource::Kv {
                    secret: "app/db".into(),
                    key: "password".into()
                },
            ]
        );
    }

    #[test]
    fn text_template_sources_and_pki() {
        let p = load(
            "[[template]]\nfile = \"tls.pem\"\ncontents = '''\n{{ with pkiCert \"pki/issue/web\" \"common_name=web.internal\" }}{{ .Data.Cert }}{{ end }}\n{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password }}{{ end }}\n'''\non_change = \"command\"\ncommand = [\"nginx\", \"-s\", \"reload\"]\ndebounce = \"500ms\"\n",
        )
        .unwrap();
        let t = &p.templates[0];
        let s: Vec<String> = t.sources().iter().map(TemplateSource::describe).collect();
        assert_eq!(s, ["app/db", "pki/issue/web (common_name web.internal)"]);
        assert_eq!(t.action().unwrap().debounce_ms, 500);
    }

    #[test]
    fn a_syntax_error_is_located_in_the_policy_file() {
        // Line 4 opens the template; its second line holds the bad function.
        let e =
            load("[[template]]\nfile = \"x\"\ncontents = '''\nok\n{{ nope }}\n'''\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        let (line, field, r, message) = &e[0];
        assert_eq!(
            (*line, field.as_str(), *r),
            (8, "template[0].contents", rule::TEMPLATE_SYNTAX)
        );
        assert!(
            message.contains("function \"nope\" is not supported"),
            "{message}"
        );
    }

    #[test]
    fn every_problem_has_its_rule() {
        let cases: &[(&str, &str)] = &[
            (
                "file = \"x\"\ncontents = '{{ secret .P }}'\n",
                rule::TEMPLATE_SOURCE,
            ),
            (
                "file = \"x\"\ncontents = '{{ secret \"kv/app\" }}'\n",
                rule::TEMPLATE_SOURCE,
            ),
            (
                "file = \"x\"\ncontents = '{{ secret \"secret/data/../x\" }}'\n",
                rule::TEMPLATE_SOURCE,
            ),
            (
                "file = \"x\"\nformat = \"env\"\nvalues = { A = \"app/db\" }\n",
                rule::TEMPLATE_SOURCE,
            ),
            (
                "file = \"x\"\nformat = \"env\"\nvalues = { LD_PRELOAD = \"app/db#k\" }\n",
                rule::DANGEROUS_VARIABLE,
            ),
            (
                "file = \"x\"\nformat = \"toml\"\nvalues = { A = \"app/db#k\" }\n",
                rule::TEMPLATE_FORMAT,
            ),
            (
                "file = \"x\"\nvalues = { A = \"app/db#k\" }\n",
                rule::TEMPLATE_FORMAT,
            ),
            (
                "env = \"X\"\nformat = \"json\"\nvalues = { A = \"app/db#k\" }\n",
                rule::TEMPLATE_FORMAT,
            ),
            ("file = \"x\"\n", rule::TEMPLATE_SYNTAX),
            (
                "file = \"x\"\nformat = \"env\"\nvalues = {}\n",
                rule::TEMPLATE_SYNTAX,
            ),
            (
                "file = \"x\"\ncontents = 'a'\nvalues = { A = \"app/db#k\" }\n",
                rule::TEMPLATE_SYNTAX,
            ),
            ("contents = 'a'\n", rule::GRANT_DELIVERY),
            ("file = \"../x\"\ncontents = 'a'\n", rule::FILE_ESCAPES),
            (
                "env = \"X\"\ncontents = 'a'\nmode = 0o400\n",
                rule::FILE_ONLY,
            ),
            (
                "file = \"x\"\ncontents = 'a'\non_change = \"signal\"\n",
                rule::BAD_ON_CHANGE,
            ),
            (
                "file = \"x\"\ncontents = 'a'\non_change = \"signal\"\nsignal = \"KILL\"\n",
                rule::BAD_ON_CHANGE,
            ),
            (
                "file = \"x\"\ncontents = 'a'\non_change = \"command\"\ncommand = []\n",
                rule::BAD_ON_CHANGE,
            ),
            (
                "file = \"x\"\ncontents = 'a'\non_change = \"reboot\"\n",
                rule::BAD_ON_CHANGE,
            ),
            (
                "file = \"x\"\ncontents = 'a'\nsignal = \"HUP\"\n",
                rule::BAD_ON_CHANGE,
            ),
            (
                "file = \"x\"\ncontents = 'a'\ndebounce = \"5m\"\n",
                rule::BAD_ON_CHANGE,
            ),
            (
                "file = \"x\"\ncontents = 'a'\nttl = \"2d\"\n",
                rule::BAD_TTL,
            ),
            (
                "file = \"x\"\ncontents = 'a'\nsource = \"a.tmpl\"\n",
                rule::UNKNOWN_FIELD,
            ),
        ];
        for (body, want) in cases {
            let e = load(&format!("[[template]]\n{body}")).unwrap_err();
            assert!(e.iter().any(|(_, _, r, _)| r == want), "{body}: {e:?}");
        }
    }

    #[test]
    fn targets_are_unique_across_grants_and_templates() {
        let e = load("[[grant]]\nsecret = \"a\"\nkey = \"k\"\nfile = \"x\"\n[[template]]\nfile = \"x\"\ncontents = 'a'\n[[template]]\nfile = \"x/y\"\ncontents = 'b'\n").unwrap_err();
        let rules: Vec<_> = e.iter().map(|(_, f, r, _)| (f.as_str(), *r)).collect();
        assert_eq!(
            rules,
            [
                ("template[0].file", rule::DUPLICATE_TARGET),
                ("template[1].file", rule::DUPLICATE_TARGET)
            ]
        );
    }
}
