//! The one tracing initialiser: `UNBAKED_LOG` filters, `--log-format` or
//! `UNBAKED_LOG_FORMAT=text|json` picks the format.
//!
//! JSON lines are flat, the shape log shippers (Loki, Elasticsearch,
//! Datadog, journald's JSON export) look for: top-level `timestamp`,
//! `level`, `target` and `message`, the event's own fields beside them, the
//! fields of the spans it happened in (the request id, the workload) too,
//! and `spans` naming those spans outermost first. An audit record (target
//! `unbaked::audit`, when there is no `--audit FILE`) arrives as the object
//! `audit`, never as a JSON string inside a string.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The target audit records are logged under, and the event field that
/// carries the record's JSON line (see `unbaked_broker::audit`).
const AUDIT_TARGET: &str = "unbaked::audit";
const AUDIT_FIELD: &str = "record";

/// Set up the global subscriber on stderr.
pub fn init(json: bool, default_filter: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("UNBAKED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // The OpenPGP library (the crypt store) traces packet parsing at debug,
    // secret key parameters included: warnings only, whatever UNBAKED_LOG
    // says (added last, this directive wins over the variable's).
    if let Ok(d) = "pgp=warn".parse() {
        filter = filter.add_directive(d);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // JsonFields stores each span's fields as a JSON object, which
        // FlatJson merges into the line.
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init();
    } else {
        builder.init();
    }
}

/// One flat JSON object per event.
#[derive(Debug, Clone, Copy)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            // Outermost first, so an inner span's field wins over an outer one's.
            for span in scope.from_root() {
                names.push(Value::from(span.name()));
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(fields)) = serde_json::from_str(fields.as_str()) {
                        line.extend(fields);
                    }
                }
            }
            line.insert("spans".into(), Value::Array(names));
        }
        event.record(&mut Fields {
            line: &mut line,
            audit: meta.target() == AUDIT_TARGET,
        });
        // Last, so no field can pass itself off as one of these.
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        line.insert("timestamp".into(), Value::from(ts));
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct Fields<'a> {
    line: &'a mut Map<String, Value>,
    audit: bool,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.audit && field.name() == AUDIT_FIELD {
            // The audit line is JSON the broker serialized itself: keep it
            // structured. Anything else stays a string.
            if let Ok(v @ Value::Object(_)) = serde_json::from_str(value) {
                self.line.insert("audit".into(), v);
                return;
            }
        }
        self.line.insert(field.name().into(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.line.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.line.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.line.insert(field.name().into(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.line.insert(field.name().into(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.line
            .insert(field.name().into(), Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.line
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}
