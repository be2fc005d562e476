//! Test tiers. Plain `cargo test` needs Rust alone: unit tests, SQLite and embedded nodes always
//! run. A test that needs more (a NATS server, PostgreSQL, MariaDB, root for a tmpfs, a browser,
//! a Python client) starts with [`needs!`](crate::needs): when what it names is missing, the test
//! returns at once and says so on the terminal, so a run without services passes and shows what
//! it did not test, never silently:
//!
//! ```text
//! SKIPPED cluster::a_node_killed_mid_batch…: needs NATS (LOGMESH_TEST_NATS_URL)
//! ```
//!
//! `scripts/test.sh` (the README's test command, which CI runs) installs and starts everything and
//! sets `LOGMESH_TEST_ALL_TIERS=1`: there a missing need fails the test instead of skipping it.

use std::io::Write;
use std::path::Path;

/// What a test may need beyond Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The suite's shared NATS with JetStream (`LOGMESH_TEST_NATS_URL`).
    Nats,
    /// A current nats-server binary, for tests that start their own.
    NatsServer,
    /// The oldest supported nats-server release (2.10).
    NatsServerMinimum,
    /// A nats-server older than logmesh supports, or word that the machine has none (the
    /// variable set but empty).
    NatsServerTooOld,
    /// The shared PostgreSQL (`LOGMESH_TEST_POSTGRES_URL`, a superuser).
    Postgres,
    /// PostgreSQL's binaries, for tests that start and kill their own server.
    PostgresServer,
    /// The shared MySQL or MariaDB (`LOGMESH_TEST_MYSQL_URL`, root).
    Mysql,
    /// MariaDB's binaries, for tests that start and kill their own server.
    MariadbServer,
    /// PyPI's prometheus_client, the reference parser of the text exposition.
    PrometheusClient,
    /// PyPI's schemathesis, which tests the API against its OpenAPI document.
    Schemathesis,
    /// Chromium with Node.js and playwright-core (tests/console), for the console's tests.
    Browser,
    /// Root, to mount a small tmpfs and fill it.
    Root,
    /// python3, whose standard library holds `logging.handlers.HTTPHandler`.
    Python3,
    /// PyPI's Elasticsearch client, a real sender of the bulk API.
    ElasticsearchClient,
    /// Debian's rsyslogd with its Elasticsearch output module.
    Rsyslog,
    /// PyPI's OpenTelemetry SDK with its OTLP/HTTP (protobuf) log exporter.
    OtelPython,
    /// PyPI's python-logging-loki, a Loki push sender.
    LokiPython,
    /// The Node.js senders in tests/js-clients (the OpenTelemetry JS SDK's OTLP exporters,
    /// winston-loki with snappy).
    JsClients,
}

impl Need {
    /// `None` when this need is met, else what is missing, in words.
    fn missing(self) -> Option<String> {
        let variable = |name: &str| -> Option<String> {
            match std::env::var_os(name) {
                Some(value) if !value.is_empty() => None,
                _ => Some(name.to_owned()),
            }
        };
        let described = |what: &str, missing: Option<String>| {
            missing.map(|detail| format!("{what} ({detail})"))
        };
        match self {
            Need::Nats => described("NATS", variable("LOGMESH_TEST_NATS_URL")),
            Need::NatsServer => described("a nats-server", variable("LOGMESH_TEST_NATS_SERVER")),
            Need::NatsServerMinimum => described(
                "nats-server 2.10",
                variable("LOGMESH_TEST_NATS_SERVER_MINIMUM"),
            ),
            Need::NatsServerTooOld => std::env::var_os("LOGMESH_TEST_NATS_SERVER_TOO_OLD")
                .is_none()
                .then(|| {
                    "a nats-server older than 2.10, or word that there is none \
                     (LOGMESH_TEST_NATS_SERVER_TOO_OLD set, empty)"
                        .into()
                }),
            Need::Postgres => described("PostgreSQL", variable("LOGMESH_TEST_POSTGRES_URL")),
            Need::PostgresServer => {
                described("PostgreSQL's binaries", variable("LOGMESH_TEST_PG_BIN"))
            }
            Need::Mysql => described("MySQL/MariaDB", variable("LOGMESH_TEST_MYSQL_URL")),
            Need::MariadbServer => described(
                "MariaDB's binaries",
                variable("LOGMESH_TEST_MARIADBD")
                    .or_else(|| variable("LOGMESH_TEST_MARIADB_INSTALL_DB")),
            ),
            Need::PrometheusClient => described(
                "PyPI's prometheus_client",
                variable("LOGMESH_TEST_PYTHONPATH"),
            ),
            Need::Schemathesis => described("schemathesis", variable("LOGMESH_TEST_SCHEMATHESIS")),
            Need::Browser => {
                let chromium = chromium();
                let playwright = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/console/node_modules/playwright-core");
                if !Path::new(&chromium).exists() {
                    Some(format!(
                        "Chromium (none at {chromium}; LOGMESH_TEST_CHROMIUM)"
                    ))
                } else if !on_path("node") {
                    Some("Node.js (no `node` on PATH)".into())
                } else if !playwright.is_dir() {
                    Some("playwright-core (`npm ci` in tests/console)".into())
                } else {
                    None
                }
            }
            Need::Python3 => (!on_path("python3")).then(|| "python3 (on PATH)".into()),
            Need::Rsyslog => described(
                "rsyslogd with omelasticsearch",
                variable("LOGMESH_TEST_RSYSLOGD"),
            ),
            Need::ElasticsearchClient => described(
                "PyPI's elasticsearch client",
                variable("LOGMESH_TEST_ELASTICSEARCH_PYTHONPATH"),
            ),
            Need::OtelPython => described(
                "PyPI's opentelemetry-sdk and OTLP/HTTP exporter",
                variable("LOGMESH_TEST_OTEL_PYTHONPATH"),
            ),
            Need::LokiPython => described(
                "PyPI's python-logging-loki",
                variable("LOGMESH_TEST_LOKI_PYTHONPATH"),
            ),
            Need::JsClients => {
                let modules = js_clients().join("node_modules");
                if !on_path("node") {
                    Some("Node.js (no `node` on PATH)".into())
                } else if !["winston-loki", "snappy", "@opentelemetry/sdk-logs"]
                    .iter()
                    .all(|package| modules.join(package).is_dir())
                {
                    Some("the Node.js senders (`npm ci` in tests/js-clients)".into())
                } else {
                    None
                }
            }
            Need::Root => {
                // SAFETY: geteuid(2) has no preconditions.
                (unsafe { libc::geteuid() } != 0).then(|| "root (to mount a tmpfs)".into())
            }
        }
    }
}

/// The browser the console's tests drive: `LOGMESH_TEST_CHROMIUM`, or Debian's path.
pub fn chromium() -> String {
    std::env::var("LOGMESH_TEST_CHROMIUM")
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| "/usr/bin/chromium".into())
}

/// The folder of the Node.js senders (tests/js-clients).
pub fn js_clients() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js-clients")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether every tier must run (`LOGMESH_TEST_ALL_TIERS`, which scripts/test.sh sets).
fn all_tiers_required() -> bool {
    std::env::var_os("LOGMESH_TEST_ALL_TIERS").is_some_and(|value| !value.is_empty())
}

/// True when the calling test must be skipped because something in `needs` is missing; it has
/// then been reported on the terminal. Panics instead when every tier must run.
pub fn skip_without(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|need| need.missing()).collect();
    if missing.is_empty() {
        return false;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let crate_name = env!("CARGO_CRATE_NAME");
    assert!(
        !all_tiers_required(),
        "{test} needs {}, and LOGMESH_TEST_ALL_TIERS says every tier must run: run the tests \
         through scripts/test.sh, which installs and starts what they need",
        missing.join(", ")
    );
    // Straight to the terminal: libtest captures `eprintln!` of a passing test.
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {crate_name}::{test}: needs {} (scripts/test.sh runs every tier)",
        missing.join(", ")
    );
    true
}

/// Returns from the test, reported as skipped, unless everything it names ([`Need`]) is here.
#[macro_export]
macro_rules! needs {
    ($($need:ident),+ $(,)?) => {
        if $crate::common::tier::skip_without(&[$($crate::common::tier::Need::$need),+]) {
            return;
        }
    };
}
