//! Property tests of every parser that takes untrusted bytes: event bodies (JSON, NDJSON, raw,
//! gzip; OTLP protobuf and JSON; Loki protobuf, label sets and JSON; Elasticsearch bulk),
//! timestamps, PromQL, counter names, cursors, regexes, file names, and the query
//! parameters of every GET endpoint over real HTTP. None may panic or overflow its stack; each
//! either answers or refuses with a reason; file names never resolve outside the log roots.
//!
//! A short run (proptest's default 256 cases each) is part of the suite; a longer one:
//! `PROPTEST_CASES=100000 cargo test --release --test properties`.

mod common;

use logmesh::event::bounds::Expansion;
use logmesh::event::loki::{self, EntryAdapter, LokiMapping, PushRequest, StreamAdapter};
use logmesh::event::otlp;
use logmesh::event::python_logging::{event_from_log_record, is_log_record};
use logmesh::event::{
    FieldMap, IngestContext, parse_json_body, parse_mapped_body, parse_raw_body,
    parse_timestamp_text,
};
use logmesh::files::LogRoots;
use proptest::prelude::*;
use prost::Message;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

const CTX: IngestContext<'static> = IngestContext {
    node: "n",
    now_us: 1_800_000_000_000_000,
    oldest_us: i64::MIN,
};

/// The expansion bound of a node with the default body limit.
fn roomy() -> Expansion {
    Expansion::for_body_limit(10 << 20)
}

/// Arbitrary JSON, nested up to a few levels, with the field names events use.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "\\PC{0,40}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("2026-11-23T10:15:00Z"),
            Just("9999-12-31T23:59:59-23:59"),
            Just("warning"),
            Just("7"),
            Just("")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("service".to_owned()),
                    Just("severity".to_owned()),
                    Just("message".to_owned()),
                    Just("attributes".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..7
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

proptest! {
    #[test]
    fn json_bodies_parse_or_are_refused_with_a_reason(value in json_value()) {
        let text = value.to_string();
        match parse_json_body(text.as_bytes(), CTX) {
            Ok(events) => {
                prop_assert!(!events.is_empty());
                for event in events {
                    prop_assert!(!event.id.is_empty() && !event.service.is_empty());
                    prop_assert!(event.ts_us >= 0);
                    prop_assert!(event.ts_us <= CTX.now_us + 2 * 86_400 * 1_000_000);
                }
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
        // The same objects as NDJSON.
        if let serde_json::Value::Array(items) = &value {
            let ndjson: String = items.iter().map(|item| format!("{item}\n")).collect();
            let _ = parse_json_body(ndjson.as_bytes(), CTX);
        }
    }

    #[test]
    fn documents_of_any_shape_map_or_are_refused_with_a_reason(value in json_value()) {
        let mut fields = FieldMap::common();
        fields.default_service = Some("svc".into());
        match parse_mapped_body(value.to_string().as_bytes(), &fields, CTX) {
            Ok(events) => {
                for event in events {
                    prop_assert!(!event.service.is_empty());
                    prop_assert!(event.ts_us <= CTX.now_us + 2 * 86_400 * 1_000_000);
                    if let Some(attributes) = event.attributes_json() {
                        // Flattened: no nested object or array is left in the attributes.
                        let attributes: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str(attributes).unwrap();
                        prop_assert!(attributes.values().all(|v| !v.is_object() && !v.is_array()));
                    }
                }
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn python_log_records_never_panic(
        msg in "[%()sdrxf.0-9a-z ]{0,30}|\\PC{0,30}",
        args in "[(){}\\[\\]'\",:a-z0-9 .<>=-]{0,40}",
        level in "\\PC{0,8}",
        created in "[0-9.e+-]{0,20}",
    ) {
        let fields: Vec<(String, String)> = [
            ("name", "app".to_owned()),
            ("msg", msg),
            ("args", args),
            ("levelname", level),
            ("created", created),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        prop_assert!(is_log_record(&fields));
        let _ = event_from_log_record(&fields, None, CTX);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_body_parser(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_json_body(&bytes, CTX);
        let _ = parse_mapped_body(&bytes, &FieldMap::common(), CTX);
        let _ = parse_raw_body(&bytes, None, None, CTX);
        let _ = parse_raw_body(&bytes, Some("svc"), Some("warn"), CTX);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_shippers_decoders(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        if let Ok(request) = otlp::decode_protobuf(&bytes) {
            let _ = otlp::events_from_request(request, CTX, &mut roomy());
        }
        if let Ok(request) = otlp::decode_json(&bytes) {
            let _ = otlp::events_from_request(request, CTX, &mut roomy());
        }
        let _ = loki::events_from_protobuf(&bytes, &LokiMapping::default(), CTX, &mut roomy());
        let _ = loki::events_from_json(&bytes, &LokiMapping::default(), CTX, &mut roomy());
    }

    #[test]
    fn damaged_protobuf_requests_decode_or_are_refused(
        seed in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        labels in "\\PC{0,80}|\\{[a-z_]{1,8}=\"\\PC{0,12}\"(, ?[a-z_]{1,8}=~?\"\\PC{0,12}\"){0,3}\\}",
    ) {
        let push = PushRequest {
            streams: vec![StreamAdapter {
                labels,
                entries: vec![EntryAdapter {
                    timestamp: Some(prost_types::Timestamp { seconds: 1_790_000_000, nanos: 5 }),
                    line: "line".into(),
                    structured_metadata: Vec::new(),
                }],
                hash: 0,
            }],
        };
        let mut encoded = push.encode_to_vec();
        let _ = loki::events_from_protobuf(&encoded, &LokiMapping::default(), CTX, &mut roomy());
        for (at, byte) in seed {
            let at = at.index(encoded.len());
            encoded[at] = byte;
        }
        let _ = loki::events_from_protobuf(&encoded, &LokiMapping::default(), CTX, &mut roomy());
        if let Ok(request) = otlp::decode_protobuf(&encoded) {
            let _ = otlp::events_from_request(request, CTX, &mut roomy());
        }
    }

    #[test]
    fn otlp_json_of_any_shape_maps_or_is_refused(value in json_value()) {
        let body = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"body": value.clone(), "attributes": [{"key": "k", "value": value}]}]}]}]});
        if let Ok(request) = otlp::decode_json(body.to_string().as_bytes()) {
            let export = otlp::events_from_request(request, CTX, &mut roomy()).unwrap();
            prop_assert_eq!(export.events.len() as u64 + export.rejected, 1);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed_into(depth in 100usize..20_000, open in "[\\[{]") {
        let close = if open == "[" { "]" } else { "}" };
        let inner = if open == "[" { "1".to_owned() } else { String::new() };
        let nested = format!("{}{}{}", open.repeat(depth), inner, close.repeat(depth));
        let body = format!(r#"{{"service":"a","message":"m","attributes":{{"x":{nested}}}}}"#);
        prop_assert!(parse_json_body(body.as_bytes(), CTX).is_err());
    }

    #[test]
    fn timestamps_as_text_never_panic(text in "\\PC{0,40}|[0-9+:TZ.-]{0,40}") {
        if let Ok(us) = parse_timestamp_text(&text) {
            prop_assert!(us >= 0);
        }
    }

    #[test]
    fn promql_is_parsed_or_refused_never_overflowing(
        expression in "[-+*/^%()\\[\\]{}=~!\"a-z_:, 0-9]{0,300}|(sum|min|max|count|avg| by | without |\\(|\\)|\\{|\\}|a|=~|\"x\"|-|,){0,120}"
    ) {
        let _ = logmesh::counters::parse_query(&expression);
    }

    #[test]
    fn counter_names_and_labels_are_checked(name in "\\PC{0,40}", label in "\\PC{0,20}", value in "\\PC{0,40}") {
        let labels = std::iter::once((label, value)).collect();
        if let Ok(key) = logmesh::counters::CounterKey::new(&name, labels) {
            prop_assert!(!key.name.is_empty());
            prop_assert!(!key.storage_key().is_empty());
        }
    }

    #[test]
    fn cursors_and_regexes_never_panic(text in "\\PC{0,64}") {
        let _ = logmesh::store::Cursor::decode(&text);
        let _ = logmesh::files::scan::Matcher::regex(&text, false);
        let _ = logmesh::files::scan::Matcher::regex(&text, true);
    }
}

/// A log root holding `app.log`, a directory, a symlink inside and one leading out, and a FIFO.
fn roots() -> &'static (tempfile::TempDir, tempfile::TempDir, LogRoots) {
    static ROOTS: OnceLock<(tempfile::TempDir, tempfile::TempDir, LogRoots)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.log"), "secret\n").unwrap();
        std::fs::write(root.path().join("app.log"), "line\n").unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/b.log"), "line\n").unwrap();
        std::os::unix::fs::symlink(root.path().join("app.log"), root.path().join("inside.log"))
            .unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.log"),
            root.path().join("out.log"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("outdir")).unwrap();
        let roots = LogRoots::new(&[root.path().to_owned()]).unwrap();
        (root, outside, roots)
    })
}

proptest! {
    #[test]
    fn file_names_never_resolve_outside_the_roots(
        parts in prop::collection::vec(
            prop_oneof![
                Just(".."), Just("."), Just(""), Just("app.log"), Just("sub"), Just("b.log"),
                Just("inside.log"), Just("out.log"), Just("outdir"), Just("secret.log"),
                Just("%2e%2e"), Just("\u{0}"), Just("/"), Just("//"),
            ],
            0..8,
        ),
        absolute in any::<bool>(),
    ) {
        let (root, _outside, roots) = roots();
        let mut name = parts.join("/");
        if absolute {
            name.insert(0, '/');
        }
        if let Ok(path) = roots.resolve(&name) {
            let root = std::fs::canonicalize(root.path()).unwrap();
            prop_assert!(path.starts_with(&root), "{name:?} resolved to {}", path.display());
            prop_assert!(Path::new(&path).is_file());
        }
    }
}

/// A node shared by the HTTP properties, on a runtime of its own.
fn node() -> &'static (tokio::runtime::Runtime, common::TestNode) {
    static NODE: OnceLock<(tokio::runtime::Runtime, common::TestNode)> = OnceLock::new();
    NODE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let logs = tempfile::tempdir().unwrap().keep();
        let node = runtime.block_on(common::TestNode::start(|config| {
            config.log_roots = vec![logs];
            config.max_body_bytes = 64 * 1024;
        }));
        (runtime, node)
    })
}

/// A query value built from the characters that matter to the parsers.
fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,30}",
        "[a-z0-9*,:=~!(){}\"' .%-]{0,30}",
        Just("*".to_owned()),
        Just("100001".to_owned()),
        Just("-1".to_owned()),
        Just("true".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn query_parameters_of_every_get_endpoint_are_answered_or_refused(
        path in prop_oneof![
            Just("/api/v1/logs/search"), Just("/logs"), Just("/logs/files"),
            Just("/metrics/query"), Just("/api/v1/node/stats"), Just("/api/v1/logs/stats"),
        ],
        params in prop::collection::vec((
            prop_oneof![
                Just("q"), Just("service"), Just("severity"), Just("since"), Just("until"),
                Just("limit"), Just("cursor"), Just("hostname"), Just("filename"),
                Just("keyword"), Just("regex"), Just("n"), Just("order"), Just("ignore_case"),
                Just("expression"), Just("bogus"),
            ],
            query_value(),
        ), 0..5),
    ) {
        let (runtime, node) = node();
        let (status, body) = runtime.block_on(async {
            let response = node.get(path).query(&params).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        });
        prop_assert!(status < 500, "{path} {params:?}: {status}");
        if status >= 400 {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            prop_assert!(body["error"]["message"].is_string(), "{body}");
        }
    }

    #[test]
    fn ingest_bodies_are_accepted_or_refused_whole(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        value in json_value(),
        compress in any::<bool>(),
        raw in any::<bool>(),
    ) {
        let (runtime, node) = node();
        for body in [bytes, value.to_string().into_bytes()] {
            let body = if compress { gzip(&body) } else { body };
            let path = if raw { "/event" } else { "/api/v1/logs" };
            let mut request = node.post(path).body(body);
            if compress {
                request = request.header("content-encoding", "gzip");
            }
            let status = runtime.block_on(async { request.send().await.unwrap().status().as_u16() });
            prop_assert!(matches!(status, 202 | 400 | 413), "{path}: {status}");
        }
    }

    #[test]
    fn shipper_bodies_are_answered_in_their_protocol_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        value in json_value(),
        snappy in any::<bool>(),
    ) {
        let (runtime, node) = node();
        for body in [bytes, value.to_string().into_bytes()] {
            let cases = [
                ("/v1/logs", "application/x-protobuf", &[200, 400, 413][..]),
                ("/otlp/v1/logs", "application/json", &[200, 400, 413][..]),
                ("/loki/api/v1/push", "application/x-protobuf", &[204, 400, 413][..]),
                ("/loki/api/v1/push", "application/json", &[204, 400, 413][..]),
                ("/_bulk", "application/x-ndjson", &[200, 400, 413][..]),
            ];
            for (path, content_type, statuses) in cases {
                let body = if snappy && content_type == "application/x-protobuf" && path.starts_with("/loki") {
                    snap::raw::Encoder::new().compress_vec(&body).unwrap()
                } else {
                    body.clone()
                };
                let request = node.post(path).header("content-type", content_type).body(body);
                let status = runtime.block_on(async { request.send().await.unwrap().status().as_u16() });
                prop_assert!(statuses.contains(&status), "{path} {content_type}: {status}");
            }
        }
    }
}
