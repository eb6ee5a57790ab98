//! `on_change` with its `signal`, `command`, `signal_container` and
//! `debounce`: the same fields and rules on `[[grant]]` and `[[template]]`
//! tables (rule `bad-on-change` for every problem).
//!
//! ```toml
//! [[grant]]
//! secret = "app/db"
//! key = "password"
//! file = "db_password"
//! on_change = "signal"          # none | signal | command | restart
//! signal = "SIGHUP"
//! signal_container = "app"      # a sidecar: the app container beside it
//! debounce = "2s"
//! ```

use super::Checker;
use crate::diagnostic::rule;
use crate::model::{GrantDelivery, DEFAULT_DEBOUNCE};
use crate::validate::Problem;
use std::time::Duration;
use toml::Spanned;
use unbaked_api::wire::OnChange;

/// Longest debounce: past it a change waits longer than most ttls.
const MAX_DEBOUNCE: Duration = Duration::from_secs(60);
/// Longest container name Docker keeps in practice (and an id is 64).
const MAX_CONTAINER_NAME: usize = 128;

/// Signals an `on_change` may send: the ones apps treat as "reload" or
/// "stop"; never SIGKILL/SIGSTOP (no app can react to them).
pub(crate) const SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGALRM",
];

/// The action fields of one table, borrowed from its raw form.
pub(super) struct RawAction<'a> {
    /// `grant[2]`, `template[0]`: the prefix of every field named.
    pub table: String,
    pub on_change: Option<&'a Spanned<String>>,
    pub signal: Option<&'a Spanned<String>>,
    pub command: Option<&'a Spanned<Vec<String>>>,
    pub signal_container: Option<&'a Spanned<String>>,
    pub debounce: Option<&'a Spanned<String>>,
}

/// A Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) or id.
pub(crate) fn container_name(name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CONTAINER_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        return Ok(());
    }
    Err(Problem {
        rule: rule::BAD_ON_CHANGE,
        message: format!("signal_container {name:?} is not a container name"),
        hint: Some(
            "name the app container as `docker ps` shows it (letters, digits, `_`, `.`, `-`), or its id".into(),
        ),
    })
}

impl Checker<'_> {
    /// `on_change` and its debounce: `None` after an error (reported),
    /// `Some((None, _))` for none.
    pub(super) fn change_action(
        &mut self,
        raw: &RawAction<'_>,
        delivery: Option<&GrantDelivery>,
    ) -> Option<(Option<OnChange>, Duration)> {
        let before = self.diags.len();
        let on_change = self.on_change(raw);
        let debounce = self.debounce(raw);
        self.container_only_for_files(raw, delivery);
        match (on_change, debounce) {
            (Some(o), Some(d)) if self.diags.len() == before => Some((o, d)),
            _ => None,
        }
    }

    /// A named container is signalled by whoever beside it writes files (a
    /// sidecar, or the broker for an `unbaked run` container's files); a
    /// variable's process is the exec shim's child.
    fn container_only_for_files(&mut self, raw: &RawAction<'_>, delivery: Option<&GrantDelivery>) {
        let (Some(c), Some(GrantDelivery::Env(_) | GrantDelivery::Fd(_))) =
            (raw.signal_container, delivery)
        else {
            return;
        };
        self.error(
            c.span().start,
            format!("{}.signal_container", raw.table),
            rule::BAD_ON_CHANGE,
            "`signal_container` applies to file deliveries only: a variable's app is the child of unbaked exec, which signals it itself",
            "remove `signal_container`, or deliver a file that the sidecar beside the app container writes",
        );
    }

    fn debounce(&mut self, raw: &RawAction<'_>) -> Option<Duration> {
        let Some(d) = raw.debounce else {
            return Some(DEFAULT_DEBOUNCE);
        };
        self.check(d, &format!("{}.debounce", raw.table), |text| {
            let hint = "write a short duration, e.g. \"2s\" (at most \"60s\"; \"0s\" acts on every change)";
            let problem = |message| Problem {
                rule: rule::BAD_ON_CHANGE,
                message,
                hint: Some(hint.to_owned()),
            };
            match humantime::parse_duration(text) {
                Ok(d) if d <= MAX_DEBOUNCE => Ok(d),
                Ok(_) => Err(problem(format!("debounce {text:?} is longer than 60s"))),
                Err(e) => Err(problem(format!(
                    "debounce {text:?} is not a duration ({e})"
                ))),
            }
        })
    }

    /// The signal of on_change = "signal", named as `SIGHUP` whatever the
    /// spelling (`hup`, `HUP`, `SIGHUP`), with its container if named.
    fn signal(&mut self, raw: &RawAction<'_>, at: usize) -> Option<OnChange> {
        let field = format!("{}.signal", raw.table);
        let Some(s) = raw.signal else {
            self.error(
                at,
                field,
                rule::BAD_ON_CHANGE,
                "on_change = \"signal\" needs `signal`",
                "add signal = \"SIGHUP\" (or SIGUSR1, ...)",
            );
            return None;
        };
        let container = match raw.signal_container {
            None => None,
            Some(c) => Some(
                self.check(
                    c,
                    &format!("{}.signal_container", raw.table),
                    container_name,
                )
                .map(|()| c.get_ref().clone())?,
            ),
        };
        let name = s.get_ref().to_ascii_uppercase();
        let name = if name.starts_with("SIG") {
            name
        } else {
            format!("SIG{name}")
        };
        if SIGNALS.contains(&name.as_str()) {
            return Some(OnChange::Signal {
                signal: name,
                container,
            });
        }
        let message = format!("signal {:?} is not one an app can act on", s.get_ref());
        self.error(
            s.span().start,
            field,
            rule::BAD_ON_CHANGE,
            &message,
            &format!("use one of {}", SIGNALS.join(", ")),
        );
        None
    }

    /// `on_change` with its `signal` or `command`; `Some(None)` for none.
    fn on_change(&mut self, raw: &RawAction<'_>) -> Option<Option<OnChange>> {
        let field = |name: &str| format!("{}.{name}", raw.table);
        let word = raw
            .on_change
            .map(|w| (w.get_ref().as_str(), w.span().start));
        let before = self.diags.len();
        let result = match word {
            None | Some(("none", _)) => None,
            Some(("restart", _)) => Some(OnChange::Restart),
            Some(("signal", at)) => self.signal(raw, at),
            Some(("command", at)) => match raw.command {
                Some(c) if !c.get_ref().is_empty() && !c.get_ref()[0].is_empty() => {
                    Some(OnChange::Command {
                        command: c.get_ref().clone(),
                    })
                }
                _ => {
                    self.error(
                        at,
                        field("command"),
                        rule::BAD_ON_CHANGE,
                        "on_change = \"command\" needs a non-empty `command`",
                        "add command = [\"nginx\", \"-s\", \"reload\"] (argv, no shell)",
                    );
                    None
                }
            },
            Some((other, at)) => {
                let message = format!("unknown on_change {other:?}");
                self.error(
                    at,
                    field("on_change"),
                    rule::BAD_ON_CHANGE,
                    &message,
                    "use \"none\", \"signal\", \"command\" or \"restart\"",
                );
                None
            }
        };
        let kind = word.map_or("none", |(w, _)| w);
        self.unused(raw, kind);
        (self.diags.len() == before).then_some(result)
    }

    /// A `signal`, `signal_container` or `command` that nothing uses looks
    /// like an action that is not taken.
    fn unused(&mut self, raw: &RawAction<'_>, kind: &str) {
        let spans = [
            ("signal", raw.signal.map(Spanned::span)),
            ("signal_container", raw.signal_container.map(Spanned::span)),
            ("command", raw.command.map(Spanned::span)),
        ];
        for (name, span) in spans {
            let want = if name == "command" {
                "command"
            } else {
                "signal"
            };
            let Some(span) = span.filter(|_| kind != want) else {
                continue;
            };
            self.error(
                span.start,
                format!("{}.{name}", raw.table),
                rule::BAD_ON_CHANGE,
                &format!("`{name}` is set but on_change is not \"{want}\""),
                &format!("add on_change = \"{want}\", or remove `{name}`"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{from_sources, rule, DEFAULT_DEBOUNCE};
    use std::path::PathBuf;
    use std::time::Duration;
    use unbaked_api::wire::{ChangeAction, OnChange};

    const HEAD: &str = "workload = \"w\"\n[match]\nuids = [1]\n";

    fn load(body: &str) -> Result<crate::Policy, Vec<(usize, String, &'static str)>> {
        let text = format!("{HEAD}{body}");
        from_sources(&[(PathBuf::from("p/w.toml"), text)])
            .map(|s| s.get("w").cloned().expect("w"))
            .map_err(|d| d.0.into_iter().map(|d| (d.line, d.field, d.rule)).collect())
    }

    const GRANT: &str = "[[grant]]\nsecret = \"app/db\"\nkey = \"password\"\n";

    #[test]
    fn a_plain_grant_takes_every_action() {
        let p = load(&format!(
            "{GRANT}file = \"db\"\non_change = \"signal\"\nsignal = \"usr1\"\nsignal_container = \"app-1\"\ndebounce = \"250ms\"\n\
             {GRANT}env = \"DB\"\non_change = \"restart\"\n\
             {GRANT}fd = \"DB_FILE\"\non_change = \"command\"\ncommand = [\"kill\", \"-HUP\", \"1\"]\n\
             {GRANT}file = \"plain\"\n"
        ))
        .unwrap();
        let g = &p.grants;
        assert_eq!(
            g[0].action(),
            Some(ChangeAction {
                on_change: OnChange::Signal {
                    signal: "SIGUSR1".into(),
                    container: Some("app-1".into())
                },
                debounce_ms: 250
            })
        );
        assert_eq!(g[1].on_change, Some(OnChange::Restart));
        assert_eq!(g[1].debounce, DEFAULT_DEBOUNCE);
        assert_eq!(
            g[2].on_change,
            Some(OnChange::Command {
                command: vec!["kill".into(), "-HUP".into(), "1".into()]
            })
        );
        assert_eq!((g[3].on_change.as_ref(), g[3].action()), (None, None));
        assert_eq!(g[3].debounce, Duration::from_secs(2));
    }

    #[test]
    fn a_directory_grant_acts_under_its_own_id() {
        let p = load(
            "[[grant]]\npki = \"pki/issue/web\"\ncommon_name = \"web.internal\"\nfile = \"tls\"\non_change = \"signal\"\nsignal = \"SIGHUP\"\n",
        )
        .unwrap();
        assert!(p.grants[0].is_directory());
        assert_eq!(p.grants[0].id(), "file:tls");
        assert!(p.grants[0].action().is_some());
    }

    /// Each problem is `bad-on-change`, at the line of the field at fault.
    #[test]
    fn grant_problems_are_located() {
        let cases: &[(&str, usize, &str)] = &[
            ("file = \"a\"\non_change = \"signal\"\n", 8, "grant[0].signal"),
            (
                "file = \"a\"\non_change = \"signal\"\nsignal = \"KILL\"\n",
                9,
                "grant[0].signal",
            ),
            (
                "file = \"a\"\non_change = \"command\"\n",
                8,
                "grant[0].command",
            ),
            ("file = \"a\"\non_change = \"later\"\n", 8, "grant[0].on_change"),
            ("file = \"a\"\nsignal = \"HUP\"\n", 8, "grant[0].signal"),
            (
                "file = \"a\"\ncommand = [\"x\"]\non_change = \"signal\"\nsignal = \"HUP\"\n",
                8,
                "grant[0].command",
            ),
            (
                "file = \"a\"\nsignal_container = \"app\"\n",
                8,
                "grant[0].signal_container",
            ),
            (
                "file = \"a\"\non_change = \"signal\"\nsignal = \"HUP\"\nsignal_container = \"../app\"\n",
                10,
                "grant[0].signal_container",
            ),
            (
                "env = \"A\"\non_change = \"signal\"\nsignal = \"HUP\"\nsignal_container = \"app\"\n",
                10,
                "grant[0].signal_container",
            ),
            (
                "file = \"a\"\non_change = \"restart\"\ndebounce = \"2m\"\n",
                9,
                "grant[0].debounce",
            ),
        ];
        for (body, line, field) in cases {
            let e = load(&format!("{GRANT}{body}")).unwrap_err();
            assert!(
                e.contains(&(*line, field.to_string(), rule::BAD_ON_CHANGE)),
                "{body}: {e:?}"
            );
        }
    }

    #[test]
    fn templates_name_a_container_too() {
        let p = load(
            "[[template]]\nfile = \"app.env\"\nformat = \"env\"\nvalues = { A = \"app/db#a\" }\non_change = \"signal\"\nsignal = \"SIGHUP\"\nsignal_container = \"0123456789ab\"\n",
        )
        .unwrap();
        assert!(matches!(
            &p.templates[0].on_change,
            Some(OnChange::Signal { container: Some(c), .. }) if c == "0123456789ab"
        ));
    }

    #[test]
    fn container_names() {
        for ok in ["app", "my_app.1-x", "0123456789ab"] {
            assert!(super::container_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", "-app", "a/b", "a b", "app\n", long.as_str()] {
            assert!(super::container_name(bad).is_err(), "{bad:?}");
        }
    }
}
