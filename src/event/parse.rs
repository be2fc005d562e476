//! Turns request bodies into [`Event`]s: raw text (`POST /event`) and JSON in its three forms
//! (one object, an array, NDJSON; `POST /api/v1/logs`), of logmesh's own event fields or of any
//! fields through a [`FieldMap`].
//!
//! A body is accepted whole or rejected whole: the first problem found is returned as an
//! [`InputError`] that names the line (or array item) and the field, and no event is produced.

use super::mapped::FieldMap;
use super::{Event, MAX_NAME_BYTES, Severity};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What the accepting node adds to every event it parses.
#[derive(Debug, Clone, Copy)]
pub struct IngestContext<'a> {
    pub node: &'a str,
    /// Receive time in epoch microseconds; also the default event timestamp.
    pub now_us: i64,
    /// The start of the node's retention period (`--retention`), epoch µs: events with an
    /// older timestamp are refused. `i64::MIN` without one.
    pub oldest_us: i64,
}

impl IngestContext<'_> {
    /// An event's own timestamp, refused when it is more than [`MAX_FUTURE`] ahead of the
    /// node's clock or older than its retention period.
    pub fn check_time(&self, ts_us: i64) -> Result<i64, String> {
        let ts_us = check_not_future(ts_us, self.now_us)?;
        if ts_us < self.oldest_us {
            return Err(format!(
                "{} is before {}, the start of this node's retention period (--retention): \
                 events older than that are not kept (--late-events expire takes them and \
                 counts them as expired instead)",
                super::format_us(ts_us),
                super::format_us(self.oldest_us)
            ));
        }
        Ok(ts_us)
    }

    /// An event this node accepts now: its node and receive time come from the context.
    pub fn event(
        &self,
        id: String,
        ts_us: i64,
        service: String,
        severity: Severity,
        message: String,
        attributes: Option<Box<RawValue>>,
    ) -> Event {
        Event {
            id,
            ts_us,
            service,
            severity,
            message,
            attributes,
            node: self.node.to_owned(),
            received_us: self.now_us,
        }
    }
}

/// Where in the input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Body,
    /// 1-based line of the body where the offending JSON object starts.
    Line(usize),
    /// 1-based position in a JSON array.
    Item(usize),
    /// A query-string parameter.
    Query(&'static str),
}

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub location: Location,
    pub field: Option<&'static str>,
    pub message: String,
}

impl InputError {
    pub(crate) fn new(
        location: Location,
        field: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        InputError {
            location,
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Body => f.write_str("body")?,
            Location::Line(line) => write!(f, "line {line}")?,
            Location::Item(item) => write!(f, "array item {item}")?,
            Location::Query(name) => write!(f, "query parameter `{name}`")?,
        }
        if let Some(field) = self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for InputError {}

/// Fields a client may send; anything else is rejected so that typos do not vanish silently.
const KNOWN_FIELDS: &str = "id, timestamp, service, severity, message, attributes";

/// Parses a raw-text body as one event (`POST /event`). One trailing newline is dropped.
pub fn parse_raw_body(
    body: &[u8],
    service: Option<&str>,
    severity: Option<&str>,
    ctx: IngestContext<'_>,
) -> Result<Event, InputError> {
    let text = std::str::from_utf8(body).map_err(|error| {
        InputError::new(
            Location::Body,
            None,
            format!(
                "not valid UTF-8 (first bad byte at offset {})",
                error.valid_up_to()
            ),
        )
    })?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(InputError::new(
            Location::Body,
            None,
            "empty: send the log message as the request body",
        ));
    }
    let service = match service {
        Some(service) => check_name(service)
            .map_err(|message| InputError::new(Location::Query("service"), None, message))?
            .to_owned(),
        None => "default".to_owned(),
    };
    let severity = match severity {
        Some(text) => Severity::from_name(text).ok_or_else(|| {
            InputError::new(Location::Query("severity"), None, unknown_severity(text))
        })?,
        None => Severity::Info,
    };
    Ok(ctx.event(
        new_id(),
        ctx.now_us,
        service,
        severity,
        text.to_owned(),
        None,
    ))
}

/// Parses a JSON body: one object, an array of objects, or NDJSON (objects separated by
/// whitespace, normally one per line).
pub fn parse_json_body(body: &[u8], ctx: IngestContext<'_>) -> Result<Vec<Event>, InputError> {
    parse_documents(body, &|fields, location| {
        event_from_fields(fields, location, ctx)
    })
}

/// Parses a JSON body of documents of any shape (one object, an array, or NDJSON), each made an
/// event through `fields` (see [`FieldMap`]).
pub fn parse_mapped_body(
    body: &[u8],
    fields: &FieldMap,
    ctx: IngestContext<'_>,
) -> Result<Vec<Event>, InputError> {
    parse_documents(body, &|document, location| {
        fields.event_from_document(document, location, ctx)
    })
}

/// Turns one JSON object found at a location into an event.
type ToEvent<'a> = dyn Fn(Map<String, Value>, &Location) -> Result<Event, InputError> + 'a;

fn parse_documents(body: &[u8], to_event: &ToEvent<'_>) -> Result<Vec<Event>, InputError> {
    if let Err(error) = std::str::from_utf8(body) {
        let offset = error.valid_up_to();
        return Err(InputError::new(
            Location::Line(line_of(body, offset)),
            None,
            format!("not valid UTF-8 (first bad byte at offset {offset})"),
        ));
    }
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    let events = match first.map(|at| body[at]) {
        None => {
            return Err(InputError::new(
                Location::Body,
                None,
                "no events: body is empty",
            ));
        }
        Some(b'[') => parse_array(body, to_event)?,
        Some(_) => parse_stream(body, to_event)?,
    };
    if events.is_empty() {
        return Err(InputError::new(
            Location::Body,
            None,
            "no events: the array is empty",
        ));
    }
    Ok(events)
}

fn parse_array(body: &[u8], to_event: &ToEvent<'_>) -> Result<Vec<Event>, InputError> {
    let items: Vec<Value> = serde_json::from_slice(body).map_err(|error| syntax_error(&error))?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let location = Location::Item(index + 1);
            match item {
                Value::Object(fields) => to_event(fields, &location),
                other => Err(InputError::new(
                    location,
                    None,
                    format!("expected a JSON object, found {}", kind_of(&other)),
                )),
            }
        })
        .collect()
}

fn parse_stream(body: &[u8], to_event: &ToEvent<'_>) -> Result<Vec<Event>, InputError> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let mut events = Vec::new();
    let mut line = 1;
    let mut counted_to = 0;
    loop {
        // The next value starts after the whitespace following the previous one.
        let start = stream.byte_offset()
            + body[stream.byte_offset()..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        line += count_newlines(&body[counted_to..start]);
        counted_to = start;
        let Some(next) = stream.next() else { break };
        let value = next.map_err(|error| syntax_error(&error))?;
        let location = Location::Line(line);
        match value {
            Value::Object(fields) => events.push(to_event(fields, &location)?),
            other => {
                return Err(InputError::new(
                    location,
                    None,
                    format!("expected a JSON object, found {}", kind_of(&other)),
                ));
            }
        }
    }
    Ok(events)
}

fn count_newlines(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

fn line_of(body: &[u8], offset: usize) -> usize {
    1 + count_newlines(&body[..offset.min(body.len())])
}

fn syntax_error(error: &serde_json::Error) -> InputError {
    let message = error.to_string();
    // serde_json appends " at line L column C"; we report the line ourselves.
    let message = message
        .rsplit_once(" at line ")
        .map(|(head, _)| head.to_owned())
        .unwrap_or(message);
    let column = error.column();
    InputError::new(
        Location::Line(error.line().max(1)),
        None,
        format!("invalid JSON at column {column}: {message}"),
    )
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn event_from_fields(
    mut fields: Map<String, Value>,
    location: &Location,
    ctx: IngestContext<'_>,
) -> Result<Event, InputError> {
    let error = |field: &'static str, message: String| {
        InputError::new(location.clone(), Some(field), message)
    };
    let mut take = |name: &str| fields.remove(name).filter(|value| !value.is_null());

    let id = match take("id") {
        None => new_id(),
        Some(Value::String(id)) => check_name(&id).map_err(|m| error("id", m))?.to_owned(),
        Some(other) => return Err(error("id", expected("a string", &other))),
    };
    let ts_us = match take("timestamp") {
        None => ctx.now_us,
        Some(value) => {
            let ts_us = parse_timestamp(&value).map_err(|m| error("timestamp", m))?;
            ctx.check_time(ts_us).map_err(|m| error("timestamp", m))?
        }
    };
    let service = match take("service") {
        None => {
            return Err(error(
                "service",
                "missing (every JSON event names its service)".into(),
            ));
        }
        Some(Value::String(service)) => {
            check_name(&service).map_err(|m| error("service", m))?;
            service
        }
        Some(other) => return Err(error("service", expected("a string", &other))),
    };
    let severity = match take("severity") {
        None => Severity::Info,
        Some(value) => severity_of(&value).map_err(|m| error("severity", m))?,
    };
    let message = match take("message") {
        None => return Err(error("message", "missing".into())),
        Some(Value::String(message)) => message,
        Some(other) => return Err(error("message", expected("a string", &other))),
    };
    let attributes = match take("attributes") {
        None => None,
        Some(Value::Object(attributes)) => {
            Some(check_attributes(attributes).map_err(|m| error("attributes", m))?)
        }
        Some(other) => return Err(error("attributes", expected("a flat JSON object", &other))),
    };
    if let Some(unknown) = fields.keys().next() {
        let message = if unknown == "node" {
            "is set by the node that accepts the event and cannot be sent".to_owned()
        } else {
            format!(
                "unknown field (known fields: {KNOWN_FIELDS}; put custom fields in `attributes`)"
            )
        };
        return Err(InputError::new(
            location.clone(),
            None,
            format!("field `{unknown}` {message}"),
        ));
    }
    Ok(ctx.event(id, ts_us, service, severity, message, attributes))
}

/// A severity given as a name or alias, or as a syslog number (0–7).
pub(crate) fn severity_of(value: &Value) -> Result<Severity, String> {
    match value {
        Value::String(text) => Severity::from_name(text).ok_or_else(|| unknown_severity(text)),
        Value::Number(number) => number
            .as_u64()
            .and_then(Severity::from_syslog)
            .ok_or_else(|| unknown_severity(&number.to_string())),
        other => Err(expected("a string", other)),
    }
}

/// A JSON object as stored attributes; `None` when it is empty.
pub(crate) fn stored_attributes(fields: &Map<String, Value>) -> Option<Box<RawValue>> {
    (!fields.is_empty()).then(|| {
        let text = serde_json::to_string(fields).expect("a JSON map serializes");
        RawValue::from_string(text).expect("serialized JSON is valid")
    })
}

pub(crate) fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", kind_of(found))
}

pub(crate) fn unknown_severity(text: &str) -> String {
    format!(
        "unknown severity `{text}` (expected trace, debug, info, warn, error or fatal, \
         an alias such as warning, err or critical, or a syslog number 0-7)"
    )
}

/// Largest timestamp accepted: 9999-12-31T23:59:59.999Z in epoch milliseconds.
const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// How far after the receiving node's clock an event's timestamp may lie (VictoriaLogs'
/// default too): a clock a little fast is tolerated; a timestamp years ahead is a mistake that
/// would sort the event before every real one, forever.
pub const MAX_FUTURE: std::time::Duration = std::time::Duration::from_secs(2 * 24 * 3600);

/// Refuses a timestamp more than [`MAX_FUTURE`] after `now_us`.
pub fn check_not_future(ts_us: i64, now_us: i64) -> Result<i64, String> {
    let latest = now_us.saturating_add(MAX_FUTURE.as_micros() as i64);
    if ts_us > latest {
        return Err(format!(
            "{} is more than 2 days after this node's clock ({}); events from the future are \
             refused: check the sender's clock",
            super::format_us(ts_us),
            super::format_us(now_us)
        ));
    }
    Ok(ts_us)
}

pub fn parse_timestamp(value: &Value) -> Result<i64, String> {
    match value {
        Value::String(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000) as i64)
            .map_err(|_| {
                format!(
                    "`{text}` is not an RFC 3339 timestamp (e.g. 2026-11-23T10:15:00Z or \
                     2026-11-23T11:15:00.5+01:00); epoch milliseconds go as a number"
                )
            })
            .and_then(|us| {
                if us < 0 {
                    Err(format!("`{text}` is before 1970"))
                } else if us > MAX_EPOCH_MS * 1_000 + 999 {
                    Err(format!("`{text}` is after 9999-12-31T23:59:59Z"))
                } else {
                    Ok(us)
                }
            }),
        Value::Number(number) => match number.as_i64() {
            Some(ms) if (0..=MAX_EPOCH_MS).contains(&ms) => Ok(ms * 1_000),
            Some(ms) => Err(format!(
                "epoch milliseconds {ms} are out of range (0 to {MAX_EPOCH_MS})"
            )),
            None => Err(format!(
                "epoch milliseconds must be a whole number, found {number}"
            )),
        },
        other => Err(expected("an RFC 3339 string or epoch milliseconds", other)),
    }
}

/// Parses a timestamp given as text (a query parameter, a flag): RFC 3339, or epoch
/// milliseconds when it is a whole number, with the same rules and messages as the `timestamp`
/// field of a JSON event. Answers epoch microseconds.
pub fn parse_timestamp_text(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(ms) => parse_timestamp(&Value::from(ms)),
        Err(_) => parse_timestamp(&Value::String(text.to_owned())),
    }
}

/// Checks an id or service name: 1 to [`MAX_NAME_BYTES`] bytes, no whitespace or control
/// characters (they would make the event log file and later labels ambiguous).
pub fn check_name(name: &str) -> Result<&str, String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` contains whitespace or a control character ({:?})",
            name.escape_debug(),
            bad
        ));
    }
    Ok(name)
}

fn check_attributes(attributes: Map<String, Value>) -> Result<Box<RawValue>, String> {
    for (key, value) in &attributes {
        if key.is_empty() {
            return Err("attribute names must not be empty".into());
        }
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            return Err(format!(
                "attribute `{key}` holds {}; attributes are flat (strings, numbers, booleans, null)",
                kind_of(value)
            ));
        }
    }
    let text = serde_json::to_string(&attributes).map_err(|e| e.to_string())?;
    RawValue::from_string(text).map_err(|e| e.to_string())
}

/// A new event id: a UUIDv7, so generated ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: IngestContext<'static> = IngestContext {
        node: "n1",
        now_us: 1_800_000_000_000_000,
        oldest_us: i64::MIN,
    };

    fn parse(body: &str) -> Result<Vec<Event>, InputError> {
        parse_json_body(body.as_bytes(), CTX)
    }

    #[test]
    fn a_timestamp_older_than_the_retention_period_is_refused() {
        let ctx = IngestContext {
            oldest_us: CTX.now_us - 3_600_000_000,
            ..CTX
        };
        assert_eq!(ctx.check_time(CTX.now_us - 1), Ok(CTX.now_us - 1));
        assert_eq!(ctx.check_time(ctx.oldest_us), Ok(ctx.oldest_us));
        let error = ctx.check_time(ctx.oldest_us - 1).unwrap_err();
        assert!(error.contains("--retention"), "{error}");
        let body = r#"{"message":"m","timestamp":"2020-01-01T00:00:00Z"}"#;
        let error = parse_json_body(body.as_bytes(), ctx)
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1, field `timestamp`"), "{error}");
        assert!(error.contains("retention period"), "{error}");
        // Without a timestamp an event is as old as its arrival: always within.
        let parsed = parse_json_body(br#"{"service":"s","message":"m"}"#, ctx);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn timestamps_as_text_are_rfc3339_or_epoch_milliseconds() {
        assert_eq!(
            parse_timestamp_text("2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500_000)
        );
        assert_eq!(
            parse_timestamp_text("1700000000500"),
            Ok(1_700_000_000_500_000)
        );
        assert!(parse_timestamp_text("-1").is_err());
        assert!(
            parse_timestamp_text("yesterday")
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    fn rejection(body: &str) -> String {
        parse(body)
            .expect_err("body should be rejected")
            .to_string()
    }

    #[test]
    fn one_object_becomes_one_event_with_defaults() {
        let events = parse(r#"{"service":"api","message":"hello"}"#).unwrap();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.service, "api");
        assert_eq!(event.message, "hello");
        assert_eq!(event.severity, Severity::Info);
        assert_eq!(event.ts_us, CTX.now_us);
        assert_eq!(event.node, "n1");
        assert!(uuid::Uuid::parse_str(&event.id).is_ok());
    }

    #[test]
    fn every_field_is_read() {
        let events = parse(
            r#"{"id":"abc-1","timestamp":"2026-11-23T11:15:00.5+01:00","service":"api",
                "severity":"WARNING","message":"m","attributes":{"user":"ann","code":7,"ok":true,"x":null}}"#,
        )
        .unwrap();
        let event = &events[0];
        assert_eq!(event.id, "abc-1");
        assert_eq!(event.ts_us, 1_795_428_900_500_000, "2026-11-23T10:15:00.5Z");
        assert_eq!(event.severity, Severity::Warn);
        assert_eq!(
            event.attributes_json(),
            Some(r#"{"code":7,"ok":true,"user":"ann","x":null}"#)
        );
    }

    #[test]
    fn epoch_milliseconds_and_syslog_numbers_are_accepted() {
        let events =
            parse(r#"{"service":"a","message":"m","timestamp":1700000000123,"severity":3}"#)
                .unwrap();
        assert_eq!(events[0].ts_us, 1_700_000_000_123_000);
        assert_eq!(events[0].severity, Severity::Error);
    }

    #[test]
    fn arrays_and_ndjson_keep_their_order() {
        let array =
            parse(r#"[{"service":"a","message":"1"},{"service":"b","message":"2"}]"#).unwrap();
        assert_eq!(
            array.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["1", "2"]
        );
        let ndjson = parse(
            "{\"service\":\"a\",\"message\":\"1\"}\n\n{\"service\":\"b\",\"message\":\"2\"}\n",
        )
        .unwrap();
        assert_eq!(ndjson.len(), 2);
        assert_eq!(ndjson[1].service, "b");
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let body = "{\"service\":\"a\",\"message\":\"1\"}\n{\"service\":\"a\",\"message\":\"2\"}\n\n{\"service\":\"a\",\"message\":\"3\",\"severity\":\"loud\"}\n";
        let error = parse(body).unwrap_err();
        assert_eq!(error.location, Location::Line(4));
        assert_eq!(error.field, Some("severity"));
        assert!(
            error
                .to_string()
                .starts_with("line 4, field `severity`: unknown severity `loud`")
        );
    }

    #[test]
    fn array_errors_name_the_item() {
        let error = parse(r#"[{"service":"a","message":"1"},{"message":"2"}]"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "array item 2, field `service`: missing (every JSON event names its service)"
        );
    }

    #[test]
    fn bad_inputs_are_rejected_with_their_reason() {
        let cases = [
            ("", "body: no events: body is empty"),
            ("  \n ", "body: no events: body is empty"),
            ("[]", "body: no events: the array is empty"),
            (r#"{"service":"a"}"#, "line 1, field `message`: missing"),
            (
                r#"{"service":"a","message":5}"#,
                "line 1, field `message`: expected a string, found a number",
            ),
            (
                r#"{"service":"","message":"m"}"#,
                "line 1, field `service`: must not be empty",
            ),
            (
                r#"{"service":"a b","message":"m"}"#,
                "line 1, field `service`: `a b` contains whitespace",
            ),
            (
                r#"{"service":"a","message":"m","severity":9}"#,
                "line 1, field `severity`: unknown severity `9`",
            ),
            (
                r#"{"service":"a","message":"m","severity":true}"#,
                "line 1, field `severity`: expected a string",
            ),
            (
                r#"{"service":"a","message":"m","timestamp":"yesterday"}"#,
                "line 1, field `timestamp`: `yesterday` is not an RFC 3339",
            ),
            (
                r#"{"service":"a","message":"m","timestamp":1.5}"#,
                "line 1, field `timestamp`: epoch milliseconds must be a whole number",
            ),
            (
                r#"{"service":"a","message":"m","timestamp":-1}"#,
                "line 1, field `timestamp`: epoch milliseconds -1 are out of range",
            ),
            (
                r#"{"service":"a","message":"m","timestamp":"1969-12-31T23:59:59Z"}"#,
                "line 1, field `timestamp`: `1969-12-31T23:59:59Z` is before 1970",
            ),
            (
                r#"{"service":"a","message":"m","timestamp":"9999-12-31T23:59:59-23:59"}"#,
                "line 1, field `timestamp`: `9999-12-31T23:59:59-23:59` is after 9999-12-31",
            ),
            (
                r#"{"service":"a","message":"m","timestamp":"2100-01-01T00:00:00Z"}"#,
                "line 1, field `timestamp`: 2100-01-01T00:00:00Z is more than 2 days after",
            ),
            (
                r#"{"service":"a","message":"m","timestamp":253402300799999}"#,
                "line 1, field `timestamp`: 9999-12-31T23:59:59.999Z is more than 2 days after",
            ),
            (
                r#"{"service":"a","message":"m","attributes":[1]}"#,
                "line 1, field `attributes`: expected a flat JSON object",
            ),
            (
                r#"{"service":"a","message":"m","attributes":{"k":{"n":1}}}"#,
                "line 1, field `attributes`: attribute `k` holds an object",
            ),
            (
                r#"{"service":"a","message":"m","id":""}"#,
                "line 1, field `id`: must not be empty",
            ),
            (
                r#"{"service":"a","message":"m","id":7}"#,
                "line 1, field `id`: expected a string",
            ),
            (
                r#"{"service":"a","message":"m","sevrity":"info"}"#,
                "line 1: field `sevrity` unknown field",
            ),
            (
                r#"{"service":"a","message":"m","node":"x"}"#,
                "line 1: field `node` is set by the node",
            ),
            (
                "{\"service\":\"a\",\"message\":\"m\"}\n{\"service\":",
                "line 2: invalid JSON",
            ),
            (
                "{\"service\":\"a\",\"message\":\"m\"}\n7\n",
                "line 2: expected a JSON object, found a number",
            ),
            (
                r#"[{"service":"a","message":"m"}, "x"]"#,
                "array item 2: expected a JSON object, found a string",
            ),
        ];
        for (body, expected) in cases {
            let message = rejection(body);
            assert!(
                message.starts_with(expected),
                "body {body:?}: got {message:?}, expected {expected:?}"
            );
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let message = rejection(&format!(r#"{{"service":"{long}","message":"m"}}"#));
        assert!(message.contains("at most 128"), "{message}");
    }

    #[test]
    fn invalid_utf8_is_rejected_with_its_line() {
        let mut body =
            b"{\"service\":\"a\",\"message\":\"ok\"}\n{\"service\":\"a\",\"message\":\"".to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(b"\"}\n");
        let error = parse_json_body(&body, CTX).unwrap_err();
        assert_eq!(error.location, Location::Line(2));
        assert!(error.message.contains("not valid UTF-8"));
    }

    #[test]
    fn raw_bodies_become_one_event() {
        let event =
            parse_raw_body(b"disk full\nsecond line\n", Some("db"), Some("crit"), CTX).unwrap();
        assert_eq!(event.message, "disk full\nsecond line");
        assert_eq!(event.service, "db");
        assert_eq!(event.severity, Severity::Fatal);
        let plain = parse_raw_body(b"hello", None, None, CTX).unwrap();
        assert_eq!(
            (plain.service.as_str(), plain.severity),
            ("default", Severity::Info)
        );
    }

    #[test]
    fn bad_raw_bodies_are_rejected() {
        assert_eq!(
            parse_raw_body(b"", None, None, CTX)
                .unwrap_err()
                .to_string(),
            "body: empty: send the log message as the request body"
        );
        assert!(
            parse_raw_body(&[0x66, 0xff], None, None, CTX)
                .unwrap_err()
                .to_string()
                .starts_with("body: not valid UTF-8")
        );
        assert!(
            parse_raw_body(b"m", None, Some("loud"), CTX)
                .unwrap_err()
                .to_string()
                .starts_with("query parameter `severity`: unknown severity `loud`")
        );
        assert!(
            parse_raw_body(b"m", Some(""), None, CTX)
                .unwrap_err()
                .to_string()
                .starts_with("query parameter `service`: must not be empty")
        );
    }
}
