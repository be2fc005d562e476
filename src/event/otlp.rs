//! OpenTelemetry log records (an OTLP `ExportLogsServiceRequest`, decoded from protobuf or
//! OTLP/JSON with the `opentelemetry-proto` definitions) as events.
//!
//! Mapping, per record:
//! - service: the resource attribute `service.name` (the SDKs always set one; without it,
//!   `unknown_service`, as the SDKs' own default);
//! - severity: `severity_number` (1–4 trace, 5–8 debug, 9–12 info, 13–16 warn, 17–20 error,
//!   21–24 fatal); when it is unspecified, `severity_text` read as a level name; else info;
//! - message: a string body as it is; any other body as its JSON text; no body, empty;
//! - timestamp: `time_unix_nano`, else `observed_time_unix_nano`, else the time it arrived;
//! - attributes: the resource's, the scope's and the record's attributes, in that order (a
//!   record attribute wins over a scope or resource one of the same name); nested values are
//!   flattened with dotted keys (`http.request.method`), arrays kept as JSON text, bytes as
//!   base64; plus `scope.name`, `scope.version`, `severity_text`, `event_name`, and `trace_id`
//!   and `span_id` as lowercase hex (searchable by exact value).
//!
//! A record that cannot be an event (a service name with whitespace, a timestamp from the
//! future) is rejected alone and counted, as OTLP's `partial_success` reports.

use super::bounds::{
    Expansion, Refusal, check_event_count, check_json_containers, count_protobuf_repeated,
};
use super::mapped::flattened;
use super::parse::{check_name, new_id, stored_attributes};
use super::{Event, IngestContext, Severity};
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::{Map, Value};

/// The service of records whose resource names none (the OpenTelemetry SDKs' own default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The records of one request: the events of those accepted, and how many were rejected.
#[derive(Debug, Default)]
pub struct Export {
    pub events: Vec<Event>,
    pub rejected: u64,
    /// Why the first rejected record was rejected.
    pub first_rejection: Option<String>,
}

impl Export {
    /// The `error_message` of an answer's `partial_success`.
    pub fn rejection_message(&self) -> String {
        match &self.first_rejection {
            Some(first) => format!(
                "{} log record(s) rejected; the first because {first}",
                self.rejected
            ),
            None => String::new(),
        }
    }
}

/// Decodes a protobuf `ExportLogsServiceRequest`; its records are counted on the wire first.
pub fn decode_protobuf(body: &[u8]) -> Result<ExportLogsServiceRequest, Refusal> {
    let malformed = |e: String| {
        Refusal::Malformed(format!(
            "the body is not a protobuf ExportLogsServiceRequest: {e}"
        ))
    };
    // resource_logs (1) → scope_logs (2) → log_records (2).
    let records = count_protobuf_repeated(body, &[1, 2, 2]).map_err(malformed)?;
    check_event_count(records, "log records")?;
    ExportLogsServiceRequest::decode(body).map_err(|e| malformed(e.to_string()))
}

/// Decodes an OTLP/JSON `ExportLogsServiceRequest`. Field names may be lowerCamelCase or the
/// proto's snake_case, as the protobuf JSON mapping allows.
pub fn decode_json(body: &[u8]) -> Result<ExportLogsServiceRequest, Refusal> {
    check_json_containers(body)?;
    let error = |e: serde_json::Error| {
        Refusal::Malformed(format!(
            "the body is not an OTLP/JSON ExportLogsServiceRequest: {e}"
        ))
    };
    // Every object key of OTLP/JSON is a field name (attribute names are values of `key`), so
    // renaming keys never touches the sender's data. Only bodies that use snake_case pay.
    if memchr::memmem::find(body, b"\"resource_logs\"").is_none() {
        return serde_json::from_slice(body).map_err(error);
    }
    let mut value: Value = serde_json::from_slice(body).map_err(error)?;
    camel_case_keys(&mut value);
    serde_json::from_value(value).map_err(error)
}

fn camel_case_keys(value: &mut Value) {
    match value {
        Value::Object(object) => {
            let renamed: Map<String, Value> = std::mem::take(object)
                .into_iter()
                .map(|(key, mut inner)| {
                    camel_case_keys(&mut inner);
                    (lower_camel(&key), inner)
                })
                .collect();
            *object = renamed;
        }
        Value::Array(items) => items.iter_mut().for_each(camel_case_keys),
        _ => {}
    }
}

fn lower_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The events of a request's records; a record that cannot be an event is counted as rejected.
/// Refused whole when it holds too many records or expands past `expansion`.
pub fn events_from_request(
    request: ExportLogsServiceRequest,
    ctx: IngestContext<'_>,
    expansion: &mut Expansion,
) -> Result<Export, Refusal> {
    let records: usize = request
        .resource_logs
        .iter()
        .flat_map(|resource| &resource.scope_logs)
        .map(|scope| scope.log_records.len())
        .sum();
    check_event_count(records, "log records")?;
    let mut export = Export::default();
    let reject = |export: &mut Export, count: usize, why: String| {
        export.rejected += count as u64;
        export.first_rejection.get_or_insert(why);
    };
    for resource_logs in request.resource_logs {
        let resource_attributes = resource_logs
            .resource
            .map(|resource| resource.attributes)
            .unwrap_or_default();
        let records: usize = resource_logs
            .scope_logs
            .iter()
            .map(|scope| scope.log_records.len())
            .sum();
        let mut base = Map::new();
        let mut service = Ok(UNKNOWN_SERVICE.to_owned());
        for KeyValue { key, value, .. } in resource_attributes {
            if key == "service.name" {
                service = match value.and_then(|v| v.value) {
                    Some(AnyKind::StringValue(name)) => check_name(&name)
                        .map(str::to_owned)
                        .map_err(|problem| format!("resource attribute service.name {problem}")),
                    _ => Err("resource attribute service.name is not a string".to_owned()),
                };
            } else {
                base.insert(key, json_of(value));
            }
        }
        let service = match service {
            Ok(service) => service,
            Err(why) => {
                reject(&mut export, records, why);
                continue;
            }
        };
        for scope_logs in resource_logs.scope_logs {
            if scope_logs.log_records.is_empty() {
                continue;
            }
            let mut scoped = base.clone();
            if let Some(scope) = scope_logs.scope {
                if !scope.name.is_empty() {
                    scoped.insert("scope.name".into(), Value::String(scope.name));
                }
                if !scope.version.is_empty() {
                    scoped.insert("scope.version".into(), Value::String(scope.version));
                }
                for KeyValue { key, value, .. } in scope.attributes {
                    scoped.insert(key, json_of(value));
                }
            }
            // Every record repeats the resource's and scope's attributes: charged per record,
            // before they are copied.
            let scoped_bytes = serde_json::to_string(&scoped).map_or(0, |text| text.len());
            for record in scope_logs.log_records {
                expansion.charge(scoped_bytes)?;
                match event_of(record, &scoped, &service, ctx) {
                    Ok(event) => {
                        expansion.charge(
                            event.message.len() + event.attributes_json().map_or(0, str::len),
                        )?;
                        export.events.push(event);
                    }
                    Err(why) => reject(&mut export, 1, why),
                }
            }
        }
    }
    Ok(export)
}

fn event_of(
    record: LogRecord,
    scoped: &Map<String, Value>,
    service: &str,
    ctx: IngestContext<'_>,
) -> Result<Event, String> {
    let nanos = [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|nanos| *nanos > 0);
    let ts_us = match nanos {
        Some(nanos) => ctx
            .check_time((nanos / 1_000) as i64)
            .map_err(|problem| format!("its time_unix_nano {problem}"))?,
        None => ctx.now_us,
    };
    let severity = severity_of(record.severity_number, &record.severity_text);
    let message = match record.body.and_then(|body| body.value) {
        None => String::new(),
        Some(AnyKind::StringValue(text)) => text,
        Some(other) => json_of_kind(other).to_string(),
    };
    let mut attributes = scoped.clone();
    for KeyValue { key, value, .. } in record.attributes {
        attributes.insert(key, json_of(value));
    }
    if !record.severity_text.is_empty() {
        attributes.insert("severity_text".into(), Value::String(record.severity_text));
    }
    if !record.event_name.is_empty() {
        attributes.insert("event_name".into(), Value::String(record.event_name));
    }
    if !record.trace_id.is_empty() {
        attributes.insert("trace_id".into(), Value::String(hex(&record.trace_id)));
    }
    if !record.span_id.is_empty() {
        attributes.insert("span_id".into(), Value::String(hex(&record.span_id)));
    }
    let attributes = flattened(attributes).map_err(str::to_owned)?;
    Ok(ctx.event(
        new_id(),
        ts_us,
        service.to_owned(),
        severity,
        message,
        stored_attributes(&attributes),
    ))
}

/// OTLP's severity numbers in six ranges of four; an unspecified (or unknown) number defers to
/// the text.
pub fn severity_of(number: i32, text: &str) -> Severity {
    match number {
        1..=4 => Severity::Trace,
        5..=8 => Severity::Debug,
        9..=12 => Severity::Info,
        13..=16 => Severity::Warn,
        17..=20 => Severity::Error,
        21..=24 => Severity::Fatal,
        _ => Severity::from_name(text).unwrap_or(Severity::Info),
    }
}

fn json_of(value: Option<AnyValue>) -> Value {
    value
        .and_then(|value| value.value)
        .map_or(Value::Null, json_of_kind)
}

fn json_of_kind(kind: AnyKind) -> Value {
    match kind {
        AnyKind::StringValue(text) => Value::String(text),
        AnyKind::BoolValue(flag) => Value::Bool(flag),
        AnyKind::IntValue(number) => Value::from(number),
        // JSON has no NaN or infinities: they are kept as their names.
        AnyKind::DoubleValue(number) => serde_json::Number::from_f64(number)
            .map_or_else(|| Value::String(number.to_string()), Value::Number),
        AnyKind::ArrayValue(array) => {
            Value::Array(array.values.into_iter().map(|v| json_of(Some(v))).collect())
        }
        AnyKind::KvlistValue(list) => Value::Object(
            list.values
                .into_iter()
                .map(|KeyValue { key, value, .. }| (key, json_of(value)))
                .collect(),
        ),
        AnyKind::BytesValue(bytes) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        // An index into a profile's string table, which logs do not carry.
        AnyKind::StringValueStrindex(index) => Value::from(index),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CTX: IngestContext<'static> = IngestContext {
        node: "n1",
        now_us: 1_796_000_000_000_000,
        oldest_us: i64::MIN,
    };

    fn request(value: Value) -> ExportLogsServiceRequest {
        decode_json(value.to_string().as_bytes()).unwrap()
    }

    fn events(request: ExportLogsServiceRequest) -> Export {
        events_from_request(request, CTX, &mut Expansion::for_body_limit(1 << 20)).unwrap()
    }

    #[test]
    fn records_map_onto_events_with_their_resource_scope_and_trace() {
        let export = events(request(json!({"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "checkout"}},
                {"key": "host.name", "value": {"stringValue": "vm1"}},
            ]},
            "scopeLogs": [{
                "scope": {"name": "shop.payments", "version": "1.2"},
                "logRecords": [{
                    "timeUnixNano": "1795428900123456789",
                    "severityNumber": 13,
                    "severityText": "WARNING",
                    "body": {"stringValue": "card declined"},
                    "traceId": "5b8efff798038103d269b633813fc60c",
                    "spanId": "eee19b7ec3c1b174",
                    "attributes": [
                        {"key": "http", "value": {"kvlistValue": {"values": [
                            {"key": "status", "value": {"intValue": "402"}}]}}},
                        {"key": "tags", "value": {"arrayValue": {"values": [
                            {"stringValue": "a"}, {"boolValue": true}]}}},
                        {"key": "host.name", "value": {"stringValue": "record wins"}},
                    ],
                }, {
                    "observedTimeUnixNano": 1_795_428_901_000_000_000_u64,
                    "severityText": "error",
                    "body": {"kvlistValue": {"values": [
                        {"key": "a", "value": {"doubleValue": 1.5}}]}},
                }],
            }],
        }]})));
        assert_eq!(export.rejected, 0);
        let [first, second] = &export.events[..] else {
            panic!("two events: {:?}", export.events);
        };
        assert_eq!(first.service, "checkout");
        assert_eq!(first.severity, Severity::Warn);
        assert_eq!(first.message, "card declined");
        assert_eq!(first.ts_us, 1_795_428_900_123_456);
        let attributes: Value = serde_json::from_str(first.attributes_json().unwrap()).unwrap();
        assert_eq!(
            attributes,
            json!({"host.name": "record wins", "scope.name": "shop.payments",
                   "scope.version": "1.2", "http.status": 402, "tags": "[\"a\",true]",
                   "severity_text": "WARNING",
                   "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174"})
        );
        assert_eq!(second.severity, Severity::Error);
        assert_eq!(second.message, r#"{"a":1.5}"#);
        assert_eq!(second.ts_us, 1_795_428_901_000_000);
    }

    #[test]
    fn snake_case_json_and_protobuf_decode_to_the_same_records() {
        let camel = request(json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"severityNumber": 17, "body": {"stringValue": "x"}}]}]}]}));
        let snake = request(json!({"resource_logs": [{"scope_logs": [{"log_records": [
            {"severity_number": 17, "body": {"string_value": "x"}}]}]}]}));
        assert_eq!(camel, snake);
        assert_eq!(decode_protobuf(&camel.encode_to_vec()).unwrap(), camel);
        let export = events(snake);
        assert_eq!(export.events[0].service, UNKNOWN_SERVICE);
        assert_eq!(export.events[0].severity, Severity::Error);
        assert_eq!(export.events[0].ts_us, CTX.now_us);
    }

    #[test]
    fn a_bad_record_is_rejected_alone_and_a_bad_service_rejects_its_resource() {
        let export = events(request(json!({"resourceLogs": [
            {"resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "has space"}}]},
             "scopeLogs": [{"logRecords": [{}, {}]}]},
            {"scopeLogs": [{"logRecords": [
                {"timeUnixNano": "4102444800000000000"},
                {"body": {"stringValue": "kept"}}]}]},
        ]})));
        assert_eq!(export.rejected, 3);
        assert_eq!(export.events.len(), 1);
        assert_eq!(export.events[0].message, "kept");
        let message = export.rejection_message();
        assert!(
            message.starts_with(
                "3 log record(s) rejected; the first because resource attribute service.name"
            ),
            "{message}"
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(decode_protobuf(b"\xff\xff\xff").is_err());
        assert!(decode_json(b"{\"resourceLogs\": 3}").is_err());
        assert!(decode_json(b"not json").is_err());
        // The spec wants integers for enums: a name is refused, not read as unspecified.
        assert!(
            decode_json(
                br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SEVERITY_NUMBER_WARN"}]}]}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn attributes_repeated_on_every_record_are_charged_per_record() {
        let big = "x".repeat(10_000);
        let records: Vec<Value> = (0..200).map(|_| json!({})).collect();
        let request = request(json!({"resourceLogs": [{
            "resource": {"attributes": [{"key": "big", "value": {"stringValue": big}}]},
            "scopeLogs": [{"logRecords": records}]}]}));
        let refused = events_from_request(
            request.clone(),
            CTX,
            &mut Expansion::for_body_limit(100_000),
        );
        assert!(matches!(refused, Err(Refusal::TooLarge(_))), "{refused:?}");
        let taken = events_from_request(request, CTX, &mut Expansion::for_body_limit(1 << 20));
        assert_eq!(taken.unwrap().events.len(), 200);
    }

    #[test]
    fn too_many_records_are_refused_before_they_are_decoded() {
        use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
        let many = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord::default();
                        crate::event::bounds::MAX_EVENTS_PER_REQUEST + 1
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let refused = decode_protobuf(&many.encode_to_vec());
        assert!(matches!(refused, Err(Refusal::TooLarge(_))));
    }

    #[test]
    fn severity_numbers_map_in_ranges_of_four() {
        assert_eq!(severity_of(1, ""), Severity::Trace);
        assert_eq!(severity_of(8, ""), Severity::Debug);
        assert_eq!(severity_of(9, "error"), Severity::Info);
        assert_eq!(severity_of(16, ""), Severity::Warn);
        assert_eq!(severity_of(20, ""), Severity::Error);
        assert_eq!(severity_of(24, ""), Severity::Fatal);
        assert_eq!(severity_of(0, "CRITICAL"), Severity::Fatal);
        assert_eq!(severity_of(99, "nonsense"), Severity::Info);
    }
}
