//! MySQL and MariaDB adapter of the store (the cluster shape), on a sqlx pool; several nodes
//! write the same database.
//!
//! Invariants, beyond those of the port (see [`super`]):
//! - Migrations run in [`MysqlStore::open`] on a dedicated session holding
//!   `GET_LOCK('logmesh_migrations_<md5 of the database name>')` (locks are server-wide, so the
//!   name is per database), so nodes starting together migrate one after the other and each
//!   migration runs once; the lock goes with the session, also if the node dies. MySQL commits
//!   DDL implicitly, so a migration is not atomic: its statements are written to be re-run
//!   (`IF NOT EXISTS`) and its version is recorded after the last one.
//! - Tables are InnoDB with `utf8mb4_bin`: ids and service names compare byte for byte
//!   (`Api` and `api` are different services, as in SQLite and PostgreSQL). `message` and
//!   `attributes` are LONGTEXT because an event may be as large as a request body.
//! - Which rows a batch really inserts, exactly, also under concurrency: in one transaction,
//!   the batch's ids (one per id, sorted) are looked up with `SELECT id … WHERE id IN (…)`;
//!   the missing ones are inserted with a plain multi-row INSERT (no `IGNORE`, which would
//!   also hide truncation and other errors); `service_severity` is bumped by the counts of
//!   exactly those rows. If another writer inserts one of those ids between our lookup and our
//!   insert, InnoDB's unique index makes our INSERT wait for its commit and then fail with a
//!   duplicate-key error: the batch fails whole and the caller's retry finds the row already
//!   there. A row is therefore counted by the one transaction that inserted it.
//! - Rows are inserted sorted by id and counts upserted sorted by key, so overlapping writers
//!   take locks in the same order; a deadlock InnoDB still reports fails the batch, which is
//!   retried whole.
//! - Statements stay under the protocol's 65,535 placeholders and about 4 MiB of bound data
//!   (below `max_allowed_packet`, 16 MiB by default), so a batch of any size is several
//!   statements inside its one transaction. A single event larger than `max_allowed_packet`
//!   cannot be stored: raise the server's limit above `--max-body-bytes`.
//! - Keyword search is `MATCH (message) AGAINST ('+"word" …' IN BOOLEAN MODE)` on a FULLTEXT
//!   index. `message` uses `utf8mb4_unicode_ci` (migration 2), because InnoDB's FULLTEXT is
//!   case-sensitive on a binary collation; the index is built without stopwords. InnoDB does
//!   not index words shorter than `innodb_ft_min_token_size` (3) or longer than 84 characters:
//!   such words are checked with `REGEXP '\bword\b'` on the rows the index found, and a query
//!   made only of them is refused ([`StoreError::InvalidQuery`]) rather than scanning the table.

use super::sql::{Dialect, Migration, Options, RemovedRow, SqlStore};
use super::{Cursor, MIGRATION_LOCK_TIMEOUT, StoreError, counter_overflow, sqlx_error};
use crate::counters::CounterKey;
use crate::event::Event;
use async_trait::async_trait;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlRow};
use sqlx::{ConnectOptions, Pool, QueryBuilder, Row};
use std::collections::HashSet;
use std::str::FromStr;

/// The store on MySQL or MariaDB (which speaks the same protocol).
pub(crate) type MysqlStore = SqlStore<MySql>;

/// Schema migrations, applied in order once each; never edit one that has shipped. Every
/// statement must be safe to re-run (see the module docs).
const MIGRATIONS: &[Migration] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS service_logs (
            row_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            id VARCHAR(128) NOT NULL,
            ts_us BIGINT NOT NULL,
            service VARCHAR(128) NOT NULL,
            severity VARCHAR(16) NOT NULL,
            message LONGTEXT NOT NULL,
            attributes LONGTEXT NULL,
            node VARCHAR(128) NOT NULL,
            received_us BIGINT NOT NULL,
            UNIQUE KEY service_logs_id (id)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS service_severity (
            service VARCHAR(128) NOT NULL,
            severity VARCHAR(16) NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (service, severity)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        ],
    ),
    // Search: newest-first order and the keyword index over the rows already stored. An index
    // that already exists (a re-run) fails with ER_DUP_KEYNAME, which the runner skips:
    // MySQL has no CREATE INDEX IF NOT EXISTS.
    (
        2,
        &[
            "ALTER TABLE service_logs
                MODIFY message LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL",
            "CREATE INDEX service_logs_ts ON service_logs (ts_us, row_id)",
            // Read when the index is created: this index then has no stopword list.
            "SET SESSION innodb_ft_enable_stopword = OFF",
            "CREATE FULLTEXT INDEX service_logs_message_ft ON service_logs (message)",
        ],
    ),
    (
        3,
        &["CREATE TABLE IF NOT EXISTS counters (
            `key` CHAR(36) NOT NULL PRIMARY KEY,
            name VARCHAR(200) NOT NULL,
            labels LONGTEXT NOT NULL,
            value BIGINT NOT NULL
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"],
    ),
];

/// MySQL's error number for "Duplicate key name": the index a re-run migration creates exists.
const ER_DUP_KEYNAME: u16 = 1061;

/// Narrows a search to messages holding `word` (letters, digits and `_`: no regex syntax) as
/// a whole word; case-insensitive, as `message`'s collation is.
fn push_whole_word_regexp(sql: &mut QueryBuilder<MySql>, word: &str) {
    sql.push(" AND message REGEXP ")
        .push_bind(format!("\\b{word}\\b"));
}

/// The word lengths, in characters, InnoDB's FULLTEXT index holds (`innodb_ft_min_token_size`
/// default and the fixed maximum).
const FULLTEXT_WORD_CHARS: std::ops::RangeInclusive<usize> = 3..=84;

/// Bound parameters per statement allowed by the MySQL protocol.
const MAX_PLACEHOLDERS: usize = 65_535;

/// Bound data per statement, kept well below the default `max_allowed_packet` (16 MiB).
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// Columns bound per `service_logs` row.
const LOG_COLUMNS: usize = 8;

/// Splits `items` into runs that each fit one statement: at most `per_statement` items and,
/// unless a single item is larger, at most [`MAX_STATEMENT_BYTES`] of `size`.
fn statement_chunks<T>(items: &[T], per_statement: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        if i > start && (i - start == per_statement || bytes + item_bytes > MAX_STATEMENT_BYTES) {
            chunks.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

fn row_bytes(event: &&Event) -> usize {
    event.id.len()
        + event.service.len()
        + event.message.len()
        + event.attributes_json().map_or(0, str::len)
        + event.node.len()
        + 32
}

#[async_trait]
impl Dialect for MySql {
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    // utf8mb4_bin orders by code point, which is the byte order SQLite and PostgreSQL's "C"
    // collation give.
    const STORAGE_BYTES: &'static str = "SELECT CAST(COALESCE(SUM(data_length + index_length), 0)
        AS SIGNED) FROM information_schema.tables WHERE table_schema = DATABASE()
        AND table_name IN ('service_logs', 'service_severity')";
    const SEVERITY_COUNTS: &'static str =
        "SELECT service, severity, count FROM service_severity ORDER BY service, severity";
    const COUNTERS: &'static str = "SELECT name, labels, value FROM counters ORDER BY name, labels";

    fn options(url: &str) -> Result<Options<MySql>, sqlx::Error> {
        Ok(MySqlConnectOptions::from_str(url)?.disable_statement_logging())
    }

    async fn lock_migrations(session: &mut MySqlConnection) -> Result<(), StoreError> {
        let failed = |e: sqlx::Error| StoreError::Migration {
            version: 0,
            reason: e.to_string(),
        };
        let locked: Option<i64> = sqlx::query_scalar(
            "SELECT GET_LOCK(CONCAT('logmesh_migrations_', MD5(DATABASE())), ?)",
        )
        .bind(MIGRATION_LOCK_TIMEOUT.as_secs())
        .fetch_one(&mut *session)
        .await
        .map_err(failed)?;
        if locked != Some(1) {
            return Err(StoreError::Migration {
                version: 0,
                reason: format!(
                    "another node held the migration lock for more than {} s",
                    MIGRATION_LOCK_TIMEOUT.as_secs()
                ),
            });
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS logmesh_migrations (
                version BIGINT NOT NULL PRIMARY KEY,
                applied_us BIGINT NOT NULL
            ) ENGINE = InnoDB",
        )
        .execute(&mut *session)
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn migration_applied(
        session: &mut MySqlConnection,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM logmesh_migrations WHERE version = ?")
                .bind(version)
                .fetch_one(&mut *session)
                .await?;
        Ok(applied > 0)
    }

    /// MySQL commits DDL implicitly: the statements run one by one (each safe to re-run, an
    /// index that exists already is skipped) and the version is recorded after the last.
    async fn apply_migration(
        session: &mut MySqlConnection,
        (version, statements): &Migration,
    ) -> Result<(), StoreError> {
        let version = *version;
        let failed = |e: sqlx::Error| StoreError::Migration {
            version,
            reason: e.to_string(),
        };
        for statement in *statements {
            match sqlx::query(*statement).execute(&mut *session).await {
                Err(sqlx::Error::Database(error))
                    if error
                        .try_downcast_ref::<MySqlDatabaseError>()
                        .is_some_and(|e| e.number() == ER_DUP_KEYNAME) => {}
                executed => {
                    executed.map_err(failed)?;
                }
            }
        }
        sqlx::query("INSERT INTO logmesh_migrations (version, applied_us) VALUES (?, ?)")
            .bind(version)
            .bind(crate::event::now_us())
            .execute(&mut *session)
            .await
            .map_err(failed)?;
        Ok(())
    }

    fn push_text(sql: &mut QueryBuilder<MySql>, value: String) {
        sql.push_bind(value);
    }

    fn push_integer(sql: &mut QueryBuilder<MySql>, value: i64) {
        sql.push_bind(value);
    }

    fn push_attribute(sql: &mut QueryBuilder<MySql>, name: &str, value: String) {
        // The name holds no quote or backslash (check_attribute_name), so quoting it makes a
        // path of one member whatever its dots. Compared as bytes (a _bin collation would
        // ignore trailing spaces), and a JSON null matches nothing, as on the others.
        let path = format!("$.\"{name}\"");
        sql.push(" AND JSON_TYPE(JSON_EXTRACT(attributes, ")
            .push_bind(path.clone())
            .push(")) <> 'NULL' AND CAST(JSON_UNQUOTE(JSON_EXTRACT(attributes, ")
            .push_bind(path)
            .push(")) AS BINARY) = CAST(")
            .push_bind(value)
            .push(" AS BINARY)");
    }

    async fn fetch(
        pool: &Pool<MySql>,
        mut sql: QueryBuilder<MySql>,
    ) -> Result<Vec<MySqlRow>, sqlx::Error> {
        sql.build().fetch_all(pool).await
    }

    async fn fetch_static(
        pool: &Pool<MySql>,
        sql: &'static str,
    ) -> Result<Vec<MySqlRow>, sqlx::Error> {
        sqlx::query(sql).fetch_all(pool).await
    }

    fn push_words(sql: &mut QueryBuilder<MySql>, words: &[String]) -> Result<(), StoreError> {
        let (indexed, checked): (Vec<&String>, Vec<&String>) = words
            .iter()
            .partition(|w| FULLTEXT_WORD_CHARS.contains(&w.chars().count()));
        if !words.is_empty() && indexed.is_empty() {
            return Err(StoreError::InvalidQuery(format!(
                "on MySQL/MariaDB, q needs at least one word of {} to {} characters, the word \
                 lengths its FULLTEXT index holds",
                FULLTEXT_WORD_CHARS.start(),
                FULLTEXT_WORD_CHARS.end()
            )));
        }
        if !indexed.is_empty() {
            // Words are letters, digits and `_` only: no boolean-mode operator can hide in them.
            let against: Vec<String> = indexed.iter().map(|w| format!("+\"{w}\"")).collect();
            sql.push(" AND MATCH (message) AGAINST (")
                .push_bind(against.join(" "))
                .push(" IN BOOLEAN MODE)");
        }
        for word in checked {
            push_whole_word_regexp(sql, word);
        }
        Ok(())
    }

    /// `MATCH … AGAINST` hands over every row holding a word before the sort by time: a
    /// word in 1 of 10 of 10 M events took 14 s.
    const PROBES_NEWEST_ROWS: bool = true;

    fn push_words_per_row(sql: &mut QueryBuilder<MySql>, words: &[String]) {
        for word in words {
            push_whole_word_regexp(sql, word);
        }
    }

    fn push_cursor(sql: &mut QueryBuilder<MySql>, cursor: Cursor) {
        sql.push(" AND (ts_us < ")
            .push_bind(cursor.ts_us)
            .push(" OR (ts_us = ")
            .push_bind(cursor.ts_us)
            .push(" AND row_id < ")
            .push_bind(cursor.row_id)
            .push("))");
    }

    /// One line per `EXPLAIN` row, as `table type key extra`.
    fn explained(rows: &[MySqlRow]) -> String {
        let text = |row: &MySqlRow, column: &str| -> String {
            row.try_get::<Option<String>, _>(column)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        rows.iter()
            .map(|row| {
                format!(
                    "{} {} {} {}",
                    text(row, "table"),
                    text(row, "type"),
                    text(row, "key"),
                    text(row, "Extra")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn insert_new(
        transaction: &mut MySqlConnection,
        rows: &[&Event],
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let mut stored: HashSet<String> = HashSet::new();
        for chunk in statement_chunks(rows, MAX_PLACEHOLDERS, |e| e.id.len()) {
            let mut lookup =
                QueryBuilder::<MySql>::new("SELECT id FROM service_logs WHERE id IN (");
            let mut ids = lookup.separated(", ");
            for event in chunk {
                ids.push_bind(event.id.as_str());
            }
            ids.push_unseparated(")");
            let found: Vec<String> = lookup
                .build_query_scalar()
                .fetch_all(&mut *transaction)
                .await?;
            stored.extend(found);
        }
        let fresh: Vec<&Event> = rows
            .iter()
            .copied()
            .filter(|event| !stored.contains(&event.id))
            .collect();
        for chunk in statement_chunks(&fresh, MAX_PLACEHOLDERS / LOG_COLUMNS, row_bytes) {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO service_logs
                    (id, ts_us, service, severity, message, attributes, node, received_us) ",
            );
            insert.push_values(chunk, |mut row, event| {
                row.push_bind(event.id.as_str())
                    .push_bind(event.ts_us)
                    .push_bind(event.service.as_str())
                    .push_bind(event.severity.as_str())
                    .push_bind(event.message.as_str())
                    .push_bind(event.attributes_json())
                    .push_bind(event.node.as_str())
                    .push_bind(event.received_us);
            });
            insert.build().execute(&mut *transaction).await?;
        }
        Ok(fresh
            .iter()
            .map(|e| (e.service.clone(), e.severity.as_str().to_owned()))
            .collect())
    }

    async fn bump_counts(
        transaction: &mut MySqlConnection,
        counts: &[((&str, &str), i64)],
    ) -> Result<(), sqlx::Error> {
        for chunk in statement_chunks(counts, MAX_PLACEHOLDERS / 3, |((s, v), _)| {
            s.len() + v.len() + 8
        }) {
            let mut bump = QueryBuilder::<MySql>::new(
                "INSERT INTO service_severity (service, severity, count) ",
            );
            bump.push_values(chunk, |mut row, ((service, severity), count)| {
                row.push_bind(*service)
                    .push_bind(*severity)
                    .push_bind(*count);
            });
            // VALUES(count), not the newer row alias: MariaDB has no row alias.
            bump.push(" ON DUPLICATE KEY UPDATE count = count + VALUES(count)");
            bump.build().execute(&mut *transaction).await?;
        }
        Ok(())
    }

    async fn remove_oldest(
        transaction: &mut MySqlConnection,
        before_us: i64,
        after: Cursor,
        max_rows: i64,
    ) -> Result<Vec<RemovedRow>, sqlx::Error> {
        // MySQL takes no LIMIT in an IN subquery, nor the table being deleted from: the rows
        // are locked first, then deleted by their ids. The position is spelled out, as the
        // range optimiser reads it on the (ts_us, row_id) index (a row constructor it may not).
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT row_id, service, severity, ts_us FROM service_logs
             WHERE ts_us < ? AND (ts_us > ? OR (ts_us = ? AND row_id > ?))
             ORDER BY ts_us, row_id LIMIT ? FOR UPDATE",
        )
        .bind(before_us)
        .bind(after.ts_us)
        .bind(after.ts_us)
        .bind(after.row_id)
        .bind(max_rows)
        .fetch_all(&mut *transaction)
        .await?;
        for chunk in rows.chunks(MAX_PLACEHOLDERS) {
            let mut delete =
                QueryBuilder::<MySql>::new("DELETE FROM service_logs WHERE row_id IN (");
            let mut ids = delete.separated(", ");
            for (row_id, ..) in chunk {
                ids.push_bind(*row_id);
            }
            ids.push_unseparated(")");
            delete.build().execute(&mut *transaction).await?;
        }
        Ok(rows
            .into_iter()
            .map(|(row_id, service, severity, ts_us)| (service, severity, ts_us, row_id))
            .collect())
    }

    async fn drop_empty_counts(
        transaction: &mut MySqlConnection,
        keys: &[(&str, &str)],
    ) -> Result<(), sqlx::Error> {
        for (service, severity) in keys {
            sqlx::query(
                "DELETE FROM service_severity WHERE service = ? AND severity = ? AND count <= 0",
            )
            .bind(*service)
            .bind(*severity)
            .execute(&mut *transaction)
            .await?;
        }
        Ok(())
    }

    async fn existing_counters(
        pool: &Pool<MySql>,
        keys: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let mut query = QueryBuilder::<MySql>::new("SELECT `key` FROM counters WHERE `key` IN (");
        let mut list = query.separated(", ");
        for key in keys {
            list.push_bind(key);
        }
        list.push_unseparated(")");
        let found: Vec<String> = query.build_query_scalar().fetch_all(pool).await?;
        Ok(found.into_iter().collect())
    }

    /// MySQL has no RETURNING for an upsert: each value is read back inside the transaction,
    /// while the upsert's row lock keeps every other increment out.
    async fn add_to_counters(
        transaction: &mut MySqlConnection,
        totals: &[(CounterKey, i64)],
        shown_url: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let error = |e| sqlx_error(shown_url, e);
        let mut values = Vec::with_capacity(totals.len());
        for (key, by) in totals {
            let upserted = sqlx::query(
                "INSERT INTO counters (`key`, name, labels, value) VALUES (?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE value = value + VALUES(value)",
            )
            .bind(key.storage_key())
            .bind(&key.name)
            .bind(key.labels_json())
            .bind(by)
            .execute(&mut *transaction)
            .await;
            if let Err(failure) = upserted {
                // 1690: "BIGINT value is out of range".
                let out_of_range = failure
                    .as_database_error()
                    .and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>())
                    .is_some_and(|e| e.number() == 1690);
                return Err(if out_of_range {
                    counter_overflow(key, *by)
                } else {
                    error(failure)
                });
            }
            let value: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE `key` = ?")
                .bind(key.storage_key())
                .fetch_one(&mut *transaction)
                .await
                .map_err(error)?;
            values.push(value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_by_count_and_by_bytes() {
        let items: Vec<usize> = vec![1; 10];
        let sizes = |chunks: Vec<&[usize]>| chunks.iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(sizes(statement_chunks(&items, 4, |_| 1)), [4, 4, 2]);
        assert_eq!(sizes(statement_chunks(&items, 100, |_| 1)), [10]);
        let half = MAX_STATEMENT_BYTES / 2;
        assert_eq!(
            sizes(statement_chunks(&items, 100, |_| half)),
            [2, 2, 2, 2, 2]
        );
        // An item larger than the byte budget still goes, alone.
        let big = [MAX_STATEMENT_BYTES * 2, 1];
        assert_eq!(sizes(statement_chunks(&big, 100, |n| *n)), [1, 1]);
        assert!(statement_chunks(&[] as &[usize], 4, |_| 1).is_empty());
    }
}
