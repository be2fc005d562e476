//! SQLite adapter of the store (the embedded shape), on rusqlite.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool. One connection writes
//! (the store writer is the only writer); another serves reads, which WAL lets run beside it.
//! `synchronous=FULL` because the ingest queue forgets a batch once its commit returns: the
//! commit itself must survive a power cut.

use super::counter_groups::{ApplyIncrements, CounterGroups};
use super::{BatchOutcome, SeverityCount, Store, StoreError, counter_from_row, counter_overflow};
use crate::counters::{Counter, CounterKey};
use crate::event::Event;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Schema migrations, applied in order once each; never edit one that has shipped.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE service_logs (
        row_id INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        ts_us INTEGER NOT NULL,
        service TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL,
        attributes TEXT,
        node TEXT NOT NULL,
        received_us INTEGER NOT NULL
    );
    CREATE TABLE service_severity (
        service TEXT NOT NULL,
        severity TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (service, severity)
    ) WITHOUT ROWID;",
    ),
    (
        3,
        "CREATE TABLE counters (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;",
    ),
];

pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Increments wait here to be committed in groups.
    counters: CounterGroups,
}

fn database_error(error: rusqlite::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

fn connect(path: &PathBuf) -> Result<Connection, StoreError> {
    let open_error = |reason: String| StoreError::Open {
        url: format!("sqlite://{}", path.display()),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| open_error(e.to_string()))?;
    }
    let connection = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(|e| open_error(e.to_string()))?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS logmesh_migrations (
                version INTEGER PRIMARY KEY,
                applied_us INTEGER NOT NULL
            )",
        )
        .map_err(|e| StoreError::Migration {
            version: 0,
            reason: e.to_string(),
        })?;
    for (version, sql) in MIGRATIONS {
        let failed = |e: rusqlite::Error| StoreError::Migration {
            version: *version,
            reason: e.to_string(),
        };
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        let applied: Option<i64> = transaction
            .query_row(
                "SELECT version FROM logmesh_migrations WHERE version = ?1",
                [version],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed)?;
        if applied.is_some() {
            continue;
        }
        transaction.execute_batch(sql).map_err(failed)?;
        transaction
            .execute(
                "INSERT INTO logmesh_migrations (version, applied_us) VALUES (?1, ?2)",
                params![version, crate::event::now_us()],
            )
            .map_err(failed)?;
        transaction.commit().map_err(failed)?;
        tracing::info!(version, "Applied a schema migration.");
    }
    Ok(())
}

/// Runs `work` on a connection on the blocking pool.
async fn with_connection<T: Send + 'static>(
    connection: &Arc<Mutex<Connection>>,
    work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let connection = connection.clone();
    tokio::task::spawn_blocking(move || {
        let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
        work(&mut connection)
    })
    .await
    .map_err(|e| StoreError::Database(format!("the database task failed: {e}")))?
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: PathBuf) -> Result<SqliteStore, StoreError> {
        tokio::task::spawn_blocking(move || {
            let mut writer = connect(&path)?;
            migrate(&mut writer)?;
            let reader = connect(&path)?;
            Ok((writer, reader))
        })
        .await
        .map_err(|e| StoreError::Database(format!("the database task failed: {e}")))?
        .map(|(writer, reader)| {
            let writer = Arc::new(Mutex::new(writer));
            let counters = CounterGroups::start(Arc::new(SqliteCounters {
                writer: writer.clone(),
            }));
            SqliteStore {
                writer,
                reader: Arc::new(Mutex::new(reader)),
                counters,
            }
        })
    }
}

/// Applies counter totals for [`CounterGroups`], on the writer connection.
struct SqliteCounters {
    writer: Arc<Mutex<Connection>>,
}

#[async_trait]
impl ApplyIncrements for SqliteCounters {
    async fn apply(&self, totals: &[(CounterKey, i64)]) -> Result<Vec<i64>, StoreError> {
        let totals = totals.to_vec();
        with_connection(&self.writer, move |connection| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(database_error)?;
            let mut values = Vec::with_capacity(totals.len());
            {
                // The WHERE keeps an overflowing update from happening (SQLite would turn the
                // sum into a float); no row comes back then, and the transaction rolls back.
                let mut upsert = transaction
                    .prepare_cached(
                        "INSERT INTO counters (key, name, labels, value) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (key) DO UPDATE SET value = value + excluded.value
                         WHERE value <= 9223372036854775807 - excluded.value
                         RETURNING value",
                    )
                    .map_err(database_error)?;
                for (key, by) in &totals {
                    let value: Option<i64> = upsert
                        .query_row(
                            params![key.storage_key(), key.name, key.labels_json(), by],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(database_error)?;
                    values.push(value.ok_or_else(|| counter_overflow(key, *by))?);
                }
            }
            transaction.commit().map_err(database_error)?;
            Ok(values)
        })
        .await
    }
}

fn write_batch(
    connection: &mut Connection,
    events: &[Arc<Event>],
) -> Result<BatchOutcome, rusqlite::Error> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut counts: HashMap<(&str, &str), i64> = HashMap::new();
    let mut outcome = BatchOutcome::default();
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO service_logs
                (id, ts_us, service, severity, message, attributes, node, received_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO NOTHING",
        )?;
        for event in events {
            let inserted = insert.execute(params![
                event.id,
                event.ts_us,
                event.service,
                event.severity.as_str(),
                event.message,
                event.attributes_json(),
                event.node,
                event.received_us,
            ])?;
            if inserted == 1 {
                outcome.inserted += 1;
                *counts
                    .entry((event.service.as_str(), event.severity.as_str()))
                    .or_default() += 1;
            } else {
                outcome.duplicates += 1;
            }
        }
        let mut bump = transaction.prepare_cached(
            "INSERT INTO service_severity (service, severity, count) VALUES (?1, ?2, ?3)
             ON CONFLICT (service, severity) DO UPDATE SET count = count + excluded.count",
        )?;
        for ((service, severity), count) in counts {
            bump.execute(params![service, severity, count])?;
        }
    }
    transaction.commit()?;
    Ok(outcome)
}

#[async_trait]
impl Store for SqliteStore {
    async fn write_batch(&self, events: Vec<Arc<Event>>) -> Result<BatchOutcome, StoreError> {
        with_connection(&self.writer, move |connection| {
            write_batch(connection, &events).map_err(database_error)
        })
        .await
    }

    async fn severity_counts(&self) -> Result<Vec<SeverityCount>, StoreError> {
        with_connection(&self.reader, |connection| {
            let mut query = connection
                .prepare_cached(
                    "SELECT service, severity, count FROM service_severity
                     ORDER BY service, severity",
                )
                .map_err(database_error)?;
            let rows = query
                .query_map([], |row| {
                    Ok(SeverityCount {
                        service: row.get(0)?,
                        severity: row.get(1)?,
                        count: row.get(2)?,
                    })
                })
                .map_err(database_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(database_error)
        })
        .await
    }

    async fn increment_counter(&self, key: &CounterKey, by: i64) -> Result<i64, StoreError> {
        self.counters.increment(key, by).await
    }

    async fn counters(&self) -> Result<Vec<Counter>, StoreError> {
        with_connection(&self.reader, |connection| {
            let mut query = connection
                .prepare_cached("SELECT name, labels, value FROM counters ORDER BY name, labels")
                .map_err(database_error)?;
            let rows = query
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(database_error)?;
            rows.map(|row| {
                let (name, labels, value) = row.map_err(database_error)?;
                counter_from_row(name, &labels, value)
            })
            .collect()
        })
        .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        with_connection(&self.reader, |connection| {
            connection
                .query_row("SELECT count(*) FROM logmesh_migrations", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map(drop)
                .map_err(database_error)
        })
        .await
    }
}
