//! The store conformance suite. Every adapter must: run its migrations once, also when several
//! nodes open the database at the same moment; write a batch in one transaction; skip ids it
//! already has without bumping `service_severity`; and keep the two tables in step, also when
//! several writers store overlapping batches at once.
//!
//! Written once: each test function takes a [`Backend`] and [`conformance!`] runs it against
//! SQLite, PostgreSQL and MariaDB (`sqlite::…`, `postgres::…`, `mariadb::…`). The server
//! backends need `LOGMESH_TEST_POSTGRES_URL` and `LOGMESH_TEST_MYSQL_URL` (set by
//! `scripts/test.sh`); each test gets its own database.

mod common;

use common::databases::{Server, TestDatabase};
use logmesh::counters::CounterKey;
use logmesh::event::{Event, IngestContext, parse_json_body};
use logmesh::store::{self, BatchOutcome, DatabaseUrl, SeverityCount, Store, StoreError};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
    Mariadb,
}

/// A fresh, empty database of one backend, and direct access to it for checks.
struct Db {
    url: DatabaseUrl,
    _dir: tempfile::TempDir,
    _server: Option<TestDatabase>,
}

impl Db {
    async fn new(backend: Backend) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let server = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create(Server::Postgres).await),
            Backend::Mariadb => Some(TestDatabase::create(Server::Mysql).await),
        };
        let url = match &server {
            None => DatabaseUrl::Sqlite(dir.path().join("s.db")),
            Some(database) => DatabaseUrl::parse(database.url()).unwrap(),
        };
        Db {
            url,
            _dir: dir,
            _server: server,
        }
    }

    /// Opens a store (its own connections or pool) on the database.
    async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.unwrap()
    }

    /// Runs statements directly, outside the store.
    async fn execute(&self, statements: &[&'static str]) {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).unwrap();
                for statement in statements {
                    connection.execute_batch(statement).unwrap();
                }
            }
            DatabaseUrl::Postgres(url) => {
                let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
                for statement in statements {
                    sqlx::raw_sql(*statement)
                        .execute(&mut connection)
                        .await
                        .unwrap();
                }
            }
            DatabaseUrl::Mysql(url) => {
                let mut connection = sqlx::MySqlConnection::connect(url).await.unwrap();
                for statement in statements {
                    sqlx::raw_sql(*statement)
                        .execute(&mut connection)
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// The one integer a query answers, read directly.
    async fn number(&self, query: &'static str) -> i64 {
        match &self.url {
            DatabaseUrl::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(query, [], |row| row.get(0))
                .unwrap(),
            DatabaseUrl::Postgres(url) => {
                let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(query)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
            }
            DatabaseUrl::Mysql(url) => {
                let mut connection = sqlx::MySqlConnection::connect(url).await.unwrap();
                sqlx::query_scalar(query)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
            }
        }
    }

    async fn rows(&self) -> i64 {
        self.number("SELECT count(*) FROM service_logs").await
    }
}

fn events(lines: &[(&str, &str, &str)]) -> Vec<Arc<Event>> {
    let body: String = lines
        .iter()
        .map(|(id, service, severity)| {
            serde_json::json!({"id": id, "service": service, "severity": severity, "message": "m"})
                .to_string()
                + "\n"
        })
        .collect();
    parse_json_body(
        body.as_bytes(),
        IngestContext {
            node: "n",
            now_us: 1,
        },
    )
    .unwrap()
    .into_iter()
    .map(Arc::new)
    .collect()
}

fn count(service: &str, severity: &str, count: i64) -> SeverityCount {
    SeverityCount {
        service: service.into(),
        severity: severity.into(),
        count,
    }
}

async fn batches_are_counted_and_ids_stored_once(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let first = store
        .write_batch(events(&[
            ("a", "api", "info"),
            ("b", "api", "info"),
            ("c", "db", "error"),
            ("a", "api", "info"),
        ]))
        .await
        .unwrap();
    assert_eq!(
        first,
        BatchOutcome {
            inserted: 3,
            duplicates: 1
        }
    );
    let again = store
        .write_batch(events(&[("b", "api", "info"), ("d", "db", "error")]))
        .await
        .unwrap();
    assert_eq!(
        again,
        BatchOutcome {
            inserted: 1,
            duplicates: 1
        }
    );
    // Ids and services compare byte for byte: `A` is not `a`, `Api` is not `api`.
    let cased = store
        .write_batch(events(&[("A", "Api", "info")]))
        .await
        .unwrap();
    assert_eq!(cased.inserted, 1);
    assert_eq!(
        store.severity_counts().await.unwrap(),
        [
            count("Api", "info", 1),
            count("api", "info", 2),
            count("db", "error", 2)
        ]
    );
    assert_eq!(db.rows().await, 5);
    store.health().await.unwrap();
}

async fn migrations_run_once_across_restarts(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .write_batch(events(&[("a", "api", "info")]))
        .await
        .unwrap();
    let migrations = db.number("SELECT count(*) FROM logmesh_migrations").await;
    assert!(migrations >= 1);
    drop(store);
    let store = db.open().await;
    assert_eq!(
        store.severity_counts().await.unwrap(),
        [count("api", "info", 1)]
    );
    assert_eq!(
        db.number("SELECT count(*) FROM logmesh_migrations").await,
        migrations
    );
}

async fn stores_opened_at_the_same_moment_migrate_once(backend: Backend) {
    let db = Db::new(backend).await;
    // Nodes of a cluster starting together: each migration must run once, and no node may
    // fail because another is migrating.
    let opened = futures_util::future::join_all((0..4).map(|_| store::open(&db.url))).await;
    let stores: Vec<Arc<dyn Store>> = opened.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        db.number("SELECT count(*) - count(DISTINCT version) FROM logmesh_migrations")
            .await,
        0
    );
    for (i, store) in stores.iter().enumerate() {
        let id = format!("e{i}");
        let outcome = store
            .write_batch(events(&[(&id, "api", "info")]))
            .await
            .unwrap();
        assert_eq!(outcome.inserted, 1);
    }
    assert_eq!(db.rows().await, 4);
}

/// Refuses `service_logs` rows with id `poison` and `service_severity` rows of service
/// `refused`, so that a batch fails before or after its rows were inserted.
fn poison_triggers(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Sqlite => &[
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON service_logs WHEN NEW.id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            "CREATE TRIGGER refuse_count BEFORE INSERT ON service_severity
             WHEN NEW.service = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused count'); END;",
        ],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END
             $$",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON service_logs
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            "CREATE FUNCTION refuse_count() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.service = 'refused' THEN RAISE EXCEPTION 'refused count'; END IF;
               RETURN NEW;
             END
             $$",
            "CREATE TRIGGER refuse_count BEFORE INSERT ON service_severity
             FOR EACH ROW EXECUTE FUNCTION refuse_count()",
        ],
        Backend::Mariadb => &[
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON service_logs FOR EACH ROW
             BEGIN
               IF NEW.id = 'poison' THEN
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned';
               END IF;
             END",
            "CREATE TRIGGER refuse_count BEFORE INSERT ON service_severity FOR EACH ROW
             BEGIN
               IF NEW.service = 'refused' THEN
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused count';
               END IF;
             END",
        ],
    }
}

async fn a_failing_batch_leaves_both_tables_untouched(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    db.execute(poison_triggers(backend)).await;
    // Fails on a row after other rows of the batch were inserted.
    let error = store
        .write_batch(events(&[
            ("a", "api", "info"),
            ("b", "api", "info"),
            ("poison", "api", "info"),
        ]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("poisoned"), "{error}");
    // Fails on the counts, after every row of the batch was inserted.
    let error = store
        .write_batch(events(&[("c", "api", "info"), ("d", "refused", "info")]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("refused count"), "{error}");
    assert_eq!(store.severity_counts().await.unwrap(), []);
    assert_eq!(db.rows().await, 0);
    // And the store still works: the same ids go in once the batch is good.
    let outcome = store
        .write_batch(events(&[("a", "api", "info"), ("c", "api", "info")]))
        .await
        .unwrap();
    assert_eq!(outcome.inserted, 2);
    assert_eq!(
        store.severity_counts().await.unwrap(),
        [count("api", "info", 2)]
    );
}

async fn a_message_with_a_nul_character_is_stored(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let body = r#"{"id":"nul","service":"api","message":"a\u0000b","attributes":{"k":"\u0000"}}"#;
    let events: Vec<Arc<Event>> = parse_json_body(
        body.as_bytes(),
        IngestContext {
            node: "n",
            now_us: 1,
        },
    )
    .unwrap()
    .into_iter()
    .map(Arc::new)
    .collect();
    assert_eq!(store.write_batch(events).await.unwrap().inserted, 1);
    assert_eq!(db.rows().await, 1);
}

async fn a_store_reconnects_after_its_connections_are_killed(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .write_batch(events(&[("a", "api", "info")]))
        .await
        .unwrap();
    // What a database restart or a proxy's idle cut does to the pool. SQLite has no
    // connections to lose.
    match &db.url {
        DatabaseUrl::Sqlite(_) => {}
        DatabaseUrl::Postgres(url) => {
            let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
            // The timeout makes pg_terminate_backend wait until the session is gone.
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&mut admin)
            .await
            .unwrap();
            assert!(
                !killed.is_empty() && killed.iter().all(|k| *k),
                "{killed:?}"
            );
        }
        DatabaseUrl::Mysql(url) => {
            let mut admin = sqlx::MySqlConnection::connect(url).await.unwrap();
            let sessions: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM information_schema.processlist
                 WHERE db = DATABASE() AND id <> CONNECTION_ID()",
            )
            .fetch_all(&mut admin)
            .await
            .unwrap();
            assert!(!sessions.is_empty());
            for id in sessions {
                sqlx::query("KILL CONNECTION ?")
                    .bind(id)
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
        }
    }
    store.health().await.unwrap();
    store
        .write_batch(events(&[("b", "api", "info")]))
        .await
        .unwrap();
    assert_eq!(
        store.severity_counts().await.unwrap(),
        [count("api", "info", 2)]
    );
}

const SERVICES: [&str; 3] = ["api", "db", "auth"];
const SEVERITIES: [&str; 4] = ["info", "warn", "error", "debug"];

/// Writes `batch`, retrying it whole while it fails, as the store writer does: a conflict with
/// the other writer may fail a batch, never miscount it. Returns the successful outcome.
async fn write_until_stored(store: &dyn Store, batch: Vec<Arc<Event>>) -> (BatchOutcome, u32) {
    const ATTEMPTS: u32 = 100;
    let mut failures = 0;
    loop {
        match store.write_batch(batch.clone()).await {
            Ok(outcome) => return (outcome, failures),
            Err(error) => {
                failures += 1;
                assert!(failures < ATTEMPTS, "{ATTEMPTS} attempts failed: {error}");
            }
        }
    }
}

async fn overlapping_batches_from_two_nodes_are_stored_and_counted_once(backend: Backend) {
    const ROUNDS: usize = 40;
    const STRIDE: usize = 100;
    const BATCH: usize = 200;
    let db = Db::new(backend).await;
    // Two nodes: separate stores with separate connections on the same database.
    let nodes = [db.open().await, db.open().await];
    let line = |i: usize| {
        (
            format!("id-{i:06}"),
            SERVICES[i % SERVICES.len()],
            SEVERITIES[i % SEVERITIES.len()],
        )
    };
    // In round r node 0 writes ids [r·STRIDE, r·STRIDE + BATCH) in ascending order; node 1
    // writes, descending and each id twice, the same ids in even rounds (a batch redelivered
    // to both nodes) and the range shifted by half a batch in odd ones. Every batch also
    // overlaps the previous round's (a partial redelivery). The two orders would deadlock a
    // store that does not order its writes.
    let range = |node: usize, round: usize| {
        let start = round * STRIDE + node * (round % 2) * BATCH / 2;
        start..start + BATCH
    };
    let batch = |node: usize, round: usize| -> Vec<Arc<Event>> {
        let mut ids: Vec<usize> = range(node, round).collect();
        if node == 1 {
            ids.reverse();
            ids = ids.iter().flat_map(|&i| [i, i]).collect();
        }
        let lines: Vec<_> = ids.into_iter().map(line).collect();
        let lines: Vec<(&str, &str, &str)> = lines
            .iter()
            .map(|(id, service, severity)| (id.as_str(), *service, *severity))
            .collect();
        events(&lines)
    };
    // Both nodes start each round together, so their transactions really run at once.
    let round_start = Arc::new(tokio::sync::Barrier::new(2));
    let mut writers = Vec::new();
    for (node, store) in nodes.iter().enumerate() {
        let store = store.clone();
        let batches: Vec<_> = (0..ROUNDS).map(|round| batch(node, round)).collect();
        let round_start = round_start.clone();
        writers.push(tokio::spawn(async move {
            let (mut inserted, mut failures) = (0, 0);
            for batch in batches {
                round_start.wait().await;
                let (outcome, failed) = write_until_stored(store.as_ref(), batch).await;
                inserted += outcome.inserted;
                failures += failed;
            }
            (inserted, failures)
        }));
    }
    let (mut inserted, mut failures) = (0, 0);
    for writer in writers {
        let (n, f) = writer.await.unwrap();
        inserted += n;
        failures += f;
    }

    let unique: BTreeSet<usize> = (0..2)
        .flat_map(|node| (0..ROUNDS).flat_map(move |round| range(node, round)))
        .collect();
    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    for &i in &unique {
        let (_, service, severity) = line(i);
        *expected
            .entry((service.to_owned(), severity.to_owned()))
            .or_default() += 1;
    }
    let expected: Vec<SeverityCount> = expected
        .into_iter()
        .map(|((service, severity), n)| count(&service, &severity, n))
        .collect();
    let total = unique.len() as i64;
    eprintln!("{backend:?}: {failures} batch attempts failed on a conflict and were retried");
    assert_eq!(
        inserted,
        unique.len(),
        "each id is inserted by exactly one successful batch"
    );
    assert_eq!(db.rows().await, total);
    assert_eq!(
        db.number("SELECT count(DISTINCT id) FROM service_logs")
            .await,
        total
    );
    assert_eq!(nodes[0].severity_counts().await.unwrap(), expected);
    assert_eq!(nodes[1].severity_counts().await.unwrap(), expected);
}

/// One `#[tokio::test]` per backend for each conformance test function.
fn counter(name: &str, labels: &[(&str, &str)]) -> CounterKey {
    CounterKey::new(
        name,
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .unwrap()
}

async fn counters_add_atomically_across_stores(backend: Backend) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 50;
    let db = Db::new(backend).await;
    let stores: Vec<Arc<dyn Store>> = vec![db.open().await, db.open().await];
    let hot = counter("hits_total", &[("path", "/a \"quoted\"\nline")]);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = stores[task % 2].clone();
        let hot = hot.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..INCREMENTS {
                seen.push(store.increment_counter(&hot, 2).await.unwrap());
            }
            seen
        }));
    }
    let mut returned = Vec::new();
    for task in tasks {
        returned.extend(task.await.unwrap());
    }
    // Every increment saw a distinct value: none was lost or applied twice.
    returned.sort_unstable();
    let expected: Vec<i64> = (1..=(TASKS * INCREMENTS) as i64).map(|n| n * 2).collect();
    assert_eq!(returned, expected);

    // Label order does not matter; another label set is another counter; 0 reads the value.
    let reordered = counter("multi", &[("a", "1"), ("b", "2")]);
    assert_eq!(stores[0].increment_counter(&reordered, 5).await.unwrap(), 5);
    let same = counter("multi", &[("b", "2"), ("a", "1")]);
    assert_eq!(stores[1].increment_counter(&same, 0).await.unwrap(), 5);
    assert_eq!(
        stores[1]
            .increment_counter(&counter("multi", &[("a", "1")]), 1)
            .await
            .unwrap(),
        1
    );

    // Ordered by name, then by the canonical labels' bytes, on every backend.
    let all = stores[1].counters().await.unwrap();
    let summary: Vec<(String, String, i64)> = all
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                serde_json::to_string(&c.labels).unwrap(),
                c.value,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "hits_total".into(),
                r#"{"path":"/a \"quoted\"\nline"}"#.into(),
                800
            ),
            ("multi".into(), r#"{"a":"1","b":"2"}"#.into(), 5),
            ("multi".into(), r#"{"a":"1"}"#.into(), 1),
        ]
    );
}

async fn a_counter_never_overflows(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let key = counter("big", &[]);
    assert_eq!(
        store.increment_counter(&key, i64::MAX - 1).await.unwrap(),
        i64::MAX - 1
    );
    // Refused alone, even when it shares a commit with increments that fit.
    let small = counter("small", &[]);
    let (error, fits) = tokio::join!(
        store.increment_counter(&key, 2),
        store.increment_counter(&small, 1)
    );
    let error = error.unwrap_err();
    assert_eq!(fits.unwrap(), 1);
    assert!(matches!(error, StoreError::Rejected(_)), "{error}");
    assert!(error.to_string().contains("largest value"), "{error}");
    assert_eq!(store.increment_counter(&key, 1).await.unwrap(), i64::MAX);
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Mariadb).await;
                }
            )*
        }
    };
}

conformance!(
    batches_are_counted_and_ids_stored_once,
    migrations_run_once_across_restarts,
    stores_opened_at_the_same_moment_migrate_once,
    a_failing_batch_leaves_both_tables_untouched,
    a_message_with_a_nul_character_is_stored,
    a_store_reconnects_after_its_connections_are_killed,
    overlapping_batches_from_two_nodes_are_stored_and_counted_once,
    counters_add_atomically_across_stores,
    a_counter_never_overflows,
);

#[tokio::test]
async fn an_unreachable_server_fails_to_open_without_showing_the_password() {
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    for url in [
        "postgres://logmesh:s3cret@127.0.0.1:1/logs",
        "mariadb://logmesh:s3cret@127.0.0.1:1/logs",
    ] {
        let error = match store::open(&DatabaseUrl::parse(url).unwrap()).await {
            Ok(_) => panic!("{url} opened"),
            Err(error) => error,
        };
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("logmesh:***@127.0.0.1:1/logs"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }
}
