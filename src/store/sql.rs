//! What the PostgreSQL and MySQL/MariaDB adapters share, written once: [`SqlStore`] opens the
//! pools, runs the migrations loop under the server's migration lock, builds the search filters,
//! runs the write path (one transaction: insert the new rows, bump the counts of exactly those
//! rows) and answers the [`Store`] port. Each server adapter implements [`Dialect`] for its sqlx
//! database type with only what truly differs: SQL text, how a statement runs, how a batch
//! learns which rows it inserted, and row decoding.

use super::counter_groups::{ApplyIncrements, CounterGroups};
use super::{
    ACQUIRE_TIMEOUT, BatchOutcome, CONNECT_TIMEOUT, Cursor, MAX_CONNECTIONS, SearchPage,
    SearchQuery, Selection, SeverityCount, SqlRow, Storage, Store, StoreError, StoredEvent,
    WRITER_CONNECTIONS, counter_from_sql_row, health_check, log_if_slow, probe, redact_url,
    severity_count_from_row, sqlx_error, stored_event_from_row, tally, unique_by_id,
};
use crate::counters::{Counter, CounterKey, CounterLimits};
use crate::event::Event;
use async_trait::async_trait;
use sqlx::pool::PoolOptions;
use sqlx::{ConnectOptions, Connection, Database, Pool, QueryBuilder};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// The options a [`Dialect`]'s connections are made from.
pub(crate) type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

/// One migration: its version and its statements, applied in order once each.
pub(crate) type Migration = (i64, &'static [&'static str]);

/// What differs between the SQL servers: implemented for sqlx's database types.
#[async_trait]
pub(crate) trait Dialect: Database<Row: SqlRow> {
    /// The schema migrations; never edit one that has shipped.
    const MIGRATIONS: &'static [Migration];
    /// `service, severity, count` of `service_severity`, in byte order.
    const SEVERITY_COUNTS: &'static str;
    /// `name, labels, value` of `counters`, in byte order.
    const COUNTERS: &'static str;
    /// One row, one integer: the bytes of `service_logs` and `service_severity` with their
    /// indexes.
    const STORAGE_BYTES: &'static str;

    /// Connection options from a URL, with statement logging off.
    fn options(url: &str) -> Result<Options<Self>, sqlx::Error>;

    /// Takes the database's migration lock on `session` (held until the session ends) and
    /// creates the migrations table.
    async fn lock_migrations(session: &mut Self::Connection) -> Result<(), StoreError>;
    /// Whether `version` is recorded as applied.
    async fn migration_applied(
        session: &mut Self::Connection,
        version: i64,
    ) -> Result<bool, sqlx::Error>;
    /// Runs one migration's statements and records its version.
    async fn apply_migration(
        session: &mut Self::Connection,
        migration: &Migration,
    ) -> Result<(), StoreError>;

    /// Binds a text value.
    fn push_text(sql: &mut QueryBuilder<Self>, value: String);
    /// Binds an integer value.
    fn push_integer(sql: &mut QueryBuilder<Self>, value: i64);
    /// Narrows a search to events whose attribute `name` (checked by
    /// [`check_attribute_name`](super::check_attribute_name)) is `value`: a string as it is, a
    /// number or boolean as its JSON text.
    fn push_attribute(sql: &mut QueryBuilder<Self>, name: &str, value: String);
    /// The rows of a built statement.
    async fn fetch(
        pool: &Pool<Self>,
        mut sql: QueryBuilder<Self>,
    ) -> Result<Vec<Self::Row>, sqlx::Error>;
    /// The rows of a statement without parameters.
    async fn fetch_static(
        pool: &Pool<Self>,
        sql: &'static str,
    ) -> Result<Vec<Self::Row>, sqlx::Error>;

    /// Narrows a search to the events holding every word (whole words, case-insensitive);
    /// fails with [`StoreError::InvalidQuery`] for words this server's index cannot find.
    fn push_words(sql: &mut QueryBuilder<Self>, words: &[String]) -> Result<(), StoreError>;
    /// Whether keyword pages are looked for among the newest rows first (see [`probe`]): for a
    /// keyword index that answers a word only with all its rows, to be sorted by time.
    const PROBES_NEWEST_ROWS: bool;
    /// [`push_words`](Dialect::push_words) checked on each row a probe reads, without the
    /// keyword index; the same words found.
    fn push_words_per_row(sql: &mut QueryBuilder<Self>, words: &[String]);
    /// Narrows a page to the events after `cursor` in `ts_us DESC, row_id DESC` order.
    fn push_cursor(sql: &mut QueryBuilder<Self>, cursor: Cursor);
    /// The `EXPLAIN` rows of a search statement, one line each.
    fn explained(rows: &[Self::Row]) -> String;

    /// Inserts the rows (distinct ids, sorted) whose ids are not stored yet and returns the
    /// `(service, severity)` of exactly the rows it inserted.
    async fn insert_new(
        transaction: &mut Self::Connection,
        rows: &[&Event],
    ) -> Result<Vec<(String, String)>, sqlx::Error>;
    /// Adds `counts` (sorted by key) to `service_severity`.
    async fn bump_counts(
        transaction: &mut Self::Connection,
        counts: &[((&str, &str), i64)],
    ) -> Result<(), sqlx::Error>;

    /// Locks and removes up to `max_rows` of the oldest rows stored before `before_us` and
    /// after `after` in `ts_us, row_id` order (rows another transaction holds are left to it),
    /// answering each one's `service, severity, ts_us, row_id`.
    async fn remove_oldest(
        transaction: &mut Self::Connection,
        before_us: i64,
        after: Cursor,
        max_rows: i64,
    ) -> Result<Vec<RemovedRow>, sqlx::Error>;
    /// Removes the `service_severity` rows of these keys whose count reached 0.
    async fn drop_empty_counts(
        transaction: &mut Self::Connection,
        keys: &[(&str, &str)],
    ) -> Result<(), sqlx::Error>;

    /// Which of these counter storage keys exist.
    async fn existing_counters(
        pool: &Pool<Self>,
        keys: &[String],
    ) -> Result<HashSet<String>, sqlx::Error>;
    /// Adds each total to its counter, creating it, and returns the new values in order;
    /// [`StoreError::Rejected`] when one would pass `i64::MAX`.
    async fn add_to_counters(
        transaction: &mut Self::Connection,
        totals: &[(CounterKey, i64)],
        shown_url: &str,
    ) -> Result<Vec<i64>, StoreError>;
}

/// A row an expiry step removed: `service, severity, ts_us, row_id`.
pub(crate) type RemovedRow = (String, String, i64, i64);

/// Where the previous expiry step stopped, for the next step of the same expiry.
#[derive(Debug, Clone, Copy)]
struct ExpiryMark {
    before_us: i64,
    last: Cursor,
}

/// A store on a PostgreSQL or MySQL/MariaDB server, which several nodes write together.
pub(crate) struct SqlStore<DB: Dialect> {
    /// Reads: searches, counts, counters.
    pool: Pool<DB>,
    /// The store writer's batches and the counter increments.
    writer: Pool<DB>,
    /// Health checks only.
    checker: Pool<DB>,
    /// The URL with its password redacted, for messages.
    shown_url: String,
    /// Increments wait here to be committed in groups.
    counters: CounterGroups,
    /// The last row the previous expiry step removed, while more may follow: the next step
    /// starts after it instead of at the start of the time index, where PostgreSQL and InnoDB
    /// keep the entries of deleted rows until their vacuum or purge (walking past millions of
    /// them made each step of a large expiry slower than the last).
    expiry_mark: std::sync::Mutex<Option<ExpiryMark>>,
}

/// Applies counter totals for [`CounterGroups`].
struct SqlCounters<DB: Dialect> {
    pool: Pool<DB>,
    shown_url: String,
}

#[async_trait]
impl<DB: Dialect> ApplyIncrements for SqlCounters<DB> {
    async fn existing(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        DB::existing_counters(&self.pool, keys)
            .await
            .map_err(|e| sqlx_error(&self.shown_url, e))
    }

    async fn series_per_name(&self) -> Result<HashMap<String, u64>, StoreError> {
        let error = |e| sqlx_error(&self.shown_url, e);
        let rows = DB::fetch_static(
            &self.pool,
            "SELECT name, COUNT(*) FROM counters GROUP BY name",
        )
        .await
        .map_err(error)?;
        rows.iter()
            .map(|row| Ok((row.text(0)?, row.integer(1)? as u64)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(error)
    }

    async fn apply(&self, totals: &[(CounterKey, i64)]) -> Result<Vec<i64>, StoreError> {
        let error = |e| sqlx_error(&self.shown_url, e);
        let mut transaction = self.pool.begin().await.map_err(error)?;
        // An error drops the transaction, which rolls the whole group back.
        let values = DB::add_to_counters(&mut transaction, totals, &self.shown_url).await?;
        transaction.commit().await.map_err(error)?;
        Ok(values)
    }
}

impl<DB: Dialect> SqlStore<DB> {
    /// Connects to `url`, migrates the database and returns a store on pools that reconnect on
    /// their own. Fails with [`StoreError::Open`] when the database cannot be reached.
    pub(crate) async fn open(
        url: &str,
        counter_limits: CounterLimits,
    ) -> Result<SqlStore<DB>, StoreError> {
        let shown_url = redact_url(url);
        let open_error = |reason: String| StoreError::Open {
            url: shown_url.clone(),
            reason,
        };
        let options = DB::options(url).map_err(|e| open_error(e.to_string()))?;
        let mut session = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| open_error(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| open_error(e.to_string()))?;
        let migrated = migrate::<DB>(&mut session).await;
        // Ending the session releases the migration lock, whatever happened.
        let _ = session.close().await;
        migrated?;
        // Three pools, so that no number of reads can keep the writers or the health check
        // waiting for a connection.
        let pool_of = |size: u32| {
            PoolOptions::<DB>::new()
                .max_connections(size)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options.clone())
        };
        let writer = pool_of(WRITER_CONNECTIONS);
        let counters = CounterGroups::start(
            Arc::new(SqlCounters::<DB> {
                pool: writer.clone(),
                shown_url: shown_url.clone(),
            }),
            counter_limits,
        );
        Ok(SqlStore {
            pool: pool_of(MAX_CONNECTIONS),
            writer,
            checker: pool_of(1),
            shown_url,
            counters,
            expiry_mark: std::sync::Mutex::new(None),
        })
    }

    fn error(&self, error: sqlx::Error) -> StoreError {
        sqlx_error(&self.shown_url, error)
    }

    fn take_expiry_mark(&self) -> Option<ExpiryMark> {
        self.expiry_mark
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    async fn rows(
        &self,
        query: &SearchQuery,
        prefix: &str,
        selection: Selection,
        plan: Plan,
    ) -> Result<Vec<DB::Row>, StoreError> {
        query.check()?;
        let statement = search_statement::<DB>(query, prefix, selection, plan)?;
        DB::fetch(&self.pool, statement)
            .await
            .map_err(|e| self.error(e))
    }

    /// The `rows`-th newest row inside `query`'s time bounds and cursor, or `None` when there
    /// are fewer: where a probe of that many rows begins.
    async fn probe_start(
        &self,
        query: &SearchQuery,
        rows: u64,
    ) -> Result<Option<Cursor>, StoreError> {
        let mut sql = QueryBuilder::new("SELECT ts_us, row_id FROM service_logs WHERE TRUE");
        push_time_bounds(&mut sql, query);
        sql.push(" ORDER BY ts_us DESC, row_id DESC LIMIT 1 OFFSET ");
        DB::push_integer(&mut sql, i64::try_from(rows - 1).unwrap_or(i64::MAX));
        let found = DB::fetch(&self.pool, sql)
            .await
            .map_err(|e| self.error(e))?;
        found
            .first()
            .map(|row| {
                Ok(Cursor {
                    ts_us: row.integer(0)?,
                    row_id: row.integer(1)?,
                })
            })
            .transpose()
            .map_err(|e| self.error(e))
    }
}

/// How a search statement finds keyword matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Through the keyword index.
    Index,
    /// Checked on each of the newest rows from `from` on in result order (all rows inside the
    /// time bounds when `None`); see [`probe`].
    Newest { from: Option<Cursor> },
}

/// Applies the migrations not applied yet, in order, under the database's migration lock.
async fn migrate<DB: Dialect>(session: &mut DB::Connection) -> Result<(), StoreError> {
    DB::lock_migrations(session).await?;
    for migration in DB::MIGRATIONS {
        let (version, _) = *migration;
        let applied =
            DB::migration_applied(session, version)
                .await
                .map_err(|e| StoreError::Migration {
                    version,
                    reason: e.to_string(),
                })?;
        if !applied {
            DB::apply_migration(session, migration).await?;
            tracing::info!(version, "Applied a schema migration.");
        }
    }
    Ok(())
}

/// The statement that searches (or counts) `query`'s events, already checked.
fn search_statement<DB: Dialect>(
    query: &SearchQuery,
    prefix: &str,
    selection: Selection,
    plan: Plan,
) -> Result<QueryBuilder<DB>, StoreError> {
    let mut sql = QueryBuilder::new(format!("{prefix}{} TRUE", selection.head()));
    match plan {
        Plan::Index => DB::push_words(&mut sql, &query.words())?,
        Plan::Newest { from } => {
            DB::push_words_per_row(&mut sql, &query.words());
            if let Some(from) = from {
                sql.push(" AND (ts_us > ");
                DB::push_integer(&mut sql, from.ts_us);
                sql.push(" OR (ts_us = ");
                DB::push_integer(&mut sql, from.ts_us);
                sql.push(" AND row_id >= ");
                DB::push_integer(&mut sql, from.row_id);
                sql.push("))");
            }
        }
    }
    if let Some(service) = &query.service {
        sql.push(" AND service = ");
        DB::push_text(&mut sql, service.clone());
    }
    if let Some(severities) = query.severities() {
        sql.push(" AND severity IN (");
        for (i, severity) in severities.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            DB::push_text(&mut sql, severity.to_owned());
        }
        sql.push(")");
    }
    for (name, value) in &query.attributes {
        DB::push_attribute(&mut sql, name, value.clone());
    }
    if selection == Selection::CountPerSeverity {
        push_since_until(&mut sql, query);
        sql.push(" GROUP BY service, severity");
        return Ok(sql);
    }
    push_time_bounds(&mut sql, query);
    sql.push(" ORDER BY ts_us DESC, row_id DESC LIMIT ");
    DB::push_integer(&mut sql, i64::from(query.limit) + 1);
    Ok(sql)
}

/// Narrows a search to `since`, `until`.
fn push_since_until<DB: Dialect>(sql: &mut QueryBuilder<DB>, query: &SearchQuery) {
    if let Some(since) = query.since {
        sql.push(" AND ts_us >= ");
        DB::push_integer(sql, since);
    }
    if let Some(until) = query.until {
        sql.push(" AND ts_us < ");
        DB::push_integer(sql, until);
    }
}

/// Narrows a page to `since`, `until` and its cursor: a range of the `(ts_us, row_id)` index.
fn push_time_bounds<DB: Dialect>(sql: &mut QueryBuilder<DB>, query: &SearchQuery) {
    push_since_until(sql, query);
    if let Some(cursor) = query.cursor {
        DB::push_cursor(sql, cursor);
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB> {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        query.check()?;
        let wanted = query.limit as usize + 1;
        let page = |rows: Vec<DB::Row>| -> Result<Vec<StoredEvent>, StoreError> {
            rows.iter()
                .map(|row| stored_event_from_row(row, |e| self.error(e)))
                .collect()
        };
        // Built first: it refuses words the index cannot find, whichever plan answers.
        let by_index = search_statement::<DB>(query, "", Selection::Page, Plan::Index)?;
        if DB::PROBES_NEWEST_ROWS && !query.words().is_empty() {
            let mut rows = probe::first_rows(query.limit);
            loop {
                let from = self.probe_start(query, rows).await?;
                let found = self
                    .rows(query, "", Selection::Page, Plan::Newest { from })
                    .await?;
                match probe::after(rows, found.len(), wanted, from.is_none()) {
                    probe::Next::Answer => {
                        return Ok(SearchPage::from_rows(page(found)?, query.limit));
                    }
                    probe::Next::Probe(more) => rows = more,
                    probe::Next::Index => break,
                }
            }
        }
        let found = DB::fetch(&self.pool, by_index)
            .await
            .map_err(|e| self.error(e))?;
        Ok(SearchPage::from_rows(page(found)?, query.limit))
    }

    async fn explain_search(&self, query: &SearchQuery) -> Result<String, StoreError> {
        let rows = self
            .rows(query, "EXPLAIN ", Selection::Page, Plan::Index)
            .await?;
        Ok(DB::explained(&rows))
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn write_batch(&self, events: Vec<Arc<Event>>) -> Result<BatchOutcome, StoreError> {
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let started = Instant::now();
        let rows = unique_by_id(&events);
        let mut transaction = self.writer.begin().await.map_err(|e| self.error(e))?;
        let inserted = DB::insert_new(&mut transaction, &rows)
            .await
            .map_err(|e| self.error(e))?;
        let counts: Vec<((&str, &str), i64)> = tally(
            inserted
                .iter()
                .map(|(service, severity)| (service.as_str(), severity.as_str())),
        )
        .into_iter()
        .collect();
        if !counts.is_empty() {
            DB::bump_counts(&mut transaction, &counts)
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

    async fn expire(&self, before_us: i64, max_rows: usize) -> Result<usize, StoreError> {
        // Only a step of the same expiry (same cutoff) goes on from the mark; rows stored
        // meanwhile before it are found by the next expiry, which starts at the beginning.
        let after = self
            .take_expiry_mark()
            .filter(|mark| mark.before_us == before_us)
            .map_or(
                Cursor {
                    ts_us: i64::MIN,
                    row_id: i64::MIN,
                },
                |mark| mark.last,
            );
        let mut transaction = self.writer.begin().await.map_err(|e| self.error(e))?;
        let removed = DB::remove_oldest(&mut transaction, before_us, after, max_rows as i64)
            .await
            .map_err(|e| self.error(e))?;
        let lowered: Vec<((&str, &str), i64)> = tally(
            removed
                .iter()
                .map(|(service, severity, ..)| (service.as_str(), severity.as_str())),
        )
        .into_iter()
        .map(|(key, count)| (key, -count))
        .collect();
        if !lowered.is_empty() {
            // In key order, as every writer takes these row locks.
            DB::bump_counts(&mut transaction, &lowered)
                .await
                .map_err(|e| self.error(e))?;
            let keys: Vec<(&str, &str)> = lowered.iter().map(|(key, _)| *key).collect();
            DB::drop_empty_counts(&mut transaction, &keys)
                .await
                .map_err(|e| self.error(e))?;
        }
        transaction.commit().await.map_err(|e| self.error(e))?;
        if removed.len() == max_rows
            && let Some(last) = removed
                .iter()
                .map(|(_, _, ts_us, row_id)| Cursor {
                    ts_us: *ts_us,
                    row_id: *row_id,
                })
                .max_by_key(|cursor| (cursor.ts_us, cursor.row_id))
        {
            *self
                .expiry_mark
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                Some(ExpiryMark { before_us, last });
        }
        Ok(removed.len())
    }

    async fn count_events(&self, query: &SearchQuery) -> Result<Vec<SeverityCount>, StoreError> {
        let rows = self
            .rows(query, "", Selection::CountPerSeverity, Plan::Index)
            .await?;
        rows.iter()
            .map(|row| severity_count_from_row(row, |e| self.error(e)))
            .collect()
    }

    async fn severity_counts(&self) -> Result<Vec<SeverityCount>, StoreError> {
        let rows = DB::fetch_static(&self.pool, DB::SEVERITY_COUNTS)
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
        let rows = DB::fetch_static(&self.pool, DB::COUNTERS)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| counter_from_sql_row(row, |e| self.error(e)))
            .collect()
    }

    async fn storage(&self) -> Result<Storage, StoreError> {
        let (bytes, oldest) = tokio::try_join!(
            DB::fetch_static(&self.pool, DB::STORAGE_BYTES),
            DB::fetch_static(
                &self.pool,
                "SELECT ts_us FROM service_logs ORDER BY ts_us LIMIT 1"
            ),
        )
        .map_err(|e| self.error(e))?;
        let bytes = match bytes.first() {
            Some(row) => row.integer(0).map_err(|e| self.error(e))?,
            None => 0,
        };
        let oldest_us = match oldest.first() {
            Some(row) => Some(row.integer(0).map_err(|e| self.error(e))?),
            None => None,
        };
        Ok(Storage {
            bytes: bytes.max(0) as u64,
            oldest_us,
            shrinks_on_removal: false,
        })
    }

    async fn health(&self) -> Result<(), StoreError> {
        let round_trip = DB::fetch_static(&self.checker, "SELECT COUNT(*) FROM logmesh_migrations");
        health_check(&self.shown_url, round_trip).await
    }
}
