//! JSON log lines with `timestamp, level, plugin.name, plugin.version, trace_id, span_id, msg`
//! (plus the event's own fields). Trace ids come from an incoming W3C `traceparent` header when
//! it is valid, and are made up otherwise; each request gets a new span id.

use std::fmt;

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the JSON logger (level from `RUST_LOG`, default `info`) for plugin `name` `version`.
pub fn init_logging(name: &str, version: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(PluginJson {
            name: name.to_string(),
            version: version.to_string(),
        })
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The event formatter.
struct PluginJson {
    name: String,
    version: String,
}

impl<S, N> FormatEvent<S, N> for PluginJson
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
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut trace_id = Value::Null;
        let mut span_id = Value::Null;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(f.as_str())
                {
                    if let Some(t) = m.get("trace_id") {
                        trace_id = t.clone();
                    }
                    if let Some(s) = m.get("span_id") {
                        span_id = s.clone();
                    }
                }
            }
        }
        let mut line = Map::new();
        line.insert("timestamp".into(), json!(crate::time::now_rfc3339()));
        line.insert("level".into(), json!(event.metadata().level().as_str()));
        line.insert("plugin.name".into(), json!(self.name));
        line.insert("plugin.version".into(), json!(self.version));
        line.insert("trace_id".into(), trace_id);
        line.insert("span_id".into(), span_id);
        line.insert("msg".into(), json!(fields.message));
        line.insert("target".into(), json!(event.metadata().target()));
        for (k, v) in fields.rest {
            line.entry(k).or_insert(v);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.insert(field.name().to_string(), json!(value));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.insert(field.name().to_string(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.insert(field.name().to_string(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.insert(field.name().to_string(), json!(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.message = v;
        } else {
            self.rest.insert(field.name().to_string(), json!(v));
        }
    }
}

/// The trace id (from a valid W3C `traceparent`, else a new one) and the caller's span id.
pub fn trace_context(headers: &HeaderMap) -> (String, String) {
    let parsed = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    match parsed {
        Some((trace, parent)) => (trace, parent),
        None => (random_hex(16), String::new()),
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
fn parse_traceparent(v: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [ver, trace, parent, flags, ..]
            if hex(ver, 2)
                && *ver != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0') =>
        {
            Some((trace.to_string(), parent.to_string()))
        }
        _ => None,
    }
}

/// A new 8-byte span id, as hex.
pub fn new_span_id() -> String {
    random_hex(8)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let _ = getrandom::fill(&mut b);
    if b.iter().all(|x| *x == 0) {
        b[0] = 1;
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_or_replaced() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(good),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        let mut h = HeaderMap::new();
        let (t, p) = trace_context(&h);
        assert_eq!((t.len(), p.as_str()), (32, ""));
        h.insert("traceparent", good.parse().unwrap());
        assert_eq!(trace_context(&h).0, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(new_span_id().len(), 16);
    }
}
