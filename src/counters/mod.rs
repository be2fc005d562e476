//! Cluster-wide labelled counters: what a counter is, the Prometheus text exposition, and the
//! PromQL subset `GET /metrics/query` evaluates.
//!
//! Counters live in the SQL store (an atomic upsert per increment), so every node reads the
//! value written through any node as soon as the write returned. This module is plain data in,
//! plain data out: no I/O.
//!
//! Invariants:
//! - A counter is identified by its name and its exact label set; label order never matters
//!   ([`CounterKey`] keeps labels sorted, and its storage key is derived from that form).
//! - Names and label names follow Prometheus's rules; `logmesh_` names are reserved for the
//!   node's own metrics.
//! - Only the PromQL subset below is evaluated; anything else is refused by name, never
//!   approximated.

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{self, Expr, LabelModifier, token};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Longest counter or label name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Longest label value, in bytes, whatever the limits say.
pub const MAX_VALUE_BYTES: usize = 4096;

/// How many counters there may be and how large each may be (`--counter-max-*`). Every series
/// costs a row, a line of `GET /metrics` and memory in every query: without these, a client
/// minting label values could grow the node without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterLimits {
    /// Series (distinct name and label set) in all.
    pub max_series: usize,
    /// Series of one metric name.
    pub max_series_per_metric: usize,
    /// Labels of one series.
    pub max_labels: usize,
    /// Bytes of the label names and values of one series, together.
    pub max_label_bytes: usize,
}

pub const DEFAULT_MAX_SERIES: usize = 10_000;
pub const DEFAULT_MAX_SERIES_PER_METRIC: usize = 1_000;
pub const DEFAULT_MAX_LABELS: usize = 16;
pub const DEFAULT_MAX_LABEL_BYTES: usize = 1024;

impl Default for CounterLimits {
    fn default() -> Self {
        CounterLimits {
            max_series: DEFAULT_MAX_SERIES,
            max_series_per_metric: DEFAULT_MAX_SERIES_PER_METRIC,
            max_labels: DEFAULT_MAX_LABELS,
            max_label_bytes: DEFAULT_MAX_LABEL_BYTES,
        }
    }
}

impl CounterLimits {
    /// Refuses a series with more labels, or more label bytes, than allowed.
    pub fn check_shape(&self, key: &CounterKey) -> Result<(), CounterError> {
        if key.labels.len() > self.max_labels {
            return Err(CounterError(format!(
                "`labels`: {} labels, at most {} allowed (--counter-max-labels)",
                key.labels.len(),
                self.max_labels
            )));
        }
        let bytes: usize = key.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > self.max_label_bytes {
            return Err(CounterError(format!(
                "`labels`: {bytes} bytes of label names and values, at most {} allowed \
                 (--counter-max-label-bytes)",
                self.max_label_bytes
            )));
        }
        Ok(())
    }
}
/// Names starting with this are the node's own metrics.
pub const RESERVED_PREFIX: &str = "logmesh_";

/// Namespace of the UUIDv5 storage keys.
const KEY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c6f_676d_6573_6800_0000_0000_0000_0002);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CounterError(pub String);

/// A counter's identity: its name and its labels, sorted by label name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A counter and its current value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: i64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl CounterKey {
    /// Checks a name and labels against Prometheus's rules and our limits.
    pub fn new(name: &str, labels: BTreeMap<String, String>) -> Result<CounterKey, CounterError> {
        if !is_metric_name(name) || name.len() > MAX_NAME_BYTES {
            return Err(CounterError(format!(
                "`name`: `{name}` is not a metric name (1-{MAX_NAME_BYTES} bytes of \
                 [a-zA-Z_:][a-zA-Z0-9_:]*)"
            )));
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(CounterError(format!(
                "`name`: names starting with `{RESERVED_PREFIX}` are reserved for logmesh's own metrics"
            )));
        }
        for (label, value) in &labels {
            if !is_label_name(label) || label.len() > MAX_NAME_BYTES {
                return Err(CounterError(format!(
                    "`labels`: `{label}` is not a label name (1-{MAX_NAME_BYTES} bytes of \
                     [a-zA-Z_][a-zA-Z0-9_]*)"
                )));
            }
            if label.starts_with("__") {
                return Err(CounterError(format!(
                    "`labels`: `{label}`: label names starting with `__` are reserved"
                )));
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(CounterError(format!(
                    "`labels`: the value of `{label}` is {} bytes, at most {MAX_VALUE_BYTES} allowed",
                    value.len()
                )));
            }
        }
        Ok(CounterKey {
            name: name.to_owned(),
            labels,
        })
    }

    /// The labels as canonical JSON (sorted keys), as stored.
    pub fn labels_json(&self) -> String {
        serde_json::to_string(&self.labels).expect("string maps serialise")
    }

    /// The storage key: a UUIDv5 of the name and the canonical labels, so that a fixed-width
    /// primary key identifies any label set on every backend.
    pub fn storage_key(&self) -> String {
        let identity = format!("{}\n{}", self.name, self.labels_json());
        uuid::Uuid::new_v5(&KEY_NAMESPACE, identity.as_bytes()).to_string()
    }
}

/// A sample of the exposition or of a query result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family for the exposition: one name, its help text, its samples.
pub struct Family {
    pub name: String,
    pub help: String,
    pub samples: Vec<Sample>,
    /// A value that also goes down (`# TYPE … gauge`), not a counter.
    pub gauge: bool,
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus writes it: integers without a fraction.
pub fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Renders families (counters, or gauges where said) in the Prometheus text format (version
/// 0.0.4).
pub fn render_counters(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
        let kind = if family.gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for sample in &family.samples {
            out.push_str(&family.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (label, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(label);
                    out.push_str("=\"");
                    escape_label_value(value, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(sample.value));
        }
    }
    out
}

/// Groups stored counters into families, by name.
pub fn families(counters: &[Counter]) -> Vec<Family> {
    let mut by_name: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for counter in counters {
        by_name.entry(&counter.name).or_default().push(Sample {
            labels: counter.labels.clone(),
            value: counter.value as f64,
        });
    }
    by_name
        .into_iter()
        .map(|(name, samples)| Family {
            name: name.to_owned(),
            help: format!("Counter {name}, bumped through POST /metrics."),
            samples,
            gauge: false,
        })
        .collect()
}

/// Longest PromQL expression `GET /metrics/query` takes, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Deepest nesting of brackets in an expression.
pub const MAX_QUERY_NESTING: usize = 32;
/// Most operators (`+ - * / % ^ < > = !`, `and`, `or`, `unless`) outside label matchers.
pub const MAX_QUERY_OPERATORS: usize = 64;

/// Parses `expression` and refuses anything outside the subset.
///
/// The parser recurses, so an expression is bounded before it is parsed: tens of thousands of
/// `-` signs or parentheses overflow a runtime thread's stack, which aborts the process.
pub fn parse_query(expression: &str) -> Result<Expr, CounterError> {
    check_query_size(expression)?;
    let expr = parser::parse(expression)
        .map_err(|e| CounterError(format!("`expression` does not parse: {e}")))?;
    check_supported(&expr)?;
    Ok(expr)
}

/// Refuses an expression longer than [`MAX_QUERY_BYTES`], nested deeper than
/// [`MAX_QUERY_NESTING`] or with more than [`MAX_QUERY_OPERATORS`] operators, without parsing it.
/// A lexical scan: quoted strings are skipped, label matchers (`{...}`) are not operators.
pub fn check_query_size(expression: &str) -> Result<(), CounterError> {
    if expression.len() > MAX_QUERY_BYTES {
        return Err(CounterError(format!(
            "`expression` is {} bytes; at most {MAX_QUERY_BYTES} are allowed",
            expression.len()
        )));
    }
    let bytes = expression.as_bytes();
    let (mut depth, mut deepest, mut braces, mut operators) = (0usize, 0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            // A comment runs to the end of the line, quotes in it included.
            b'#' => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' | b'`' => {
                // Skip the string, honouring backslash escapes (none in backtick strings).
                i += 1;
                while i < bytes.len() && bytes[i] != byte {
                    if bytes[i] == b'\\' && byte != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                braces += usize::from(byte == b'{');
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if byte == b'}' {
                    braces = braces.saturating_sub(1);
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' if braces == 0 => {
                operators += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':' => {
                let start = i;
                while i + 1 < bytes.len()
                    && (bytes[i + 1].is_ascii_alphanumeric() || matches!(bytes[i + 1], b'_' | b':'))
                {
                    i += 1;
                }
                let word = &expression[start..=i];
                if braces == 0
                    && ["and", "or", "unless"]
                        .iter()
                        .any(|op| word.eq_ignore_ascii_case(op))
                {
                    operators += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if deepest > MAX_QUERY_NESTING {
        return Err(CounterError(format!(
            "`expression` nests brackets {deepest} deep; at most {MAX_QUERY_NESTING} levels are \
             allowed"
        )));
    }
    if operators > MAX_QUERY_OPERATORS {
        return Err(CounterError(format!(
            "`expression` has {operators} operators; at most {MAX_QUERY_OPERATORS} are allowed \
             (and logmesh evaluates none: only selectors and aggregations)"
        )));
    }
    Ok(())
}

fn unsupported(what: &str) -> CounterError {
    CounterError(format!(
        "`expression`: {what} is not supported; logmesh evaluates instant vector selectors \
         (=, !=, =~, !~) and sum, min, max, avg and count with by/without"
    ))
}

fn check_matchers(matchers: &Matchers) -> Result<(), CounterError> {
    if !matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` between label matchers"));
    }
    Ok(())
}

fn check_supported(expr: &Expr) -> Result<(), CounterError> {
    match expr {
        Expr::VectorSelector(selector) => {
            if selector.offset.is_some() {
                return Err(unsupported("`offset`"));
            }
            if selector.at.is_some() {
                return Err(unsupported("`@`"));
            }
            check_matchers(&selector.matchers)
        }
        Expr::Aggregate(aggregate) => {
            let op = aggregate.op.id();
            if ![
                token::T_SUM,
                token::T_MIN,
                token::T_MAX,
                token::T_AVG,
                token::T_COUNT,
            ]
            .contains(&op)
            {
                return Err(unsupported(&format!("the aggregation `{}`", aggregate.op)));
            }
            match aggregate.expr.as_ref() {
                Expr::VectorSelector(_) | Expr::Paren(_) => check_supported(&aggregate.expr),
                _ => Err(unsupported("aggregating anything but a selector")),
            }
        }
        Expr::Paren(paren) => check_supported(&paren.expr),
        Expr::Call(call) => Err(unsupported(&format!("the function `{}`", call.func.name))),
        Expr::Binary(_) => Err(unsupported("a binary operator")),
        Expr::Unary(_) => Err(unsupported("a unary operator")),
        Expr::MatrixSelector(_) => Err(unsupported("a range selector")),
        Expr::Subquery(_) => Err(unsupported("a subquery")),
        Expr::NumberLiteral(_) => Err(unsupported("a number literal")),
        Expr::StringLiteral(_) => Err(unsupported("a string literal")),
        Expr::Extension(_) => Err(unsupported("an extension")),
    }
}

fn matches(matchers: &Matchers, name: Option<&str>, series: &Sample) -> bool {
    let label = |label: &str| -> &str {
        if label == "__name__" {
            series.labels.get("__name__").map_or("", String::as_str)
        } else {
            series.labels.get(label).map_or("", String::as_str)
        }
    };
    name.is_none_or(|name| label("__name__") == name)
        && matchers.matchers.iter().all(|matcher| match &matcher.op {
            MatchOp::Equal | MatchOp::NotEqual | MatchOp::Re(_) | MatchOp::NotRe(_) => {
                matcher.is_match(label(&matcher.name))
            }
        })
}

/// Evaluates a checked expression over `series` (each with its `__name__` label).
pub fn evaluate(expr: &Expr, series: &[Sample]) -> Vec<Sample> {
    match expr {
        Expr::VectorSelector(selector) => series
            .iter()
            .filter(|s| matches(&selector.matchers, selector.name.as_deref(), s))
            .cloned()
            .collect(),
        Expr::Paren(paren) => evaluate(&paren.expr, series),
        Expr::Aggregate(aggregate) => {
            let input = evaluate(&aggregate.expr, series);
            let mut groups: BTreeMap<BTreeMap<String, String>, Vec<f64>> = BTreeMap::new();
            for sample in input {
                let key: BTreeMap<String, String> = match &aggregate.modifier {
                    None => BTreeMap::new(),
                    Some(LabelModifier::Include(by)) => sample
                        .labels
                        .iter()
                        .filter(|(name, _)| by.labels.contains(name))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    Some(LabelModifier::Exclude(without)) => sample
                        .labels
                        .iter()
                        .filter(|(name, _)| *name != "__name__" && !without.labels.contains(name))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                };
                groups.entry(key).or_default().push(sample.value);
            }
            let op = aggregate.op.id();
            groups
                .into_iter()
                .map(|(labels, values)| {
                    let sum: f64 = values.iter().sum();
                    let value = match op {
                        o if o == token::T_SUM => sum,
                        o if o == token::T_MIN => {
                            values.iter().copied().fold(f64::INFINITY, f64::min)
                        }
                        o if o == token::T_MAX => {
                            values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                        }
                        o if o == token::T_AVG => sum / values.len() as f64,
                        _ => values.len() as f64,
                    };
                    Sample { labels, value }
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The series a query runs over: every sample of `families`, with `__name__` set.
pub fn series(families: &[Family]) -> Vec<Sample> {
    families
        .iter()
        .flat_map(|family| {
            family.samples.iter().map(|sample| {
                let mut labels = sample.labels.clone();
                labels.insert("__name__".into(), family.name.clone());
                Sample {
                    labels,
                    value: sample.value,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_and_labels_follow_prometheus_rules() {
        assert!(CounterKey::new("http_requests_total", labels(&[("code", "200")])).is_ok());
        assert!(CounterKey::new("a:b_c", BTreeMap::new()).is_ok());
        for (name, labels, expected) in [
            ("1bad", labels(&[]), "is not a metric name"),
            ("bad-name", labels(&[]), "is not a metric name"),
            ("", labels(&[]), "is not a metric name"),
            ("logmesh_x", labels(&[]), "reserved"),
            ("ok", labels(&[("bad-label", "v")]), "is not a label name"),
            ("ok", labels(&[("__x", "v")]), "reserved"),
        ] {
            let error = CounterKey::new(name, labels).unwrap_err().to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
        let long = labels(&[("l", &"v".repeat(4097))]);
        assert!(
            CounterKey::new("ok", long)
                .unwrap_err()
                .0
                .contains("4097 bytes")
        );
    }

    #[test]
    fn the_limits_bound_labels_per_series_and_their_bytes() {
        let limits = CounterLimits::default();
        let many: BTreeMap<String, String> =
            (0..17).map(|i| (format!("l{i}"), "v".to_owned())).collect();
        let error = limits
            .check_shape(&CounterKey::new("ok", many).unwrap())
            .unwrap_err()
            .0;
        assert!(
            error.contains("at most 16") && error.contains("--counter-max-labels"),
            "{error}"
        );
        let long = CounterKey::new("ok", labels(&[("l", &"v".repeat(1024))])).unwrap();
        let error = limits.check_shape(&long).unwrap_err().0;
        assert!(
            error.contains("1025 bytes") && error.contains("--counter-max-label-bytes"),
            "{error}"
        );
        let fine = CounterKey::new("ok", labels(&[("l", &"v".repeat(1023))])).unwrap();
        assert!(limits.check_shape(&fine).is_ok());
    }

    #[test]
    fn the_storage_key_ignores_label_order_but_not_labels() {
        let a = CounterKey::new("c", labels(&[("a", "1"), ("b", "2")])).unwrap();
        let b = CounterKey::new("c", labels(&[("b", "2"), ("a", "1")])).unwrap();
        let c = CounterKey::new("c", labels(&[("a", "1")])).unwrap();
        assert_eq!(a.storage_key(), b.storage_key());
        assert_ne!(a.storage_key(), c.storage_key());
    }

    #[test]
    fn exposition_escapes_label_values_and_groups_families() {
        let counters = vec![
            Counter {
                name: "b_total".into(),
                labels: labels(&[("path", "a\"b\\c\nd")]),
                value: 3,
            },
            Counter {
                name: "a_total".into(),
                labels: BTreeMap::new(),
                value: 1,
            },
            Counter {
                name: "b_total".into(),
                labels: labels(&[("path", "/")]),
                value: 2,
            },
        ];
        let text = render_counters(&families(&counters));
        assert_eq!(
            text,
            "# HELP a_total Counter a_total, bumped through POST /metrics.\n\
             # TYPE a_total counter\n\
             a_total 1\n\
             # HELP b_total Counter b_total, bumped through POST /metrics.\n\
             # TYPE b_total counter\n\
             b_total{path=\"a\\\"b\\\\c\\nd\"} 3\n\
             b_total{path=\"/\"} 2\n"
        );
    }

    fn sample_series() -> Vec<Sample> {
        let counters = vec![
            Counter {
                name: "req".into(),
                labels: labels(&[("code", "200"), ("path", "/a")]),
                value: 5,
            },
            Counter {
                name: "req".into(),
                labels: labels(&[("code", "500"), ("path", "/a")]),
                value: 1,
            },
            Counter {
                name: "req".into(),
                labels: labels(&[("code", "200"), ("path", "/b")]),
                value: 3,
            },
            Counter {
                name: "other".into(),
                labels: labels(&[("code", "200")]),
                value: 100,
            },
        ];
        series(&families(&counters))
    }

    fn run(expression: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let expr = parse_query(expression).unwrap();
        let mut result: Vec<_> = evaluate(&expr, &sample_series())
            .into_iter()
            .map(|s| (s.labels, s.value))
            .collect();
        result.sort_by(|a, b| a.0.cmp(&b.0));
        result
    }

    #[test]
    fn selectors_match_names_and_labels() {
        assert_eq!(run("req").len(), 3);
        assert_eq!(run(r#"req{code="200"}"#).len(), 2);
        assert_eq!(run(r#"req{code!="200"}"#).len(), 1);
        assert_eq!(run(r#"req{path=~"/(a|c)"}"#).len(), 2);
        assert_eq!(run(r#"req{path!~"/a"}"#).len(), 1);
        assert_eq!(run(r#"{code="200"}"#).len(), 3);
        assert_eq!(run(r#"{__name__=~"o.*"}"#).len(), 1);
        // Regexes are anchored, as in Prometheus.
        assert_eq!(run(r#"req{path=~"/"}"#).len(), 0);
    }

    #[test]
    fn aggregations_group_by_and_without() {
        assert_eq!(run("sum(req)"), [(labels(&[]), 9.0)]);
        assert_eq!(
            run("sum by (code) (req)"),
            [
                (labels(&[("code", "200")]), 8.0),
                (labels(&[("code", "500")]), 1.0)
            ]
        );
        assert_eq!(
            run("max without (code) (req)"),
            [
                (labels(&[("path", "/a")]), 5.0),
                (labels(&[("path", "/b")]), 3.0)
            ]
        );
        assert_eq!(run("min(req)"), [(labels(&[]), 1.0)]);
        assert_eq!(run("avg(req)"), [(labels(&[]), 3.0)]);
        assert_eq!(run("count(req)"), [(labels(&[]), 3.0)]);
        assert_eq!(run("sum(({code=\"200\"}))"), [(labels(&[]), 108.0)]);
    }

    #[test]
    fn the_size_check_skips_strings_and_matchers() {
        assert!(
            check_query_size(
                r#"sum by (a) (req{a=~"((((((((((((((((((((((((((((((((((", b!="-+-+"})"#
            )
            .is_ok()
        );
        assert!(
            check_query_size(r#"req{a="\"(((((((((((((((((((((((((((((((((((((((((((((("}"#)
                .is_ok()
        );
        assert!(check_query_size("sum(((((req)))))").is_ok());
        assert!(check_query_size(&format!("{}a", "-".repeat(64))).is_ok());
        assert!(check_query_size(&format!("{}a", "-".repeat(65))).is_err());
        // A quote in a comment does not hide what follows it.
        assert!(check_query_size(&format!("#\"\n{}a", "-".repeat(100))).is_err());
        assert!(check_query_size("# a comment with ((( and \"\nreq").is_ok());
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        for (expression, expected) in [
            ("rate(req[5m])", "the function `rate`"),
            ("req[5m]", "a range selector"),
            ("req + req", "a binary operator"),
            ("req offset 5m", "`offset`"),
            ("topk(1, req)", "the aggregation `topk`"),
            ("-req", "a unary operator"),
            ("1", "a number literal"),
            (r#"req{code="1" or code="2"}"#, "`or`"),
            ("sum(", "does not parse"),
            (&"-".repeat(50_000), "50000 bytes"),
            (&format!("{}a", "-".repeat(100)), "100 operators"),
            (&format!("{}a{}", "(".repeat(40), ")".repeat(40)), "40 deep"),
            (&format!("a{}", " or a".repeat(70)), "70 operators"),
        ] {
            let error = parse_query(expression).unwrap_err().0;
            assert!(error.contains(expected), "{expression}: {error}");
        }
    }
}
