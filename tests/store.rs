//! The store conformance suite. Every adapter must: write a batch in one transaction, skip ids
//! it already has without bumping `service_severity`, and keep the two tables in step.
//! Written once; each backend runs it (SQLite now; PostgreSQL and MySQL join with their adapters).

use logmesh::event::{IngestContext, parse_json_body};
use logmesh::store::{BatchOutcome, SeverityCount, Store, sqlite::SqliteStore};
use std::sync::Arc;

fn events(lines: &[(&str, &str, &str)]) -> Vec<Arc<logmesh::event::Event>> {
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

async fn batches_are_counted_and_ids_stored_once(store: &dyn Store) {
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
    assert_eq!(
        store.severity_counts().await.unwrap(),
        [count("api", "info", 2), count("db", "error", 2)]
    );
    store.health().await.unwrap();
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
    batches_are_counted_and_ids_stored_once(&store).await;
}

#[tokio::test]
async fn sqlite_migrations_run_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(path.clone()).await.unwrap();
    store
        .write_batch(events(&[("a", "api", "info")]))
        .await
        .unwrap();
    drop(store);
    let store = SqliteStore::open(path).await.unwrap();
    assert_eq!(
        store.severity_counts().await.unwrap(),
        [count("api", "info", 1)]
    );
}

#[tokio::test]
async fn a_failing_batch_leaves_both_tables_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(path.clone()).await.unwrap();
    // A trigger makes the third row of the batch fail after two rows were inserted.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON service_logs WHEN NEW.id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        )
        .unwrap();
    let error = store
        .write_batch(events(&[
            ("a", "api", "info"),
            ("b", "api", "info"),
            ("poison", "api", "info"),
        ]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("poisoned"), "{error}");
    assert_eq!(store.severity_counts().await.unwrap(), []);
    let rows: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM service_logs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}
