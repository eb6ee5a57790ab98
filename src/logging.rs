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
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
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
        // SpanJson stores each span's fields as a JSON object, which
        // FlatJson merges into the line.
        builder.fmt_fields(SpanJson).event_format(FlatJson).init();
    } else {
        builder.init();
    }
}

/// A span's fields as one JSON object, written as they come: the request
/// span of every broker request is built here, so its fields cost a few
/// string writes. (`JsonFields` builds a map of `Value`s and serializes
/// it, and for each field recorded later, such as the request's workload,
/// parses the whole object back and serializes it again.) A field recorded
/// twice appears twice; the later one wins when FlatJson reads the object.
#[derive(Debug, Clone, Copy)]
pub struct SpanJson;

impl<'w> FormatFields<'w> for SpanJson {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut object = JsonObject::open(String::new());
        fields.record(&mut object);
        writer.write_str(&object.close())
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut object = JsonObject::open(std::mem::take(&mut current.fields));
        fields.record(&mut object);
        current.fields = object.close();
        Ok(())
    }
}

/// A JSON object being written: `{` and the members so far, unclosed.
struct JsonObject(Vec<u8>);

impl JsonObject {
    /// Reopen `written` (an object [`JsonObject::close`] made), or start one.
    fn open(written: String) -> JsonObject {
        let mut bytes = written.into_bytes();
        if bytes.last() == Some(&b'}') {
            bytes.pop();
        } else {
            bytes.clear();
            bytes.push(b'{');
        }
        JsonObject(bytes)
    }

    /// `"name":` after a comma if a member came before.
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if self.0.last() != Some(&b'{') {
            self.0.push(b',');
        }
        // Into a Vec, serializing a str or a number cannot fail.
        let _ = serde_json::to_writer(&mut self.0, name);
        self.0.push(b':');
        &mut self.0
    }

    fn close(mut self) -> String {
        self.0.push(b'}');
        // Only serde_json wrote between the braces: valid UTF-8.
        String::from_utf8(self.0).unwrap_or_else(|_| String::from("{}"))
    }
}

impl Visit for JsonObject {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = serde_json::to_writer(self.key(field.name()), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let _ = serde_json::to_writer(self.key(field.name()), &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let _ = serde_json::to_writer(self.key(field.name()), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let _ = serde_json::to_writer(self.key(field.name()), &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and the infinities come out as null, as JsonFields writes them.
        let _ = serde_json::to_writer(self.key(field.name()), &value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = serde_json::to_writer(self.key(field.name()), &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = serde_json::to_writer(self.key(field.name()), &format!("{value:?}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The request span's fields, those given at its start and those
    /// recorded later, reach the event's line beside its own, escaped.
    #[test]
    fn span_fields_are_flat_json_beside_the_events() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(move || out.clone())
            .fmt_fields(SpanJson)
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let id = "1f";
            let span = tracing::info_span!(
                "request",
                id = %id,
                path = "/v1/\"fetch\"",
                uid = 1000u32,
                pid = Some(-4i32),
                ok = true,
                ratio = f64::NAN,
                workload = tracing::field::Empty,
            );
            span.record("workload", "billing");
            span.record("uid", 7u32);
            span.in_scope(|| tracing::info!(n = 3, "served"));
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["spans"], serde_json::json!(["request"]), "{text}");
        assert_eq!(line["id"], "1f", "{text}");
        assert_eq!(line["path"], "/v1/\"fetch\"", "{text}");
        assert_eq!(line["pid"], -4, "{text}");
        assert_eq!(line["ok"], true, "{text}");
        assert!(line["ratio"].is_null(), "{text}");
        assert_eq!(line["workload"], "billing", "{text}");
        assert_eq!(line["uid"], 7, "the later record wins: {text}");
        assert_eq!(line["n"], 3, "{text}");
        assert_eq!(line["message"], "served", "{text}");
    }
}
