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
//! - Keyword search is `<row's words> @> ARRAY[word, …]`, which the GIN index
//!   `service_logs_message_words` answers: whole words, case-insensitive, `_` a word
//!   character. The node writes each row's words into `words` ([`indexed_words`], split as a
//!   query's `q` is); rows from before migration 4 have them computed from `message` by
//!   PostgreSQL (`row_words!`). Words of 100 characters or more are not indexed and are
//!   checked with `message ~* '\mword\M'`. Migration 2 still creates the `pg_trgm` extension
//!   for the trigram index migration 5 drops (trusted since PostgreSQL 13: a database owner
//!   may) and fails saying what to do if it cannot.

use super::sql::{Dialect, Migration, Options, RemovedRow, SqlStore};
use super::{Cursor, MIGRATION_LOCK_TIMEOUT, StoreError, counter_overflow};
use crate::counters::CounterKey;
use crate::event::Event;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, Postgres};
use sqlx::{ConnectOptions, Connection, Pool, QueryBuilder, Row};
use std::borrow::Cow;
use std::collections::HashSet;
use std::str::FromStr;

/// The store on PostgreSQL.
pub(crate) type PostgresStore = SqlStore<Postgres>;

/// The words the keyword index holds for a row: the node writes them into `words` (lower-cased
/// runs of letters, digits and `_`, once each, space-separated; see [`indexed_words`]), and
/// rows stored before migration 4 (`words` NULL) have them computed from `message` by
/// PostgreSQL's regular expressions, which cost ~6 µs a row: fine once, too slow per insert.
/// Words of [`INDEXED_WORD_CHARS`] characters or more are left out either way (a GIN entry must
/// fit in a third of a page, and one overlong word must not fail a batch for ever). A macro,
/// because the index and the queries must spell the expression identically.
macro_rules! row_words {
    () => {
        r"COALESCE(string_to_array(words, ' '), regexp_split_to_array(regexp_replace(lower(message), '[[:alnum:]_]{100,}', ' ', 'g'), '[^[:alnum:]_]+'))"
    };
}

/// Words this long or longer are not in the keyword index; they are checked on each row.
const INDEXED_WORD_CHARS: usize = 100;

/// What the node writes into a row's `words`: its message's words as search finds them
/// ([`SearchQuery::words`](super::SearchQuery::words)), shorter than [`INDEXED_WORD_CHARS`],
/// once each.
fn indexed_words(message: &str) -> String {
    let mut words: Vec<String> = super::query_words(message)
        .into_iter()
        .filter(|word| word.chars().count() < INDEXED_WORD_CHARS)
        .collect();
    words.sort_unstable();
    words.dedup();
    words.join(" ")
}

/// Schema migrations, applied in order once each; never edit one that has shipped.
///
/// `attributes` is TEXT, not JSONB: the event keeps its attributes verbatim (the client's
/// JSON text), as SQLite and MySQL do, and JSONB would refuse `\u0000` in a string (failing
/// the batch for ever) and rewrite the text. Attribute queries can add an expression index on
/// `attributes::jsonb` later without rewriting rows.
const MIGRATIONS: &[Migration] = &[
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
    // Keyword search by whole words instead of trigrams: a rare word is one short posting
    // list (not the intersection of its trigrams' long ones), and a row adds ~12 index
    // entries instead of ~80. Existing rows keep `words` NULL (no rewrite of the table). The
    // column is its own migration: ADD COLUMN locks out readers too, and only until its
    // commit; the index build then holds a lock that lets searches run (writes wait).
    (
        4,
        &["ALTER TABLE service_logs ADD COLUMN IF NOT EXISTS words TEXT"],
    ),
    (
        5,
        &[
            concat!(
                "CREATE INDEX service_logs_message_words ON service_logs USING gin ((",
                row_words!(),
                "))"
            ),
            "DROP INDEX IF EXISTS service_logs_message_trgm",
        ],
    ),
];

const CREATE_TRGM: &str = "CREATE EXTENSION IF NOT EXISTS pg_trgm";

/// The advisory lock key every logmesh node takes to migrate ("logmesh" in ASCII). Advisory
/// locks are scoped to the database, so databases on one server do not wait for each other.
const MIGRATION_LOCK: i64 = 0x006c_6f67_6d65_7368;

const INSERT_LOGS: &str = "INSERT INTO service_logs
        (id, ts_us, service, severity, message, attributes, node, received_us, words)
    SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bigint[], $9::text[])
    ON CONFLICT (id) DO NOTHING
    RETURNING service, severity";

const BUMP_COUNTS: &str = "INSERT INTO service_severity (service, severity, count)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
    ON CONFLICT (service, severity) DO UPDATE SET count = service_severity.count + EXCLUDED.count";

/// `text` without NUL characters, which PostgreSQL text cannot hold.
fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[async_trait]
impl Dialect for Postgres {
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    // COLLATE "C": byte order, the order SQLite and MySQL (utf8mb4_bin) give, whatever the
    // database's locale.
    const STORAGE_BYTES: &'static str = "SELECT (pg_total_relation_size('service_logs')
        + pg_total_relation_size('service_severity'))::bigint";
    const SEVERITY_COUNTS: &'static str = r#"SELECT service, severity, count FROM service_severity
        ORDER BY service COLLATE "C", severity COLLATE "C""#;
    const COUNTERS: &'static str = r#"SELECT name, labels, value FROM counters
        ORDER BY name COLLATE "C", labels COLLATE "C""#;

    fn options(url: &str) -> Result<Options<Postgres>, sqlx::Error> {
        Ok(PgConnectOptions::from_str(url)?
            .application_name("logmesh")
            .disable_statement_logging())
    }

    async fn lock_migrations(session: &mut PgConnection) -> Result<(), StoreError> {
        let failed = |e: sqlx::Error| StoreError::Migration {
            version: 0,
            reason: e.to_string(),
        };
        // lock_timeout bounds the wait for the advisory lock too.
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{}s", MIGRATION_LOCK_TIMEOUT.as_secs()))
            .execute(&mut *session)
            .await
            .map_err(failed)?;
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
        .map_err(failed)?;
        Ok(())
    }

    async fn migration_applied(
        session: &mut PgConnection,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM logmesh_migrations WHERE version = $1)")
            .bind(version)
            .fetch_one(&mut *session)
            .await
    }

    /// One transaction per migration: PostgreSQL DDL is transactional.
    async fn apply_migration(
        session: &mut PgConnection,
        (version, statements): &Migration,
    ) -> Result<(), StoreError> {
        let version = *version;
        let failed = |e: sqlx::Error| StoreError::Migration {
            version,
            reason: e.to_string(),
        };
        let mut transaction = session.begin().await.map_err(failed)?;
        for statement in *statements {
            let executed = sqlx::query(*statement).execute(&mut *transaction).await;
            if let Err(error) = &executed
                && *statement == CREATE_TRGM
            {
                return Err(StoreError::Migration {
                    version,
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
        transaction.commit().await.map_err(failed)
    }

    fn push_text(sql: &mut QueryBuilder<Postgres>, value: String) {
        sql.push_bind(value);
    }

    fn push_integer(sql: &mut QueryBuilder<Postgres>, value: i64) {
        sql.push_bind(value);
    }

    fn push_attribute(sql: &mut QueryBuilder<Postgres>, name: &str, value: String) {
        // `->>` answers a string as it is and a number or boolean as its JSON text.
        sql.push(" AND (attributes::jsonb ->> ")
            .push_bind(name.to_owned())
            .push(") = ")
            .push_bind(value);
    }

    async fn fetch(
        pool: &Pool<Postgres>,
        mut sql: QueryBuilder<Postgres>,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        sql.build().fetch_all(pool).await
    }

    async fn fetch_static(
        pool: &Pool<Postgres>,
        sql: &'static str,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        sqlx::query(sql).fetch_all(pool).await
    }

    fn push_words(sql: &mut QueryBuilder<Postgres>, words: &[String]) -> Result<(), StoreError> {
        // A row's words are exact (split as the query's were), so the index's answer needs no
        // second check; only words too long to be indexed are checked on each row. (A
        // regular expression would also depend on the database's locale: under `C`, `é` is
        // not a word character and `\mcafé\M` finds nothing.)
        let (indexed, long): (Vec<String>, Vec<String>) = words
            .iter()
            .cloned()
            .partition(|w| w.chars().count() < INDEXED_WORD_CHARS);
        if !indexed.is_empty() {
            sql.push(concat!(" AND ", row_words!(), " @> "))
                .push_bind(indexed)
                .push("::text[]");
        }
        Self::push_words_per_row(sql, &long);
        Ok(())
    }

    /// PostgreSQL's planner walks the time index itself for a word its statistics say is
    /// common, checking each row and stopping at the page, so it needs no probes.
    const PROBES_NEWEST_ROWS: bool = false;

    fn push_words_per_row(sql: &mut QueryBuilder<Postgres>, words: &[String]) {
        for word in words {
            // Words are letters, digits and `_` only: nothing in them is regex syntax.
            sql.push(" AND message ~* ")
                .push_bind(format!("\\m{word}\\M"));
        }
    }

    fn push_cursor(sql: &mut QueryBuilder<Postgres>, cursor: Cursor) {
        // A row comparison, which the (ts_us, row_id) index answers as one range.
        sql.push(" AND (ts_us, row_id) < (")
            .push_bind(cursor.ts_us)
            .push(", ")
            .push_bind(cursor.row_id)
            .push(")");
    }

    fn explained(rows: &[PgRow]) -> String {
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn insert_new(
        transaction: &mut PgConnection,
        rows: &[&Event],
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let ids: Vec<&str> = rows.iter().map(|e| e.id.as_str()).collect();
        let ts: Vec<i64> = rows.iter().map(|e| e.ts_us).collect();
        let services: Vec<&str> = rows.iter().map(|e| e.service.as_str()).collect();
        let severities: Vec<&str> = rows.iter().map(|e| e.severity.as_str()).collect();
        let messages: Vec<Cow<'_, str>> = rows.iter().map(|e| without_nul(&e.message)).collect();
        let messages: Vec<&str> = messages.iter().map(|m| m.as_ref()).collect();
        let attributes: Vec<Option<&str>> = rows.iter().map(|e| e.attributes_json()).collect();
        let nodes: Vec<&str> = rows.iter().map(|e| e.node.as_str()).collect();
        let received: Vec<i64> = rows.iter().map(|e| e.received_us).collect();
        let words: Vec<String> = rows.iter().map(|e| indexed_words(&e.message)).collect();
        let inserted = sqlx::query(INSERT_LOGS)
            .bind(ids)
            .bind(ts)
            .bind(services)
            .bind(severities)
            .bind(messages)
            .bind(attributes)
            .bind(nodes)
            .bind(received)
            .bind(words)
            .fetch_all(&mut *transaction)
            .await?;
        inserted
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn bump_counts(
        transaction: &mut PgConnection,
        counts: &[((&str, &str), i64)],
    ) -> Result<(), sqlx::Error> {
        let services: Vec<&str> = counts.iter().map(|((service, _), _)| *service).collect();
        let severities: Vec<&str> = counts.iter().map(|((_, severity), _)| *severity).collect();
        let counts: Vec<i64> = counts.iter().map(|(_, count)| *count).collect();
        sqlx::query(BUMP_COUNTS)
            .bind(services)
            .bind(severities)
            .bind(counts)
            .execute(&mut *transaction)
            .await?;
        Ok(())
    }

    async fn remove_oldest(
        transaction: &mut PgConnection,
        before_us: i64,
        after: Cursor,
        max_rows: i64,
    ) -> Result<Vec<RemovedRow>, sqlx::Error> {
        // A row comparison, which the (ts_us, row_id) index answers as one range.
        sqlx::query_as(
            "DELETE FROM service_logs WHERE row_id IN (
                 SELECT row_id FROM service_logs
                 WHERE ts_us < $1 AND (ts_us, row_id) > ($2, $3)
                 ORDER BY ts_us, row_id LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING service, severity, ts_us, row_id",
        )
        .bind(before_us)
        .bind(after.ts_us)
        .bind(after.row_id)
        .bind(max_rows)
        .fetch_all(&mut *transaction)
        .await
    }

    async fn drop_empty_counts(
        transaction: &mut PgConnection,
        keys: &[(&str, &str)],
    ) -> Result<(), sqlx::Error> {
        let services: Vec<&str> = keys.iter().map(|(service, _)| *service).collect();
        let severities: Vec<&str> = keys.iter().map(|(_, severity)| *severity).collect();
        sqlx::query(
            "DELETE FROM service_severity WHERE count <= 0 AND (service, severity) IN (
                 SELECT * FROM UNNEST($1::text[], $2::text[]))",
        )
        .bind(services)
        .bind(severities)
        .execute(&mut *transaction)
        .await?;
        Ok(())
    }

    async fn existing_counters(
        pool: &Pool<Postgres>,
        keys: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let found: Vec<String> =
            sqlx::query_scalar("SELECT key::text FROM counters WHERE key = ANY($1::uuid[])")
                .bind(keys)
                .fetch_all(pool)
                .await?;
        Ok(found.into_iter().collect())
    }

    async fn add_to_counters(
        transaction: &mut PgConnection,
        totals: &[(CounterKey, i64)],
        shown_url: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let mut values = Vec::with_capacity(totals.len());
        for (key, by) in totals {
            // The WHERE keeps an overflowing update from happening; no row comes back then.
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
            .map_err(|e| super::sqlx_error(shown_url, e))?;
            values.push(value.ok_or_else(|| counter_overflow(key, *by))?);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::{INDEXED_WORD_CHARS, indexed_words};

    #[test]
    fn older_rows_leave_out_the_words_newer_rows_leave_out() {
        let long = format!("[[:alnum:]_]{{{INDEXED_WORD_CHARS},}}");
        assert!(row_words!().contains(&long), "{}", row_words!());
    }

    #[test]
    fn a_row_holds_its_short_words_once_each() {
        let long = "x".repeat(INDEXED_WORD_CHARS);
        let short = "y".repeat(INDEXED_WORD_CHARS - 1);
        assert_eq!(
            indexed_words(&format!("Timeout, timeout: user_id=42 {long} {short} café")),
            format!("42 café timeout user_id {short}")
        );
        assert_eq!(indexed_words(" -- "), "");
    }
}
