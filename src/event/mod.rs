//! The event: the one record logmesh carries from a client to the store and to every event log
//! file, and the rules that turn client input into events.
//!
//! Invariants:
//! - An [`Event`] is always valid: its id, service and attributes passed [`parse`]'s checks.
//!   Nothing downstream re-validates.
//! - This module knows nothing of HTTP, SQL or the queue; it is plain data in, plain data out.

pub mod bounds;
pub mod loki;
mod mapped;
pub mod otlp;
pub mod parse;
pub mod python_logging;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use mapped::FieldMap;
pub use parse::{
    IngestContext, InputError, Location, parse_json_body, parse_mapped_body, parse_raw_body,
    parse_timestamp_text,
};

/// Longest id, service or node name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// One log event. Serialised as JSON on the queue and in event log files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Unique id: client-supplied or a generated UUIDv7. Storing an id twice is a no-op.
    pub id: String,
    /// When the event happened, in microseconds since the Unix epoch (UTC).
    pub ts_us: i64,
    pub service: String,
    pub severity: Severity,
    pub message: String,
    /// A flat JSON object (string, number, boolean or null values), kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Box<RawValue>>,
    /// The node that accepted the event.
    pub node: String,
    /// When the accepting node received it, in microseconds since the Unix epoch.
    pub received_us: i64,
}

impl Event {
    /// The attributes as JSON text, if any.
    pub fn attributes_json(&self) -> Option<&str> {
        self.attributes.as_deref().map(RawValue::get)
    }

    /// Appends the event as one JSON object, byte for byte what its `Serialize` writes. Every
    /// accepted event is encoded for the queue, and serde_json escapes strings a byte at a
    /// time (~8 % of a node's CPU under ingest); see [`write_json_string`].
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        write_json_string(out, &self.id);
        out.extend_from_slice(b",\"ts_us\":");
        write_integer(out, self.ts_us);
        out.extend_from_slice(b",\"service\":");
        write_json_string(out, &self.service);
        out.extend_from_slice(b",\"severity\":\"");
        out.extend_from_slice(self.severity.as_str().as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        write_json_string(out, &self.message);
        if let Some(attributes) = &self.attributes {
            out.extend_from_slice(b",\"attributes\":");
            out.extend_from_slice(attributes.get().as_bytes());
        }
        out.extend_from_slice(b",\"node\":");
        write_json_string(out, &self.node);
        out.extend_from_slice(b",\"received_us\":");
        write_integer(out, self.received_us);
        out.push(b'}');
    }
}

/// Appends `number` in decimal, without the `String` that `to_string` would allocate.
pub fn write_integer(out: &mut Vec<u8>, number: impl fmt::Display) {
    use std::io::Write;
    write!(out, "{number}").expect("writing into a Vec cannot fail");
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes it (`"`, `\\` and
/// control characters; nothing else). Text with nothing to escape, nearly every log line, is
/// checked in one pass the compiler vectorizes and copied whole.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    let needs_escape = text.as_bytes().iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        serde_json::to_writer(&mut *out, text).expect("a string serializes into a Vec");
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Severity levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Severity {
    pub const ALL: [Severity; 6] = [
        Severity::Trace,
        Severity::Debug,
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Trace => "trace",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }

    /// Parses a name or alias (case-insensitive) or a syslog severity number 0–7 written as text.
    pub fn from_name(text: &str) -> Option<Severity> {
        let text = text.trim();
        if let Ok(number) = text.parse::<u64>() {
            return Severity::from_syslog(number);
        }
        let severity = match text.to_ascii_lowercase().as_str() {
            "trace" | "trc" | "verbose" => Severity::Trace,
            "debug" | "dbg" => Severity::Debug,
            "info" | "inf" | "information" | "informational" | "notice" => Severity::Info,
            "warn" | "wrn" | "warning" => Severity::Warn,
            "error" | "err" | "eror" => Severity::Error,
            "fatal" | "ftl" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" => {
                Severity::Fatal
            }
            _ => return None,
        };
        Some(severity)
    }

    /// Maps a syslog severity (RFC 5424: 0 emergency … 7 debug) onto ours.
    pub fn from_syslog(number: u64) -> Option<Severity> {
        match number {
            0..=2 => Some(Severity::Fatal),
            3 => Some(Severity::Error),
            4 => Some(Severity::Warn),
            5 | 6 => Some(Severity::Info),
            7 => Some(Severity::Debug),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// Formats epoch microseconds as RFC 3339 UTC with microsecond precision.
pub fn format_us(ts_us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_us) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ts_us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_aliases_and_syslog_numbers_map_onto_levels() {
        assert_eq!(Severity::from_name("WARNING"), Some(Severity::Warn));
        assert_eq!(Severity::from_name(" err "), Some(Severity::Error));
        assert_eq!(Severity::from_name("Critical"), Some(Severity::Fatal));
        assert_eq!(Severity::from_name("3"), Some(Severity::Error));
        assert_eq!(Severity::from_name("7"), Some(Severity::Debug));
        assert_eq!(Severity::from_name("8"), None);
        assert_eq!(Severity::from_name("loud"), None);
        assert_eq!(Severity::from_name(""), None);
        for severity in Severity::ALL {
            assert_eq!(Severity::from_name(severity.as_str()), Some(severity));
        }
    }

    #[test]
    fn events_are_written_as_json_exactly_as_serde_writes_them() {
        let texts = [
            "plain text",
            "",
            "quote \" and backslash \\ inside",
            "tab\tnewline\ncarriage\rnul\u{0}bell\u{7}esc\u{1b}del\u{7f}",
            "café ☕ 日本語 \u{2028} \u{10FFFF}",
            "</script>",
        ];
        for (i, text) in texts.iter().enumerate() {
            let event = Event {
                id: format!("id-{i}"),
                ts_us: -1_234_567 * i as i64,
                service: "api".into(),
                severity: Severity::ALL[i % Severity::ALL.len()],
                message: (*text).to_owned(),
                attributes: (i % 2 == 0).then(|| {
                    RawValue::from_string(format!("{{\"k\":{}}}", serde_json::json!(text))).unwrap()
                }),
                node: format!("node{text}"),
                received_us: i64::MAX - i as i64,
            };
            let mut ours = Vec::new();
            event.write_json(&mut ours);
            let serde = serde_json::to_vec(&event).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(serde).unwrap()
            );
            let mut string = Vec::new();
            write_json_string(&mut string, text);
            assert_eq!(string, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(format_us(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_us(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
    }
}
