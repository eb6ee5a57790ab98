//! The consul-template / Vault Agent subset of Go's `text/template`:
//! text, `{{ pipeline }}`, `{{- trim -}}`, comments, `if` / `with` /
//! `range` (with `else`, `else if`, `else with`), `$variables` (`:=`, `=`),
//! pipelines with `|`, parenthesised pipelines, and the functions in
//! [`FUNCTIONS`]. Everything else (`define`, `template`, `block`, `break`,
//! an unknown function) is refused at parse time with its position, so a
//! template never fails later for want of a feature.

use std::fmt;

/// The functions a template may call: consul-template's names.
pub const FUNCTIONS: &[&str] = &[
    "secret",
    "pkiCert",
    "toJSON",
    "toJSONPretty",
    "base64Encode",
    "base64Decode",
    "trimSpace",
    "toUpper",
    "toLower",
    "index",
    "len",
    "eq",
    "ne",
    "not",
    "and",
    "or",
    "print",
];

/// Nested blocks and parentheses deeper than this are refused: the
/// evaluator recurses, and a policy file is untrusted input to `policy check`.
const MAX_DEPTH: usize = 64;

/// Where a template is wrong: 1-based line and column inside the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column} of the template: {message}")]
pub struct ParseError {
    /// Byte offset in the template text.
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What a `secret` or `pkiCert` call reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReferenceKind {
    /// `secret "MOUNT/data/PATH"`: every key of a KV v2 secret.
    Kv { mount: String, path: String },
    /// `secret "MOUNT/issue/ROLE" "common_name=..."` or `pkiCert ...`: a
    /// certificate issued for the workload's lease.
    Pki {
        mount: String,
        role: String,
        common_name: String,
        alt_names: Vec<String>,
        ip_sans: Vec<String>,
    },
}

/// One secret a template reads, found at parse time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// `secret` or `pkiCert`: they answer in different shapes.
    pub function: String,
    /// The literal arguments, as written.
    pub args: Vec<String>,
    pub kind: ReferenceKind,
}

impl Reference {
    /// The path as written: `secret/data/app/db`, `pki/issue/web`.
    pub fn path(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    Print(Pipe),
    /// An assignment: prints nothing.
    Set(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    pub offset: usize,
    /// `$x :=`, `$k, $v :=`.
    pub decl: Vec<String>,
    /// `=` rather than `:=`.
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    pub offset: usize,
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Bool(bool),
    Nil,
    Func(String),
    Pipe(Box<Pipe>),
}

/// A parsed template and the secrets it reads.
#[derive(Debug, Clone)]
pub struct Template {
    pub(crate) nodes: Vec<Node>,
    refs: Vec<Reference>,
}

impl Template {
    /// Parse `text`; the first error, with its position.
    pub fn parse(text: &str) -> Result<Template, ParseError> {
        let mut p = Parser {
            src: text,
            pos: 0,
            trim_next: false,
            refs: Vec::new(),
            depth: 0,
        };
        let (nodes, end) = p.list()?;
        match end {
            Stop::Eof => {}
            Stop::End(at) => {
                return Err(p.error(at, "{{end}} without an opening if, with or range"))
            }
            Stop::Else(at, _) => {
                return Err(p.error(at, "{{else}} without an opening if, with or range"))
            }
        }
        let mut refs = p.refs;
        refs.sort();
        refs.dedup();
        Ok(Template { nodes, refs })
    }

    /// Every secret the template reads, sorted, without duplicates.
    pub fn references(&self) -> &[Reference] {
        &self.refs
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Int(i64),
    Bool(bool),
    Nil,
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

type Toks = Vec<(Tok, usize)>;

enum Stop {
    Eof,
    End(usize),
    Else(usize, Toks),
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    trim_next: bool,
    refs: Vec<Reference>,
    depth: usize,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Parser<'_> {
    fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        let offset = offset.min(self.src.len());
        let before = &self.src.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
        ParseError {
            offset,
            line,
            column,
            message: message.into(),
        }
    }

    /// Nodes up to `{{end}}`, `{{else ...}}` or the end of the text.
    fn list(&mut self) -> Result<(Vec<Node>, Stop), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(self.pos, format!("blocks nest deeper than {MAX_DEPTH}")));
        }
        let mut nodes = Vec::new();
        let end = loop {
            let rest = &self.src[self.pos..];
            let open = rest.find("{{");
            let mut text = &rest[..open.unwrap_or(rest.len())];
            if std::mem::take(&mut self.trim_next) {
                text = text.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
            }
            let Some(open) = open else {
                push_text(&mut nodes, text);
                self.pos = self.src.len();
                break Stop::Eof;
            };
            let start = self.pos + open;
            let mut body = start + 2;
            let bytes = self.src.as_bytes();
            if bytes.get(body) == Some(&b'-') && bytes.get(body + 1).is_some_and(|&b| is_space(b)) {
                text = text.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
                body += 1;
            }
            push_text(&mut nodes, text);
            self.pos = body;
            let Some(toks) = self.action(start)? else {
                continue; // a comment
            };
            match toks.first() {
                None => {
                    return Err(self.error(
                        start,
                        "empty action: write a value or a pipeline between {{ and }}",
                    ))
                }
                Some((Tok::Ident(w), at)) => match w.as_str() {
                    "end" => {
                        if toks.len() > 1 {
                            return Err(self.error(toks[1].1, "unexpected words after {{end}}"));
                        }
                        break Stop::End(*at);
                    }
                    "else" => break Stop::Else(*at, toks[1..].to_vec()),
                    "if" | "with" | "range" => {
                        let kw = w.clone();
                        nodes.push(self.control(&kw, *at, &toks[1..])?);
                    }
                    "define" | "template" | "block" | "break" | "continue" => {
                        return Err(self.error(*at, format!("{{{{{w}}}}} is not supported in unbaked templates: write the template out in one piece")));
                    }
                    _ => nodes.push(self.pipe_node(start, &toks)?),
                },
                Some(_) => nodes.push(self.pipe_node(start, &toks)?),
            }
        };
        self.depth -= 1;
        Ok((nodes, end))
    }

    fn pipe_node(&mut self, start: usize, toks: &[(Tok, usize)]) -> Result<Node, ParseError> {
        let pipe = self.pipeline(start, toks, true)?;
        Ok(if pipe.decl.is_empty() {
            Node::Print(pipe)
        } else {
            Node::Set(pipe)
        })
    }

    /// `if`, `with` or `range`, through its `{{end}}`.
    fn control(&mut self, kw: &str, at: usize, toks: &[(Tok, usize)]) -> Result<Node, ParseError> {
        if toks.is_empty() {
            return Err(self.error(
                at,
                format!("{{{{{kw}}}}} needs a pipeline, e.g. {{{{{kw} .Data.data}}}}"),
            ));
        }
        let pipe = self.pipeline(at, toks, kw == "range")?;
        if kw != "range" && pipe.decl.len() > 1 {
            return Err(self.error(at, format!("{{{{{kw}}}}} declares at most one variable")));
        }
        let (body, end) = self.list()?;
        let otherwise = match end {
            Stop::Eof => {
                return Err(self.error(at, format!("{{{{{kw}}}}} is never closed: add {{{{end}}}}")))
            }
            Stop::End(_) => Vec::new(),
            Stop::Else(_, rest) if rest.is_empty() => match self.list()? {
                (nodes, Stop::End(_)) => nodes,
                (_, Stop::Else(at, _)) => {
                    return Err(self.error(at, "a second {{else}} in one block"))
                }
                (_, Stop::Eof) => {
                    return Err(
                        self.error(at, format!("{{{{{kw}}}}} is never closed: add {{{{end}}}}"))
                    )
                }
            },
            Stop::Else(else_at, rest) => match &rest[0] {
                (Tok::Ident(w), w_at) if (w == "if" || w == "with") && kw != "range" => {
                    let w = w.clone();
                    let chained = self.control(&w, *w_at, &rest[1..])?;
                    vec![chained]
                }
                _ => {
                    return Err(self.error(
                        else_at,
                        "write {{else}}, {{else if ...}} or {{else with ...}}",
                    ))
                }
            },
        };
        Ok(match kw {
            "if" => Node::If(pipe, body, otherwise),
            "with" => Node::With(pipe, body, otherwise),
            _ => Node::Range(pipe, body, otherwise),
        })
    }

    /// The tokens of one action, from `self.pos` through its `}}`; `None`
    /// for a comment.
    fn action(&mut self, start: usize) -> Result<Option<Toks>, ParseError> {
        let src = self.src;
        let bytes = src.as_bytes();
        let mut toks = Vec::new();
        let mut i = self.pos;
        let mut first = true;
        loop {
            let before = i;
            while bytes.get(i).is_some_and(|&b| is_space(b)) {
                i += 1;
            }
            let spaced = i > before;
            let rest = &src[i..];
            if rest.is_empty() {
                return Err(self.error(start, "unclosed action: add }}"));
            }
            if rest.starts_with("}}") {
                self.pos = i + 2;
                return Ok(Some(toks));
            }
            if spaced && rest.starts_with("-}}") {
                self.pos = i + 3;
                self.trim_next = true;
                return Ok(Some(toks));
            }
            if first && rest.starts_with("/*") {
                let Some(close) = rest.find("*/") else {
                    return Err(self.error(i, "unclosed comment: add */}}"));
                };
                let mut j = i + close + 2;
                while bytes.get(j).is_some_and(|&b| is_space(b)) {
                    j += 1;
                }
                let rest = &src[j..];
                if rest.starts_with("}}") {
                    self.pos = j + 2;
                } else if rest.starts_with("-}}") && j > i + close + 2 {
                    self.pos = j + 3;
                    self.trim_next = true;
                } else {
                    return Err(self.error(j, "a comment must end the action: write {{/* ... */}}"));
                }
                return Ok(None);
            }
            first = false;
            let (tok, len) = self.token(i)?;
            toks.push((tok, i));
            i += len;
        }
    }

    /// One token at `i` and its length in bytes.
    fn token(&self, i: usize) -> Result<(Tok, usize), ParseError> {
        let rest = &self.src[i..];
        let b = rest.as_bytes()[0];
        Ok(match b {
            b'|' => (Tok::Pipe, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b':' if rest.starts_with(":=") => (Tok::Declare, 2),
            b'=' => (Tok::Assign, 1),
            b'"' => {
                let (s, n) = self.quoted(i)?;
                (Tok::Str(s), n)
            }
            b'`' => match rest[1..].find('`') {
                Some(end) => (Tok::Str(rest[1..1 + end].to_string()), end + 2),
                None => return Err(self.error(i, "unterminated raw string: add `")),
            },
            b'.' => {
                let (fields, n) = chain(rest, 0);
                if fields.is_empty() {
                    (Tok::Dot, 1)
                } else {
                    (Tok::Field(fields), n)
                }
            }
            b'$' => {
                let n = word_len(&rest[1..]);
                let name = rest[1..1 + n].to_string();
                let (fields, end) = chain(rest, 1 + n);
                (Tok::Var(name, fields), end)
            }
            b'-' | b'0'..=b'9' => {
                let n = 1 + rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                let v = rest[..n].parse::<i64>().map_err(|_| {
                    let message = format!(
                        "bad number {:?}: only whole numbers are supported",
                        &rest[..n]
                    );
                    self.error(i, message)
                })?;
                (Tok::Int(v), n)
            }
            _ => {
                let n = word_len(rest);
                if n == 0 {
                    let c = rest.chars().next().unwrap_or(' ');
                    return Err(self.error(i, format!("unexpected {c:?} in an action")));
                }
                let w = &rest[..n];
                let tok = match w {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    _ => Tok::Ident(w.to_string()),
                };
                (tok, n)
            }
        })
    }

    /// A Go interpreted string literal at `i`: the value and its length.
    fn quoted(&self, i: usize) -> Result<(String, usize), ParseError> {
        let rest = &self.src[i..];
        let mut out = String::new();
        let mut chars = rest.char_indices().skip(1);
        while let Some((j, c)) = chars.next() {
            match c {
                '"' => return Ok((out, j + 1)),
                '\n' => break,
                '\\' => {
                    let Some((k, e)) = chars.next() else { break };
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '\\' => out.push('\\'),
                        '"' => out.push('"'),
                        '\'' => out.push('\''),
                        'a' => out.push('\x07'),
                        'b' => out.push('\x08'),
                        'f' => out.push('\x0c'),
                        'v' => out.push('\x0b'),
                        'x' | 'u' | 'U' => {
                            let n = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let hex = rest.get(k + 1..k + 1 + n).unwrap_or("");
                            let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                            let (Some(c), true) = (c, hex.len() == n) else {
                                return Err(self.error(i + k, "bad escape in a string"));
                            };
                            if e == 'x' && c as u32 > 0x7f {
                                return Err(
                                    self.error(i + k, "\\x escapes above \\x7f are not supported")
                                );
                            }
                            out.push(c);
                            for _ in 0..n {
                                chars.next();
                            }
                        }
                        _ => {
                            return Err(
                                self.error(i + k, format!("unknown escape \\{e} in a string"))
                            )
                        }
                    }
                }
                c => out.push(c),
            }
        }
        Err(self.error(i, "unterminated string: add \""))
    }

    /// A pipeline from an action's tokens. `decl` allows `$x :=`.
    fn pipeline(
        &mut self,
        at: usize,
        toks: &[(Tok, usize)],
        decl: bool,
    ) -> Result<Pipe, ParseError> {
        let mut pipe = Pipe {
            offset: at,
            decl: Vec::new(),
            assign: false,
            cmds: Vec::new(),
        };
        let mut rest = toks;
        // `$a :=`, `$a =`, `$k, $v :=`
        let is_decl = |t: &[(Tok, usize)]| {
            matches!(
                t,
                [(Tok::Var(_, f), _), (Tok::Declare | Tok::Assign, _), ..] if f.is_empty()
            ) || matches!(
                t,
                [(Tok::Var(_, f), _), (Tok::Comma, _), (Tok::Var(_, g), _), (Tok::Declare | Tok::Assign, _), ..] if f.is_empty() && g.is_empty()
            )
        };
        if is_decl(rest) {
            if !decl {
                // `if $x := ...` is fine in Go; the evaluator treats it like with.
            }
            while let [(Tok::Var(name, _), _), tail @ ..] = rest {
                pipe.decl.push(name.clone());
                rest = tail;
                match rest {
                    [(Tok::Comma, _), tail @ ..] => rest = tail,
                    [(Tok::Declare, _), tail @ ..] => {
                        rest = tail;
                        break;
                    }
                    [(Tok::Assign, _), tail @ ..] => {
                        pipe.assign = true;
                        rest = tail;
                        break;
                    }
                    _ => {}
                }
            }
        }
        let (cmds, used) = self.commands(rest, 0)?;
        if used < rest.len() {
            return Err(self.error(rest[used].1, "unexpected ) in an action"));
        }
        if cmds.is_empty() {
            return Err(self.error(at, "missing value in an action"));
        }
        pipe.cmds = cmds;
        Ok(pipe)
    }

    /// Commands separated by `|`, up to a `)` or the end; how many tokens
    /// were used.
    fn commands(
        &mut self,
        toks: &[(Tok, usize)],
        depth: usize,
    ) -> Result<(Vec<Cmd>, usize), ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error(toks.first().map_or(0, |t| t.1), "parentheses nest too deep"));
        }
        let mut cmds: Vec<Cmd> = Vec::new();
        let mut i = 0;
        let mut cur: Option<Cmd> = None;
        while i < toks.len() {
            let (tok, at) = &toks[i];
            let arg = match tok {
                Tok::RParen => break,
                Tok::Pipe => {
                    match cur.take() {
                        Some(c) => cmds.push(c),
                        None => return Err(self.error(*at, "missing command before |")),
                    }
                    i += 1;
                    continue;
                }
                Tok::LParen => {
                    let (p, used) = self.parenthesized(&toks[i..], depth)?;
                    push_arg(&mut cur, *at, Arg::Pipe(Box::new(p)));
                    i += used;
                    continue;
                }
                Tok::Declare | Tok::Assign | Tok::Comma => {
                    return Err(self.error(
                        *at,
                        "a variable is declared only at the start of an action: {{ $x := ... }}",
                    ));
                }
                Tok::Str(s) => Arg::Str(s.clone()),
                Tok::Int(n) => Arg::Int(*n),
                Tok::Bool(b) => Arg::Bool(*b),
                Tok::Nil => Arg::Nil,
                Tok::Dot => Arg::Dot,
                Tok::Field(f) => Arg::Field(f.clone()),
                Tok::Var(v, f) => Arg::Var(v.clone(), f.clone()),
                Tok::Ident(name) => self.function(name, *at, cur.is_some())?,
            };
            push_arg(&mut cur, *at, arg);
            i += 1;
        }
        match cur {
            Some(c) => cmds.push(c),
            None if !cmds.is_empty() => {
                let at = toks.get(i.saturating_sub(1)).map_or(0, |t| t.1);
                return Err(self.error(at, "missing command after |"));
            }
            None => {}
        }
        for (n, c) in cmds.iter().enumerate() {
            self.check_reference(c, n > 0)?;
        }
        Ok((cmds, i))
    }

    /// `( PIPELINE )` starting at `toks[0]`: the pipe and how many tokens
    /// it used, both parentheses included.
    fn parenthesized(
        &mut self,
        toks: &[(Tok, usize)],
        depth: usize,
    ) -> Result<(Pipe, usize), ParseError> {
        let at = toks[0].1;
        let (inner, used) = self.commands(&toks[1..], depth + 1)?;
        let close = 1 + used;
        if !matches!(toks.get(close), Some((Tok::RParen, _))) {
            return Err(self.error(at, "unclosed (: add )"));
        }
        if inner.is_empty() {
            return Err(self.error(at, "empty ()"));
        }
        let p = Pipe {
            offset: at,
            decl: Vec::new(),
            assign: false,
            cmds: inner,
        };
        Ok((p, close + 1))
    }

    /// A function name as a command's first word: supported, and not in
    /// argument position (`f g x` would need parentheses).
    fn function(&self, name: &str, at: usize, in_argument: bool) -> Result<Arg, ParseError> {
        if !FUNCTIONS.contains(&name) {
            let hint = if ["if", "with", "range", "end", "else"].contains(&name) {
                format!("{name:?} must start its action")
            } else {
                format!(
                    "function {name:?} is not supported in unbaked templates (supported: {})",
                    FUNCTIONS.join(", ")
                )
            };
            return Err(self.error(at, hint));
        }
        if in_argument {
            return Err(self.error(
                at,
                format!("{name} takes arguments: call it in parentheses, ({name} ...)"),
            ));
        }
        Ok(Arg::Func(name.to_string()))
    }

    /// A `secret` / `pkiCert` call: literal arguments only, recorded.
    fn check_reference(&mut self, cmd: &Cmd, piped: bool) -> Result<(), ParseError> {
        let Some(Arg::Func(name)) = cmd.args.first() else {
            return Ok(());
        };
        if name != "secret" && name != "pkiCert" {
            return Ok(());
        }
        if piped {
            return Err(self.error(
                cmd.offset,
                format!("{name} cannot take a piped value: its arguments must be written out"),
            ));
        }
        let mut args = Vec::new();
        for a in &cmd.args[1..] {
            match a {
                Arg::Str(s) => args.push(s.clone()),
                _ => return Err(self.error(cmd.offset, format!("{name} takes string literals only, so the policy shows every secret a template reads: write the path in quotes"))),
            }
        }
        let kind = reference_kind(name, &args).map_err(|m| self.error(cmd.offset, m))?;
        self.refs.push(Reference {
            function: name.clone(),
            args,
            kind,
        });
        Ok(())
    }
}

fn push_arg(cur: &mut Option<Cmd>, at: usize, arg: Arg) {
    match cur {
        Some(c) => c.args.push(arg),
        None => {
            *cur = Some(Cmd {
                offset: at,
                args: vec![arg],
            })
        }
    }
}

fn push_text(nodes: &mut Vec<Node>, text: &str) {
    if !text.is_empty() {
        nodes.push(Node::Text(text.to_string()));
    }
}

/// What a call reads, from its literal arguments.
fn reference_kind(name: &str, args: &[String]) -> Result<ReferenceKind, String> {
    let Some(path) = args.first() else {
        return Err(format!(
            "{name} needs a path, e.g. {name} \"secret/data/app/db\""
        ));
    };
    let params = &args[1..];
    if let Some((mount, role)) = path.split_once("/issue/") {
        let (mut cn, mut alt, mut ips) = (None, Vec::new(), Vec::new());
        for p in params {
            let Some((k, v)) = p.split_once('=') else {
                return Err(format!("{name} parameter {p:?} is not key=value"));
            };
            let list = || v.split(',').map(str::to_string).filter(|s| !s.is_empty());
            match k {
                "common_name" => cn = Some(v.to_string()),
                "alt_names" => alt.extend(list()),
                "ip_sans" => ips.extend(list()),
                _ => {
                    return Err(format!(
                        "{name} parameter {k:?} is not supported: unbaked issues with common_name, alt_names and ip_sans, for the template's ttl"
                    ))
                }
            }
        }
        let Some(common_name) = cn else {
            return Err(format!("{name} {path:?} needs \"common_name=NAME\""));
        };
        if mount.is_empty() || role.is_empty() || role.contains('/') {
            return Err(format!("{path:?} is not MOUNT/issue/ROLE"));
        }
        return Ok(ReferenceKind::Pki {
            mount: mount.to_string(),
            role: role.to_string(),
            common_name,
            alt_names: alt,
            ip_sans: ips,
        });
    }
    if name == "pkiCert" {
        return Err(format!(
            "pkiCert reads MOUNT/issue/ROLE paths, not {path:?}"
        ));
    }
    if !params.is_empty() {
        return Err(format!(
            "secret {path:?} takes no parameters: only PKI issue paths (MOUNT/issue/ROLE) do"
        ));
    }
    match path.split_once("/data/") {
        Some((mount, p)) if !mount.is_empty() && !p.is_empty() && !mount.contains('/') => {
            Ok(ReferenceKind::Kv {
                mount: mount.to_string(),
                path: p.to_string(),
            })
        }
        _ => Err(format!(
            "secret {path:?} is not a KV v2 path: write MOUNT/data/PATH, e.g. \"secret/data/app/db\" (KV v1 and other engines are not supported)"
        )),
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.function)?;
        for a in &self.args {
            write!(f, " {a:?}")?;
        }
        Ok(())
    }
}

/// The length of the identifier at the start of `s`.
fn word_len(s: &str) -> usize {
    s.char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(s.len(), |(n, _)| n)
}

/// The field chain `.a.b.c` starting at `rest[j..]` and where it ends.
fn chain(rest: &str, mut j: usize) -> (Vec<String>, usize) {
    let mut fields = Vec::new();
    while rest[j..].starts_with('.') {
        let n = word_len(&rest[j + 1..]);
        if n == 0 {
            break;
        }
        fields.push(rest[j + 1..j + 1 + n].to_string());
        j += 1 + n;
    }
    (fields, j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        Template::parse(text).unwrap_err()
    }

    #[test]
    fn documented_kv_and_pki_examples_parse_with_their_references() {
        let t = Template::parse(
            "{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password }}{{ end }}\n\
             {{- with pkiCert \"pki/issue/web\" \"common_name=web.internal\" \"alt_names=a.internal,b.internal\" -}}\n\
             {{ .Data.Cert }}{{ .Data.Key }}{{ .Data.CA }}{{ end }}\n\
             {{ with secret \"pki/issue/web\" \"common_name=x.internal\" }}{{ .Data.certificate }}{{ end }}",
        )
        .unwrap();
        let refs: Vec<String> = t.references().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "pkiCert \"pki/issue/web\" \"common_name=web.internal\" \"alt_names=a.internal,b.internal\"",
                "secret \"pki/issue/web\" \"common_name=x.internal\"",
                "secret \"secret/data/app/db\"",
            ]
        );
        assert_eq!(
            t.references()[2].kind,
            ReferenceKind::Kv {
                mount: "secret".into(),
                path: "app/db".into()
            }
        );
        let ReferenceKind::Pki { alt_names, .. } = &t.references()[0].kind else {
            panic!("pki")
        };
        assert_eq!(alt_names, &["a.internal", "b.internal"]);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = err("a\nb {{ with secret \"secret/data/x\" }}\n{{ .Data }}");
        assert_eq!((e.line, e.column), (2, 6), "{e}");
        assert!(e.message.contains("never closed"), "{e}");
        let e = err("{{ end }}");
        assert!(e.message.contains("without an opening"));
        let e = err("x\n  {{ nope .X }}");
        assert_eq!((e.line, e.column), (2, 6));
        assert!(
            e.message.contains("function \"nope\" is not supported"),
            "{e}"
        );
        assert!(err("{{ .X ").message.contains("unclosed action"));
        assert!(err("{{ \"abc }}").message.contains("unterminated string"));
        assert!(err("{{ }}").message.contains("empty action"));
        assert!(err("{{ template \"x\" }}")
            .message
            .contains("not supported"));
        assert!(err("{{/* never closed }}")
            .message
            .contains("unclosed comment"));
        assert!(err("{{ if .X }}{{ else }}{{ else }}{{ end }}")
            .message
            .contains("second"));
    }

    #[test]
    fn references_must_be_literals_and_known_shapes() {
        for (text, want) in [
            ("{{ secret .Path }}", "string literals only"),
            (
                "{{ $p := \"secret/data/x\" }}{{ secret $p }}",
                "string literals only",
            ),
            ("{{ \"secret/data/x\" | secret }}", "piped value"),
            ("{{ secret \"secret/app/db\" }}", "not a KV v2 path"),
            (
                "{{ secret \"secret/data/x\" \"a=b\" }}",
                "takes no parameters",
            ),
            (
                "{{ pkiCert \"pki/issue/web\" }}",
                "needs \"common_name=NAME\"",
            ),
            (
                "{{ pkiCert \"pki/issue/web\" \"common_name=a\" \"ttl=1h\" }}",
                "\"ttl\" is not supported",
            ),
            ("{{ pkiCert \"secret/data/x\" }}", "MOUNT/issue/ROLE"),
            ("{{ secret }}", "needs a path"),
        ] {
            let e = err(text);
            assert!(e.message.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "{{ if 1 }}".repeat(MAX_DEPTH + 1);
        assert!(err(&deep).message.contains("nest deeper"));
        let parens = format!(
            "{{{{ {}1{} }}}}",
            "(".repeat(MAX_DEPTH + 2),
            ")".repeat(MAX_DEPTH + 2)
        );
        assert!(err(&parens).message.contains("too deep"));
    }

    #[test]
    fn strings_and_escapes() {
        let t = Template::parse(
            r#"{{ secret "secret/data/a\u00e9\tb" }}{{ secret `secret/data/raw\n` }}"#,
        )
        .unwrap();
        let paths: Vec<&str> = t.references().iter().map(Reference::path).collect();
        assert_eq!(paths, ["secret/data/a\u{e9}\tb", "secret/data/raw\\n"]);
        assert!(err(r#"{{ "\q" }}"#).message.contains("unknown escape"));
    }
}
