//! Checking a `POST /api/v1/work` body and deriving its callback.
//!
//! `{"data": "foo"}` alone is a search for `foo`, and its callback is the upper-case hex MD5 of
//! the data itself (`foo` → `ACBD18DB4CC2F85CEDEF654FCCC4A4D8`), as in the CQRS seed. A search
//! whose data is an object hashes the data's canonical JSON (keys sorted, no spaces); every
//! other kind hashes the canonical request `{"data":…,"kind":…}`. Identical work therefore
//! always gets the same callback, however its JSON was spelled.

use super::WorkError;
use crate::event::Severity;
use crate::event::parse::parse_timestamp;
use crate::store::{MAX_SEARCH_LIMIT, SearchQuery};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Events a search job returns when its data does not say.
pub const DEFAULT_SEARCH_CAP: u64 = 1000;
/// Most events a search job may return (an export has no cap: it streams).
pub const MAX_SEARCH_CAP: u64 = 10_000;
/// Largest submission body.
pub const MAX_SUBMISSION_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Search,
    Count,
    Export,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Search => "search",
            Kind::Count => "count",
            Kind::Export => "export",
        }
    }

    /// The result's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Search | Kind::Count => "application/json",
            Kind::Export => "application/x-ndjson",
        }
    }
}

/// What a count groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub service: bool,
    pub severity: bool,
}

/// A checked job, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Matching events, newest first, at most `cap`.
    Search { filter: SearchQuery, cap: u64 },
    /// Matching events counted per group.
    Count { filter: SearchQuery, by: GroupBy },
    /// Every matching event, newest first, as NDJSON.
    Export { filter: SearchQuery },
}

impl Job {
    pub fn kind(&self) -> Kind {
        match self {
            Job::Search { .. } => Kind::Search,
            Job::Count { .. } => Kind::Count,
            Job::Export { .. } => Kind::Export,
        }
    }

    /// Checks `data` for `kind`: what a worker will run.
    pub fn parse(kind: Kind, data: &Value) -> Result<Job, WorkError> {
        let invalid = |message: String| WorkError::Invalid(format!("`data`: {message}"));
        match (kind, data) {
            (Kind::Search | Kind::Export, Value::String(_)) | (_, Value::Object(_)) => {}
            (Kind::Count, _) => {
                return Err(invalid(format!(
                    "a count takes an object such as {{\"by\": [\"service\"], \"since\": \
                     \"2026-11-23T00:00:00Z\"}}, found {}",
                    type_name(data)
                )));
            }
            _ => {
                return Err(invalid(format!(
                    "a {} takes a keyword string or an object of filters, found {}",
                    kind.as_str(),
                    type_name(data)
                )));
            }
        }
        let empty = Map::new();
        let (fields, keyword) = match data {
            Value::String(keyword) => (&empty, Some(keyword.clone())),
            Value::Object(fields) => (fields, None),
            _ => unreachable!("checked above"),
        };
        let allowed: &[&str] = match kind {
            Kind::Search => &[
                "q",
                "service",
                "severity",
                "since",
                "until",
                "attributes",
                "limit",
            ],
            Kind::Count => &[
                "q",
                "service",
                "severity",
                "since",
                "until",
                "attributes",
                "by",
            ],
            Kind::Export => &["q", "service", "severity", "since", "until", "attributes"],
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(format!(
                "unknown field `{unknown}` for a {} (expected one of {})",
                kind.as_str(),
                allowed.join(", ")
            )));
        }
        let text = |name: &str| -> Result<Option<String>, WorkError> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.clone())),
                Some(other) => Err(invalid(format!(
                    "`{name}` must be a string, found {}",
                    type_name(other)
                ))),
            }
        };
        let time = |name: &str| -> Result<Option<i64>, WorkError> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => parse_timestamp(value)
                    .map(Some)
                    .map_err(|e| invalid(format!("`{name}`: {e}"))),
            }
        };
        let q = keyword.or(text("q")?).filter(|q| !q.trim().is_empty());
        if kind == Kind::Search && q.is_none() && data.is_string() {
            return Err(invalid("the keyword to search for is empty".into()));
        }
        let severity = text("severity")?
            .map(|name| {
                Severity::from_name(&name).ok_or_else(|| {
                    invalid(format!(
                        "`severity`: unknown severity `{name}` (expected trace, debug, info, \
                         warn, error or fatal; it is a minimum)"
                    ))
                })
            })
            .transpose()?;
        let service = text("service")?;
        if service.as_deref() == Some("") {
            return Err(invalid("`service` must not be empty".into()));
        }
        let attributes = match fields.get("attributes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(attributes)) => attributes
                .iter()
                .map(|(name, value)| match value {
                    Value::String(text) => Ok((name.clone(), text.clone())),
                    other => Err(invalid(format!(
                        "`attributes.{name}` must be a string (numbers and booleans as their \
                         JSON text), found {}",
                        type_name(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "`attributes` must be an object of exact values, found {}",
                    type_name(other)
                )));
            }
        };
        let filter = SearchQuery {
            q,
            service,
            severity,
            since: time("since")?,
            until: time("until")?,
            limit: MAX_SEARCH_LIMIT,
            cursor: None,
            attributes,
        };
        filter.check().map_err(|e| invalid(e.to_string()))?;
        Ok(match kind {
            Kind::Search => {
                let cap = match fields.get("limit") {
                    None | Some(Value::Null) => DEFAULT_SEARCH_CAP,
                    Some(value) => value
                        .as_u64()
                        .filter(|n| (1..=MAX_SEARCH_CAP).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                                "`limit` must be a whole number from 1 to {MAX_SEARCH_CAP}, \
                                 found {value}"
                            ))
                        })?,
                };
                Job::Search { filter, cap }
            }
            Kind::Count => Job::Count {
                filter,
                by: group_by(fields.get("by")).map_err(invalid)?,
            },
            Kind::Export => Job::Export { filter },
        })
    }
}

fn group_by(value: Option<&Value>) -> Result<GroupBy, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(GroupBy {
            service: true,
            severity: true,
        });
    };
    let names = value
        .as_array()
        .ok_or_else(|| format!("`by` must be a list such as [\"service\"], found {value}"))?;
    let mut by = GroupBy {
        service: false,
        severity: false,
    };
    for name in names {
        match name.as_str() {
            Some("service") => by.service = true,
            Some("severity") => by.severity = true,
            _ => {
                return Err(format!(
                    "`by` may hold \"service\" and \"severity\", found {name}"
                ));
            }
        }
    }
    Ok(by)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A checked submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub callback: String,
    pub data: Value,
    pub job: Job,
}

impl Submission {
    /// Checks a request body: `{"kind": "search"|"count"|"export", "data": …}`, `kind` optional
    /// (search).
    pub fn parse(body: &[u8]) -> Result<Submission, WorkError> {
        let request: Value = serde_json::from_slice(body)
            .map_err(|e| WorkError::Invalid(format!("the body is not JSON: {e}")))?;
        let Value::Object(mut fields) = request else {
            return Err(WorkError::Invalid(
                "the body must be a JSON object such as {\"data\": \"foo\"}".into(),
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| *k != "kind" && *k != "data") {
            return Err(WorkError::Invalid(format!(
                "unknown field `{unknown}` (a job is {{\"kind\": …, \"data\": …}})"
            )));
        }
        let kind = match fields.remove("kind") {
            None | Some(Value::Null) => Kind::Search,
            Some(Value::String(name)) => match name.as_str() {
                "search" => Kind::Search,
                "count" => Kind::Count,
                "export" => Kind::Export,
                _ => {
                    return Err(WorkError::Invalid(format!(
                        "`kind`: unknown kind `{name}` (expected search, count or export)"
                    )));
                }
            },
            Some(other) => {
                return Err(WorkError::Invalid(format!(
                    "`kind` must be a string, found {}",
                    type_name(&other)
                )));
            }
        };
        let data = match fields.remove("data") {
            None | Some(Value::Null) => {
                return Err(WorkError::Invalid(
                    "`data` is missing: say what to do, e.g. {\"data\": \"foo\"}".into(),
                ));
            }
            Some(data) => data,
        };
        let job = Job::parse(kind, &data)?;
        Ok(Submission {
            callback: callback(kind, &data),
            data,
            job,
        })
    }
}

/// The callback of `data` submitted as `kind` (see the module docs).
pub fn callback(kind: Kind, data: &Value) -> String {
    let hashed = match (kind, data) {
        (Kind::Search, Value::String(text)) => text.clone(),
        (Kind::Search, _) => canonical(data),
        _ => canonical(&serde_json::json!({"data": data, "kind": kind.as_str()})),
    };
    Md5::digest(hashed.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect()
}

/// JSON with object keys sorted and no spaces, whatever order they arrived in.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            let members: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        Value::String(key.clone()),
                        canonical(&fields[key.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// A callback from a URL: 32 hex digits, any case; answered upper-case.
pub fn check_callback(text: &str) -> Result<String, WorkError> {
    if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_uppercase())
    } else {
        Err(WorkError::Invalid(format!(
            "`{text}` is not a callback (32 hexadecimal digits, as POST /api/v1/work answered)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<Submission, String> {
        Submission::parse(body.to_string().as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_seeds_example_gets_the_seeds_callback() {
        let submission = parse(json!({"data": "foo"})).unwrap();
        assert_eq!(submission.callback, "ACBD18DB4CC2F85CEDEF654FCCC4A4D8");
        assert_eq!(submission.job.kind(), Kind::Search);
        let explicit = parse(json!({"kind": "search", "data": "foo"})).unwrap();
        assert_eq!(explicit.callback, submission.callback);
    }

    #[test]
    fn identical_work_spelled_differently_gets_one_callback() {
        let a = parse(json!({"kind": "count", "data": {"since": 1000, "by": ["service"]}}));
        let b =
            Submission::parse(br#"{ "data" : { "by":["service"],"since":1000 }, "kind":"count" }"#);
        assert_eq!(a.unwrap().callback, b.unwrap().callback);
        let other = parse(json!({"kind": "export", "data": {"since": 1000, "by": ["service"]}}));
        assert!(other.is_err(), "export takes no `by`");
        let count = parse(json!({"kind": "count", "data": {}})).unwrap();
        let export = parse(json!({"kind": "export", "data": {}})).unwrap();
        assert_ne!(count.callback, export.callback);
    }

    #[test]
    fn every_kind_parses_its_data() {
        let search = parse(
            json!({"data": {"q": "timeout", "service": "api", "severity": "warning",
            "since": "2026-11-23T00:00:00Z", "until": 1_800_000_000_000_i64, "limit": 50}}),
        )
        .unwrap();
        let Job::Search { filter, cap } = search.job else {
            panic!("a search")
        };
        assert_eq!(cap, 50);
        assert_eq!(filter.q.as_deref(), Some("timeout"));
        assert_eq!(filter.severity, Some(Severity::Warn));
        assert_eq!(filter.until, Some(1_800_000_000_000_000));
        let count = parse(json!({"kind": "count", "data": {"by": ["severity"]}})).unwrap();
        assert_eq!(
            count.job,
            Job::Count {
                filter: SearchQuery {
                    limit: MAX_SEARCH_LIMIT,
                    ..SearchQuery::default()
                },
                by: GroupBy {
                    service: false,
                    severity: true
                }
            }
        );
        let export = parse(json!({"kind": "export", "data": "error"})).unwrap();
        assert!(
            matches!(export.job, Job::Export { filter } if filter.q.as_deref() == Some("error"))
        );
        let traced = parse(
            json!({"kind": "export", "data": {"attributes": {"trace_id": "5b8e", "http.status": "502"}}}),
        )
        .unwrap();
        let Job::Export { filter } = traced.job else {
            panic!("an export")
        };
        assert_eq!(
            filter.attributes,
            [
                ("http.status".to_owned(), "502".to_owned()),
                ("trace_id".to_owned(), "5b8e".to_owned())
            ]
        );
    }

    #[test]
    fn bad_submissions_say_what_is_wrong() {
        for (body, says) in [
            (json!([1]), "must be a JSON object"),
            (json!({}), "`data` is missing"),
            (json!({"data": null}), "`data` is missing"),
            (json!({"data": "x", "extra": 1}), "unknown field `extra`"),
            (
                json!({"kind": "delete", "data": "x"}),
                "unknown kind `delete`",
            ),
            (json!({"kind": 3, "data": "x"}), "`kind` must be a string"),
            (json!({"data": 42}), "a search takes a keyword string"),
            (json!({"data": "   "}), "keyword to search for is empty"),
            (json!({"data": "!!!"}), "holds no word"),
            (
                json!({"kind": "count", "data": "x"}),
                "a count takes an object",
            ),
            (
                json!({"kind": "count", "data": {"by": "service"}}),
                "`by` must be a list",
            ),
            (
                json!({"kind": "count", "data": {"by": ["node"]}}),
                "`by` may hold",
            ),
            (
                json!({"data": {"limit": 0}}),
                "`limit` must be a whole number",
            ),
            (
                json!({"data": {"limit": 10_001}}),
                "`limit` must be a whole number",
            ),
            (
                json!({"data": {"severity": "loud"}}),
                "unknown severity `loud`",
            ),
            (json!({"data": {"since": "yesterday"}}), "`since`"),
            (
                json!({"data": {"since": 2000, "until": 1000}}),
                "since is later than until",
            ),
            (
                json!({"data": {"service": ""}}),
                "`service` must not be empty",
            ),
            (
                json!({"data": {"service": 7}}),
                "`service` must be a string",
            ),
            (
                json!({"data": {"attributes": ["trace_id"]}}),
                "`attributes` must be an object",
            ),
            (
                json!({"data": {"attributes": {"http.status": 502}}}),
                "`attributes.http.status` must be a string",
            ),
            (
                json!({"data": {"attributes": {"a b": "x"}}}),
                "attribute name `a b`",
            ),
        ] {
            let error = parse(body.clone()).expect_err(&body.to_string());
            assert!(error.contains(says), "{body}: {error}");
        }
        assert!(
            Submission::parse(b"{not json")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }

    #[test]
    fn callbacks_from_urls_are_checked() {
        assert_eq!(
            check_callback("acbd18db4cc2f85cedef654fcccc4a4d8")
                .unwrap_err()
                .to_string(),
            "`acbd18db4cc2f85cedef654fcccc4a4d8` is not a callback (32 hexadecimal digits, as POST /api/v1/work answered)"
        );
        assert_eq!(
            check_callback("acbd18db4cc2f85cedef654fccc4a4d8").unwrap(),
            "ACBD18DB4CC2F85CEDEF654FCCC4A4D8"
        );
        assert!(check_callback("../../etc/passwd").is_err());
    }
}
