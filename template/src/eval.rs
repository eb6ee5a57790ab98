//! Rendering a parsed template over the values fetched for its references.
//! Pure: `secret` and `pkiCert` only look up what the caller resolved.

use crate::buf::Buf;
use crate::gojson;
use crate::parse::{Arg, Cmd, Node, Pipe, Reference, Template};
use crate::value::Value;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::collections::BTreeMap;
use unbaked_api::Secret;
use zeroize::Zeroizing;

/// Why a render failed. Never holds a value: positions, names and kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "{reference} was not fetched for this render (a bug: every reference is fetched first)"
    )]
    Unresolved { reference: String },
    #[error("byte {offset} of the template: {message}")]
    At { offset: usize, message: String },
    #[error("the rendered output is over {limit} bytes: split the template")]
    TooLarge { limit: usize },
    #[error("the template takes more than {limit} steps to render: range over less")]
    TooLong { limit: usize },
}

/// Largest output a template may render: a range over a big secret, or a
/// loop, stops here instead of filling memory.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Most nodes one render evaluates (`range 100000000` with an empty body).
pub const MAX_STEPS: usize = 1 << 20;

/// The values fetched for a template's references.
#[derive(Debug, Default, Clone)]
pub struct Resolved {
    values: BTreeMap<(String, Vec<String>), Value>,
}

impl Resolved {
    /// The KV v2 answer: `.Data.data.KEY`, `.Data.metadata.version`.
    pub fn kv(version: u64, data: &BTreeMap<String, Secret>) -> Value {
        let data = data
            .iter()
            .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
            .collect();
        let metadata = BTreeMap::from([(
            "version".to_string(),
            Value::Int(i64::try_from(version).unwrap_or(i64::MAX)),
        )]);
        let inner = BTreeMap::from([
            ("data".to_string(), Value::Map(data)),
            ("metadata".to_string(), Value::Map(metadata)),
        ]);
        Value::Map(BTreeMap::from([("Data".to_string(), Value::Map(inner))]))
    }

    /// A certificate, from its fields (`certificate`, `private_key`,
    /// `issuing_ca`), in the shape the calling function answers:
    /// `secret` → `.Data.certificate`; `pkiCert` → `.Data.Cert`, `.Key`,
    /// `.CA`.
    pub fn pki(function: &str, fields: &BTreeMap<String, Secret>) -> Value {
        let get = |k: &str| fields.get(k).cloned().map_or(Value::Nil, Value::Str);
        let data: BTreeMap<String, Value> = if function == "pkiCert" {
            [
                ("Cert", "certificate"),
                ("Key", "private_key"),
                ("CA", "issuing_ca"),
            ]
            .into_iter()
            .map(|(name, field)| (name.to_string(), get(field)))
            .collect()
        } else {
            fields
                .iter()
                .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                .collect()
        };
        Value::Map(BTreeMap::from([("Data".to_string(), Value::Map(data))]))
    }

    pub fn insert(&mut self, r: &Reference, v: Value) {
        self.values.insert((r.function.clone(), r.args.clone()), v);
    }

    fn get(&self, function: &str, args: &[String]) -> Option<&Value> {
        self.values.get(&(function.to_string(), args.to_vec()))
    }
}

impl Template {
    /// Render over `data`; the output is secret.
    pub fn render(&self, data: &Resolved) -> Result<Buf, RenderError> {
        let mut ev = Eval {
            data,
            vars: vec![("$".to_string(), Value::Nil)],
            out: Buf::new(),
            steps: 0,
        };
        ev.nodes(&self.nodes, &Value::Nil)?;
        Ok(ev.out)
    }
}

struct Eval<'a> {
    data: &'a Resolved,
    vars: Vec<(String, Value)>,
    out: Buf,
    steps: usize,
}

fn at(offset: usize, message: impl Into<String>) -> RenderError {
    RenderError::At {
        offset,
        message: message.into(),
    }
}

impl Eval<'_> {
    fn emit(&mut self, bytes: &[u8]) -> Result<(), RenderError> {
        if self.out.len() + bytes.len() > MAX_OUTPUT {
            return Err(RenderError::TooLarge { limit: MAX_OUTPUT });
        }
        self.out.push(bytes);
        Ok(())
    }

    fn tick(&mut self) -> Result<(), RenderError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(RenderError::TooLong { limit: MAX_STEPS });
        }
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<(), RenderError> {
        for n in nodes {
            self.node(n, dot)?;
        }
        Ok(())
    }

    /// Runs `f` with variables declared inside it dropped afterwards.
    fn scoped<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let mark = self.vars.len();
        let r = f(self);
        self.vars.truncate(mark);
        r
    }

    fn node(&mut self, n: &Node, dot: &Value) -> Result<(), RenderError> {
        self.tick()?;
        match n {
            Node::Text(t) => self.emit(t.as_bytes()),
            Node::Print(p) => {
                let v = self.pipe(p, dot)?;
                let mut b = Buf::new();
                print(&v, true, &mut b);
                self.emit(b.as_bytes())
            }
            Node::Set(p) => {
                self.pipe(p, dot)?;
                Ok(())
            }
            Node::If(p, then, otherwise) | Node::With(p, then, otherwise) => {
                let with = matches!(n, Node::With(..));
                self.scoped(|ev| {
                    let v = ev.pipe(p, dot)?;
                    match (v.truthy(), with) {
                        (true, true) => ev.nodes(then, &v),
                        (true, false) => ev.nodes(then, dot),
                        (false, _) => ev.nodes(otherwise, dot),
                    }
                })
            }
            Node::Range(p, body, otherwise) => self.scoped(|ev| {
                let decl = p.decl.clone();
                let bare = Pipe {
                    decl: Vec::new(),
                    ..p.clone()
                };
                let v = ev.pipe(&bare, dot)?;
                // Lazy for `range N`: the output bound stops a huge N.
                let items: Box<dyn Iterator<Item = (Value, Value)>> = match v {
                    Value::Map(m) => Box::new(m.into_iter().map(|(k, v)| (Value::str(&k), v))),
                    Value::List(l) => Box::new((0i64..).zip(l).map(|(i, v)| (Value::Int(i), v))),
                    Value::Int(n) => {
                        Box::new((0..n.max(0)).map(|i| (Value::Int(i), Value::Int(i))))
                    }
                    Value::Nil => Box::new(std::iter::empty()),
                    other => {
                        return Err(at(
                            p.offset,
                            format!("range cannot iterate over a {}", other.kind()),
                        ))
                    }
                };
                let mut items = items.peekable();
                if items.peek().is_none() {
                    return ev.nodes(otherwise, dot);
                }
                for (k, v) in items {
                    ev.tick()?;
                    ev.scoped(|ev| {
                        match decl.as_slice() {
                            [] => {}
                            [e] => ev.vars.push((e.clone(), v.clone())),
                            [kn, vn, ..] => {
                                ev.vars.push((kn.clone(), k));
                                ev.vars.push((vn.clone(), v.clone()));
                            }
                        }
                        ev.nodes(body, &v)
                    })?;
                }
                Ok(())
            }),
        }
    }

    fn pipe(&mut self, p: &Pipe, dot: &Value) -> Result<Value, RenderError> {
        let mut prev: Option<Value> = None;
        for c in &p.cmds {
            prev = Some(self.cmd(c, dot, prev)?);
        }
        let v = prev.unwrap_or_default();
        if let Some(name) = p.decl.first() {
            if p.assign {
                let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) else {
                    return Err(at(p.offset, format!("undefined variable ${name}")));
                };
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn cmd(&mut self, c: &Cmd, dot: &Value, piped: Option<Value>) -> Result<Value, RenderError> {
        let Some(first) = c.args.first() else {
            return Err(at(c.offset, "empty command"));
        };
        if let Arg::Func(name) = first {
            if name == "secret" || name == "pkiCert" {
                let args: Vec<String> = c.args[1..]
                    .iter()
                    .map(|a| match a {
                        Arg::Str(s) => s.clone(),
                        _ => String::new(),
                    })
                    .collect();
                return self.data.get(name, &args).cloned().ok_or_else(|| {
                    RenderError::Unresolved {
                        reference: format!("{name} {args:?}"),
                    }
                });
            }
            let mut args = Vec::with_capacity(c.args.len());
            for a in &c.args[1..] {
                args.push(self.arg(a, dot)?);
            }
            args.extend(piped);
            return call(name, args).map_err(|m| at(c.offset, m));
        }
        if c.args.len() > 1 || piped.is_some() {
            return Err(at(
                c.offset,
                "only a function takes arguments or a piped value",
            ));
        }
        self.arg(first, dot)
    }

    fn arg(&mut self, a: &Arg, dot: &Value) -> Result<Value, RenderError> {
        Ok(match a {
            Arg::Dot => dot.clone(),
            Arg::Field(f) => fields(dot, f)?,
            Arg::Var(name, f) => {
                let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err(at(0, format!("undefined variable ${name}")));
                };
                let v = v.clone();
                fields(&v, f)?
            }
            Arg::Str(s) => Value::str(s),
            Arg::Int(n) => Value::Int(*n),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Nil => Value::Nil,
            Arg::Func(name) => call(name, Vec::new()).map_err(|m| at(0, m))?,
            Arg::Pipe(p) => self.pipe(p, dot)?,
        })
    }
}

/// `.a.b.c` on `v`: a missing key is nil (Go prints `<no value>`); a
/// field of nil or of a non-map is an error, as in Go.
fn fields(v: &Value, chain: &[String]) -> Result<Value, RenderError> {
    let mut cur = v;
    for (i, f) in chain.iter().enumerate() {
        match cur {
            Value::Map(m) => match m.get(f) {
                Some(next) => cur = next,
                None if i + 1 == chain.len() => return Ok(Value::Nil),
                None => {
                    return Err(at(
                        0,
                        format!(
                            "field .{} does not exist, so .{} cannot be read",
                            chain[..=i].join("."),
                            chain.join(".")
                        ),
                    ))
                }
            },
            other => {
                return Err(at(
                    0,
                    format!("cannot read field .{f} of a {}", other.kind()),
                ));
            }
        }
    }
    Ok(cur.clone())
}

/// Go `fmt`'s `%v`: strings raw, maps `map[k:v]`, lists `[a b]`; a
/// top-level nil is text/template's `<no value>`, a nested one `<nil>`.
fn print(v: &Value, top: bool, out: &mut Buf) {
    match v {
        Value::Nil => out.push(if top { b"<no value>" } else { b"<nil>" }),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Str(s) => out.push(s.expose_secret()),
        Value::Map(m) => {
            out.push(b"map[");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b" ");
                }
                out.push_str(k);
                out.push(b":");
                print(v, false, out);
            }
            out.push(b"]");
        }
        Value::List(l) => {
            out.push(b"[");
            for (i, v) in l.iter().enumerate() {
                if i > 0 {
                    out.push(b" ");
                }
                print(v, false, out);
            }
            out.push(b"]");
        }
    }
}

fn one(name: &str, args: Vec<Value>) -> Result<Value, String> {
    let n = args.len();
    let mut it = args.into_iter();
    match (it.next(), it.next()) {
        (Some(v), None) => Ok(v),
        _ => Err(format!("{name} takes one argument, not {n}")),
    }
}

fn bytes_of(name: &str, v: &Value) -> Result<Secret, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        other => Err(format!("{name} needs a string, not a {}", other.kind())),
    }
}

/// Compares without exposing either side in a message.
fn equal(a: &Value, b: &Value) -> bool {
    a == b
}

/// A template function by name: Go's builtins and consul-template's
/// string helpers of the subset (the rest are refused by name).
fn call(name: &str, args: Vec<Value>) -> Result<Value, String> {
    match name {
        "toJSON" | "toJSONPretty" | "base64Encode" | "base64Decode" | "trimSpace" | "toUpper"
        | "toLower" => transform(name, one(name, args)?),
        "len" => match one(name, args)? {
            Value::Str(s) => Ok(Value::Int(s.len() as i64)),
            Value::Map(m) => Ok(Value::Int(m.len() as i64)),
            Value::List(l) => Ok(Value::Int(l.len() as i64)),
            other => Err(format!("len of a {}", other.kind())),
        },
        "index" => index(args),
        "eq" | "ne" => {
            let mut it = args.into_iter();
            let first = it.next().ok_or(format!("{name} needs two arguments"))?;
            let rest: Vec<Value> = it.collect();
            if rest.is_empty() {
                return Err(format!("{name} needs two arguments"));
            }
            let hit = rest.iter().any(|r| equal(&first, r));
            Ok(Value::Bool(if name == "eq" { hit } else { !hit }))
        }
        "not" => Ok(Value::Bool(!one(name, args)?.truthy())),
        "and" | "or" => {
            if args.is_empty() {
                return Err(format!("{name} needs arguments"));
            }
            // Go's and/or: the first operand that decides, else the last.
            let want = name == "or";
            let mut last = Value::Nil;
            for a in args {
                if a.truthy() == want {
                    return Ok(a);
                }
                last = a;
            }
            Ok(last)
        }
        "print" => Ok(sprint(&args)),
        other => Err(format!("function {other:?} is not supported")),
    }
}

/// The one-argument functions that turn a value into a new string, in
/// zeroizing buffers (their inputs and outputs are secret).
fn transform(name: &str, v: Value) -> Result<Value, String> {
    if let "toJSON" | "toJSONPretty" = name {
        let mut b = Buf::new();
        gojson::encode(&v, name == "toJSONPretty", &mut b);
        return Ok(Value::Str(b.into_secret()));
    }
    let s = bytes_of(name, &v)?;
    let b = s.expose_secret();
    Ok(match name {
        "base64Encode" => Value::str(&Zeroizing::new(STANDARD.encode(b))),
        "base64Decode" => {
            let mut out = Zeroizing::new(Vec::new());
            STANDARD
                .decode_vec(b, &mut out)
                .map_err(|_| "base64Decode: the value is not valid base64".to_string())?;
            Value::Str(Secret::from(out))
        }
        "trimSpace" => match std::str::from_utf8(b) {
            Ok(t) => Value::str(t.trim()),
            Err(_) => Value::Str(Secret::from_slice(b.trim_ascii())),
        },
        _ => {
            let upper = name == "toUpper";
            let t = Zeroizing::new(match std::str::from_utf8(b) {
                Ok(t) if upper => t.to_uppercase().into_bytes(),
                Ok(t) => t.to_lowercase().into_bytes(),
                Err(_) if upper => b.to_ascii_uppercase(),
                Err(_) => b.to_ascii_lowercase(),
            });
            Value::Str(Secret::from(t))
        }
    })
}

/// `index MAP KEY...` / `index LIST N...`; a missing map key is nil, as in Go.
fn index(args: Vec<Value>) -> Result<Value, String> {
    let mut it = args.into_iter();
    let mut cur = it.next().ok_or("index needs a map or list")?;
    for k in it {
        cur = match (&cur, &k) {
            (Value::Map(m), Value::Str(s)) => {
                let key = String::from_utf8_lossy(s.expose_secret()).into_owned();
                m.get(&key).cloned().unwrap_or_default()
            }
            (Value::List(l), Value::Int(i)) => usize::try_from(*i)
                .ok()
                .and_then(|i| l.get(i).cloned())
                .ok_or("index out of range")?,
            (Value::Nil, _) => Value::Nil,
            (c, k) => return Err(format!("cannot index a {} with a {}", c.kind(), k.kind())),
        };
    }
    Ok(cur)
}

/// fmt.Sprint: a space between operands when neither is a string.
fn sprint(args: &[Value]) -> Value {
    let mut b = Buf::new();
    let mut prev_str = true;
    for (i, a) in args.iter().enumerate() {
        let is_str = matches!(a, Value::Str(_));
        if i > 0 && !is_str && !prev_str {
            b.push(b" ");
        }
        print(a, false, &mut b);
        prev_str = is_str;
    }
    Value::Str(b.into_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ReferenceKind;

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::from_slice(v.as_bytes())))
            .collect()
    }

    /// Renders `text` with every KV reference answered by `data` (version 3)
    /// and every PKI reference by a fixed certificate.
    fn render(text: &str, data: &[(&str, &str)]) -> Result<String, String> {
        let t = Template::parse(text).map_err(|e| e.to_string())?;
        let mut r = Resolved::default();
        for reference in t.references() {
            let v = match reference.kind {
                ReferenceKind::Kv { .. } => Resolved::kv(3, &kv(data)),
                ReferenceKind::Pki { .. } => Resolved::pki(
                    &reference.function,
                    &kv(&[
                        ("certificate", "CERT"),
                        ("private_key", "KEY"),
                        ("issuing_ca", "CA"),
                    ]),
                ),
            };
            r.insert(reference, v);
        }
        let out = t.render(&r).map_err(|e| e.to_string())?;
        Ok(String::from_utf8(out.as_bytes().to_vec()).unwrap())
    }

    const DB: &[(&str, &str)] = &[("password", "p@ss\"w'rd"), ("username", "app")];

    #[test]
    fn vault_agent_kv_v2_examples() {
        assert_eq!(
            render(
                "{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password }}{{ end }}",
                DB
            )
            .unwrap(),
            "p@ss\"w'rd"
        );
        let ranged = "{{ with secret \"secret/data/app/db\" }}\n{{- range $k, $v := .Data.data }}\n{{ $k }}={{ $v }}\n{{- end }}\n{{ end }}";
        assert_eq!(
            render(ranged, DB).unwrap(),
            "\npassword=p@ss\"w'rd\nusername=app\n"
        );
        assert_eq!(
            render(
                "{{ with secret \"secret/data/app/db\" }}{{ .Data.data | toJSON }}{{ end }}",
                DB
            )
            .unwrap(),
            r#"{"password":"p@ss\"w'rd","username":"app"}"#
        );
        assert_eq!(
            render("{{ with secret \"secret/data/app/db\" }}{{ .Data.metadata.version }} {{ .Data.data.nope }}{{ end }}", DB).unwrap(),
            "3 <no value>"
        );
        assert_eq!(
            render(
                "{{ with secret \"secret/data/app/db\" }}{{ .Data.data | toJSONPretty }}{{ end }}",
                DB
            )
            .unwrap(),
            "{\n  \"password\": \"p@ss\\\"w'rd\",\n  \"username\": \"app\"\n}"
        );
    }

    #[test]
    fn pki_patterns() {
        assert_eq!(
            render("{{ with pkiCert \"pki/issue/web\" \"common_name=a.b\" }}{{ .Data.Cert }}|{{ .Data.Key }}|{{ .Data.CA }}{{ end }}", &[]).unwrap(),
            "CERT|KEY|CA"
        );
        assert_eq!(
            render("{{ with secret \"pki/issue/web\" \"common_name=a.b\" }}{{ .Data.certificate }}\n{{ .Data.issuing_ca }}{{ end }}", &[]).unwrap(),
            "CERT\nCA"
        );
    }

    #[test]
    fn control_flow_variables_and_functions() {
        let cases: &[(&str, &str)] = &[
            ("{{ if false }}a{{ else }}b{{ end }}", "b"),
            ("{{ if 0 }}a{{ else if 1 }}b{{ else }}c{{ end }}", "b"),
            ("{{ with $x := \"v\" }}{{ $x }}{{ . }}{{ end }}", "vv"),
            ("{{ $a := 1 }}{{ if true }}{{ $a = 2 }}{{ end }}{{ $a }}", "2"),
            ("{{ range $i, $e := (secret \"secret/data/x\").Data.data }}{{ $i }}{{ end }}", ""),
            ("{{ range 3 }}{{ . }}{{ end }}", "012"),
            ("{{ with secret \"secret/data/x\" }}{{ range .Data.data.nope }}x{{ else }}empty{{ end }}{{ end }}", "empty"),
            ("{{ \"aGk=\" | base64Decode }} {{ \"hi\" | base64Encode }}", "hi aGk="),
            ("{{ \"  x \" | trimSpace | toUpper }}", "X"),
            ("{{ eq \"a\" \"b\" \"a\" }} {{ ne 1 1 }} {{ not 0 }} {{ and 1 0 }} {{ or 0 \"z\" }}", "true false true 0 z"),
            ("{{ len \"abc\" }}", "3"),
            ("{{ print 1 2 \"x\" 3 }}", "1 2x3"),
            ("a  {{- /* note */ -}}  b", "ab"),
            ("{{- 3 -}} \n x", "3x"),
            ("{{-3}}", "-3"),
        ];
        for (text, want) in cases {
            // `(secret ...).Data` is not supported: fields after a parenthesis.
            let got = render(text, DB);
            if text.contains("(secret") {
                assert!(got.is_err() || got.as_deref() == Ok(""), "{text}");
                continue;
            }
            assert_eq!(got.as_deref(), Ok(*want), "{text}");
        }
        let ranged = "{{ with secret \"secret/data/app/db\" }}{{ index .Data.data \"username\" }} {{ len .Data.data }}{{ end }}";
        assert_eq!(render(ranged, DB).unwrap(), "app 2");
    }

    #[test]
    fn runtime_errors_never_show_values() {
        let e = render(
            "{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password.x }}{{ end }}",
            DB,
        )
        .unwrap_err();
        assert!(e.contains("cannot read field .x of a string"), "{e}");
        assert!(!e.contains("p@ss"), "{e}");
        let e = render("{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password | base64Decode }}{{ end }}", DB).unwrap_err();
        assert!(e.contains("not valid base64") && !e.contains("p@ss"), "{e}");
        assert!(render("{{ range \"s\" }}{{ end }}", DB)
            .unwrap_err()
            .contains("cannot iterate"));
        assert!(render("{{ $nope }}", DB)
            .unwrap_err()
            .contains("undefined variable"));
    }

    #[test]
    fn output_and_work_are_bounded() {
        let e = render("{{ range 100000000 }}xxxxxxxxxxxxxxxx{{ end }}", DB).unwrap_err();
        assert!(e.contains("over 1048576 bytes"), "{e}");
        let e = render("{{ range 100000000 }}{{ end }}", DB).unwrap_err();
        assert!(e.contains("steps"), "{e}");
    }

    #[test]
    fn unresolved_reference_is_an_error() {
        let t = Template::parse("{{ secret \"secret/data/x\" }}").unwrap();
        assert!(matches!(
            t.render(&Resolved::default()),
            Err(RenderError::Unresolved { .. })
        ));
    }
}
