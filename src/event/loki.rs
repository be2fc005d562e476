//! Loki push requests (`POST /loki/api/v1/push`) as events: the JSON form
//! (`{"streams":[{"stream":{labels},"values":[["<ns>","<line>",{metadata}]]}]}`, or the legacy
//! `{"streams":[{"labels":"{…}","entries":[{"ts":"<RFC 3339>","line":"…"}]}]}`) and the
//! protobuf form Promtail, Grafana Alloy, Fluent Bit and Vector send, whose messages are those
//! of Loki's `push.proto` (`logproto.PushRequest`), declared here with prost; its label sets are
//! Prometheus' text form (`{job="api"}`), read by [`parse_labels`].
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

use super::bounds::{
    Expansion, Refusal, check_event_count, check_json_containers, count_protobuf_repeated,
};
use super::parse::{check_name, new_id, parse_timestamp_text, stored_attributes};
use super::{Event, IngestContext, Severity};
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

/// Decodes a protobuf push (already decompressed from snappy) into events; its entries are
/// counted on the wire first.
pub fn events_from_protobuf(
    body: &[u8],
    mapping: &LokiMapping,
    ctx: IngestContext<'_>,
    expansion: &mut Expansion,
) -> Result<Vec<Event>, Refusal> {
    let malformed = |e: String| {
        Refusal::Malformed(format!(
            "the body is not a protobuf logproto.PushRequest: {e}"
        ))
    };
    // streams (1) → entries (2).
    let entries = count_protobuf_repeated(body, &[1, 2]).map_err(malformed)?;
    check_event_count(entries, "entries")?;
    let push = PushRequest::decode(body).map_err(|e| malformed(e.to_string()))?;
    let mut streams = Vec::with_capacity(push.streams.len());
    for (number, stream) in push.streams.into_iter().enumerate() {
        let labels = parse_labels(&stream.labels)
            .map_err(|e| Refusal::Malformed(format!("stream {}: {e}", number + 1)))?;
        let entries = stream.entries.into_iter().map(|entry| Entry {
            ts_us: match entry.timestamp {
                // An entry without a time is taken as arriving now.
                None => Ok(ctx.now_us),
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
    events_of(streams, mapping, ctx, expansion)
}

/// Decodes a JSON push into events.
pub fn events_from_json(
    body: &[u8],
    mapping: &LokiMapping,
    ctx: IngestContext<'_>,
    expansion: &mut Expansion,
) -> Result<Vec<Event>, Refusal> {
    check_json_containers(body)?;
    let push: JsonPush = serde_json::from_slice(body).map_err(|e| {
        Refusal::Malformed(format!(
            "the body is not a Loki JSON push ({{\"streams\":[…]}}): {e}"
        ))
    })?;
    let entries = push
        .streams
        .iter()
        .map(|stream| {
            stream.values.as_ref().map_or(0, Vec::len) + stream.entries.as_ref().map_or(0, Vec::len)
        })
        .sum();
    check_event_count(entries, "entries")?;
    let mut streams = Vec::with_capacity(push.streams.len());
    for (number, stream) in push.streams.into_iter().enumerate() {
        let at_stream = |why: String| Refusal::Malformed(format!("stream {}: {why}", number + 1));
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
    events_of(streams, mapping, ctx, expansion)
}

/// A label set in Prometheus syntax (`{job="api", level="warn"}`, as Prometheus' and Loki's
/// `labels.String()` write it: values, and names that are not identifiers, quoted as Go's
/// `strconv.Quote` does). Read by hand, in one pass without recursion: a PromQL parser would
/// also take expressions, whose nesting untrusted text could make deep enough to overflow the
/// stack.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.len() > MAX_LABELS_TEXT_BYTES {
        return Err(format!(
            "its label set is {} bytes long; at most {MAX_LABELS} labels of at most \
             {MAX_LABEL_NAME_BYTES}-byte names and {MAX_LABEL_VALUE_BYTES}-byte values are taken",
            text.len()
        ));
    }
    let bad = |why: &str| {
        let shown: String = text.chars().take(200).collect();
        format!("labels `{}` {why}", shown.escape_debug())
    };
    let not_a_set = || bad("are not a label set such as {job=\"api\", level=\"warn\"}");
    let mut rest = text.trim();
    rest = rest.strip_prefix('{').ok_or_else(not_a_set)?;
    let mut labels: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            if !after.trim().is_empty() {
                return Err(not_a_set());
            }
            break;
        }
        let (name, after) = if rest.starts_with('"') {
            go_unquote(rest).map_err(|why| bad(&why))?
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(not_a_set());
            }
            (name.to_owned(), &rest[end..])
        };
        rest = after.trim_start();
        let Some(after) = rest.strip_prefix('=') else {
            let operator: String = rest.chars().take(2).collect();
            return Err(match operator.as_str() {
                "=~" | "!=" | "!~" => bad(&format!("match `{name}` with {operator}, not =")),
                _ => not_a_set(),
            });
        };
        if after.starts_with('~') {
            return Err(bad(&format!("match `{name}` with =~, not =")));
        }
        let (value, after) = go_unquote(after.trim_start()).map_err(|why| bad(&why))?;
        if labels.iter().any(|(seen, _)| *seen == name) {
            return Err(bad(&format!("name `{name}` twice")));
        }
        labels.push((name, value));
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(not_a_set());
        }
    }
    if labels.is_empty() {
        return Err(bad("are empty: a stream has at least one label"));
    }
    Ok(labels)
}

/// The Go double-quoted string at the start of `text` (escapes as `strconv.Unquote` reads
/// them), and what follows it.
fn go_unquote(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or("hold a value that is not a quoted string")?;
    let mut out: Vec<u8> = Vec::new();
    let mut chars = body.char_indices();
    let hex = |digits: &str| u32::from_str_radix(digits, 16).ok();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                let value = String::from_utf8(out)
                    .map_err(|_| "hold a value whose escapes are not UTF-8".to_owned())?;
                return Ok((value, &body[at + 1..]));
            }
            '\\' => {
                let (_, escape) = chars.next().ok_or("end inside a quoted string")?;
                let simple = match escape {
                    'a' => Some(7),
                    'b' => Some(8),
                    'f' => Some(12),
                    'n' => Some(b'\n'),
                    'r' => Some(b'\r'),
                    't' => Some(b'\t'),
                    'v' => Some(11),
                    '\\' => Some(b'\\'),
                    '"' => Some(b'"'),
                    _ => None,
                };
                if let Some(byte) = simple {
                    out.push(byte);
                    continue;
                }
                let width = match escape {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    '0'..='7' => 2,
                    _ => return Err(format!("hold an unknown escape \\{escape}")),
                };
                let start = at + 2;
                let digits = body
                    .get(start..start + width)
                    .ok_or("end inside an escape")?;
                for _ in 0..width {
                    chars.next();
                }
                match escape {
                    'x' => out.push(hex(digits).ok_or("hold a bad \\x escape")? as u8),
                    'u' | 'U' => {
                        let c = hex(digits)
                            .and_then(char::from_u32)
                            .ok_or("hold a bad \\u escape")?;
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    _ => {
                        let octal = u32::from_str_radix(&format!("{escape}{digits}"), 8)
                            .ok()
                            .filter(|n| *n <= 255)
                            .ok_or("hold a bad octal escape")?;
                        out.push(octal as u8);
                    }
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Err("end inside a quoted string".into())
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
    expansion: &mut Expansion,
) -> Result<Vec<Event>, Refusal> {
    let mut events = Vec::new();
    for (stream_number, stream) in streams.into_iter().enumerate() {
        let at_stream =
            |why: String| Refusal::Malformed(format!("stream {}: {why}", stream_number + 1));
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
        let stream_bytes = stream_attributes.as_deref().map_or(0, |a| a.get().len());
        for (entry_number, entry) in stream.entries.into_iter().enumerate() {
            let at_entry = |why: String| {
                Refusal::Malformed(format!(
                    "stream {} entry {}: {why}",
                    stream_number + 1,
                    entry_number + 1
                ))
            };
            // Every entry repeats its stream's attributes: charged before they are copied.
            expansion.charge(stream_bytes + entry.line.len())?;
            let ts_us = entry.ts_us.map_err(at_entry)?;
            if ts_us < 0 {
                return Err(at_entry(format!("timestamp {ts_us} µs is before 1970")));
            }
            let ts_us = ctx.check_time(ts_us).map_err(at_entry)?;
            let (severity, attributes) = if entry.metadata.is_empty() {
                (stream_severity, stream_attributes.clone())
            } else {
                check_labels(&entry.metadata, "structured metadata", MAX_METADATA)
                    .map_err(at_entry)?;
                let mut attributes = labels.clone();
                for (name, value) in entry.metadata {
                    expansion.charge(name.len() + value.len())?;
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
        oldest_us: i64::MIN,
    };

    fn roomy() -> Expansion {
        Expansion::for_body_limit(1 << 20)
    }

    #[test]
    fn json_streams_map_labels_and_metadata() {
        let body = r#"{"streams":[{"stream":{"job":"api","level":"warn","env":"prod"},
            "values":[["1795428900123456789","GET / 502"],
                      ["1795428901000000000","retry",{"trace_id":"abc","detected_level":"error"}]]}]}"#;
        let events =
            events_from_json(body.as_bytes(), &LokiMapping::default(), CTX, &mut roomy()).unwrap();
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
        let events = events_from_protobuf(
            &push.encode_to_vec(),
            &LokiMapping::default(),
            CTX,
            &mut roomy(),
        )
        .unwrap();
        assert_eq!(events[0].service, "checkout");
        assert_eq!(events[0].severity, Severity::Error);
        assert_eq!(events[0].ts_us, 1_795_428_900_000_005);
        assert_eq!(
            events[0].attributes_json(),
            Some(r#"{"order":"42","path":"/a\"b"}"#)
        );
    }

    #[test]
    fn label_sets_are_read_as_prometheus_writes_them() {
        assert_eq!(
            parse_labels(r#" {job="a\"b\\c", "dotted.name"="\u00e9\x41\101\n", x = "" ,} "#)
                .unwrap(),
            [
                ("job".to_owned(), "a\"b\\c".to_owned()),
                ("dotted.name".to_owned(), "éAA\n".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
        for (text, says) in [
            ("{}", "are empty"),
            ("job", "not a label set"),
            (r#"{job="a"} or {b="c"}"#, "not a label set"),
            (r#"{job=~"a"}"#, "with =~, not ="),
            (r#"{job!="a"}"#, "with !=, not ="),
            (r#"{job="a", job="b"}"#, "twice"),
            (r#"{job="a}"#, "end inside a quoted string"),
            (r#"{job="\q"}"#, "unknown escape"),
            (r#"{job="\xff"}"#, "not UTF-8"),
            (r#"{1job="a"}"#, "not a label set"),
            (r#"{job=a}"#, "not a quoted string"),
        ] {
            let error = parse_labels(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        // What a PromQL parser would recurse into is refused in one pass.
        let deep = format!("{}{{a=\"b\"}}", "-".repeat(40_000));
        assert!(parse_labels(&deep).is_err());
    }

    #[test]
    fn too_many_entries_or_too_much_repetition_is_refused_whole() {
        let mapping = LokiMapping::default();
        let stream = |labels: String, entries: usize| StreamAdapter {
            labels,
            entries: vec![EntryAdapter::default(); entries],
            hash: 0,
        };
        let many = PushRequest {
            streams: vec![stream(
                "{a=\"b\"}".into(),
                crate::event::bounds::MAX_EVENTS_PER_REQUEST + 1,
            )],
        };
        let refused = events_from_protobuf(
            &many.encode_to_vec(),
            &mapping,
            CTX,
            &mut Expansion::for_body_limit(1 << 20),
        );
        assert!(matches!(refused, Err(Refusal::TooLarge(_))));
        // Long labels repeated on every entry of a stream count once per entry.
        let long = format!("{{a=\"{}\"}}", "x".repeat(2000));
        let repeated = PushRequest {
            streams: vec![stream(long, 1000)],
        };
        let refused = events_from_protobuf(
            &repeated.encode_to_vec(),
            &mapping,
            CTX,
            &mut Expansion::for_body_limit(100_000),
        );
        assert!(matches!(refused, Err(Refusal::TooLarge(_))), "{refused:?}");
        // An entry without a timestamp arrived now.
        let events = events_from_protobuf(
            &PushRequest {
                streams: vec![stream("{a=\"b\"}".into(), 1)],
            }
            .encode_to_vec(),
            &mapping,
            CTX,
            &mut Expansion::for_body_limit(1 << 20),
        )
        .unwrap();
        assert_eq!(events[0].ts_us, CTX.now_us);
    }

    #[test]
    fn the_legacy_json_form_is_read_too() {
        let body = r#"{"streams":[{"labels":"{job=\"py\", severity=\"warning\"}",
            "entries":[{"ts":"2026-11-23T10:15:00.5Z","line":"old style"}]}]}"#;
        let events =
            events_from_json(body.as_bytes(), &LokiMapping::default(), CTX, &mut roomy()).unwrap();
        assert_eq!(events[0].service, "py");
        assert_eq!(events[0].severity, Severity::Warn);
        assert_eq!(events[0].ts_us, 1_795_428_900_500_000);
        let mixed = r#"{"streams":[{"labels":"{job=\"py\"}","values":[["1","m"]]}]}"#;
        let error = events_from_json(mixed.as_bytes(), &LokiMapping::default(), CTX, &mut roomy())
            .unwrap_err()
            .message()
            .to_owned();
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
        let events = events_from_json(body.as_bytes(), &mapping, CTX, &mut roomy()).unwrap();
        assert_eq!(events[0].service, "web");
        assert_eq!(events[0].attributes_json(), Some(r#"{"job":"x"}"#));
        assert_eq!(events[1].service, "fallback");
        let events =
            events_from_json(body.as_bytes(), &LokiMapping::default(), CTX, &mut roomy()).unwrap();
        assert_eq!(events[1].service, UNKNOWN_SERVICE);
    }

    #[test]
    fn bad_pushes_are_refused_naming_the_stream_and_entry() {
        let refused = |body: &str| {
            events_from_json(body.as_bytes(), &LokiMapping::default(), CTX, &mut roomy())
                .unwrap_err()
                .message()
                .to_owned()
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
            let error = events_from_protobuf(
                &push.encode_to_vec(),
                &LokiMapping::default(),
                CTX,
                &mut roomy(),
            )
            .unwrap_err()
            .message()
            .to_owned();
            assert!(error.starts_with("stream 1: labels"), "{labels}: {error}");
        }
        assert!(
            events_from_protobuf(b"\x0a\xff", &LokiMapping::default(), CTX, &mut roomy()).is_err()
        );
    }
}
