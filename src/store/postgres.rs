//! PostgreSQL adapter of the store (the cluster shape), on a sqlx pool shared by the node's
//! tasks; several nodes write the same database.
//!
//! Invariants, beyond those of the port (see [`super`]):
//! - Migrations run in [`PostgresStore::open`] on a dedicated session holding
//!   `pg_advisory_lock(MIGRATION_LOCK)`, so nodes starting together migrate one after the
//!   other and each migration runs once; the lock is scoped to the database and released when
//!   the session closes, also if the node dies mid-migration. Each migration is one
//!   transaction (PostgreSQL DDL is transactional).
//! - A batch is one transaction of two statements: `INSERT … SELECT FROM UNNEST(arrays) ON
//!   CONFLICT (id) DO NOTHING RETURNING service, severity` (one array per column, so one
//!   statement whatever the batch size and no placeholder limit), then one multi-row upsert of
//!   the counts of exactly the rows RETURNING reported. A concurrent writer inserting the same
//!   id makes ours wait for its commit and then skip the row (or insert it, if it rolled back),
//!   so a row is counted by the one transaction that inserted it.
//! - Rows are inserted sorted by id and counts upserted sorted by key, so overlapping writers
//!   take locks in the same order; should PostgreSQL still report a deadlock or serialization
//!   failure, the batch fails whole and the caller retries it.
//! - PostgreSQL text cannot hold the NUL character, which JSON input may carry (`\u0000`):
//!   a message's NULs are stored as U+FFFD rather than failing the batch for ever.
//! - Keyword search is `message ~* '\mword\M'` per word, which a `pg_trgm` GIN index on
//!   `message` answers (trigrams of the word, then a recheck of the regular expression): whole
//!   words, case-insensitive, `_` a word character. Migration 2 creates the extension
//!   (trusted since PostgreSQL 13: a database owner may) and fails saying what to do if it
//!   cannot.

use super::counter_groups::{ApplyIncrements, CounterGroups};
use super::{
    ACQUIRE_TIMEOUT, BatchOutcome, CONNECT_TIMEOUT, MAX_CONNECTIONS, MIGRATION_LOCK_TIMEOUT,
    SearchPage, SearchQuery, Selection, SeverityCount, Store, StoreError, WRITER_CONNECTIONS,
    counter_from_sql_row, counter_overflow, health_check, log_if_slow, redact_url,
    severity_count_from_row, sqlx_error, stored_event_from_row, tally, unique_by_id,
};
use crate::counters::{Counter, CounterKey, CounterLimits};
use crate::event::Event;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

/// Schema migrations, applied in order once each; never edit one that has shipped.
///
/// `attributes` is TEXT, not JSONB: the event keeps its attributes verbatim (the client's
/// JSON text), as SQLite and MySQL do, and JSONB would refuse `\u0000` in a string (failing
/// the batch for ever) and rewrite the text. Attribute queries can add an expression index on
/// `attributes::jsonb` later without rewriting rows.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE service_logs (
            row_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            ts_us BIGINT NOT NULL,
            service TEXT NOT NULL,
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            attributes TEXT,
            node TEXT NOT NULL,
            received_us BIGINT NOT NULL
        )",
            "CREATE TABLE service_severity (
            service TEXT NOT NULL,
            severity TEXT NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (service, severity)
        )",
        ],
    ),
    // Search: newest-first order and the keyword index over the rows already stored.
    (
        2,
        &[
            CREATE_TRGM,
            "CREATE INDEX service_logs_ts ON service_logs (ts_us, row_id)",
            "CREATE INDEX service_logs_message_trgm ON service_logs
                USING gin (message gin_trgm_ops)",
        ],
    ),
    (
        3,
        &["CREATE TABLE counters (
            key UUID PRIMARY KEY,
            name TEXT NOT NULL,
            labels TEXT NOT NULL,
            value BIGINT NOT NULL
        )"],
    ),
];

const CREATE_TRGM: &str = "CREATE EXTENSION IF NOT EXISTS pg_trgm";

/// The advisory lock key every logmesh node takes to migrate ("logmesh" in ASCII). Advisory
/// locks are scoped to the database, so databases on one server do not wait for each other.
const MIGRATION_LOCK: i64 = 0x006c_6f67_6d65_7368;

const INSERT_LOGS: &str = "INSERT INTO service_logs
        (id, ts_us, service, severity, message, attributes, node, received_us)
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bigint[])
    ON CONFLICT (id) DO NOTHING
    RETURNING service, severity";

const BUMP_COUNTS: &str = "INSERT INTO service_severity (service, severity, count)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
    ON CONFLICT (service, severity) DO UPDATE SET count = service_severity.count + EXCLUDED.count";

pub struct PostgresStore {
    /// Reads: searches, counts, counters.
    pool: PgPool,
    /// The store writer's batches and the counter increments.
    writer: PgPool,
    /// Health checks only.
    checker: PgPool,
    /// The URL with its password redacted, for messages.
    shown_url: String,
    /// Increments wait here to be committed in groups.
    counters: CounterGroups,
}

/// Applies counter totals for [`CounterGroups`].
struct PgCounters {
    pool: PgPool,
    shown_url: String,
}

#[async_trait]
impl ApplyIncrements for PgCounters {
    async fn existing(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        let error = |e| sqlx_error(&self.shown_url, e);
        let found: Vec<String> =
            sqlx::query_scalar("SELECT key::text FROM counters WHERE key = ANY($1::uuid[])")
                .bind(keys)
                .fetch_all(&self.pool)
                .await
                .map_err(error)?;
        Ok(found.into_iter().collect())
    }

    async fn series_per_name(&self) -> Result<HashMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, COUNT(*) FROM counters GROUP BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| sqlx_error(&self.shown_url, e))?;
        Ok(rows.into_iter().map(|(name, n)| (name, n as u64)).collect())
    }

    async fn apply(&self, totals: &[(CounterKey, i64)]) -> Result<Vec<i64>, StoreError> {
        let error = |e| sqlx_error(&self.shown_url, e);
        let mut transaction = self.pool.begin().await.map_err(error)?;
        let mut values = Vec::with_capacity(totals.len());
        for (key, by) in totals {
            // The WHERE keeps an overflowing update from happening; no row comes back then,
            // and dropping the transaction rolls the group back.
            let value: Option<i64> = sqlx::query_scalar(
                "INSERT INTO counters (key, name, labels, value) VALUES ($1::uuid, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET value = counters.value + EXCLUDED.value
                 WHERE counters.value <= 9223372036854775807 - EXCLUDED.value
                 RETURNING value",
            )
            .bind(key.storage_key())
            .bind(&key.name)
            .bind(key.labels_json())
            .bind(by)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(error)?;
            values.push(value.ok_or_else(|| counter_overflow(key, *by))?);
        }
        transaction.commit().await.map_err(error)?;
        Ok(values)
    }
}

impl PostgresStore {
    /// Connects to `url`, migrates the database and returns a store on a pool that reconnects
    /// on its own. Fails with [`StoreError::Open`] when the database cannot be reached.
    pub async fn open(
        url: &str,
        counter_limits: CounterLimits,
    ) -> Result<PostgresStore, StoreError> {
        let shown_url = redact_url(url);
        let open_error = |reason: String| StoreError::Open {
            url: shown_url.clone(),
            reason,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| open_error(e.to_string()))?
            .application_name("logmesh")
            .disable_statement_logging();
        let mut session = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| open_error(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| open_error(e.to_string()))?;
        let migrated = migrate(&mut session).await;
        // Ending the session releases the migration lock, whatever happened.
        let _ = session.close().await;
        migrated?;
        // Three pools, so that no number of reads can keep the writers or the health check
        // waiting for a connection.
        let pool_of = |size: u32| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options.clone())
        };
        let writer = pool_of(WRITER_CONNECTIONS);
        let counters = CounterGroups::start(
            Arc::new(PgCounters {
                pool: writer.clone(),
                shown_url: shown_url.clone(),
            }),
            counter_limits,
        );
        Ok(PostgresStore {
            pool: pool_of(MAX_CONNECTIONS),
            writer,
            checker: pool_of(1),
            shown_url,
            counters,
        })
    }

    fn error(&self, error: sqlx::Error) -> StoreError {
        sqlx_error(&self.shown_url, error)
    }

    /// PostgreSQL's plan for [`Store::search`] of `query` (`EXPLAIN` output, one line per
    /// row): which index a search reads.
    pub async fn explain_search(&self, query: &SearchQuery) -> Result<String, StoreError> {
        query.check()?;
        let lines: Vec<String> = search_statement(query, "EXPLAIN ", Selection::Page)
            .build_query_scalar()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(lines.join("\n"))
    }
}

async fn migrate(session: &mut PgConnection) -> Result<(), StoreError> {
    let failed = |version: i64| {
        move |e: sqlx::Error| StoreError::Migration {
            version,
            reason: e.to_string(),
        }
    };
    // lock_timeout bounds the wait for the advisory lock too.
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(format!("{}s", MIGRATION_LOCK_TIMEOUT.as_secs()))
        .execute(&mut *session)
        .await
        .map_err(failed(0))?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *session)
        .await
        .map_err(|e| StoreError::Migration {
            version: 0,
            reason: format!("waiting for another node's migration: {e}"),
        })?;
    // Created under the lock: two sessions racing on CREATE TABLE IF NOT EXISTS can still
    // collide in PostgreSQL's catalogue.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS logmesh_migrations (
            version BIGINT PRIMARY KEY,
            applied_us BIGINT NOT NULL
        )",
    )
    .execute(&mut *session)
    .await
    .map_err(failed(0))?;
    for (version, statements) in MIGRATIONS {
        let failed = failed(*version);
        let mut transaction = session.begin().await.map_err(failed)?;
        let applied: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM logmesh_migrations WHERE version = $1)",
        )
        .bind(version)
        .fetch_one(&mut *transaction)
        .await
        .map_err(failed)?;
        if applied {
            continue;
        }
        for statement in *statements {
            let executed = sqlx::query(*statement).execute(&mut *transaction).await;
            if let Err(error) = &executed
                && *statement == CREATE_TRGM
            {
                return Err(StoreError::Migration {
                    version: *version,
                    reason: format!(
                        "the pg_trgm extension, which keyword search needs, could not be \
                         created ({error}); install PostgreSQL's contrib modules if they are \
                         missing, and have the database owner or a superuser run \
                         `CREATE EXTENSION pg_trgm` in this database (PostgreSQL 13 or newer \
                         lets a database owner do it)"
                    ),
                });
            }
            executed.map_err(failed)?;
        }
        sqlx::query("INSERT INTO logmesh_migrations (version, applied_us) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::event::now_us())
            .execute(&mut *transaction)
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        tracing::info!(version, "Applied a schema migration.");
    }
    Ok(())
}

/// `text` without NUL characters, which PostgreSQL text cannot hold.
fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The search statement for `query` (already checked).
fn search_statement(
    query: &SearchQuery,
    prefix: &str,
    selection: Selection,
) -> QueryBuilder<Postgres> {
    let mut sql = QueryBuilder::new(format!("{prefix}{} TRUE", selection.head()));
    for word in query.words() {
        // Words are letters, digits and `_` only: nothing in them is regex syntax.
        sql.push(" AND message ~* ")
            .push_bind(format!("\\m{word}\\M"));
    }
    if let Some(service) = &query.service {
        sql.push(" AND service = ").push_bind(service.clone());
    }
    if let Some(severities) = query.severities() {
        sql.push(" AND severity = ANY(")
            .push_bind(severities)
            .push(")");
    }
    if let Some(since) = query.since {
        sql.push(" AND ts_us >= ").push_bind(since);
    }
    if let Some(until) = query.until {
        sql.push(" AND ts_us < ").push_bind(until);
    }
    if selection == Selection::CountPerSeverity {
        sql.push(" GROUP BY service, severity");
        return sql;
    }
    if let Some(cursor) = query.cursor {
        sql.push(" AND (ts_us, row_id) < (")
            .push_bind(cursor.ts_us)
            .push(", ")
            .push_bind(cursor.row_id)
            .push(")");
    }
    sql.push(" ORDER BY ts_us DESC, row_id DESC LIMIT ")
        .push_bind(i64::from(query.limit) + 1);
    sql
}

#[async_trait]
impl Store for PostgresStore {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        query.check()?;
        let rows = search_statement(query, "", Selection::Page)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let events = rows
            .iter()
            .map(|row| stored_event_from_row(row, |e| self.error(e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SearchPage::from_rows(events, query.limit))
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn write_batch(&self, events: Vec<Arc<Event>>) -> Result<BatchOutcome, StoreError> {
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let started = Instant::now();
        let rows = unique_by_id(&events);
        let ids: Vec<&str> = rows.iter().map(|e| e.id.as_str()).collect();
        let ts: Vec<i64> = rows.iter().map(|e| e.ts_us).collect();
        let services: Vec<&str> = rows.iter().map(|e| e.service.as_str()).collect();
        let severities: Vec<&str> = rows.iter().map(|e| e.severity.as_str()).collect();
        let messages: Vec<Cow<'_, str>> = rows.iter().map(|e| without_nul(&e.message)).collect();
        let messages: Vec<&str> = messages.iter().map(|m| m.as_ref()).collect();
        let attributes: Vec<Option<&str>> = rows.iter().map(|e| e.attributes_json()).collect();
        let nodes: Vec<&str> = rows.iter().map(|e| e.node.as_str()).collect();
        let received: Vec<i64> = rows.iter().map(|e| e.received_us).collect();

        let mut transaction = self.writer.begin().await.map_err(|e| self.error(e))?;
        let inserted = sqlx::query(INSERT_LOGS)
            .bind(ids)
            .bind(ts)
            .bind(services)
            .bind(severities)
            .bind(messages)
            .bind(attributes)
            .bind(nodes)
            .bind(received)
            .fetch_all(&mut *transaction)
            .await
            .map_err(|e| self.error(e))?;
        let inserted: Vec<(String, String)> = inserted
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.error(e))?;
        let counts = tally(inserted.iter().map(|(s, v)| (s.as_str(), v.as_str())));
        if !counts.is_empty() {
            let services: Vec<&str> = counts.keys().map(|(service, _)| *service).collect();
            let severities: Vec<&str> = counts.keys().map(|(_, severity)| *severity).collect();
            let counts: Vec<i64> = counts.values().copied().collect();
            sqlx::query(BUMP_COUNTS)
                .bind(services)
                .bind(severities)
                .bind(counts)
                .execute(&mut *transaction)
                .await
                .map_err(|e| self.error(e))?;
        }
        transaction.commit().await.map_err(|e| self.error(e))?;
        let outcome = BatchOutcome {
            inserted: inserted.len(),
            duplicates: events.len() - inserted.len(),
        };
        log_if_slow(started, events.len(), &outcome);
        Ok(outcome)
    }

    async fn count_events(&self, query: &SearchQuery) -> Result<Vec<SeverityCount>, StoreError> {
        query.check()?;
        let rows = search_statement(query, "", Selection::CountPerSeverity)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| severity_count_from_row(row, |e| self.error(e)))
            .collect()
    }

    async fn severity_counts(&self) -> Result<Vec<SeverityCount>, StoreError> {
        // COLLATE "C": byte order, the order SQLite and MySQL (utf8mb4_bin) give, whatever
        // the database's locale.
        let rows = sqlx::query(
            r#"SELECT service, severity, count FROM service_severity
               ORDER BY service COLLATE "C", severity COLLATE "C""#,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| severity_count_from_row(row, |e| self.error(e)))
            .collect()
    }

    async fn increment_counter(&self, key: &CounterKey, by: i64) -> Result<i64, StoreError> {
        self.counters.increment(key, by).await
    }

    async fn counters(&self) -> Result<Vec<Counter>, StoreError> {
        let rows = sqlx::query(
            r#"SELECT name, labels, value FROM counters
               ORDER BY name COLLATE "C", labels COLLATE "C""#,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| counter_from_sql_row(row, |e| self.error(e)))
            .collect()
    }

    async fn health(&self) -> Result<(), StoreError> {
        let round_trip =
            sqlx::query("SELECT count(*) FROM logmesh_migrations").fetch_one(&self.checker);
        health_check(&self.shown_url, round_trip).await
    }
}
