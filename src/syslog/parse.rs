//! One syslog message as an event, read with `syslog_loose` (the parser Vector uses): RFC 5424
//! and RFC 3164 (BSD) with their real-world deviations. A message that cannot be read is still
//! kept, as raw text with service `syslog`, and reported as not parsed so that it is counted.
//!
//! Mapping: APP-NAME (or the 3164 TAG) → service by default, or the part `--syslog-service`
//! names ([`ServiceFrom`]); `syslog` when there is none or it is not a valid service name; the
//! PRI's severity → severity; the message text → message; the
//! timestamp → timestamp. 3164 timestamps carry no year and no zone: they are read as UTC, in
//! the current year, or the previous one when that would put them more than a day ahead (a
//! December message read in January). A timestamp more than 2 days ahead of the node's clock,
//! or older than its retention period (`--retention`; syslog has no way to refuse a message),
//! is replaced by the arrival time and kept as the attribute `syslog.timestamp`. Attributes:
//! `facility`, `hostname`, `procid`, `msgid`, and each structured-data parameter as
//! `<SD-ID>.<name>` (`timeQuality.tzKnown`).

use crate::event::parse::{check_name, new_id, stored_attributes};
use crate::event::{Event, IngestContext, Severity};
use chrono::{Datelike, NaiveDate, Utc};
use serde_json::{Map, Value};
use syslog_loose::{Message, ProcId, Variant};

/// The service of messages without a usable APP-NAME or TAG.
pub const FALLBACK_SERVICE: &str = "syslog";

/// Which part of a syslog message names its event's service (`--syslog-service`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServiceFrom {
    /// APP-NAME (RFC 5424) or TAG (RFC 3164): the program that logged.
    #[default]
    AppName,
    /// The sending host: one service per machine or device (network gear logs this way).
    Hostname,
    /// The facility's name (`auth`, `local3`, …).
    Facility,
    /// MSGID (RFC 5424).
    MsgId,
    /// Every message the same service.
    Fixed(String),
}

impl ServiceFrom {
    /// `app-name`, `hostname`, `facility`, `msgid` or `fixed:NAME`.
    pub fn parse(text: &str) -> Result<ServiceFrom, String> {
        Ok(match text {
            "app-name" => ServiceFrom::AppName,
            "hostname" => ServiceFrom::Hostname,
            "facility" => ServiceFrom::Facility,
            "msgid" => ServiceFrom::MsgId,
            _ => match text.strip_prefix("fixed:") {
                Some(name) => {
                    check_name(name).map_err(|why| format!("the service `{name}` {why}"))?;
                    ServiceFrom::Fixed(name.to_owned())
                }
                None => {
                    return Err(format!(
                        "`{text}` is not app-name, hostname, facility, msgid or fixed:NAME"
                    ));
                }
            },
        })
    }

    /// The service of a message with these parts, `syslog` when the chosen one is missing or
    /// not a valid service name.
    fn pick(&self, parts: Parts<'_>) -> String {
        let chosen = match self {
            ServiceFrom::AppName => parts.app_name,
            ServiceFrom::Hostname => parts.hostname,
            ServiceFrom::Facility => parts.facility,
            ServiceFrom::MsgId => parts.msgid,
            ServiceFrom::Fixed(name) => Some(name.as_str()),
        };
        chosen
            .filter(|name| check_name(name).is_ok())
            .unwrap_or(FALLBACK_SERVICE)
            .to_owned()
    }
}

impl std::fmt::Display for ServiceFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceFrom::AppName => f.write_str("app-name"),
            ServiceFrom::Hostname => f.write_str("hostname"),
            ServiceFrom::Facility => f.write_str("facility"),
            ServiceFrom::MsgId => f.write_str("msgid"),
            ServiceFrom::Fixed(name) => write!(f, "fixed:{name}"),
        }
    }
}

/// The parts of a message a service can be named by.
#[derive(Clone, Copy, Default)]
struct Parts<'a> {
    app_name: Option<&'a str>,
    hostname: Option<&'a str>,
    facility: Option<&'a str>,
    msgid: Option<&'a str>,
}

/// The event of one message (its framing already removed), and whether it parsed as syslog.
pub fn event_from_message(
    raw: &[u8],
    ctx: IngestContext<'_>,
    service: &ServiceFrom,
) -> (Event, bool) {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\0', '\r', '\n']);
    let parsed =
        syslog_loose::parse_message_with_year_tz(text, year_of, Some(Utc), Variant::Either);
    if parsed.facility.is_some() || parsed.severity.is_some() {
        return (event_of(parsed, ctx, service), true);
    }
    // A 3164 line without a timestamp (Python's SysLogHandler: `<156>app[12]: text`) is not
    // read by the parser: take its PRI and TAG here.
    if let Some(event) = without_timestamp(text, ctx, service) {
        return (event, true);
    }
    let event = ctx.event(
        new_id(),
        ctx.now_us,
        FALLBACK_SERVICE.to_owned(),
        Severity::Info,
        text.to_owned(),
        None,
    );
    (event, false)
}

/// The year of a 3164 date: the latest year from next year back that puts it no more than a
/// day ahead of now (Dec 31 read on Jan 1 is last year's; Jan 1 read on Dec 31,
/// from a clock a little ahead, next year's).
fn year_of((month, day, ..): syslog_loose::IncompleteDate) -> i32 {
    year_near(month, day, Utc::now().date_naive())
}

fn year_near(month: u32, day: u32, today: NaiveDate) -> i32 {
    let latest = today + chrono::Days::new(1);
    // Back four years at most, for a February 29.
    (today.year() - 4..=today.year() + 1)
        .rev()
        .find(|year| NaiveDate::from_ymd_opt(*year, month, day).is_some_and(|date| date <= latest))
        .unwrap_or(today.year())
}

fn event_of(message: Message<&str>, ctx: IngestContext<'_>, service: &ServiceFrom) -> Event {
    let mut attributes = Map::new();
    let mut put = |key: String, value: &str| {
        attributes.insert(key, Value::String(value.to_owned()));
    };
    if let Some(facility) = message.facility {
        put("facility".into(), facility.as_str());
    }
    if let Some(hostname) = message.hostname {
        put("hostname".into(), hostname);
    }
    match &message.procid {
        Some(ProcId::PID(pid)) => put("procid".into(), &pid.to_string()),
        Some(ProcId::Name(name)) => put("procid".into(), name),
        None => {}
    }
    if let Some(msgid) = message.msgid {
        put("msgid".into(), msgid);
    }
    for element in &message.structured_data {
        for (name, value) in &element.params {
            put(format!("{}.{}", element.id, name), value);
        }
    }
    let ts_us = match message.timestamp {
        None => ctx.now_us,
        Some(timestamp) => {
            let us = timestamp.timestamp_micros();
            match ctx.check_time(us) {
                Ok(us) if us >= 0 => us,
                _ => {
                    put("syslog.timestamp".into(), &timestamp.to_rfc3339());
                    ctx.now_us
                }
            }
        }
    };
    let service = service.pick(Parts {
        app_name: message.appname,
        hostname: message.hostname,
        facility: message.facility.map(|facility| facility.as_str()),
        msgid: message.msgid,
    });
    let severity = message
        .severity
        .and_then(|severity| Severity::from_syslog(severity as u64))
        .unwrap_or(Severity::Info);
    let text = message.msg.strip_prefix('\u{feff}').unwrap_or(message.msg);
    ctx.event(
        new_id(),
        ts_us,
        service,
        severity,
        text.to_owned(),
        stored_attributes(&attributes),
    )
}

/// `<PRI>TAG[PID]: text` or `<PRI>text`, for lines the parser leaves whole.
fn without_timestamp(text: &str, ctx: IngestContext<'_>, service: &ServiceFrom) -> Option<Event> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>').filter(|end| (1..=3).contains(end))?;
    let pri: u8 = rest[..end].parse().ok().filter(|pri| *pri <= 191)?;
    let rest = &rest[end + 1..];
    let mut attributes = Map::new();
    let facilities = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clockd", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    let facility = facilities[usize::from(pri / 8)];
    attributes.insert("facility".into(), Value::String(facility.into()));
    let (tag, message) = match rest.split_once(": ") {
        Some((tag, message)) if !tag.is_empty() && !tag.contains(' ') => {
            let (name, pid) = match tag.strip_suffix(']').and_then(|t| t.split_once('[')) {
                Some((name, pid)) => (name, Some(pid)),
                None => (tag, None),
            };
            if let Some(pid) = pid {
                attributes.insert("procid".into(), Value::String(pid.into()));
            }
            (Some(name), message)
        }
        _ => (None, rest),
    };
    let service = service.pick(Parts {
        app_name: tag,
        facility: Some(facility),
        ..Parts::default()
    });
    Some(ctx.event(
        new_id(),
        ctx.now_us,
        service,
        Severity::from_syslog(u64::from(pri % 8)).unwrap_or(Severity::Info),
        message.to_owned(),
        stored_attributes(&attributes),
    ))
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

    fn attributes(event: &Event) -> Value {
        event
            .attributes_json()
            .map_or(Value::Null, |text| serde_json::from_str(text).unwrap())
    }

    #[test]
    fn rfc5424_with_structured_data_and_a_bom() {
        let line = "<165>1 2026-11-23T10:15:00.5Z vm1 checkout 4711 ID47 [timeQuality tzKnown=\"1\" isSynced=\"0\"][x@1 a=\"b\"] \u{feff}card declined\n";
        let (event, parsed) = event_from_message(line.as_bytes(), CTX, &ServiceFrom::AppName);
        assert!(parsed);
        assert_eq!(event.service, "checkout");
        assert_eq!(event.severity, Severity::Info);
        assert_eq!(event.message, "card declined");
        assert_eq!(event.ts_us, 1_795_428_900_500_000);
        assert_eq!(
            attributes(&event),
            json!({"facility": "local4", "hostname": "vm1", "procid": "4711", "msgid": "ID47",
                   "timeQuality.tzKnown": "1", "timeQuality.isSynced": "0", "x@1.a": "b"})
        );
    }

    #[test]
    fn rfc3164_with_and_without_a_timestamp() {
        let (event, parsed) = event_from_message(
            b"<131>Nov 23 10:15:00 vm1 sshd[99]: failed login\r\n",
            CTX,
            &ServiceFrom::AppName,
        );
        assert!(parsed);
        assert_eq!(event.service, "sshd");
        assert_eq!(event.severity, Severity::Error);
        assert_eq!(event.message, "failed login");
        assert_eq!(attributes(&event)["procid"], "99");
        // Python's SysLogHandler over TCP: no timestamp, no hostname, a NUL at the end.
        let (event, parsed) = event_from_message(
            b"<156>myapp[2786]: WARNING text\0",
            CTX,
            &ServiceFrom::AppName,
        );
        assert!(parsed);
        assert_eq!(event.service, "myapp");
        assert_eq!(event.severity, Severity::Warn);
        assert_eq!(event.message, "WARNING text");
        assert_eq!(
            attributes(&event),
            json!({"facility": "local3", "procid": "2786"})
        );
    }

    #[test]
    fn the_service_comes_from_the_chosen_part() {
        let line = b"<165>1 2026-11-23T10:15:00Z vm1 checkout 4711 ID47 - card declined";
        for (from, service) in [
            ("app-name", "checkout"),
            ("hostname", "vm1"),
            ("facility", "local4"),
            ("msgid", "ID47"),
            ("fixed:edge", "edge"),
        ] {
            let from = ServiceFrom::parse(from).unwrap();
            assert_eq!(ServiceFrom::parse(&from.to_string()), Ok(from.clone()));
            let (event, _) = event_from_message(line, CTX, &from);
            assert_eq!(event.service, service, "{from}");
        }
        // A part the message lacks: the fallback.
        let (event, _) = event_from_message(b"<156>myapp: text", CTX, &ServiceFrom::Hostname);
        assert_eq!(event.service, FALLBACK_SERVICE);
        let (event, _) = event_from_message(b"<156>myapp: text", CTX, &ServiceFrom::Facility);
        assert_eq!(event.service, "local3");
        for bad in ["appname", "fixed:", "fixed:two words", ""] {
            assert!(ServiceFrom::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_does_not_parse_is_kept_raw() {
        for raw in [&b"\xff\xfebinary noise"[..], b"no pri at all", b"<999>x: y"] {
            let (event, parsed) = event_from_message(raw, CTX, &ServiceFrom::AppName);
            assert!(!parsed, "{raw:?}");
            assert_eq!(event.service, FALLBACK_SERVICE);
            assert!(!event.message.is_empty());
        }
    }

    #[test]
    fn the_year_of_a_3164_date_is_the_nearest_not_ahead() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(year_near(4, 30, day(2026, 4, 30)), 2026);
        assert_eq!(year_near(5, 1, day(2026, 4, 30)), 2026);
        assert_eq!(year_near(5, 2, day(2026, 4, 30)), 2025);
        assert_eq!(year_near(12, 31, day(2027, 1, 1)), 2026);
        assert_eq!(year_near(1, 1, day(2026, 12, 31)), 2027);
        assert_eq!(year_near(2, 29, day(2026, 3, 1)), 2024);
    }

    #[test]
    fn a_timestamp_from_the_future_is_replaced_and_kept() {
        let (event, _) = event_from_message(
            b"<14>1 2099-01-01T00:00:00Z h app - - - m",
            CTX,
            &ServiceFrom::AppName,
        );
        assert_eq!(event.ts_us, CTX.now_us);
        assert!(attributes(&event)["syslog.timestamp"].is_string());
    }
}
