//! Events from documents that were not written for logmesh: a JSON object of any shape (a
//! Docker json-file line, an Elasticsearch document, a log library's record) becomes an event
//! through a [`FieldMap`], which names the fields that hold the message, the timestamp, the
//! service, the severity and the id. Everything else is kept as attributes.
//!
//! Attributes are flat, so nested objects are flattened with dotted keys
//! (`{"log":{"level":"warn"}}` → `log.level`), and arrays are kept as their JSON text. A field
//! is looked up by its dotted key, so `log.level` names both `{"log.level": …}` and
//! `{"log": {"level": …}}`.

use super::parse::{
    InputError, Location, check_name, new_id, parse_timestamp, severity_of, stored_attributes,
};
use super::{Event, IngestContext, Severity};
use serde_json::{Map, Value};

/// Which fields make which part of an event; each list is tried in order, the first present
/// field wins (and is not kept as an attribute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    pub message: Vec<String>,
    pub timestamp: Vec<String>,
    pub service: Vec<String>,
    pub severity: Vec<String>,
    pub id: Vec<String>,
    /// The service of a document that has none of the service fields; without it such a
    /// document is refused.
    pub default_service: Option<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

impl FieldMap {
    /// The usual field names of log shippers and libraries (Elastic Common Schema, Docker,
    /// logfmt-style JSON loggers).
    pub fn common() -> FieldMap {
        FieldMap {
            message: names(&["message", "msg", "log", "_msg"]),
            timestamp: names(&["@timestamp", "timestamp", "time", "ts", "_time"]),
            service: names(&["service", "service.name", "app", "application", "job"]),
            severity: names(&["level", "severity", "log.level", "levelname", "loglevel"]),
            id: Vec::new(),
            default_service: None,
        }
    }

    /// Turns one document into an event, or says what is wrong with it at `location`.
    pub fn event_from_document(
        &self,
        document: Map<String, Value>,
        location: &Location,
        ctx: IngestContext<'_>,
    ) -> Result<Event, InputError> {
        let mut fields = flattened(document)
            .map_err(|message| InputError::new(location.clone(), None, message))?;
        let error = |field: &str, message: String| {
            InputError::new(
                location.clone(),
                None,
                format!("field `{field}`: {message}"),
            )
        };
        let mut take = |candidates: &[String]| -> Option<(String, Value)> {
            candidates.iter().find_map(|name| {
                fields
                    .remove(name)
                    .filter(|value| !value.is_null())
                    .map(|value| (name.clone(), value))
            })
        };
        let message = match take(&self.message) {
            Some((_, Value::String(text))) => text,
            Some((_, other)) => other.to_string(),
            None => {
                return Err(InputError::new(
                    location.clone(),
                    None,
                    format!(
                        "no message: none of the fields {} is present",
                        listed(&self.message)
                    ),
                ));
            }
        };
        let ts_us = match take(&self.timestamp) {
            None => ctx.now_us,
            Some((name, value)) => {
                let ts_us = parse_timestamp(&value).map_err(|m| error(&name, m))?;
                ctx.check_time(ts_us).map_err(|m| error(&name, m))?
            }
        };
        let service = match take(&self.service) {
            Some((name, Value::String(service))) => {
                check_name(&service).map_err(|m| error(&name, m))?;
                service
            }
            Some((name, other)) => {
                return Err(error(&name, format!("expected a string, found {other}")));
            }
            None => match &self.default_service {
                Some(service) => service.clone(),
                None => {
                    return Err(InputError::new(
                        location.clone(),
                        None,
                        format!(
                            "no service: none of the fields {} is present (name a default \
                             service to use for such documents)",
                            listed(&self.service)
                        ),
                    ));
                }
            },
        };
        let severity = match take(&self.severity) {
            None => Severity::Info,
            Some((name, value)) => severity_of(&value).map_err(|m| error(&name, m))?,
        };
        let id = match take(&self.id) {
            None => new_id(),
            Some((name, Value::String(id))) => {
                check_name(&id).map_err(|m| error(&name, m))?.to_owned()
            }
            Some((name, other)) => {
                return Err(error(&name, format!("expected a string, found {other}")));
            }
        };
        let attributes = stored_attributes(&fields);
        Ok(ctx.event(id, ts_us, service, severity, message, attributes))
    }
}

fn listed(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `document` with nested objects flattened into dotted keys and arrays kept as JSON text
/// (see [`flatten`]), or why it cannot be.
pub(crate) fn flattened(document: Map<String, Value>) -> Result<Map<String, Value>, &'static str> {
    // Most documents are flat already: nothing to rebuild.
    if !document
        .values()
        .any(|value| value.is_object() || value.is_array())
    {
        return Ok(document);
    }
    let mut fields = Map::new();
    let mut room = flattened_room(&document);
    flatten("", document, &mut fields, &mut room).map_err(|()| {
        "its nested field names grow too long when flattened (a long name over many fields): \
         flatten the document, or shorten the outer names"
    })?;
    Ok(fields)
}

/// How many bytes of dotted names flattening `document` may produce: four times the bytes of
/// its own field names, and 1 KiB. A dotted name repeats its prefixes, so a long name over many
/// nested fields would otherwise grow a small document into gigabytes of names.
fn flattened_room(document: &Map<String, Value>) -> usize {
    fn name_bytes(object: &Map<String, Value>) -> usize {
        object
            .iter()
            .map(|(key, value)| {
                key.len()
                    + match value {
                        Value::Object(inner) => name_bytes(inner),
                        _ => 0,
                    }
            })
            .sum()
    }
    name_bytes(document).saturating_mul(4).saturating_add(1024)
}

/// Flattens `object` into `into` with dotted keys: nested objects are walked, arrays are kept
/// as their JSON text, empty keys stay as they are. Fails once the names take more than
/// `room` bytes.
fn flatten(
    prefix: &str,
    object: Map<String, Value>,
    into: &mut Map<String, Value>,
    room: &mut usize,
) -> Result<(), ()> {
    for (key, value) in object {
        let key = if prefix.is_empty() {
            key
        } else {
            let length = prefix.len() + 1 + key.len();
            if length > *room {
                return Err(());
            }
            format!("{prefix}.{key}")
        };
        *room = room.checked_sub(key.len()).ok_or(())?;
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(&key, inner, into, room)?,
            Value::Object(_) => {
                into.insert(key, Value::String("{}".into()));
            }
            Value::Array(items) => {
                into.insert(key, Value::String(Value::Array(items).to_string()));
            }
            scalar => {
                into.insert(key, scalar);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> IngestContext<'static> {
        IngestContext {
            node: "n1",
            now_us: 1_796_000_000_000_000,
            oldest_us: i64::MIN,
        }
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_docker_json_file_line_becomes_an_event() {
        let mut fields = FieldMap::common();
        fields.default_service = Some("web".into());
        let event = fields
            .event_from_document(
                map(json!({"log": "GET / 200\n", "stream": "stdout", "time": "2026-11-23T10:15:00.123456789Z"})),
                &Location::Line(1),
                ctx(),
            )
            .unwrap();
        assert_eq!(event.message, "GET / 200\n");
        assert_eq!(event.service, "web");
        assert_eq!(event.severity, Severity::Info);
        assert_eq!(event.ts_us, 1_795_428_900_123_456);
        assert_eq!(event.attributes_json(), Some(r#"{"stream":"stdout"}"#));
    }

    #[test]
    fn nested_fields_are_found_by_dotted_name_and_the_rest_flattened() {
        let event = FieldMap::common()
            .event_from_document(
                map(json!({
                    "@timestamp": 1_795_428_900_500_i64,
                    "message": "paid",
                    "service": {"name": "checkout", "version": "1.2"},
                    "log": {"level": "WARNING"},
                    "tags": ["a", "b"],
                    "http": {"status": 502, "ok": false, "empty": {}},
                })),
                &Location::Item(1),
                ctx(),
            )
            .unwrap();
        assert_eq!(event.service, "checkout");
        assert_eq!(event.severity, Severity::Warn);
        assert_eq!(event.ts_us, 1_795_428_900_500_000);
        let attributes: Value = serde_json::from_str(event.attributes_json().unwrap()).unwrap();
        assert_eq!(
            attributes,
            json!({"service.version": "1.2", "tags": "[\"a\",\"b\"]", "http.status": 502,
                   "http.ok": false, "http.empty": "{}"})
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_refused_naming_the_fields() {
        let fields = FieldMap::common();
        let refused = |document: Value| {
            fields
                .event_from_document(map(document), &Location::Line(3), ctx())
                .unwrap_err()
                .to_string()
        };
        let no_message = refused(json!({"service": "a"}));
        assert!(no_message.starts_with("line 3: no message"), "{no_message}");
        assert!(no_message.contains("`msg`"), "{no_message}");
        let no_service = refused(json!({"message": "m"}));
        assert!(no_service.contains("no service"), "{no_service}");
        let bad_level = refused(json!({"message": "m", "service": "a", "level": "loud"}));
        assert!(bad_level.contains("field `level`"), "{bad_level}");
        let bad_time = refused(json!({"message": "m", "service": "a", "time": "yesterday"}));
        assert!(bad_time.contains("field `time`"), "{bad_time}");
        let bad_service = refused(json!({"message": "m", "service": "a b"}));
        assert!(bad_service.contains("field `service`"), "{bad_service}");
    }

    #[test]
    fn long_names_over_many_fields_are_refused_before_they_grow() {
        let mut fields = FieldMap::common();
        fields.default_service = Some("x".into());
        let children: Map<String, Value> =
            (0..10_000).map(|i| (format!("a{i}"), json!(0))).collect();
        let mut document = Map::new();
        document.insert("k".repeat(100_000), Value::Object(children));
        document.insert("message".into(), json!("m"));
        let error = fields
            .event_from_document(document, &Location::Line(1), ctx())
            .unwrap_err()
            .to_string();
        assert!(error.contains("too long when flattened"), "{error}");
        // Ordinary nesting, such as the Elastic Common Schema's, is well within the room.
        let ecs = map(
            json!({"message": "m", "http": {"request": {"method": "GET", "bytes": 12},
            "response": {"status_code": 200}}, "kubernetes": {"labels": {"app.kubernetes.io/name": "web"}}}),
        );
        assert!(
            fields
                .event_from_document(ecs, &Location::Line(1), ctx())
                .is_ok()
        );
    }

    #[test]
    fn a_non_string_message_is_kept_as_json() {
        let mut fields = FieldMap::common();
        fields.default_service = Some("x".into());
        let event = fields
            .event_from_document(map(json!({"msg": 42})), &Location::Body, ctx())
            .unwrap();
        assert_eq!(event.message, "42");
        assert!(event.attributes.is_none());
    }
}
