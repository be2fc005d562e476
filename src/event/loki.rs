//! Loki push requests (`POST /loki/api/v1/push`) as events: the JSON form
//! (`{"streams":[{"stream":{labels},"values":[["<ns>","<line>",{metadata}]]}]}`, or the legacy
//! `{"streams":[{"labels":"{…}","entries":[{"ts":"<RFC 3339>","line":"…"}]}]}`) and the
//! protobuf form Promtail, Grafana Alloy, Fluent Bit and Vector send, whose messages are those
//! of Loki's `push.proto` (`logproto.PushRequest`), declared here with prost.
//!
//! Mapping, per entry:
//! - service: the first of the stream's labels named by [`LokiMapping::service_labels`]
//!   (default [`DEFAULT_SERVICE_LABELS`]: `service_name`, `service`, `job`, `app`, then the
//!   others Loki reads), else the default service (`unknown_service`, as Loki's own);
//! - severity: the entry's structured metadata, else the stream's labels, `level`, `severity`
//!   or `detected_level`, read as a level name; a value that is not one leaves the event at
//!   info and is kept as an attribute;
//! - message: the line; timestamp: the entry's, in nanoseconds (kept to the microsecond);
//! - attributes: the other labels, then the entry's structured metadata (which wins).
//!
//! A request is taken whole or refused whole: the first stream or entry that breaks a rule
//! (Loki's own defaults: at most 15 labels per stream, names of at most 1024 bytes, values of at
//! most 2048, at most 128 structured metadata pairs) is named in the error.

use super::parse::{check_name, check_not_future, new_id, parse_timestamp_text, stored_attributes};
use super::{Event, IngestContext, Severity};
use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use prost::Message;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: a label set in Prometheus syntax and its entries.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<prost_types::Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The service of streams that have none of the service labels (Loki's own default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// Labels per stream (Loki's `max_label_names_per_series` default).
pub const MAX_LABELS: usize = 15;
pub const MAX_LABEL_NAME_BYTES: usize = 1024;
pub const MAX_LABEL_VALUE_BYTES: usize = 2048;
/// Structured metadata pairs per entry (Loki's `max_structured_metadata_entries_count`).
pub const MAX_METADATA: usize = 128;
/// The longest label set text read: what the label limits allow, with room for the syntax.
const MAX_LABELS_TEXT_BYTES: usize =
    MAX_LABELS * (MAX_LABEL_NAME_BYTES + MAX_LABEL_VALUE_BYTES + 8);

/// The labels that name the service, first present wins: `service_name` (what Loki itself
/// derives), then the usual ones, then those Loki's own `service_name` discovery reads.
pub const DEFAULT_SERVICE_LABELS: [&str; 10] = [
    "service_name",
    "service",
    "job",
    "app",
    "application",
    "app_kubernetes_io_name",
    "container",
    "container_name",
    "component",
    "workload",
];

const SEVERITY_NAMES: [&str; 3] = ["level", "severity", "detected_level"];

/// Which labels make the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiMapping {
    pub service_labels: Vec<String>,
    pub default_service: String,
}

impl Default for LokiMapping {
    fn default() -> Self {
        LokiMapping {
            service_labels: DEFAULT_SERVICE_LABELS.map(str::to_owned).to_vec(),
            default_service: UNKNOWN_SERVICE.to_owned(),
        }
    }
}

/// The JSON form of a push.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

/// A stream: `stream` and `values`, or the legacy form python-logging-loki still sends by
/// default, `labels` (Prometheus syntax) and `entries`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonStream {
    stream: Option<BTreeMap<String, String>>,
    values: Option<Vec<JsonEntry>>,
    labels: Option<String>,
    entries: Option<Vec<LegacyEntry>>,
}

/// `{"ts": "<RFC 3339>", "line": "<line>"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyEntry {
    ts: String,
    line: String,
}

/// `["<unix nanoseconds>", "<line>"]`, or with a third item of structured metadata.
#[derive(Deserialize)]
struct JsonEntry(
    String,
    String,
    #[serde(default)] Option<BTreeMap<String, String>>,
);

/// A stream of either form, as the mapping reads it.
struct Stream<E> {
    labels: Vec<(String, String)>,
    entries: Vec<E>,
}

/// An entry of either form, as the mapping reads it.
struct Entry {
    /// Its timestamp, in microseconds since the Unix epoch.
    ts_us: Result<i64, String>,
    line: String,
    metadata: Vec<(String, String)>,
}

/// Decodes a protobuf push (already decompressed from snappy) into events.
pub fn events_from_protobuf(
    body: &[u8],
    mapping: &LokiMapping,
    ctx: IngestContext<'_>,
) -> Result<Vec<Event>, String> {
    let push = PushRequest::decode(body)
        .map_err(|e| format!("the body is not a protobuf logproto.PushRequest: {e}"))?;
    let mut streams = Vec::with_capacity(push.streams.len());
    for (number, stream) in push.streams.into_iter().enumerate() {
        let labels =
            parse_labels(&stream.labels).map_err(|e| format!("stream {}: {e}", number + 1))?;
        let entries = stream.entries.into_iter().map(|entry| Entry {
            ts_us: match entry.timestamp {
                None => Ok(0),
                Some(ts) if ts.seconds < 0 || !(0..1_000_000_000).contains(&ts.nanos) => {
                    Err(format!(
                        "timestamp {}s {}ns is not a time after 1970",
                        ts.seconds, ts.nanos
                    ))
                }
                Some(ts) => ts
                    .seconds
                    .checked_mul(1_000_000)
                    .and_then(|us| us.checked_add(i64::from(ts.nanos / 1_000)))
                    .ok_or_else(|| format!("timestamp {}s is out of range", ts.seconds)),
            },
            line: entry.line,
            metadata: entry
                .structured_metadata
                .into_iter()
                .map(|pair| (pair.name, pair.value))
                .collect(),
        });
        streams.push(Stream {
            labels,
            entries: entries.collect::<Vec<_>>(),
        });
    }
    events_of(streams, mapping, ctx)
}

/// Decodes a JSON push into events.
pub fn events_from_json(
    body: &[u8],
    mapping: &LokiMapping,
    ctx: IngestContext<'_>,
) -> Result<Vec<Event>, String> {
    let push: JsonPush = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a Loki JSON push ({{\"streams\":[…]}}): {e}"))?;
    let mut streams = Vec::with_capacity(push.streams.len());
    for (number, stream) in push.streams.into_iter().enumerate() {
        let at_stream = |why: String| format!("stream {}: {why}", number + 1);
        let stream = match stream {
            JsonStream {
                stream,
                values: Some(values),
                labels: None,
                entries: None,
            } => Stream {
                labels: stream.into_iter().flatten().collect(),
                entries: values
                    .into_iter()
                    .map(|JsonEntry(nanos, line, metadata)| Entry {
                        ts_us: nanos.parse::<i64>().map(|nanos| nanos.div_euclid(1_000)).map_err(
                            |_| format!("timestamp `{nanos}` is not Unix nanoseconds written as a string"),
                        ),
                        line,
                        metadata: metadata.into_iter().flatten().collect(),
                    })
                    .collect(),
            },
            JsonStream {
                stream: None,
                values: None,
                labels: Some(labels),
                entries: Some(entries),
            } => Stream {
                labels: parse_labels(&labels).map_err(at_stream)?,
                entries: entries
                    .into_iter()
                    .map(|LegacyEntry { ts, line }| Entry {
                        ts_us: parse_timestamp_text(&ts)
                            .map_err(|why| format!("timestamp: {why}")),
                        line,
                        metadata: Vec::new(),
                    })
                    .collect(),
            },
            _ => {
                return Err(at_stream(
                    "is neither {\"stream\": {labels}, \"values\": [...]} nor the legacy \
                     {\"labels\": \"{…}\", \"entries\": [...]}"
                        .into(),
                ));
            }
        };
        streams.push(stream);
    }
    events_of(streams, mapping, ctx)
}

/// A label set in Prometheus syntax (`{job="api", level="warn"}`), read with promql-parser.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.len() > MAX_LABELS_TEXT_BYTES {
        return Err(format!(
            "its label set is {} bytes long; at most {MAX_LABELS} labels of at most \
             {MAX_LABEL_NAME_BYTES}-byte names and {MAX_LABEL_VALUE_BYTES}-byte values are taken",
            text.len()
        ));
    }
    let bad = |why: String| format!("labels `{}` {why}", text.escape_debug());
    let Ok(Expr::VectorSelector(selector)) = promql_parser::parser::parse(text) else {
        return Err(bad(
            "are not a label set such as {job=\"api\", level=\"warn\"}".into(),
        ));
    };
    if selector.offset.is_some()
        || selector.at.is_some()
        || !selector.matchers.or_matchers.is_empty()
    {
        return Err(bad("are a query, not a label set".into()));
    }
    if selector.name.is_some() {
        return Err(bad(
            "name a metric; a label set is only {name=\"value\", …}".into(),
        ));
    }
    let mut labels = Vec::with_capacity(selector.matchers.matchers.len());
    for matcher in selector.matchers.matchers {
        if !matches!(matcher.op, MatchOp::Equal) {
            return Err(bad(format!(
                "match `{}` with {}, not =",
                matcher.name, matcher.op
            )));
        }
        labels.push((matcher.name, matcher.value));
    }
    Ok(labels)
}

fn check_labels(labels: &[(String, String)], what: &str, most: usize) -> Result<(), String> {
    if labels.len() > most {
        return Err(format!("{} {what}; at most {most} are taken", labels.len()));
    }
    for (name, value) in labels {
        if name.is_empty() || name.len() > MAX_LABEL_NAME_BYTES {
            return Err(format!(
                "a {what} name is {} bytes long; 1 to {MAX_LABEL_NAME_BYTES} are taken",
                name.len()
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(format!(
                "{what} `{name}` has a {}-byte value; at most {MAX_LABEL_VALUE_BYTES} are taken",
                value.len()
            ));
        }
    }
    Ok(())
}

fn events_of(
    streams: Vec<Stream<Entry>>,
    mapping: &LokiMapping,
    ctx: IngestContext<'_>,
) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (stream_number, stream) in streams.into_iter().enumerate() {
        let at_stream = |why: String| format!("stream {}: {why}", stream_number + 1);
        check_labels(&stream.labels, "labels", MAX_LABELS).map_err(at_stream)?;
        let mut labels: Map<String, Value> = stream
            .labels
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        let service = match mapping
            .service_labels
            .iter()
            .find_map(|name| labels.remove(name).map(|value| (name, value)))
        {
            Some((name, Value::String(service))) => {
                check_name(&service).map_err(|why| at_stream(format!("label `{name}` {why}")))?;
                service
            }
            _ => mapping.default_service.clone(),
        };
        let stream_severity = severity_in(&mut labels);
        // Entries without structured metadata share the stream's attributes, serialized once.
        let stream_attributes: Option<Box<RawValue>> = stored_attributes(&labels);
        for (entry_number, entry) in stream.entries.into_iter().enumerate() {
            let at_entry = |why: String| {
                format!(
                    "stream {} entry {}: {why}",
                    stream_number + 1,
                    entry_number + 1
                )
            };
            let ts_us = entry.ts_us.map_err(at_entry)?;
            if ts_us < 0 {
                return Err(at_entry(format!("timestamp {ts_us} µs is before 1970")));
            }
            let ts_us = check_not_future(ts_us, ctx.now_us).map_err(at_entry)?;
            let (severity, attributes) = if entry.metadata.is_empty() {
                (stream_severity, stream_attributes.clone())
            } else {
                check_labels(&entry.metadata, "structured metadata", MAX_METADATA)
                    .map_err(at_entry)?;
                let mut attributes = labels.clone();
                for (name, value) in entry.metadata {
                    attributes.insert(name, Value::String(value));
                }
                let severity = severity_in(&mut attributes).or(stream_severity);
                (severity, stored_attributes(&attributes))
            };
            events.push(ctx.event(
                new_id(),
                ts_us,
                service.clone(),
                severity.unwrap_or(Severity::Info),
                entry.line,
                attributes,
            ));
        }
    }
    Ok(events)
}

/// The severity named by the first of the severity labels present that names one, taken out of
/// `labels`; a value that is no level name stays as an attribute.
fn severity_in(labels: &mut Map<String, Value>) -> Option<Severity> {
    SEVERITY_NAMES.iter().find_map(|name| {
        let severity = labels
            .get(*name)
            .and_then(Value::as_str)
            .and_then(Severity::from_name)?;
        labels.remove(*name);
        Some(severity)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: IngestContext<'static> = IngestContext {
        node: "n1",
        now_us: 1_796_000_000_000_000,
    };

    #[test]
    fn json_streams_map_labels_and_metadata() {
        let body = r#"{"streams":[{"stream":{"job":"api","level":"warn","env":"prod"},
            "values":[["1795428900123456789","GET / 502"],
                      ["1795428901000000000","retry",{"trace_id":"abc","detected_level":"error"}]]}]}"#;
        let events = events_from_json(body.as_bytes(), &LokiMapping::default(), CTX).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].service, "api");
        assert_eq!(events[0].severity, Severity::Warn);
        assert_eq!(events[0].ts_us, 1_795_428_900_123_456);
        assert_eq!(events[0].message, "GET / 502");
        assert_eq!(events[0].attributes_json(), Some(r#"{"env":"prod"}"#));
        // An entry's own level (structured metadata) wins over its stream's.
        assert_eq!(events[1].severity, Severity::Error);
        assert_eq!(
            events[1].attributes_json(),
            Some(r#"{"env":"prod","trace_id":"abc"}"#)
        );
    }

    #[test]
    fn protobuf_label_sets_are_read_with_their_escapes() {
        let push = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{service_name="checkout", path="/a\"b", severity="ERROR"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(prost_types::Timestamp {
                        seconds: 1_795_428_900,
                        nanos: 5_000,
                    }),
                    line: "paid".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "order".into(),
                        value: "42".into(),
                    }],
                }],
                hash: 0,
            }],
        };
        let events =
            events_from_protobuf(&push.encode_to_vec(), &LokiMapping::default(), CTX).unwrap();
        assert_eq!(events[0].service, "checkout");
        assert_eq!(events[0].severity, Severity::Error);
        assert_eq!(events[0].ts_us, 1_795_428_900_000_005);
        assert_eq!(
            events[0].attributes_json(),
            Some(r#"{"order":"42","path":"/a\"b"}"#)
        );
    }

    #[test]
    fn the_legacy_json_form_is_read_too() {
        let body = r#"{"streams":[{"labels":"{job=\"py\", severity=\"warning\"}",
            "entries":[{"ts":"2026-11-23T10:15:00.5Z","line":"old style"}]}]}"#;
        let events = events_from_json(body.as_bytes(), &LokiMapping::default(), CTX).unwrap();
        assert_eq!(events[0].service, "py");
        assert_eq!(events[0].severity, Severity::Warn);
        assert_eq!(events[0].ts_us, 1_795_428_900_500_000);
        let mixed = r#"{"streams":[{"labels":"{job=\"py\"}","values":[["1","m"]]}]}"#;
        let error = events_from_json(mixed.as_bytes(), &LokiMapping::default(), CTX).unwrap_err();
        assert!(error.starts_with("stream 1: is neither"), "{error}");
    }

    #[test]
    fn the_service_label_and_default_are_configurable() {
        let body = r#"{"streams":[{"stream":{"container":"web","job":"x"},"values":[["1","m"]]},
                                  {"values":[["2","n"]]}]}"#;
        let mapping = LokiMapping {
            service_labels: vec!["container".into()],
            default_service: "fallback".into(),
        };
        let events = events_from_json(body.as_bytes(), &mapping, CTX).unwrap();
        assert_eq!(events[0].service, "web");
        assert_eq!(events[0].attributes_json(), Some(r#"{"job":"x"}"#));
        assert_eq!(events[1].service, "fallback");
        let events = events_from_json(body.as_bytes(), &LokiMapping::default(), CTX).unwrap();
        assert_eq!(events[1].service, UNKNOWN_SERVICE);
    }

    #[test]
    fn bad_pushes_are_refused_naming_the_stream_and_entry() {
        let refused = |body: &str| {
            events_from_json(body.as_bytes(), &LokiMapping::default(), CTX).unwrap_err()
        };
        assert!(
            refused(r#"{"streams":[{"stream":{},"values":[["x","m"]]}]}"#)
                .contains("stream 1 entry 1: timestamp `x`")
        );
        assert!(
            refused(r#"{"streams":[{"values":[["1","m"],["4102444800000000000","m"]]}]}"#)
                .contains("stream 1 entry 2:")
        );
        assert!(refused(r#"{"streams":[{"values":[["1"]]}]}"#).contains("not a Loki JSON push"));
        assert!(refused(r#"{"stream":{}}"#).contains("not a Loki JSON push"));
        let many: BTreeMap<String, String> =
            (0..16).map(|i| (format!("l{i}"), "v".to_owned())).collect();
        let body = serde_json::json!({"streams": [{"stream": many, "values": [["1", "m"]]}]});
        assert!(refused(&body.to_string()).contains("16 labels; at most 15"));
        let body =
            serde_json::json!({"streams": [{"stream": {"job": "a b"}, "values": [["1", "m"]]}]});
        assert!(refused(&body.to_string()).contains("label `job`"));

        for labels in [r#"{job=~"a.*"}"#, "job", "{}", r#"{job="a"} or {b="c"}"#] {
            let push = PushRequest {
                streams: vec![StreamAdapter {
                    labels: labels.into(),
                    entries: vec![],
                    hash: 0,
                }],
            };
            let error = events_from_protobuf(&push.encode_to_vec(), &LokiMapping::default(), CTX)
                .unwrap_err();
            assert!(error.starts_with("stream 1: labels"), "{labels}: {error}");
        }
        assert!(events_from_protobuf(b"\x0a\xff", &LokiMapping::default(), CTX).is_err());
    }
}
