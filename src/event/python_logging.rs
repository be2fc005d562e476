//! Events from Python's `logging.handlers.HTTPHandler`, which posts a log record's `__dict__`
//! form-encoded (`name=…&msg=…&args=…&levelname=…&created=…`). The message is `msg % args`, as
//! Python's logging would format it: `args` arrives as the `repr` of a tuple (or of a dict, for
//! `%(key)s` messages), which is read back here as a Python literal.
//!
//! Mapping: `msg % args` → message (`msg` verbatim, `args` kept as an attribute, when the two do
//! not fit together); `name` (the logger) → service, unless the request names one; `levelname`
//! (or `levelno`) → severity; `created` → timestamp; `pathname`, `lineno`, `funcName`, `module`,
//! `process`, `thread`, `threadName`, `processName`, `taskName`, `exc_info` and `stack_info` →
//! attributes (a value of `None` is left out).

use super::parse::{InputError, Location, check_name, new_id, stored_attributes, unknown_severity};
use super::{Event, IngestContext, Severity};
use serde_json::{Map, Value};

/// Record fields kept as attributes, with the name they get.
const KEPT: &[(&str, &str)] = &[
    ("pathname", "pathname"),
    ("filename", "filename"),
    ("module", "module"),
    ("lineno", "lineno"),
    ("funcName", "funcName"),
    ("process", "process"),
    ("processName", "processName"),
    ("thread", "thread"),
    ("threadName", "threadName"),
    ("taskName", "taskName"),
    ("exc_info", "exc_info"),
    ("exc_text", "exc_text"),
    ("stack_info", "stack_info"),
];

/// True when form `fields` look like a posted `LogRecord` (rather than text that happens to be
/// form-encoded, as `curl --data 'text'` sends it).
pub fn is_log_record(fields: &[(String, String)]) -> bool {
    let has = |name: &str| fields.iter().any(|(key, _)| key == name);
    has("msg") && has("name") && has("created") && (has("levelname") || has("levelno"))
}

/// The event of a posted `LogRecord`; `service` (from the request) wins over the logger name.
pub fn event_from_log_record(
    fields: &[(String, String)],
    service: Option<&str>,
    ctx: IngestContext<'_>,
) -> Result<Event, InputError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| *value != "None")
    };
    let error = |field: &'static str, message: String| {
        InputError::new(Location::Body, Some(field), message)
    };
    let msg = get("msg").unwrap_or_default();
    let args = get("args").unwrap_or("()");
    let (message, args_unused) = match format_record(msg, args) {
        Some(message) => (message, None),
        None => (msg.to_owned(), Some(args)),
    };
    if message.is_empty() {
        return Err(error("msg", "empty: the record has no message".into()));
    }
    let service = match service {
        Some(service) => check_name(service)
            .map_err(|m| InputError::new(Location::Query("service"), None, m))?
            .to_owned(),
        None => {
            let name = get("name").unwrap_or("root");
            check_name(name).map_err(|m| error("name", m))?.to_owned()
        }
    };
    let severity = match (get("levelname"), get("levelno")) {
        (Some(name), _) if Severity::from_name(name).is_some() => {
            Severity::from_name(name).expect("checked")
        }
        (_, Some(number)) => {
            let number: f64 = number
                .parse()
                .map_err(|_| error("levelno", format!("`{number}` is not a number")))?;
            severity_of_level(number)
        }
        (Some(name), None) => return Err(error("levelname", unknown_severity(name))),
        (None, None) => Severity::Info,
    };
    let ts_us = match get("created") {
        None => ctx.now_us,
        Some(created) => {
            let seconds: f64 = created
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 253_402_300_800.0)
                .ok_or_else(|| {
                    error("created", format!("`{created}` is not seconds since 1970"))
                })?;
            ctx.check_time((seconds * 1e6) as i64)
                .map_err(|m| error("created", m))?
        }
    };
    let mut attributes = Map::new();
    if service_overrides_logger(service.as_str(), get("name")) {
        attributes.insert(
            "logger".into(),
            Value::String(get("name").unwrap_or_default().into()),
        );
    }
    for (field, name) in KEPT {
        if let Some(value) = get(field) {
            let value = match value.parse::<i64>() {
                Ok(number) if *field == "lineno" || *field == "process" || *field == "thread" => {
                    Value::from(number)
                }
                _ => Value::String(value.to_owned()),
            };
            attributes.insert((*name).into(), value);
        }
    }
    if let Some(args) = args_unused {
        attributes.insert("args".into(), Value::String(args.to_owned()));
    }
    let attributes = stored_attributes(&attributes);
    Ok(ctx.event(new_id(), ts_us, service, severity, message, attributes))
}

fn service_overrides_logger(service: &str, logger: Option<&str>) -> bool {
    logger.is_some_and(|logger| logger != service)
}

/// Python's numeric levels: DEBUG 10, INFO 20, WARNING 30, ERROR 40, CRITICAL 50.
fn severity_of_level(level: f64) -> Severity {
    match level {
        l if l < 10.0 => Severity::Trace,
        l if l < 20.0 => Severity::Debug,
        l if l < 30.0 => Severity::Info,
        l if l < 40.0 => Severity::Warn,
        l if l < 50.0 => Severity::Error,
        _ => Severity::Fatal,
    }
}

/// A value of `args`, with the text Python's `repr` gave it (what `%r` shows).
#[derive(Debug, Clone, PartialEq)]
enum PyValue {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    None,
    /// A container or anything else: only its text is known.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
struct Arg {
    value: PyValue,
    repr: String,
}

impl Arg {
    /// What `%s` shows: `str(value)`.
    fn str(&self) -> String {
        match &self.value {
            PyValue::Str(text) => text.clone(),
            _ => self.repr.clone(),
        }
    }

    fn integer(&self) -> Option<i128> {
        match self.value {
            PyValue::Int(n) => Some(n),
            PyValue::Float(f) if f.is_finite() => Some(f.trunc() as i128),
            PyValue::Bool(b) => Some(i128::from(b)),
            _ => None,
        }
    }

    fn float(&self) -> Option<f64> {
        match self.value {
            PyValue::Int(n) => Some(n as f64),
            PyValue::Float(f) => Some(f),
            PyValue::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
}

/// `args` read back: positional (a tuple) or by name (a dict).
enum Args {
    Positional(Vec<Arg>),
    Named(Vec<(String, Arg)>),
}

/// `msg % args`, or `None` when `args` is not a literal this reads or does not fit `msg`.
fn format_record(msg: &str, args: &str) -> Option<String> {
    let args = match parse_args(args)? {
        // `logger.info("%d%%", 5)` with args (5,): Python formats; with no args it does not.
        Args::Positional(values) if values.is_empty() => return Some(msg.to_owned()),
        args => args,
    };
    // A message may grow by its arguments and the padding of a few conversions, not without
    // bound: `%(a)s` may name one long argument any number of times.
    let limit = msg.len() + args_text_len(&args) * 4 + 4 * MAX_WIDTH;
    format_percent(msg, &args, limit)
}

fn args_text_len(args: &Args) -> usize {
    match args {
        Args::Positional(values) => values.iter().map(|a| a.repr.len()).sum(),
        Args::Named(pairs) => pairs.iter().map(|(k, a)| k.len() + a.repr.len()).sum(),
    }
}

fn parse_args(text: &str) -> Option<Args> {
    let mut reader = Reader {
        text: text.trim(),
        at: 0,
    };
    let args = match reader.peek()? {
        '(' => {
            reader.bump();
            let mut values = Vec::new();
            loop {
                reader.skip_spaces();
                if reader.eat(')') {
                    break;
                }
                values.push(reader.value(0)?);
                reader.skip_spaces();
                if !reader.eat(',') {
                    reader.skip_spaces();
                    if !reader.eat(')') {
                        return None;
                    }
                    break;
                }
            }
            Args::Positional(values)
        }
        '{' => {
            reader.bump();
            let mut pairs = Vec::new();
            loop {
                reader.skip_spaces();
                if reader.eat('}') {
                    break;
                }
                let key = reader.value(0)?;
                reader.skip_spaces();
                if !reader.eat(':') {
                    return None;
                }
                reader.skip_spaces();
                let value = reader.value(0)?;
                pairs.push((key.str(), value));
                reader.skip_spaces();
                if !reader.eat(',') {
                    reader.skip_spaces();
                    if !reader.eat('}') {
                        return None;
                    }
                    break;
                }
            }
            Args::Named(pairs)
        }
        _ => return None,
    };
    reader.skip_spaces();
    (reader.at == reader.text.len()).then_some(args)
}

/// Containers nest at most this deep in `args`; deeper, the record keeps `msg` verbatim.
const MAX_NESTING: usize = 32;

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// One literal; its `repr` is the text it was read from.
    fn value(&mut self, depth: usize) -> Option<Arg> {
        if depth > MAX_NESTING {
            return None;
        }
        let start = self.at;
        let value = match self.peek()? {
            quote @ ('\'' | '"') => {
                self.bump();
                PyValue::Str(self.string(quote)?)
            }
            open @ ('(' | '[' | '{') => {
                let close = match open {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                self.bump();
                loop {
                    self.skip_spaces();
                    if self.eat(close) {
                        break;
                    }
                    self.value(depth + 1)?;
                    self.skip_spaces();
                    if open == '{' && self.eat(':') {
                        self.skip_spaces();
                        self.value(depth + 1)?;
                        self.skip_spaces();
                    }
                    if !self.eat(',') {
                        self.skip_spaces();
                        if !self.eat(close) {
                            return None;
                        }
                        break;
                    }
                }
                PyValue::Other
            }
            '<' => {
                // An object's default repr: <module.Class object at 0x…>.
                while self.bump()? != '>' {}
                PyValue::Other
            }
            _ => {
                while self.peek().is_some_and(|c| {
                    !matches!(c, ',' | '(' | ')' | ']' | '}' | ':') && !c.is_whitespace()
                }) {
                    self.bump();
                }
                if self.peek() == Some('(') {
                    // A constructor-style repr: datetime.date(2026, 11, 29), Decimal('1.5').
                    self.value(depth + 1)?;
                    return Some(Arg {
                        value: PyValue::Other,
                        repr: self.text[start..self.at].to_owned(),
                    });
                }
                let word = &self.text[start..self.at];
                match word {
                    "" => return None,
                    "None" => PyValue::None,
                    "True" => PyValue::Bool(true),
                    "False" => PyValue::Bool(false),
                    _ => {
                        if let Ok(n) = word.parse::<i128>() {
                            PyValue::Int(n)
                        } else if let Ok(f) = word.parse::<f64>() {
                            PyValue::Float(f)
                        } else if word == "inf" || word == "nan" || word == "-inf" {
                            PyValue::Float(word.parse().ok()?)
                        } else {
                            // An object's repr, e.g. <object at 0x…> or datetime.date(…):
                            // read up to the next separator and keep its text.
                            PyValue::Other
                        }
                    }
                }
            }
        };
        Some(Arg {
            value,
            repr: self.text[start..self.at].to_owned(),
        })
    }

    /// The rest of a quoted Python string, its escapes decoded.
    fn string(&mut self, quote: char) -> Option<String> {
        let mut out = String::new();
        loop {
            match self.bump()? {
                c if c == quote => return Some(out),
                '\\' => {
                    let escaped = self.bump()?;
                    match escaped {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'x' | 'u' | 'U' => {
                            let digits = match escaped {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let hex: String = (0..digits).filter_map(|_| self.bump()).collect();
                            let code = u32::from_str_radix(&hex, 16).ok()?;
                            out.push(char::from_u32(code)?);
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }
}

/// The widest field or precision a conversion may ask for.
const MAX_WIDTH: usize = 1024;

/// Python's `msg % args` for the conversions log messages use.
fn format_percent(msg: &str, args: &Args, limit: usize) -> Option<String> {
    let named: std::collections::HashMap<&str, &Arg> = match args {
        Args::Named(pairs) => pairs.iter().map(|(k, a)| (k.as_str(), a)).collect(),
        Args::Positional(_) => Default::default(),
    };
    let mut out = String::with_capacity(msg.len());
    let mut chars = msg.chars().peekable();
    let mut next_positional = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut key = None;
        if chars.peek() == Some(&'(') {
            chars.next();
            let mut name = String::new();
            loop {
                match chars.next()? {
                    ')' => break,
                    c => name.push(c),
                }
            }
            key = Some(name);
        }
        let mut flags = String::new();
        while let Some(&f) = chars.peek().filter(|c| "-+ #0".contains(**c)) {
            flags.push(f);
            chars.next();
        }
        let mut width = String::from("0");
        while let Some(&d) = chars.peek().filter(|c| c.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(&d) = chars.peek().filter(|c| c.is_ascii_digit()) {
                digits.push(d);
                chars.next();
            }
            precision = Some(if digits.is_empty() {
                0
            } else {
                digits.parse::<usize>().unwrap_or(usize::MAX)
            });
        }
        while chars.peek().is_some_and(|c| "hlL".contains(*c)) {
            chars.next();
        }
        let width: usize = width.parse().unwrap_or(usize::MAX);
        if width > MAX_WIDTH || precision.is_some_and(|p| p > MAX_WIDTH) {
            // Python would pad a message to gigabytes; keep it verbatim instead.
            return None;
        }
        let conversion = chars.next()?;
        if conversion == '%' {
            out.push('%');
            continue;
        }
        let arg = match (&key, args) {
            (Some(name), Args::Named(_)) => *named.get(name.as_str())?,
            (None, Args::Positional(values)) => {
                let arg = values.get(next_positional)?;
                next_positional += 1;
                arg
            }
            _ => return None,
        };
        let text = convert(arg, conversion, &flags, precision)?;
        out.push_str(&pad(text, width, &flags, conversion));
        if out.len() > limit {
            return None;
        }
    }
    match args {
        Args::Positional(values) if next_positional != values.len() => None,
        _ => Some(out),
    }
}

fn convert(arg: &Arg, conversion: char, flags: &str, precision: Option<usize>) -> Option<String> {
    let sign = |negative: bool| {
        if negative {
            "-"
        } else if flags.contains('+') {
            "+"
        } else if flags.contains(' ') {
            " "
        } else {
            ""
        }
    };
    Some(match conversion {
        's' => {
            let text = arg.str();
            match precision {
                Some(p) => text.chars().take(p).collect(),
                None => text,
            }
        }
        'r' | 'a' => arg.repr.clone(),
        'd' | 'i' | 'u' => {
            let n = arg.integer()?;
            format!("{}{}", sign(n < 0), n.unsigned_abs())
        }
        // Python writes a negative number's sign before its digits: -ff, not two's complement.
        'x' | 'X' | 'o' => {
            let n = arg.integer()?;
            let digits = match conversion {
                'x' => format!("{:x}", n.unsigned_abs()),
                'X' => format!("{:X}", n.unsigned_abs()),
                _ => format!("{:o}", n.unsigned_abs()),
            };
            format!("{}{digits}", sign(n < 0))
        }
        'c' => match &arg.value {
            PyValue::Str(text) if text.chars().count() == 1 => text.clone(),
            _ => char::from_u32(u32::try_from(arg.integer()?).ok()?)?.to_string(),
        },
        'f' | 'F' => {
            let f = arg.float()?;
            format!("{}{:.*}", sign(f < 0.0), precision.unwrap_or(6), f.abs())
        }
        'e' | 'E' => {
            let f = arg.float()?;
            let text = python_exponent(&format!("{:.*e}", precision.unwrap_or(6), f.abs()));
            let text = format!("{}{text}", sign(f < 0.0));
            if conversion == 'E' {
                text.to_uppercase()
            } else {
                text
            }
        }
        'g' | 'G' => {
            let f = arg.float()?;
            let text = format!(
                "{}{}",
                sign(f < 0.0),
                general(f.abs(), precision.unwrap_or(6))
            );
            if conversion == 'G' {
                text.to_uppercase()
            } else {
                text
            }
        }
        _ => return None,
    })
}

/// Rust writes `1.5e3`; Python `1.5e+03`.
fn python_exponent(text: &str) -> String {
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text.to_owned(),
    }
}

/// `%g`: the shorter of fixed and exponent notation, trailing zeros dropped.
fn general(f: f64, precision: usize) -> String {
    let precision = precision.max(1);
    if f == 0.0 {
        return "0".into();
    }
    let exponent = f.log10().floor() as i32;
    let trim = |text: String| {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    };
    if exponent < -4 || exponent >= precision as i32 {
        let text = format!("{:.*e}", precision - 1, f);
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        python_exponent(&format!("{}e{exp}", trim(mantissa.to_owned())))
    } else {
        let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
        trim(format!("{f:.decimals$}"))
    }
}

fn pad(text: String, width: usize, flags: &str, conversion: char) -> String {
    let length = text.chars().count();
    if length >= width {
        return text;
    }
    let fill = width - length;
    if flags.contains('-') {
        format!("{text}{}", " ".repeat(fill))
    } else if flags.contains('0') && "diufFeEgGxXo".contains(conversion) {
        let (sign, digits) = match text.chars().next() {
            Some(s @ ('-' | '+' | ' ')) => (s.to_string(), text[1..].to_owned()),
            _ => (String::new(), text),
        };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{text}", " ".repeat(fill))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(msg: &str, args: &str) -> Option<String> {
        format_record(msg, args)
    }

    #[test]
    fn messages_are_formatted_as_python_formats_them() {
        // Each expectation is what Python 3 prints for `msg % args`.
        assert_eq!(
            formatted("user %s has %d items, %r", "('alice', 3, 'x')").as_deref(),
            Some("user alice has 3 items, 'x'")
        );
        assert_eq!(formatted("plain", "()").as_deref(), Some("plain"));
        assert_eq!(formatted("100%", "()").as_deref(), Some("100%"));
        assert_eq!(formatted("%d%% done", "(5,)").as_deref(), Some("5% done"));
        assert_eq!(
            formatted("%(user)s did %(n)03d", "{'user': 'bob', 'n': 7}").as_deref(),
            Some("bob did 007")
        );
        assert_eq!(
            formatted("%.2f|%5s|%-5s|", "(3.14159, 'ab', 'cd')").as_deref(),
            Some("3.14|   ab|cd   |")
        );
        assert_eq!(
            formatted("%x %o %c", "(255, 8, 65)").as_deref(),
            Some("ff 10 A")
        );
        assert_eq!(
            formatted("%x|%X|%o", "(-255, 255, -8)").as_deref(),
            Some("-ff|FF|-10")
        );
        assert_eq!(
            formatted("%e", "(12345.678,)").as_deref(),
            Some("1.234568e+04")
        );
        assert_eq!(
            formatted("%g %g %g", "(0.0001, 123456789.0, 2.5)").as_deref(),
            Some("0.0001 1.23457e+08 2.5")
        );
        assert_eq!(
            formatted("%s %s %s", "(None, True, [1, 2])").as_deref(),
            Some("None True [1, 2]")
        );
        assert_eq!(
            formatted("%s", "('it\\'s \\u00e9\\n',)").as_deref(),
            Some("it's é\n")
        );
        assert_eq!(formatted("%+d %d", "(5, -3)").as_deref(), Some("+5 -3"));
        assert_eq!(
            formatted("%s", "(<object object at 0x7f>,)").as_deref(),
            Some("<object object at 0x7f>")
        );
        // The one difference from Python: `%s` of an object shows its repr (Python shows
        // str(), 2026-11-29 here), the only text of it the record carries.
        assert_eq!(
            formatted("%s on %r", "(datetime.date(2026, 11, 29), Decimal('1.5'))").as_deref(),
            Some("datetime.date(2026, 11, 29) on Decimal('1.5')")
        );
    }

    #[test]
    fn args_that_do_not_fit_leave_the_message_as_it_is() {
        assert_eq!(formatted("%s and %s", "('one',)"), None);
        assert_eq!(formatted("%s", "('one', 'two')"), None);
        assert_eq!(formatted("%d", "('text',)"), None);
        assert_eq!(formatted("%s", "not a tuple"), None);
        assert_eq!(formatted("%(missing)s", "{'user': 'bob'}"), None);
        assert_eq!(formatted("%99999999999s", "('x',)"), None);
        // One long argument named a million times stays the message as sent.
        let msg = "%(a)s".repeat(1_000_000);
        let args = format!("{{'a': '{}'}}", "x".repeat(1_000));
        assert_eq!(formatted(&msg, &args), None);
        assert_eq!(formatted("%.99999999f", "(1.5,)"), None);
        assert_eq!(
            formatted("%s", &format!("({}1{},)", "(".repeat(100), ")".repeat(100))),
            None
        );
    }

    fn record(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const CTX: IngestContext<'static> = IngestContext {
        node: "n1",
        now_us: 1_796_000_000_000_000,
        oldest_us: i64::MIN,
    };

    #[test]
    fn a_record_maps_onto_an_event() {
        let fields = record(&[
            ("name", "shop.db"),
            ("msg", "slow query %s"),
            ("args", "('SELECT 1',)"),
            ("levelname", "WARNING"),
            ("levelno", "30"),
            ("created", "1795428900.5"),
            ("lineno", "12"),
            ("funcName", "query"),
            ("exc_info", "None"),
        ]);
        assert!(is_log_record(&fields));
        let event = event_from_log_record(&fields, None, CTX).unwrap();
        assert_eq!(event.service, "shop.db");
        assert_eq!(event.message, "slow query SELECT 1");
        assert_eq!(event.severity, Severity::Warn);
        assert_eq!(event.ts_us, 1_795_428_900_500_000);
        assert_eq!(
            event.attributes_json(),
            Some(r#"{"funcName":"query","lineno":12}"#)
        );
        let named = event_from_log_record(&fields, Some("shop"), CTX).unwrap();
        assert_eq!(named.service, "shop");
        assert!(
            named
                .attributes_json()
                .unwrap()
                .contains(r#""logger":"shop.db""#)
        );
    }

    #[test]
    fn custom_levels_go_by_number_and_bad_fields_are_named() {
        let mut fields = record(&[
            ("name", "x"),
            ("msg", "m"),
            ("levelname", "Level 5"),
            ("levelno", "5"),
            ("created", "1795428900"),
        ]);
        assert_eq!(
            event_from_log_record(&fields, None, CTX).unwrap().severity,
            Severity::Trace
        );
        fields[4].1 = "soon".into();
        let error = event_from_log_record(&fields, None, CTX)
            .unwrap_err()
            .to_string();
        assert!(error.contains("`created`"), "{error}");
        assert!(!is_log_record(&record(&[("msg", "text only")])));
    }
}
