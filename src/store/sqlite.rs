//! SQLite adapter of the store (the embedded shape), on rusqlite.
//!
//! rusqlite is synchronous, so every call runs on a connection's own thread (a lane). One
//! connection writes (the store writer is the only writer); another serves reads and a third
//! searches, which WAL lets run beside it; a fourth copies the WAL back into the database file
//! after the writer's commits (`Checkpointer`), so the writer's thread never does.
//! `synchronous=FULL` because the ingest queue forgets a batch once its commit returns: the
//! commit itself must survive a power cut.
//!
//! Keyword search reads `service_logs_fts`, an FTS5 index over `message` with external content
//! (the text lives only in `service_logs`), written by the store writer in the batch's own
//! transaction, one `INSERT … SELECT` for the batch's new rows: a row and its index entry
//! commit together. (Triggers keep it in step on delete and update, which nothing does yet.) The tokenizer is `unicode61` with
//! `_` as a word character and diacritics kept, which matches [`SearchQuery::words`].

use super::counter_groups::{ApplyIncrements, CounterGroups};
use super::{
    BatchOutcome, Cursor, SearchPage, SearchQuery, Selection, SeverityCount, Storage, Store,
    StoreError, StoredEvent, counter_from_row, counter_overflow, probe, stored_severity,
};
use crate::counters::{Counter, CounterKey, CounterLimits};
use crate::event::Event;
use crate::lane::Lane;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    // Search: newest-first order and the keyword index, filled from the rows already stored.
    (
        2,
        "CREATE INDEX service_logs_ts ON service_logs (ts_us);
        CREATE VIRTUAL TABLE service_logs_fts USING fts5(
            message,
            content = 'service_logs',
            content_rowid = 'row_id',
            tokenize = \"unicode61 remove_diacritics 0 tokenchars '_'\"
        );
        CREATE TRIGGER service_logs_fts_insert AFTER INSERT ON service_logs BEGIN
            INSERT INTO service_logs_fts (rowid, message) VALUES (new.row_id, new.message);
        END;
        CREATE TRIGGER service_logs_fts_delete AFTER DELETE ON service_logs BEGIN
            INSERT INTO service_logs_fts (service_logs_fts, rowid, message)
                VALUES ('delete', old.row_id, old.message);
        END;
        CREATE TRIGGER service_logs_fts_update AFTER UPDATE OF message ON service_logs BEGIN
            INSERT INTO service_logs_fts (service_logs_fts, rowid, message)
                VALUES ('delete', old.row_id, old.message);
            INSERT INTO service_logs_fts (rowid, message) VALUES (new.row_id, new.message);
        END;
        INSERT INTO service_logs_fts (service_logs_fts) VALUES ('rebuild');",
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
    // The writer now indexes each batch's new rows with one statement inside the batch's own
    // transaction (`write_batch`): 2.7 times the rows per second of a trigger firing per row.
    (4, "DROP TRIGGER service_logs_fts_insert;"),
    // The keyword index without per-row sizes (`columnsize=0`): they serve only bm25 ranking,
    // which search never asks for, and writing them was half of the index's cost per stored
    // row. FTS5 options cannot be altered: the index is made again from the stored rows once.
    (
        5,
        "DROP TABLE service_logs_fts;
        CREATE VIRTUAL TABLE service_logs_fts USING fts5(
            message,
            content = 'service_logs',
            content_rowid = 'row_id',
            tokenize = \"unicode61 remove_diacritics 0 tokenchars '_'\",
            columnsize = 0
        );
        INSERT INTO service_logs_fts (service_logs_fts) VALUES ('rebuild');",
    ),
    // FTS5 writes each batch's words as a new segment and, by default, merges a level's
    // segments into the next as soon as it holds 4: with word-rich log lines that merging was
    // nearly a third of the store writer's time. Merging 16 at a time rewrites each entry
    // about half as often, for ~1.3× the rows per second; a word's lookup reads up to 16
    // segments a level instead of 4, which searches over 10 million rows did not measure. A
    // setting of the index (kept in its config table), so no rebuild.
    (
        6,
        "INSERT INTO service_logs_fts (service_logs_fts, rank) VALUES ('automerge', 16);",
    ),
];

/// Pages in the WAL past which the writer asks the [`Checkpointer`] for a checkpoint (SQLite's
/// own automatic threshold).
const CHECKPOINT_PAGES: i32 = 1_000;

/// Pages in the WAL past which the writer checkpoints by itself, as SQLite would: a backstop
/// for a checkpointer held back (a long read keeps the WAL), far above what it lets the WAL
/// reach otherwise.
const WRITER_CHECKPOINT_PAGES: i32 = 16_384;

thread_local! {
    /// Pages in the WAL after the last commit of this thread's connection, as the writer's WAL
    /// hook ([`note_wal_pages`]) saw them: a lane's thread owns one connection, so this
    /// thread's cell is that connection's.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The writer connection's WAL hook, in place of SQLite's automatic checkpoint (itself a WAL
/// hook that checkpoints inside the commit).
fn note_wal_pages(wal: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    if pages >= WRITER_CHECKPOINT_PAGES {
        // An error here would fail the statement whose commit already happened.
        let _ = wal.checkpoint();
    }
    Ok(())
}

/// Copies the WAL back into the database file on a connection and thread of its own, once the
/// writer's commits grew it past [`CHECKPOINT_PAGES`]. SQLite's automatic checkpoint runs
/// inside the commit that crosses the threshold, with the database file's `fsync`, on the
/// writer's thread: under ingest, ~7 % of the node's CPU and a stall of the one thread every
/// stored event waits for. A `PASSIVE` checkpoint takes no lock the writer needs; requests
/// that arrive while one is queued are one request.
#[derive(Clone)]
struct Checkpointer {
    lane: Lane<Connection>,
    queued: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Runs `work` on the writer's connection, then asks for a checkpoint if its commits
    /// left the WAL past [`CHECKPOINT_PAGES`].
    async fn write<T: Send + 'static>(
        &self,
        writer: &Lane<Connection>,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (result, pages) = with_connection(writer, move |connection| {
            let result = work(connection);
            Ok((result, WAL_PAGES.replace(0)))
        })
        .await?;
        if pages >= CHECKPOINT_PAGES {
            self.request();
        }
        result
    }

    fn request(&self) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let queued = self.queued.clone();
        let submitted = self.lane.try_submit(move |connection| {
            // Cleared first: a commit during this checkpoint asks for the next one.
            queued.store(false, Ordering::Release);
            if let Err(error) =
                connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            {
                tracing::debug!(%error, "A WAL checkpoint failed; the next commit asks again.");
            }
        });
        if !submitted {
            self.queued.store(false, Ordering::Release);
        }
    }
}

pub struct SqliteStore {
    writer: Lane<Connection>,
    checkpointer: Checkpointer,
    reader: Lane<Connection>,
    /// Increments wait here to be committed in groups.
    counters: CounterGroups,
    /// Searches run here, so that a slow one (a common word over millions of rows) never
    /// delays `health` or the counts; searches wait for each other.
    searcher: Lane<Connection>,
    /// Health checks only: no request waits in front of them.
    checker: Lane<Connection>,
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
        .busy_timeout(Duration::from_secs(5))
        .map_err(|e| open_error(e.to_string()))?;
    // Switching to WAL takes a lock without waiting on the busy timeout: a store opened at the
    // same moment as another one migrating (nodes starting together) retries instead of
    // failing "database is locked" (seen in CI).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;",
        ) {
            Ok(()) => return Ok(connection),
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(open_error(error.to_string())),
        }
    }
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

/// Puts the database in incremental vacuum mode, so that the pages expiry frees are given back
/// to the file system after each step ([`expire`]). A new database takes the mode at once; an
/// existing one (created before this version) takes it with one `VACUUM`, which rewrites the
/// file once and needs about its size free. If that fails, the node goes on without: the file
/// then reuses the freed pages but does not shrink.
fn incremental_vacuum(connection: &Connection, path: &std::path::Path) {
    let mode = |connection: &Connection| {
        connection.query_row("PRAGMA auto_vacuum", [], |row| row.get::<_, i64>(0))
    };
    const INCREMENTAL: i64 = 2;
    let converted = (|| {
        if mode(connection)? == INCREMENTAL {
            return Ok(());
        }
        connection.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
        if mode(connection)? != INCREMENTAL {
            tracing::info!(path = %path.display(), "Rewriting the SQLite database once (VACUUM), so that it gives back the space of expired events.");
            connection.execute_batch("VACUUM")?;
            // The rewrite went through the WAL: give that space back too.
            connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        }
        Ok::<_, rusqlite::Error>(())
    })();
    if let Err(error) = converted {
        tracing::warn!(path = %path.display(), %error, "Could not switch the SQLite database to incremental vacuum; expired events' space is reused but not given back.");
    }
}

/// Runs `work` on a connection's own thread.
async fn with_connection<T: Send + 'static>(
    connection: &Lane<Connection>,
    work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    connection
        .run(work)
        .await
        .map_err(|e| StoreError::Database(format!("the database task failed: {e}")))?
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(
        path: PathBuf,
        counter_limits: CounterLimits,
    ) -> Result<SqliteStore, StoreError> {
        tokio::task::spawn_blocking(move || {
            let mut writer = connect(&path)?;
            incremental_vacuum(&writer, &path);
            migrate(&mut writer)?;
            let reader = connect(&path)?;
            let searcher = connect(&path)?;
            let checker = connect(&path)?;
            let checkpoints = connect(&path)?;
            writer.wal_hook(Some(note_wal_pages));
            Ok((writer, reader, searcher, checker, checkpoints))
        })
        .await
        .map_err(|e| StoreError::Database(format!("the database task failed: {e}")))?
        .and_then(|(writer, reader, searcher, checker, checkpoints)| {
            let lane = |name, connection| {
                Lane::spawn(name, connection)
                    .map_err(|e| StoreError::Database(format!("cannot start a thread: {e}")))
            };
            let writer = lane("sqlite-writer", writer)?;
            let checkpointer = Checkpointer {
                lane: lane("sqlite-checkpoint", checkpoints)?,
                queued: Arc::new(AtomicBool::new(false)),
            };
            let counters = CounterGroups::start(
                Arc::new(SqliteCounters {
                    writer: writer.clone(),
                    checkpointer: checkpointer.clone(),
                }),
                counter_limits,
            );
            Ok(SqliteStore {
                writer,
                checkpointer,
                reader: lane("sqlite-reader", reader)?,
                searcher: lane("sqlite-search", searcher)?,
                checker: lane("sqlite-health", checker)?,
                counters,
            })
        })
    }
}

/// Applies counter totals for [`CounterGroups`], on the writer connection.
struct SqliteCounters {
    writer: Lane<Connection>,
    checkpointer: Checkpointer,
}

#[async_trait]
impl ApplyIncrements for SqliteCounters {
    async fn existing(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        let keys = keys.to_vec();
        with_connection(&self.writer, move |connection| {
            let mut found = HashSet::new();
            let mut query = connection
                .prepare_cached("SELECT 1 FROM counters WHERE key = ?1")
                .map_err(database_error)?;
            for key in keys {
                if query.exists([&key]).map_err(database_error)? {
                    found.insert(key);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn series_per_name(&self) -> Result<HashMap<String, u64>, StoreError> {
        with_connection(&self.writer, |connection| {
            let mut query = connection
                .prepare_cached("SELECT name, COUNT(*) FROM counters GROUP BY name")
                .map_err(database_error)?;
            let rows = query
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                })
                .map_err(database_error)?;
            rows.collect::<Result<HashMap<_, _>, _>>()
                .map_err(database_error)
        })
        .await
    }

    async fn apply(&self, totals: &[(CounterKey, i64)]) -> Result<Vec<i64>, StoreError> {
        let totals = totals.to_vec();
        self.checkpointer
            .write(&self.writer, move |connection| {
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
    // This connection is the only writer and row ids only grow: the batch's new rows are the
    // ones after this.
    let last_row: i64 = transaction.query_row(
        "SELECT COALESCE(MAX(row_id), 0) FROM service_logs",
        [],
        |row| row.get(0),
    )?;
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
        if outcome.inserted > 0 {
            transaction
                .prepare_cached(
                    "INSERT INTO service_logs_fts (rowid, message)
                     SELECT row_id, message FROM service_logs WHERE row_id > ?1",
                )?
                .execute([last_row])?;
        }
    }
    transaction.commit()?;
    Ok(outcome)
}

/// See [`Store::expire`]. The keyword index follows through its delete trigger.
fn expire(
    connection: &mut Connection,
    before_us: i64,
    max_rows: usize,
) -> Result<usize, rusqlite::Error> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let removed: Vec<(String, String)> = transaction
        .prepare_cached(
            "DELETE FROM service_logs WHERE row_id IN (
                 SELECT row_id FROM service_logs WHERE ts_us < ?1 ORDER BY ts_us LIMIT ?2)
             RETURNING service, severity",
        )?
        .query_map(params![before_us, max_rows as i64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    {
        let mut lower = transaction.prepare_cached(
            "UPDATE service_severity SET count = count - ?3 WHERE service = ?1 AND severity = ?2",
        )?;
        let mut drop_empty = transaction.prepare_cached(
            "DELETE FROM service_severity WHERE service = ?1 AND severity = ?2 AND count <= 0",
        )?;
        let counts = super::tally(
            removed
                .iter()
                .map(|(service, severity)| (service.as_str(), severity.as_str())),
        );
        for ((service, severity), count) in counts {
            lower.execute(params![service, severity, count])?;
            drop_empty.execute(params![service, severity])?;
        }
    }
    transaction.commit()?;
    if !removed.is_empty() {
        // Give the freed pages back to the file system (see `incremental_vacuum`): the pragma
        // frees one page per step, so it is stepped to its end.
        let mut vacuum = connection.prepare_cached("PRAGMA incremental_vacuum")?;
        let mut steps = vacuum.query([])?;
        while steps.next()?.is_some() {}
    }
    Ok(removed.len())
}

/// The newest rows inside a search's time bounds that a keyword page is first looked for in
/// (see [`probe`]).
struct Probe {
    /// The oldest of them in result order, or `None` when they are every row in the bounds.
    from: Option<Cursor>,
    /// Their least and greatest `row_id`: the keyword index is read in this range only.
    row_ids: (i64, i64),
}

/// Narrows a search to `query`'s `since` and `until`.
fn push_since_until(
    sql: &mut String,
    values: &mut Vec<rusqlite::types::Value>,
    query: &SearchQuery,
) {
    use rusqlite::types::Value;
    if let Some(since) = query.since {
        sql.push_str(" AND ts_us >= ?");
        values.push(Value::Integer(since));
    }
    if let Some(until) = query.until {
        sql.push_str(" AND ts_us < ?");
        values.push(Value::Integer(until));
    }
}

/// Narrows a page to the events after `query`'s cursor in `ts_us DESC, row_id DESC` order.
fn push_cursor(sql: &mut String, values: &mut Vec<rusqlite::types::Value>, query: &SearchQuery) {
    use rusqlite::types::Value;
    if let Some(cursor) = query.cursor {
        sql.push_str(" AND (ts_us < ? OR (ts_us = ? AND row_id < ?))");
        values.extend([
            Value::Integer(cursor.ts_us),
            Value::Integer(cursor.ts_us),
            Value::Integer(cursor.row_id),
        ]);
    }
}

/// The SQL and its parameters for `query` (already checked), searching only `probe`'s rows
/// when given.
fn search_sql(
    query: &SearchQuery,
    selection: Selection,
    probe: Option<&Probe>,
) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = format!("{} 1 = 1", selection.head());
    let mut values: Vec<Value> = Vec::new();
    let words = query.words();
    if !words.is_empty() {
        // Each word a quoted FTS5 string: words hold no quote, so nothing else is syntax.
        let matched: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
        sql.push_str(
            " AND row_id IN (SELECT rowid FROM service_logs_fts WHERE service_logs_fts MATCH ?",
        );
        values.push(Value::Text(matched.join(" ")));
        if let Some(probe) = probe {
            // FTS5 seeks to a rowid range in each word's list instead of reading all of it.
            sql.push_str(" AND rowid BETWEEN ? AND ?");
            values.extend([
                Value::Integer(probe.row_ids.0),
                Value::Integer(probe.row_ids.1),
            ]);
        }
        sql.push(')');
    }
    if let Some(from) = probe.and_then(|probe| probe.from) {
        sql.push_str(" AND (ts_us > ? OR (ts_us = ? AND row_id >= ?))");
        values.extend([
            Value::Integer(from.ts_us),
            Value::Integer(from.ts_us),
            Value::Integer(from.row_id),
        ]);
    }
    if let Some(service) = &query.service {
        sql.push_str(" AND service = ?");
        values.push(Value::Text(service.clone()));
    }
    if let Some(severities) = query.severities() {
        let marks = vec!["?"; severities.len()].join(", ");
        sql.push_str(&format!(" AND severity IN ({marks})"));
        values.extend(severities.into_iter().map(|s| Value::Text(s.into())));
    }
    push_since_until(&mut sql, &mut values, query);
    for (name, value) in &query.attributes {
        // json_each's key is the attribute's exact name (no JSON path to escape); booleans
        // compare as their JSON text, as on the other backends.
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(service_logs.attributes) AS a \
             WHERE a.key = ? AND (CASE a.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
             ELSE CAST(a.value AS TEXT) END) = ?)",
        );
        values.push(Value::Text(name.clone()));
        values.push(Value::Text(value.clone()));
    }
    if selection == Selection::CountPerSeverity {
        sql.push_str(" GROUP BY service, severity");
        return (sql, values);
    }
    push_cursor(&mut sql, &mut values, query);
    sql.push_str(" ORDER BY ts_us DESC, row_id DESC LIMIT ?");
    values.push(Value::Integer(i64::from(query.limit) + 1));
    (sql, values)
}

/// A page of `query`: from the newest rows when they hold it (see [`probe`]), else through
/// the keyword index.
fn search(connection: &Connection, query: &SearchQuery) -> Result<SearchPage, StoreError> {
    if !query.words().is_empty() {
        let wanted = query.limit as usize + 1;
        let mut rows = probe::first_rows(query.limit);
        loop {
            let Some(newest) = newest_rows(connection, query, rows)? else {
                return Ok(SearchPage::from_rows(Vec::new(), query.limit));
            };
            let events = page(connection, query, Some(&newest))?;
            match probe::after(rows, events.len(), wanted, newest.from.is_none()) {
                probe::Next::Answer => return Ok(SearchPage::from_rows(events, query.limit)),
                probe::Next::Probe(more) => rows = more,
                probe::Next::Index => break,
            }
        }
    }
    Ok(SearchPage::from_rows(
        page(connection, query, None)?,
        query.limit,
    ))
}

/// The newest `rows` rows inside `query`'s time bounds and cursor, or `None` when there is
/// none.
fn newest_rows(
    connection: &Connection,
    query: &SearchQuery,
    rows: u64,
) -> Result<Option<Probe>, StoreError> {
    use rusqlite::types::Value;
    let mut sql = String::from("SELECT ts_us, row_id FROM service_logs WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    push_since_until(&mut sql, &mut values, query);
    push_cursor(&mut sql, &mut values, query);
    sql.push_str(" ORDER BY ts_us DESC, row_id DESC LIMIT ?");
    values.push(Value::Integer(i64::try_from(rows).unwrap_or(i64::MAX)));
    let mut statement = connection.prepare_cached(&sql).map_err(database_error)?;
    let mut positions = statement
        .query(rusqlite::params_from_iter(values))
        .map_err(database_error)?;
    let (mut read, mut oldest, mut least, mut greatest) = (0, None, i64::MAX, i64::MIN);
    while let Some(row) = positions.next().map_err(database_error)? {
        let position = Cursor {
            ts_us: row.get(0).map_err(database_error)?,
            row_id: row.get(1).map_err(database_error)?,
        };
        least = least.min(position.row_id);
        greatest = greatest.max(position.row_id);
        oldest = Some(position);
        read += 1;
    }
    Ok(oldest.map(|oldest| Probe {
        from: (read == rows).then_some(oldest),
        row_ids: (least, greatest),
    }))
}

/// The rows of a page of `query` (one more than its limit when there are more), searching
/// only `probe`'s rows when given.
fn page(
    connection: &Connection,
    query: &SearchQuery,
    probe: Option<&Probe>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let (sql, values) = search_sql(query, Selection::Page, probe);
    let mut statement = connection.prepare_cached(&sql).map_err(database_error)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(values), |row| {
            Ok(StoredEvent {
                row_id: row.get(0)?,
                id: row.get(1)?,
                ts_us: row.get(2)?,
                service: row.get(3)?,
                severity: {
                    let name: String = row.get(4)?;
                    stored_severity(&name).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            4,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?
                },
                message: row.get(5)?,
                attributes: row.get(6)?,
                node: row.get(7)?,
                received_us: row.get(8)?,
            })
        })
        .map_err(database_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(database_error)
}

#[async_trait]
impl Store for SqliteStore {
    /// SQLite's plan: `EXPLAIN QUERY PLAN` details, one per line.
    async fn explain_search(&self, query: &SearchQuery) -> Result<String, StoreError> {
        query.check()?;
        let (sql, values) = search_sql(query, Selection::Page, None);
        with_connection(&self.searcher, move |connection| {
            let mut statement = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .map_err(database_error)?;
            let details = statement
                .query_map(rusqlite::params_from_iter(values), |row| {
                    row.get::<_, String>(3)
                })
                .map_err(database_error)?;
            let details: Vec<String> = details.collect::<Result<_, _>>().map_err(database_error)?;
            Ok(details.join("\n"))
        })
        .await
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        query.check()?;
        let query = query.clone();
        with_connection(&self.searcher, move |connection| search(connection, &query)).await
    }

    async fn count_events(&self, query: &SearchQuery) -> Result<Vec<SeverityCount>, StoreError> {
        query.check()?;
        let (sql, values) = search_sql(query, Selection::CountPerSeverity, None);
        with_connection(&self.searcher, move |connection| {
            let mut statement = connection.prepare_cached(&sql).map_err(database_error)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(values), |row| {
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

    async fn write_batch(&self, events: Vec<Arc<Event>>) -> Result<BatchOutcome, StoreError> {
        self.checkpointer
            .write(&self.writer, move |connection| {
                let favoured = crate::lane::Favoured::enter();
                if !favoured.took() {
                    static SAID: std::sync::Once = std::sync::Once::new();
                    SAID.call_once(|| {
                        tracing::debug!(
                            "The store writer writes at the default priority (no privilege to \
                             favour it under CPU contention)."
                        );
                    });
                }
                write_batch(connection, &events).map_err(database_error)
            })
            .await
    }

    async fn expire(&self, before_us: i64, max_rows: usize) -> Result<usize, StoreError> {
        // On the writer's own connection: a step waits its turn between batches.
        self.checkpointer
            .write(&self.writer, move |connection| {
                expire(connection, before_us, max_rows).map_err(database_error)
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

    async fn storage(&self) -> Result<Storage, StoreError> {
        with_connection(&self.reader, |connection| {
            let bytes: i64 = connection
                .query_row(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                    [],
                    |row| row.get(0),
                )
                .map_err(database_error)?;
            let oldest_us: Option<i64> = connection
                .query_row(
                    "SELECT ts_us FROM service_logs ORDER BY ts_us LIMIT 1",
                    [],
                    |row| row.get(0),
                )
                .optional()
                .map_err(database_error)?;
            Ok(Storage {
                bytes: bytes.max(0) as u64,
                oldest_us,
                shrinks_on_removal: true,
            })
        })
        .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        with_connection(&self.checker, |connection| {
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
