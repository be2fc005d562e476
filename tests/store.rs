//! The store conformance suite. Every adapter must: run its migrations once, also when several
//! nodes open the database at the same moment; write a batch in one transaction; skip ids it
//! already has without bumping `service_severity`; and keep the two tables in step, also when
//! several writers store overlapping batches at once; and search stored events newest first,
//! with whole-word keywords read from the backend's text index, filters, and a cursor that
//! stays valid while events keep arriving.
//!
//! Written once: each test function takes a [`Backend`] and [`conformance!`] runs it against
//! SQLite, PostgreSQL and MariaDB (`sqlite::…`, `postgres::…`, `mariadb::…`). The server
//! backends need `LOGMESH_TEST_POSTGRES_URL` and `LOGMESH_TEST_MYSQL_URL` (set by
//! `scripts/test.sh`); each test gets its own database.

mod common;

use common::databases::{Server, TestDatabase};
use common::eventually;
use logmesh::counters::{CounterKey, CounterLimits};
use logmesh::event::Severity;
use logmesh::event::{Event, IngestContext, parse_json_body};
use logmesh::store::{
    self, BatchOutcome, Cursor, DatabaseUrl, SearchPage, SearchQuery, SeverityCount, Store,
    StoreError,
};
use serde_json::json;
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
        .map(|(id, service, severity)| common::ndjson_line(id, service, severity, "m"))
        .collect();
    common::parse_events(&body)
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
            oldest_us: i64::MIN,
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

/// Events `(id, service, severity, message, timestamp in epoch ms)`.
fn timed_events(lines: &[(&str, &str, &str, &str, i64)]) -> Vec<Arc<Event>> {
    let body: String = lines
        .iter()
        .map(|(id, service, severity, message, ms)| {
            serde_json::json!({"id": id, "service": service, "severity": severity,
                               "message": message, "timestamp": ms})
            .to_string()
                + "\n"
        })
        .collect();
    parse_json_body(
        body.as_bytes(),
        IngestContext {
            node: "n",
            now_us: 1,
            oldest_us: i64::MIN,
        },
    )
    .unwrap()
    .into_iter()
    .map(Arc::new)
    .collect()
}

async fn search(store: &dyn Store, query: SearchQuery) -> SearchPage {
    store.search(&query).await.unwrap()
}

fn ids(page: &SearchPage) -> Vec<&str> {
    page.events.iter().map(|e| e.id.as_str()).collect()
}

fn keyword(q: &str) -> SearchQuery {
    SearchQuery {
        q: Some(q.into()),
        ..SearchQuery::default()
    }
}

/// Letters beyond ASCII are letters on every backend, whatever the database's locale (the
/// test PostgreSQL runs under `C`, where a regular expression's `\m` knows only ASCII).
async fn words_beyond_ascii_are_found_case_insensitively(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .write_batch(timed_events(&[
            ("fr", "api", "error", "Échec de connexion au café", 1_000),
            ("ru", "api", "error", "ошибка соединения с базой", 2_000),
            ("de", "api", "info", "Größe überschritten", 3_000),
        ]))
        .await
        .unwrap();
    for (q, expected) in [
        ("échec", "fr"),
        ("ÉCHEC café", "fr"),
        ("ОШИБКА", "ru"),
        ("соединения", "ru"),
        ("größe", "de"),
    ] {
        eventually_found(store.as_ref(), q, &[expected]).await;
    }
    assert!(
        search(store.as_ref(), keyword("caf"))
            .await
            .events
            .is_empty()
    );
}

async fn keywords_match_whole_words_case_insensitively(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .write_batch(timed_events(&[
            ("a", "api", "error", "Connection timeout, retrying", 1_000),
            (
                "b",
                "db",
                "warn",
                "TIMEOUT waiting for lock on orders",
                2_000,
            ),
            ("c", "api", "info", "no timeouts here", 3_000),
            ("d", "api", "info", "user_id missing in request", 4_000),
            ("e", "auth", "info", "disk full: the write failed", 5_000),
        ]))
        .await
        .unwrap();
    // Newest first; `timeouts` is another word; case does not matter.
    assert_eq!(
        ids(&search(store.as_ref(), keyword("timeout")).await),
        ["b", "a"]
    );
    assert_eq!(
        ids(&search(store.as_ref(), keyword("Timeout")).await),
        ["b", "a"]
    );
    // Every word must occur, in any order, whatever separates them in q.
    assert_eq!(
        ids(&search(store.as_ref(), keyword("timeout, connection")).await),
        ["a"]
    );
    assert_eq!(
        ids(&search(store.as_ref(), keyword("user_id")).await),
        ["d"]
    );
    assert_eq!(
        ids(&search(store.as_ref(), keyword("DISK write")).await),
        ["e"]
    );
    // Common words are not stopwords.
    assert_eq!(
        ids(&search(store.as_ref(), keyword("the write")).await),
        ["e"]
    );
    assert!(
        search(store.as_ref(), keyword("absent"))
            .await
            .events
            .is_empty()
    );
    let page = search(store.as_ref(), keyword("lock")).await;
    let event = &page.events[0];
    assert_eq!(
        (
            event.id.as_str(),
            event.service.as_str(),
            event.severity,
            event.ts_us
        ),
        ("b", "db", Severity::Warn, 2_000_000)
    );
    assert_eq!(event.message, "TIMEOUT waiting for lock on orders");
    assert_eq!(event.node, "n");
    assert_eq!(page.next_cursor, None);
    // Reopening must not duplicate index entries.
    drop(store);
    let store = db.open().await;
    assert_eq!(
        ids(&search(store.as_ref(), keyword("timeout")).await),
        ["b", "a"]
    );
}

/// Undoes the search migration (2), so that rows can be stored as a database from before it
/// held them.
fn without_search_migration(backend: Backend) -> &'static [&'static str] {
    match backend {
        // Migrations 4 (no insert trigger: the writer indexes), 5 (the index made again
        // without per-row sizes) and 6 (its merge setting) must run again after 2.
        Backend::Sqlite => &[
            "DROP TRIGGER service_logs_fts_delete",
            "DROP TRIGGER service_logs_fts_update",
            "DROP TABLE service_logs_fts",
            "DROP INDEX service_logs_ts",
            "DELETE FROM logmesh_migrations WHERE version IN (2, 4, 5, 6)",
        ],
        // Migration 5 (the words index that replaced the trigrams) must run again after 2.
        Backend::Postgres => &[
            "DROP INDEX service_logs_message_words",
            "DROP INDEX service_logs_ts",
            "DELETE FROM logmesh_migrations WHERE version IN (2, 5)",
        ],
        Backend::Mariadb => &[
            "DROP INDEX service_logs_message_ft ON service_logs",
            "DROP INDEX service_logs_ts ON service_logs",
            "DELETE FROM logmesh_migrations WHERE version = 2",
        ],
    }
}

async fn the_search_migration_indexes_rows_stored_before_it(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    db.execute(without_search_migration(backend)).await;
    // Rows as a version from before the index stored them.
    db.execute(&[
        "INSERT INTO service_logs (id, ts_us, service, severity, message, node, received_us)
         VALUES ('a', 1000000, 'api', 'info', 'stored before the index', 'n', 0),
                ('b', 2000000, 'api', 'info', 'also before the index', 'n', 0)",
    ])
    .await;
    drop(store);
    let store = db.open().await;
    assert_eq!(
        ids(&search(store.as_ref(), keyword("before")).await),
        ["b", "a"]
    );
    store
        .write_batch(timed_events(&[(
            "c",
            "api",
            "info",
            "after, not before",
            3_000,
        )]))
        .await
        .unwrap();
    assert_eq!(
        ids(&search(store.as_ref(), keyword("before index")).await),
        ["b", "a"]
    );
    if let Backend::Mariadb = backend {
        // MySQL commits DDL as it goes, so an interrupted migration 2 is re-run over indexes
        // that already exist.
        db.execute(&["DELETE FROM logmesh_migrations WHERE version = 2"])
            .await;
        drop(store);
        let store = db.open().await;
        assert_eq!(ids(&search(store.as_ref(), keyword("after")).await), ["c"]);
    }
}

async fn every_stored_row_is_found_once_by_keyword(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let first = store
        .write_batch(timed_events(&[
            ("a", "api", "info", "needle one", 1_000),
            ("b", "api", "info", "needle two", 2_000),
        ]))
        .await
        .unwrap();
    assert_eq!(first.inserted, 2);
    // A redelivered row among new ones: only the new ones are stored, and indexed.
    let second = store
        .write_batch(timed_events(&[
            ("b", "api", "info", "needle two", 2_000),
            ("c", "api", "info", "needle three", 3_000),
            ("d", "api", "info", "haystack", 4_000),
        ]))
        .await
        .unwrap();
    assert_eq!((second.inserted, second.duplicates), (2, 1));
    eventually_found(store.as_ref(), "needle", &["c", "b", "a"]).await;
    eventually_found(store.as_ref(), "haystack", &["d"]).await;
}

/// MariaDB applies FULLTEXT entries just after the commit: wait for them a moment.
async fn eventually_found(store: &dyn Store, word: &str, expected: &[&str]) {
    let what = format!("{word} to find {expected:?}");
    eventually(&what, std::time::Duration::from_secs(10), || async {
        ids(&search(store, keyword(word)).await) == expected
    })
    .await;
}

async fn filters_narrow_a_search(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .write_batch(timed_events(&[
            ("a", "api", "debug", "payment accepted", 1_000),
            ("b", "api", "warn", "payment slow", 2_000),
            ("c", "billing", "error", "payment failed", 3_000),
            ("d", "api", "fatal", "payment lost", 4_000),
            ("e", "Api", "error", "payment failed", 5_000),
        ]))
        .await
        .unwrap();
    let all = search(store.as_ref(), SearchQuery::default()).await;
    assert_eq!(ids(&all), ["e", "d", "c", "b", "a"]);
    let service = SearchQuery {
        service: Some("api".into()),
        ..SearchQuery::default()
    };
    assert_eq!(
        ids(&search(store.as_ref(), service.clone()).await),
        ["d", "b", "a"]
    );
    // The severity is a minimum.
    let warn = SearchQuery {
        severity: Some(Severity::Warn),
        ..service.clone()
    };
    assert_eq!(ids(&search(store.as_ref(), warn).await), ["d", "b"]);
    let error = SearchQuery {
        severity: Some(Severity::Error),
        ..SearchQuery::default()
    };
    assert_eq!(ids(&search(store.as_ref(), error).await), ["e", "d", "c"]);
    // since is inclusive, until exclusive.
    let range = SearchQuery {
        since: Some(2_000_000),
        until: Some(4_000_000),
        ..SearchQuery::default()
    };
    assert_eq!(ids(&search(store.as_ref(), range).await), ["c", "b"]);
    let everything = SearchQuery {
        q: Some("payment failed".into()),
        service: Some("billing".into()),
        severity: Some(Severity::Error),
        since: Some(3_000_000),
        until: Some(3_000_001),
        ..SearchQuery::default()
    };
    assert_eq!(ids(&search(store.as_ref(), everything).await), ["c"]);
}

async fn expiry_removes_exactly_the_old_events_and_keeps_counts_in_step(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    // Ten old events (1–10 ms, one service only old), five new ones (100–104 ms).
    let mut lines: Vec<(String, &str, &str, &str, i64)> = (1..=10)
        .map(|i| {
            let service = ["api", "db", "gone"][i % 3];
            (
                format!("old-{i}"),
                service,
                ["info", "error"][i % 2],
                "stale warmup",
                i as i64,
            )
        })
        .collect();
    lines.extend((0..5).map(|i| (format!("new-{i}"), "api", "info", "fresh request", 100 + i)));
    let borrowed: Vec<(&str, &str, &str, &str, i64)> = lines
        .iter()
        .map(|(id, service, severity, message, ms)| {
            (id.as_str(), *service, *severity, *message, *ms)
        })
        .collect();
    store.write_batch(timed_events(&borrowed)).await.unwrap();
    // In steps of 3, oldest first.
    assert_eq!(store.expire(50_000, 3).await.unwrap(), 3);
    assert_eq!(store.expire(50_000, 3).await.unwrap(), 3);
    // An event older than those removed arrives mid-way (a step may go on from where the
    // previous one stopped: it is found by this expiry or the next).
    store
        .write_batch(timed_events(&[("late-0", "gone", "info", "stale late", 2)]))
        .await
        .unwrap();
    let mut removed = 6;
    loop {
        let step = store.expire(50_000, 3).await.unwrap();
        if step == 0 {
            break;
        }
        removed += step;
    }
    assert_eq!(removed, 11);
    let counts = store.severity_counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<i64>(), 5, "{counts:?}");
    assert!(
        counts.iter().all(|c| c.service == "api" && c.count > 0),
        "{counts:?}"
    );
    let everything = search(store.as_ref(), SearchQuery::default()).await;
    let mut found = ids(&everything);
    found.sort();
    assert_eq!(found, ["new-0", "new-1", "new-2", "new-3", "new-4"]);
    // The keyword index followed the rows out.
    assert!(ids(&search(store.as_ref(), keyword("stale")).await).is_empty());
    assert_eq!(
        ids(&search(store.as_ref(), keyword("fresh")).await).len(),
        5
    );
    let counted = store.count_events(&SearchQuery::default()).await.unwrap();
    assert_eq!(counted.iter().map(|c| c.count).sum::<i64>(), 5);
}

async fn attributes_are_found_by_exact_value(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let body = [
        json!({"id": "a", "service": "api", "message": "m", "timestamp": 1_000,
               "attributes": {"trace_id": "5b8efff798038103d269b633813fc60c", "http.status": 502,
                              "ok": false}}),
        json!({"id": "b", "service": "api", "message": "m", "timestamp": 2_000,
               "attributes": {"trace_id": "5B8EFFF798038103D269B633813FC60C", "http.status": 200}}),
        json!({"id": "c", "service": "api", "message": "m", "timestamp": 3_000,
               "attributes": {"span_id": "5b8efff798038103d269b633813fc60c"}}),
        json!({"id": "d", "service": "api", "message": "m", "timestamp": 4_000,
               "attributes": {"padded": "abc  ", "nothing": null}}),
    ]
    .map(|event| event.to_string() + "\n")
    .concat();
    let events = parse_json_body(
        body.as_bytes(),
        IngestContext {
            node: "n",
            now_us: 1,
            oldest_us: i64::MIN,
        },
    )
    .unwrap()
    .into_iter()
    .map(Arc::new)
    .collect();
    store.write_batch(events).await.unwrap();
    let with = |attributes: &[(&str, &str)]| SearchQuery {
        attributes: attributes
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        ..SearchQuery::default()
    };
    // Exact: byte for byte, by name (not by another attribute holding the same value).
    let trace = with(&[("trace_id", "5b8efff798038103d269b633813fc60c")]);
    assert_eq!(ids(&search(store.as_ref(), trace).await), ["a"]);
    assert_eq!(
        ids(&search(store.as_ref(), with(&[("trace_id", "5b8efff7")])).await),
        Vec::<&str>::new()
    );
    // Numbers and booleans as their JSON text; names with dots are one attribute.
    assert_eq!(
        ids(&search(store.as_ref(), with(&[("http.status", "502")])).await),
        ["a"]
    );
    assert_eq!(
        ids(&search(store.as_ref(), with(&[("ok", "false")])).await),
        ["a"]
    );
    // Trailing spaces count, and a null is no value (MariaDB's _bin collations and its
    // JSON_UNQUOTE would say otherwise).
    for (name, value) in [("padded", "abc"), ("nothing", "null"), ("nothing", "")] {
        assert_eq!(
            ids(&search(store.as_ref(), with(&[(name, value)])).await),
            Vec::<&str>::new(),
            "{name}={value}"
        );
    }
    assert_eq!(
        ids(&search(store.as_ref(), with(&[("padded", "abc  ")])).await),
        ["d"]
    );
    // Every filter must hold, and they combine with the others.
    let both = SearchQuery {
        since: Some(1_500_000),
        ..with(&[
            ("http.status", "200"),
            ("trace_id", "5B8EFFF798038103D269B633813FC60C"),
        ])
    };
    assert_eq!(ids(&search(store.as_ref(), both).await), ["b"]);
    let counted = store
        .count_events(&with(&[("span_id", "5b8efff798038103d269b633813fc60c")]))
        .await
        .unwrap();
    assert_eq!(counted.iter().map(|c| c.count).sum::<i64>(), 1);
}

async fn counts_follow_the_search_filters(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    store
        .write_batch(timed_events(&[
            ("a", "api", "debug", "payment accepted", 1_000),
            ("b", "api", "warn", "payment slow", 2_000),
            ("c", "billing", "error", "payment failed", 3_000),
            ("d", "api", "warn", "payment lost", 4_000),
            ("e", "Api", "error", "refund failed", 5_000),
        ]))
        .await
        .unwrap();
    let counts = |query: SearchQuery| {
        let store = store.clone();
        async move {
            let mut counts: Vec<(String, String, i64)> = store
                .count_events(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.service, c.severity, c.count))
                .collect();
            counts.sort();
            counts
        }
    };
    let row =
        |service: &str, severity: &str, count| (service.to_owned(), severity.to_owned(), count);
    assert_eq!(
        counts(SearchQuery::default()).await,
        [
            row("Api", "error", 1),
            row("api", "debug", 1),
            row("api", "warn", 2),
            row("billing", "error", 1)
        ]
    );
    let narrowed = SearchQuery {
        q: Some("payment".into()),
        severity: Some(Severity::Warn),
        since: Some(2_000_000),
        until: Some(5_000_000),
        // A page's limit and cursor mean nothing to a count.
        limit: 1,
        ..SearchQuery::default()
    };
    assert_eq!(
        counts(narrowed).await,
        [row("api", "warn", 2), row("billing", "error", 1)]
    );
    let nothing = SearchQuery {
        service: Some("nobody".into()),
        ..SearchQuery::default()
    };
    assert_eq!(counts(nothing).await, []);
    let backwards = SearchQuery {
        since: Some(2),
        until: Some(1),
        ..SearchQuery::default()
    };
    assert!(matches!(
        store.count_events(&backwards).await,
        Err(StoreError::InvalidQuery(_))
    ));
}

async fn pages_follow_the_cursor_while_events_arrive(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    // 25 events, five per timestamp, so row ids break ties across page boundaries.
    let lines: Vec<(String, i64)> = (0..25)
        .map(|i| (format!("old-{i:02}"), 10_000 + (i / 5) as i64))
        .collect();
    let batch: Vec<(&str, &str, &str, &str, i64)> = lines
        .iter()
        .map(|(id, ms)| (id.as_str(), "api", "info", "paged request", *ms))
        .collect();
    store.write_batch(timed_events(&batch)).await.unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut query = SearchQuery {
        q: Some("request".into()),
        limit: 10,
        ..SearchQuery::default()
    };
    let mut pages = 0;
    loop {
        let page = search(store.as_ref(), query.clone()).await;
        pages += 1;
        assert!(page.events.len() <= 10);
        for pair in page.events.windows(2) {
            assert!(
                (pair[0].ts_us, pair[0].row_id) > (pair[1].ts_us, pair[1].row_id),
                "newest first"
            );
        }
        seen.extend(page.events.iter().map(|e| e.id.clone()));
        let last_ms = page.events.last().map_or(0, |e| e.ts_us / 1000);
        // New events between pages, newer than everything, older than everything, and at the
        // timestamp the page ended on: only the older ones may show up, on a later page.
        let newer = format!("new-{pages}");
        let older = format!("older-{pages}");
        let tied = format!("tied-{pages}");
        store
            .write_batch(timed_events(&[
                (&newer, "api", "info", "paged request", 20_000),
                (&older, "api", "info", "paged request", 9_000 - pages),
                (&tied, "api", "info", "paged request", last_ms),
            ]))
            .await
            .unwrap();
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(Cursor::decode(&cursor).unwrap()),
            None => break,
        }
    }
    let old: Vec<&String> = seen.iter().filter(|id| id.starts_with("old-")).collect();
    let mut expected: Vec<String> = lines.iter().map(|(id, _)| id.clone()).collect();
    expected.reverse();
    assert_eq!(
        old,
        expected.iter().collect::<Vec<_>>(),
        "every old event once, in order"
    );
    assert!(!seen.iter().any(|id| id.starts_with("new-")), "{seen:?}");
    assert!(
        !seen.iter().any(|id| id.starts_with("tied-")),
        "a tie written later has a larger row id, so it sorts before the cursor: {seen:?}"
    );
    // Events older than the whole first page show up at the end, once each, never twice.
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "{seen:?}");
    // Exactly a page's worth of matches: no cursor to an empty page.
    let exact = SearchQuery {
        service: Some("api".into()),
        since: Some(10_000_000),
        until: Some(10_001_000),
        limit: 5,
        ..SearchQuery::default()
    };
    let page = search(store.as_ref(), exact).await;
    assert_eq!(page.events.len(), 5);
    assert_eq!(page.next_cursor, None);
}

/// Keyword pages are first looked for among the newest rows and only then through the text
/// index (adapters choose per query); whichever answers, a page must be exactly what sorting
/// every match by `(ts_us, row_id)` gives. Timestamps here are shuffled against arrival (row
/// ids), with ties, and the words are common (1 in 3), middling (1 in 97) and rare (4 events),
/// so every way a page can be found is taken.
async fn keyword_pages_are_the_newest_matches_whatever_the_word(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    struct Generated {
        id: String,
        service: &'static str,
        severity: &'static str,
        message: String,
        ms: i64,
    }
    let generated: Vec<Generated> = (0..6_000_i64)
        .map(|i| {
            let mut words = vec!["request"];
            if i % 3 == 0 {
                words.push("often");
            }
            if i % 97 == 0 {
                words.push("sometimes");
            }
            if i % 1_500 == 7 {
                words.push("seldom");
            }
            Generated {
                id: format!("e{i:04}"),
                service: if i % 2 == 0 { "api" } else { "db" },
                severity: if i % 5 == 0 { "error" } else { "info" },
                message: words.join(" "),
                // A shuffle of 3,000 timestamps, two events on each.
                ms: 1_000_000 + (i * 7_919 % 6_000) / 2,
            }
        })
        .collect();
    for chunk in generated.chunks(1_000) {
        let batch: Vec<(&str, &str, &str, &str, i64)> = chunk
            .iter()
            .map(|e| {
                (
                    e.id.as_str(),
                    e.service,
                    e.severity,
                    e.message.as_str(),
                    e.ms,
                )
            })
            .collect();
        store.write_batch(timed_events(&batch)).await.unwrap();
    }
    // Arrival order is row id order: the newest first is by (ms, index) descending.
    let expected = |query: &SearchQuery| -> Vec<String> {
        let words = query.words();
        let mut matches: Vec<(i64, usize, &Generated)> = generated
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                let held: Vec<&str> = e.message.split(' ').collect();
                words.iter().all(|w| held.contains(&w.as_str()))
                    && query.service.as_deref().is_none_or(|s| s == e.service)
                    && (query.severity.is_none() || e.severity == "error")
                    && query.since.is_none_or(|since| e.ms * 1000 >= since)
                    && query.until.is_none_or(|until| e.ms * 1000 < until)
            })
            .map(|(index, e)| (e.ms, index, e))
            .collect();
        matches.sort_by_key(|&(ms, index, _)| std::cmp::Reverse((ms, index)));
        matches.iter().map(|(_, _, e)| e.id.clone()).collect()
    };
    // InnoDB's FULLTEXT shows a commit's rows a moment after it (see docs/databases.md).
    for word in ["seldom", "sometimes"] {
        let all = expected(&keyword(word));
        let want: Vec<&str> = all.iter().map(String::as_str).collect();
        eventually_found(store.as_ref(), word, &want).await;
    }
    for q in ["often", "sometimes", "seldom", "often sometimes"] {
        let filters = [
            SearchQuery::default(),
            SearchQuery {
                service: Some("api".into()),
                ..SearchQuery::default()
            },
            SearchQuery {
                severity: Some(Severity::Error),
                ..SearchQuery::default()
            },
            SearchQuery {
                since: Some(1_000_500_000),
                until: Some(1_002_000_000),
                ..SearchQuery::default()
            },
        ];
        for filter in filters {
            for limit in [10, 100] {
                let query = SearchQuery {
                    q: Some(q.into()),
                    limit,
                    ..filter.clone()
                };
                let all = expected(&query);
                let page = search(store.as_ref(), query.clone()).await;
                let want: Vec<&str> = all
                    .iter()
                    .take(limit as usize)
                    .map(String::as_str)
                    .collect();
                assert_eq!(ids(&page), want, "{query:?}");
                assert_eq!(
                    page.next_cursor.is_some(),
                    all.len() > limit as usize,
                    "{query:?}"
                );
            }
        }
    }
    // Every page of a common word, cursor after cursor: each match once, in order.
    let mut query = SearchQuery {
        q: Some("often".into()),
        limit: 150,
        ..SearchQuery::default()
    };
    let mut seen: Vec<String> = Vec::new();
    loop {
        let page = search(store.as_ref(), query.clone()).await;
        seen.extend(page.events.iter().map(|e| e.id.clone()));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(Cursor::decode(&cursor).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, expected(&query));
}

async fn limits_are_bounded(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let lines: Vec<String> = (0..1005).map(|i| format!("e{i:04}")).collect();
    let batch: Vec<(&str, &str, &str, &str, i64)> = lines
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), "api", "info", "bulk", i as i64))
        .collect();
    store.write_batch(timed_events(&batch)).await.unwrap();
    let default = search(store.as_ref(), SearchQuery::default()).await;
    assert_eq!(default.events.len(), 100);
    assert_eq!(default.events[0].id, "e1004");
    assert!(default.next_cursor.is_some());
    let most = SearchQuery {
        limit: 1000,
        ..SearchQuery::default()
    };
    assert_eq!(search(store.as_ref(), most).await.events.len(), 1000);
    let one = SearchQuery {
        limit: 1,
        ..SearchQuery::default()
    };
    assert_eq!(ids(&search(store.as_ref(), one).await), ["e1004"]);
    for limit in [0, 1001] {
        let query = SearchQuery {
            limit,
            ..SearchQuery::default()
        };
        let error = store.search(&query).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidQuery(_)), "{error:?}");
        assert!(error.to_string().contains("limit"), "{error}");
    }
    let error = store.search(&keyword(" ;; ")).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidQuery(_)), "{error:?}");
}

fn assert_found_four(page: &SearchPage) {
    let found: Vec<(&str, &str)> = page
        .events
        .iter()
        .map(|e| (e.id.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(found.len(), 4, "expected the 4 rare rows, found {found:?}");
}

/// Proves a keyword query reads the text index: 20,000 ordinary rows and a few rare ones,
/// statistics up to date, then the backend's own plan for the adapter's search statement.
async fn keyword_queries_read_the_text_index(backend: Backend) {
    let db = Db::new(backend).await;
    let lines: Vec<(String, String)> = (0..20_000)
        .map(|i| {
            let message = if i % 5_000 == 0 {
                format!("rare zeppelin sighting {i}")
            } else {
                format!("request {i} served in {} ms by worker {}", i % 97, i % 13)
            };
            (format!("id-{i:05}"), message)
        })
        .collect();
    let batch: Vec<(&str, &str, &str, &str, i64)> = lines
        .iter()
        .enumerate()
        .map(|(i, (id, message))| (id.as_str(), "api", "info", message.as_str(), i as i64))
        .collect();
    let query = keyword("zeppelin");
    let store = db.open().await;
    store.write_batch(timed_events(&batch)).await.unwrap();
    match backend {
        Backend::Sqlite => assert_found_four(&store.search(&query).await.unwrap()),
        Backend::Postgres => {
            // VACUUM too: the planner costs a GIN index from counts only VACUUM updates (in
            // production autovacuum does both after enough inserts).
            db.execute(&["VACUUM ANALYZE service_logs"]).await;
            assert_found_four(&store.search(&query).await.unwrap());
        }
        // No count check here: InnoDB makes the rows of a 20,000-row commit visible to
        // FULLTEXT searches some 30 ms after the commit (see docs/databases.md); the other
        // conformance tests check what MariaDB finds. MATCH … AGAINST always reads the
        // FULLTEXT index, so no ANALYZE either.
        Backend::Mariadb => {}
    }
    let plan = store.explain_search(&query).await.unwrap();
    eprintln!("{backend:?} plan:\n{plan}");
    let index = match backend {
        Backend::Sqlite => "VIRTUAL TABLE INDEX",
        Backend::Postgres => "service_logs_message_words",
        Backend::Mariadb => "fulltext service_logs_message_ft",
    };
    assert!(
        plan.contains(index),
        "{backend:?} plan does not use {index}:\n{plan}"
    );
    if let Backend::Sqlite = backend {
        assert!(plan.contains("service_logs_fts"), "{plan}");
    }
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

async fn counter_series_are_bounded_and_refusals_change_nothing(backend: Backend) {
    let db = Db::new(backend).await;
    let limits = CounterLimits {
        max_series: 5,
        max_series_per_metric: 3,
        max_labels: 2,
        max_label_bytes: 20,
    };
    let stores = [
        store::open_with(&db.url, limits).await.unwrap(),
        store::open_with(&db.url, limits).await.unwrap(),
    ];
    let limit_of = |result: Result<i64, StoreError>| match result {
        Err(StoreError::LimitExceeded(message)) => message,
        other => panic!("expected a limit, got {other:?}"),
    };
    for n in 0..3 {
        let key = counter("a", &[("n", &n.to_string())]);
        assert_eq!(stores[n % 2].increment_counter(&key, 1).await.unwrap(), 1);
    }
    // A fourth label set of `a`, from either store: refused, nothing created.
    let message = limit_of(
        stores[1]
            .increment_counter(&counter("a", &[("n", "3")]), 1)
            .await,
    );
    assert!(
        message.contains("--counter-max-series-per-metric"),
        "{message}"
    );
    // Existing ones go on counting, through the other store too.
    assert_eq!(
        stores[1]
            .increment_counter(&counter("a", &[("n", "0")]), 1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        stores[0]
            .increment_counter(&counter("b", &[]), 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        stores[1]
            .increment_counter(&counter("c", &[]), 1)
            .await
            .unwrap(),
        1
    );
    let message = limit_of(stores[0].increment_counter(&counter("d", &[]), 1).await);
    assert!(message.contains("--counter-max-series"), "{message}");
    let message = limit_of(
        stores[0]
            .increment_counter(&counter("b", &[("x", "1"), ("y", "2"), ("z", "3")]), 1)
            .await,
    );
    assert!(message.contains("--counter-max-labels"), "{message}");
    let message = limit_of(
        stores[0]
            .increment_counter(&counter("b", &[("x", &"v".repeat(30))]), 1)
            .await,
    );
    assert!(message.contains("--counter-max-label-bytes"), "{message}");
    let all = stores[0].counters().await.unwrap();
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(db.number("SELECT COUNT(*) FROM counters").await, 5);
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
                    crate::needs!(Postgres);
                    super::$test(super::Backend::Postgres).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::needs!(Mysql);
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
    counter_series_are_bounded_and_refusals_change_nothing,
    keywords_match_whole_words_case_insensitively,
    words_beyond_ascii_are_found_case_insensitively,
    filters_narrow_a_search,
    attributes_are_found_by_exact_value,
    expiry_removes_exactly_the_old_events_and_keeps_counts_in_step,
    every_stored_row_is_found_once_by_keyword,
    counts_follow_the_search_filters,
    pages_follow_the_cursor_while_events_arrive,
    keyword_pages_are_the_newest_matches_whatever_the_word,
    limits_are_bounded,
    keyword_queries_read_the_text_index,
    the_search_migration_indexes_rows_stored_before_it,
);

#[tokio::test]
async fn sqlite_gives_back_the_space_of_expired_events_also_in_an_older_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // A database as older versions made it: no auto-vacuum.
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch("CREATE TABLE earlier (x INTEGER)")
            .unwrap();
        let mode: i64 = old
            .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, 0);
    }
    let store = logmesh::store::sqlite::SqliteStore::open(path.clone(), Default::default())
        .await
        .unwrap();
    let mode: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, 2, "incremental");
    let big = "y".repeat(2_000);
    let lines: Vec<(String, i64)> = (0..5_000).map(|i| (format!("e{i}"), i as i64)).collect();
    let borrowed: Vec<(&str, &str, &str, &str, i64)> = lines
        .iter()
        .map(|(id, ms)| (id.as_str(), "api", "info", big.as_str(), *ms))
        .collect();
    store.write_batch(timed_events(&borrowed)).await.unwrap();
    let full = store.storage().await.unwrap().bytes;
    assert!(full > 10_000_000, "{full}");
    while store.expire(1_000_000_000, 2_000).await.unwrap() == 2_000 {}
    let after = store.storage().await.unwrap().bytes;
    assert!(after < full / 4, "{full} bytes before, {after} after");
}

#[tokio::test]
async fn sqlite_keyword_index_keeps_no_per_row_sizes_and_merges_16_segments_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fts.db");
    let store = logmesh::store::sqlite::SqliteStore::open(path.clone(), Default::default())
        .await
        .unwrap();
    store
        .write_batch(timed_events(&[("a", "api", "info", "disk nearly full", 1)]))
        .await
        .unwrap();
    assert_eq!(ids(&search(&store, keyword("nearly")).await), ["a"]);
    // FTS5 keeps a `_docsize` row per indexed row unless `columnsize=0`.
    let tables: Vec<String> = rusqlite::Connection::open(&path)
        .unwrap()
        .prepare("SELECT name FROM sqlite_master WHERE name LIKE 'service_logs_fts%'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        tables.contains(&"service_logs_fts".to_owned()),
        "{tables:?}"
    );
    assert!(
        !tables.contains(&"service_logs_fts_docsize".to_owned()),
        "{tables:?}"
    );
    // It merges 16 segments at a time (FTS5's default is 4).
    let automerge: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT v FROM service_logs_fts_config WHERE k = 'automerge'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(automerge, 16);
}

#[tokio::test]
async fn sqlite_copies_its_wal_into_the_database_file_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let store = logmesh::store::sqlite::SqliteStore::open(path.clone(), Default::default())
        .await
        .unwrap();
    let file_bytes = || std::fs::metadata(&path).unwrap().len();
    let before = file_bytes();
    // ~6 MB of rows: past the 1,000 pages (4 MB) at which the writer asks for a checkpoint,
    // far below the 16,384 at which it would checkpoint by itself.
    let message = "z".repeat(1_000);
    let lines: Vec<(String, i64)> = (0..6_000).map(|i| (format!("w{i}"), i as i64)).collect();
    let borrowed: Vec<(&str, &str, &str, &str, i64)> = lines
        .iter()
        .map(|(id, ms)| (id.as_str(), "api", "info", message.as_str(), *ms))
        .collect();
    store.write_batch(timed_events(&borrowed)).await.unwrap();
    // Only a checkpoint writes pages into the database file itself.
    eventually(
        "the batch's pages in the database file",
        std::time::Duration::from_secs(10),
        || async { file_bytes() > before + 5_000_000 },
    )
    .await;
}

#[tokio::test]
async fn mariadb_refuses_a_query_of_words_its_fulltext_index_cannot_hold() {
    needs!(Mysql);
    let db = Db::new(Backend::Mariadb).await;
    let store = db.open().await;
    store
        .write_batch(timed_events(&[("a", "api", "info", "id 42 is ok now", 1)]))
        .await
        .unwrap();
    let error = store.search(&keyword("id ok")).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidQuery(_)), "{error:?}");
    assert!(
        error.to_string().contains("at least one word of 3"),
        "{error}"
    );
    // Short words next to an indexed one are checked exactly.
    assert_eq!(ids(&search(store.as_ref(), keyword("now 42")).await), ["a"]);
    assert!(
        search(store.as_ref(), keyword("now 4"))
            .await
            .events
            .is_empty()
    );
}

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

#[tokio::test]
async fn postgres_without_pg_trgm_rights_fails_to_open_saying_what_to_do() {
    needs!(Postgres);
    let database = TestDatabase::create(Server::Postgres).await;
    let role = format!("logmesh_r_{}", uuid::Uuid::now_v7().simple());
    let admin = |sql: String| {
        let url = database.url().to_owned();
        async move {
            let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut connection)
                .await
                .unwrap();
        }
    };
    // May create tables, but not extensions (no CREATE on the database).
    admin(format!(
        "CREATE ROLE {role} LOGIN; GRANT CREATE, USAGE ON SCHEMA public TO {role}"
    ))
    .await;
    let url = database
        .url()
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    assert_ne!(url, database.url(), "the admin URL's user is postgres");
    let opened = store::open(&DatabaseUrl::parse(&url).unwrap()).await;
    admin(format!("DROP OWNED BY {role}; DROP ROLE {role}")).await;
    let error = match opened {
        Ok(_) => panic!("opened without pg_trgm"),
        Err(error) => error,
    };
    assert!(
        matches!(error, StoreError::Migration { version: 2, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("CREATE EXTENSION pg_trgm"), "{message}");
}
