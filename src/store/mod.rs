//! The SQL store port: `service_logs` (one row per event) and `service_severity` (counts per
//! service and severity), written in batches by the store writer.
//!
//! Every adapter must:
//! - run its schema migrations in [`open`], before the node serves anything, recording them in
//!   `logmesh_migrations`; several nodes may open the same database at the same moment, so a
//!   shared database serialises migrations behind a lock and each runs once;
//! - write a batch in one transaction: all of it or none of it;
//! - treat an event whose id is already stored as a no-op that does not bump
//!   `service_severity`, so that `sum(service_severity.count) = count(service_logs)` always,
//!   also when several nodes write overlapping batches at once (competing consumers,
//!   redeliveries). A conflict between writers (deadlock, serialization failure, duplicate key)
//!   may fail a batch, which the caller then retries whole; it never produces a wrong count;
//! - answer [`Store::health`] with a real round trip to the database, failing within seconds
//!   when the database is unreachable;
//! - never show a password: errors and logs name the database by its redacted URL
//!   ([`redact_url`], `Display` of [`DatabaseUrl`]).
//!
//! - answer [`Store::search`] newest first (`ts_us` descending, then `row_id` descending) with
//!   keyset pagination on `(ts_us, row_id)`, so a cursor stays valid and skips or repeats no
//!   row while new events arrive; a keyword query reads the backend's text index (SQLite FTS5,
//!   PostgreSQL words GIN, InnoDB FULLTEXT) or, first, checks a bounded probe of the newest
//!   rows ([`probe`]), never a scan of every message. Every backend
//!   matches whole words case-insensitively (see [`SearchQuery::words`]); what else matches
//!   differs per backend and is documented in docs/databases.md.
//!
//! Adapters, one file each: [`sqlite::SqliteStore`] (embedded shape), [`postgres::PostgresStore`]
//! and [`mysql::MysqlStore`] (MySQL and MariaDB; cluster shape). The URL scheme picks one in
//! [`open`].

mod counter_groups;
mod mysql;
mod postgres;
pub mod retained;
mod sql;
pub mod sqlite;

use crate::counters::{Counter, CounterKey, CounterLimits};
use crate::event::{Event, Severity};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much the stored events take, for the metrics and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// Bytes of `service_logs` and `service_severity` with their indexes (SQLite: the whole
    /// database file, free pages included).
    pub bytes: u64,
    /// The timestamp of the oldest event stored (removed or not yet past the retention),
    /// epoch µs; `None` when there is none.
    pub oldest_us: Option<i64>,
    /// Whether `bytes` falls as soon as events are removed (SQLite, whose incremental vacuum
    /// gives the pages back); PostgreSQL and InnoDB keep freed pages in their files for new
    /// rows.
    pub shrinks_on_removal: bool,
}

/// One row of `service_severity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityCount {
    pub service: String,
    pub severity: String,
    pub count: i64,
}

/// The message of an increment refused because the counter would pass `i64::MAX`.
pub fn counter_overflow(key: &CounterKey, by: i64) -> StoreError {
    StoreError::Rejected(format!(
        "`by`: adding {by} to counter {} would pass the largest value, {}",
        key.name,
        i64::MAX
    ))
}

/// A stored counter row back into a [`Counter`].
pub fn counter_from_row(
    name: String,
    labels_json: &str,
    value: i64,
) -> Result<Counter, StoreError> {
    let labels = serde_json::from_str(labels_json)
        .map_err(|e| StoreError::Database(format!("counter {name} has unreadable labels: {e}")))?;
    Ok(Counter {
        name,
        labels,
        value,
    })
}

/// What a batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored by this batch.
    pub inserted: usize,
    /// Events whose id was already stored (re-sent or redelivered): skipped.
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("schema migration {version} failed: {reason}")]
    Migration { version: i64, reason: String },
    #[error("database error: {0}")]
    Database(String),
    /// The request cannot be carried out as asked (e.g. a counter would overflow).
    #[error("{0}")]
    Rejected(String),
    /// A search this backend cannot answer as asked (the caller's input, not the database).
    #[error("{0}")]
    InvalidQuery(String),
    /// A limit (`--counter-max-*`) refuses the request; nothing changed.
    #[error("{0}")]
    LimitExceeded(String),
}

/// Results per page when the caller does not say.
pub const DEFAULT_SEARCH_LIMIT: u32 = 100;

/// Most results per page.
pub const MAX_SEARCH_LIMIT: u32 = 1000;

/// Longest keyword query, in bytes, and most words in it.
pub const MAX_QUERY_BYTES: usize = 1024;
pub const MAX_QUERY_WORDS: usize = 16;

/// A search over stored events. Every filter given must hold (AND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Keywords: every word of it must occur in the message as a whole word (see [`words`]).
    ///
    /// [`words`]: SearchQuery::words
    pub q: Option<String>,
    /// Exact service name (byte for byte).
    pub service: Option<String>,
    /// Minimum severity: `warn` finds warn, error and fatal.
    pub severity: Option<Severity>,
    /// Events at or after this time, epoch µs (inclusive).
    pub since: Option<i64>,
    /// Events before this time, epoch µs (exclusive).
    pub until: Option<i64>,
    /// Results per page, 1 to [`MAX_SEARCH_LIMIT`].
    pub limit: u32,
    /// Continue after the last event of a previous page.
    pub cursor: Option<Cursor>,
    /// Exact attribute values: every `(name, value)` must be an attribute of the event whose
    /// value is `value` (a string as it is; a number or boolean as its JSON text).
    pub attributes: Vec<(String, String)>,
}

impl Default for SearchQuery {
    fn default() -> Self {
        SearchQuery {
            q: None,
            service: None,
            severity: None,
            since: None,
            until: None,
            limit: DEFAULT_SEARCH_LIMIT,
            cursor: None,
            attributes: Vec::new(),
        }
    }
}

impl SearchQuery {
    /// The words of `q`: maximal runs of letters, digits and `_`, lower-cased. Whatever else `q`
    /// holds (spaces, punctuation) only separates words. Every backend tokenises messages the
    /// same way for this purpose, so `timeout` finds `Connection timeout, retrying` everywhere.
    pub fn words(&self) -> Vec<String> {
        query_words(self.q.as_deref().unwrap_or(""))
    }

    /// Checks what every adapter relies on; adapters call it first.
    pub fn check(&self) -> Result<(), StoreError> {
        if !(1..=MAX_SEARCH_LIMIT).contains(&self.limit) {
            return Err(StoreError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_SEARCH_LIMIT}, found {}",
                self.limit
            )));
        }
        if let Some(q) = &self.q {
            if q.len() > MAX_QUERY_BYTES {
                return Err(StoreError::InvalidQuery(format!(
                    "q is {} bytes long; at most {MAX_QUERY_BYTES} are allowed",
                    q.len()
                )));
            }
            let words = self.words().len();
            if words == 0 {
                return Err(StoreError::InvalidQuery(
                    "q holds no word (letters, digits or _) to search for".into(),
                ));
            }
            if words > MAX_QUERY_WORDS {
                return Err(StoreError::InvalidQuery(format!(
                    "q holds {words} words; at most {MAX_QUERY_WORDS} are allowed"
                )));
            }
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return Err(StoreError::InvalidQuery("since is later than until".into()));
        }
        if self.attributes.len() > MAX_ATTRIBUTE_FILTERS {
            return Err(StoreError::InvalidQuery(format!(
                "{} attribute filters; at most {MAX_ATTRIBUTE_FILTERS} are allowed",
                self.attributes.len()
            )));
        }
        for (name, value) in &self.attributes {
            check_attribute_name(name).map_err(StoreError::InvalidQuery)?;
            if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
                return Err(StoreError::InvalidQuery(format!(
                    "the value of attribute `{name}` is {} bytes long; at most \
                     {MAX_ATTRIBUTE_VALUE_BYTES} are allowed",
                    value.len()
                )));
            }
        }
        Ok(())
    }

    /// The stored severity names at or above the minimum, if one is set.
    pub(crate) fn severities(&self) -> Option<Vec<&'static str>> {
        self.severity.map(|minimum| {
            Severity::ALL
                .iter()
                .filter(|s| **s >= minimum)
                .map(|s| s.as_str())
                .collect()
        })
    }
}

/// Attribute filters one search may hold.
pub const MAX_ATTRIBUTE_FILTERS: usize = 8;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 2048;

/// An attribute name a search may filter on: 1 to 128 bytes of letters, digits and `_ . - : /
/// @` (every name the shippers' protocols produce: `trace_id`, `http.route`, `k8s.pod.name`).
/// The limit keeps a name safe to write into a JSON path on every backend.
pub fn check_attribute_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-:/@".contains(c);
    if name.is_empty() || name.len() > crate::event::MAX_NAME_BYTES || !name.chars().all(allowed) {
        return Err(format!(
            "attribute name `{}` is not 1 to {} letters, digits or _ . - : / @",
            name.escape_debug(),
            crate::event::MAX_NAME_BYTES
        ));
    }
    Ok(())
}

fn query_words(q: &str) -> Vec<String> {
    q.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What a filtered statement over `service_logs` selects: a page of rows in result order, or
/// the number of matching rows per service and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    Page,
    CountPerSeverity,
}

impl Selection {
    /// The statement's head, up to and including `WHERE`.
    pub(crate) fn head(self) -> &'static str {
        match self {
            Selection::Page => {
                "SELECT row_id, id, ts_us, service, severity, message, attributes, node, received_us
                 FROM service_logs WHERE"
            }
            Selection::CountPerSeverity => {
                "SELECT service, severity, COUNT(*) FROM service_logs WHERE"
            }
        }
    }
}

/// Keyword pages are looked for first among the newest rows inside the search's time bounds
/// ("probes"), read newest-first from the `(ts_us, row_id)` index, because a keyword index
/// hands over *every* row holding a word before they can be ordered by time: a word in 1 of 10
/// of 10 M events is a million rows sorted to show 100. A probe whose rows hold more than a
/// page of matches has found exactly the newest ones (every newer row was in it); otherwise a
/// larger probe, or the keyword index, answers.
pub(crate) mod probe {
    /// The most rows a probe reads before the keyword index is asked instead: a word rarer
    /// than about 1 in 1,000 is found faster through the index.
    const MAX_ROWS: u64 = 65_536;

    /// The rows of a search's first probe: a page of a word in 1 of 10 events, with room for
    /// filters that pass only some of them.
    pub(crate) fn first_rows(limit: u32) -> u64 {
        ((u64::from(limit) + 1) * 20).max(2_048)
    }

    /// What a search does after a probe.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Next {
        /// The probe's matches are the page.
        Answer,
        /// Probe again, this many rows.
        Probe(u64),
        /// Ask the keyword index.
        Index,
    }

    /// What follows a probe of `rows` rows that found `found` of the `wanted` matches;
    /// `covered_all`: it held every row inside the search's time bounds.
    pub(crate) fn after(rows: u64, found: usize, wanted: usize, covered_all: bool) -> Next {
        if found >= wanted || covered_all {
            return Next::Answer;
        }
        next_rows(rows, found, wanted).map_or(Next::Index, Next::Probe)
    }

    /// The rows of the next probe after one of `rows` rows found `found` of the `wanted`
    /// matches, or `None` when the keyword index will answer sooner.
    fn next_rows(rows: u64, found: usize, wanted: usize) -> Option<u64> {
        if found == 0 {
            return None;
        }
        // Twice the rows the matches found so far predict, so one more probe usually does.
        let next = rows.saturating_mul(2 * wanted as u64) / found as u64;
        (next <= MAX_ROWS).then_some(next)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_probe_grows_by_what_it_found_and_gives_way_to_the_index() {
            assert_eq!(first_rows(100), 2_048);
            assert_eq!(first_rows(1_000), 20_020);
            assert_eq!(next_rows(2_048, 50, 101), Some(8_273));
            assert_eq!(next_rows(2_048, 0, 101), None, "no match: the word is rare");
            assert_eq!(
                next_rows(2_048, 2, 101),
                None,
                "1 in 1,000: the index is faster"
            );
            assert_eq!(next_rows(u64::MAX, 1, 2), None);
            assert_eq!(after(2_048, 101, 101, false), Next::Answer);
            assert_eq!(
                after(2_048, 3, 101, true),
                Next::Answer,
                "every row was read"
            );
            assert_eq!(after(2_048, 50, 101, false), Next::Probe(8_273));
            assert_eq!(after(2_048, 0, 101, false), Next::Index);
        }
    }
}

/// Where a page ended: the `(ts_us, row_id)` of its last event. The next page holds the events
/// strictly after it in the result order, which rows written later cannot disturb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts_us: i64,
    pub row_id: i64,
}

impl Cursor {
    /// The opaque form handed to clients: base64url of `ts_us:row_id`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.ts_us, self.row_id))
    }

    /// Parses what [`Cursor::encode`] produced.
    pub fn decode(text: &str) -> Result<Cursor, String> {
        let invalid = || "is not a cursor this node handed out (use next_cursor as is)".to_owned();
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        let (ts, row) = text.split_once(':').ok_or_else(invalid)?;
        Ok(Cursor {
            ts_us: ts.parse().map_err(|_| invalid())?,
            row_id: row.parse().map_err(|_| invalid())?,
        })
    }
}

/// One row of `service_logs`, as a search returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The store's own row number: ties between equal timestamps are broken by it.
    pub row_id: i64,
    pub id: String,
    pub ts_us: i64,
    pub service: String,
    pub severity: Severity,
    pub message: String,
    /// The attributes' JSON text, as stored.
    pub attributes: Option<String>,
    pub node: String,
    pub received_us: i64,
}

/// A stored event as the API shows it (search answers, work results, exports).
#[derive(Debug, Serialize)]
pub struct StoredEventJson {
    pub id: String,
    pub timestamp: String,
    pub service: String,
    pub severity: Severity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Box<serde_json::value::RawValue>>,
    pub node: String,
}

impl From<StoredEvent> for StoredEventJson {
    fn from(event: StoredEvent) -> Self {
        StoredEventJson {
            id: event.id,
            timestamp: crate::event::format_us(event.ts_us),
            service: event.service,
            severity: event.severity,
            message: event.message,
            // The store only holds attributes that were a valid JSON object.
            attributes: event
                .attributes
                .and_then(|text| serde_json::value::RawValue::from_string(text).ok()),
            node: event.node,
        }
    }
}

/// A page of search results, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    pub events: Vec<StoredEvent>,
    /// Set when more events match: pass it back as the query's cursor for the next page.
    pub next_cursor: Option<String>,
}

impl SearchPage {
    /// Builds a page from up to `limit + 1` rows in result order: the extra row only says that
    /// there is a next page.
    pub(crate) fn from_rows(mut rows: Vec<StoredEvent>, limit: u32) -> SearchPage {
        let limit = limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| {
                Cursor {
                    ts_us: last.ts_us,
                    row_id: last.row_id,
                }
                .encode()
            })
        } else {
            None
        };
        SearchPage {
            events: rows,
            next_cursor,
        }
    }
}

/// Columns every sqlx row reader below needs: text, integers and nullable text, by position.
pub(crate) trait SqlRow {
    fn text(&self, index: usize) -> Result<String, sqlx::Error>;
    fn integer(&self, index: usize) -> Result<i64, sqlx::Error>;
    fn nullable_text(&self, index: usize) -> Result<Option<String>, sqlx::Error>;
}

impl<R> SqlRow for R
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        self.try_get(index)
    }

    fn integer(&self, index: usize) -> Result<i64, sqlx::Error> {
        self.try_get(index)
    }

    fn nullable_text(&self, index: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(index)
    }
}

/// A row of [`Selection::Page`]'s columns, from PostgreSQL or MySQL; `fail` adds the
/// adapter's context to a decoding error.
pub(crate) fn stored_event_from_row<R: SqlRow>(
    row: &R,
    fail: impl Fn(sqlx::Error) -> StoreError,
) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        row_id: row.integer(0).map_err(&fail)?,
        id: row.text(1).map_err(&fail)?,
        ts_us: row.integer(2).map_err(&fail)?,
        service: row.text(3).map_err(&fail)?,
        severity: stored_severity(&row.text(4).map_err(&fail)?)?,
        message: row.text(5).map_err(&fail)?,
        attributes: row.nullable_text(6).map_err(&fail)?,
        node: row.text(7).map_err(&fail)?,
        received_us: row.integer(8).map_err(&fail)?,
    })
}

/// A `(service, severity, count)` row, from PostgreSQL or MySQL.
pub(crate) fn severity_count_from_row<R: SqlRow>(
    row: &R,
    fail: impl Fn(sqlx::Error) -> StoreError,
) -> Result<SeverityCount, StoreError> {
    Ok(SeverityCount {
        service: row.text(0).map_err(&fail)?,
        severity: row.text(1).map_err(&fail)?,
        count: row.integer(2).map_err(&fail)?,
    })
}

/// A `(name, labels, value)` row of `counters`, from PostgreSQL or MySQL.
pub(crate) fn counter_from_sql_row<R: SqlRow>(
    row: &R,
    fail: impl Fn(sqlx::Error) -> StoreError,
) -> Result<Counter, StoreError> {
    counter_from_row(
        row.text(0).map_err(&fail)?,
        &row.text(1).map_err(&fail)?,
        row.integer(2).map_err(&fail)?,
    )
}

/// A stored severity name as a [`Severity`]; only the store writes them, so anything else is
/// a damaged row.
pub(crate) fn stored_severity(name: &str) -> Result<Severity, StoreError> {
    Severity::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| StoreError::Database(format!("a stored event has severity `{name}`")))
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `events` in one transaction (see the module docs for the guarantees).
    async fn write_batch(&self, events: Vec<Arc<Event>>) -> Result<BatchOutcome, StoreError>;

    /// The `service_severity` table, ordered by service then severity.
    async fn severity_counts(&self) -> Result<Vec<SeverityCount>, StoreError>;

    /// Stored events matching `query`, newest first, one page at a time (see the module docs).
    /// Fails with [`StoreError::InvalidQuery`] when the query is out of bounds.
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// How many stored events match `query`'s filters (`q`, `service`, `severity`, `since`,
    /// `until`; its `limit` and `cursor` are ignored), per service and severity, in no
    /// particular order; pairs with no match are left out.
    async fn count_events(&self, query: &SearchQuery) -> Result<Vec<SeverityCount>, StoreError>;

    /// A real round trip to the database.
    async fn health(&self) -> Result<(), StoreError>;

    /// Adds `by` (≥ 0) to the counter `key`, creating it at 0 first if new, atomically; returns
    /// the new value. An increment that would pass `i64::MAX` is refused and changes nothing.
    async fn increment_counter(&self, key: &CounterKey, by: i64) -> Result<i64, StoreError>;

    /// Every counter, ordered by name, then by its canonical labels.
    async fn counters(&self) -> Result<Vec<Counter>, StoreError>;

    /// The database's plan for [`Store::search`] of `query` (its `EXPLAIN` output, one line
    /// per row): which index a search reads. For tests, benchmarks and operators.
    async fn explain_search(&self, query: &SearchQuery) -> Result<String, StoreError>;

    /// Removes up to `max_rows` of the oldest events stored with a timestamp before
    /// `before_us` (epoch µs), and takes them off `service_severity` in the same transaction
    /// (a count that reaches 0 goes), so that its sum equals the rows at every moment. Answers
    /// how many it removed: fewer than `max_rows` means none older are left. Small steps, so
    /// that the store writer's batches pass between them.
    async fn expire(&self, before_us: i64, max_rows: usize) -> Result<usize, StoreError>;

    /// How much the stored events take, and the oldest one's timestamp.
    async fn storage(&self) -> Result<Storage, StoreError>;
}

/// Where the store lives, parsed from `--database`.
///
/// `Debug` and `Display` redact passwords, so a `DatabaseUrl` can go into any message or log.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL, as given.
    Postgres(String),
    /// A `mysql://` URL; `mariadb://` is rewritten to `mysql://`, the scheme sqlx knows.
    Mysql(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH` (relative or absolute; `sqlite:///abs/path` also works),
    /// `postgres://…`, `postgresql://…`, `mysql://…` or `mariadb://…`. Server URLs are checked
    /// here (host, port, options) so that a typo stops the node at start-up, not at first use.
    /// Error messages show the URL redacted.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(format!("`{url}` names no file: use sqlite://PATH"));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let shown = redact_url(url);
        let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
        let parsed = match scheme {
            "postgres" | "postgresql" => {
                check_server_url(&shown, rest, "postgres://USER:PASSWORD@HOST:PORT/DATABASE")?;
                sqlx::postgres::PgConnectOptions::from_str(url)
                    .map(drop)
                    .map_err(|e| e.to_string())
                    .map(|()| DatabaseUrl::Postgres(url.to_owned()))
            }
            "mysql" | "mariadb" => {
                check_server_url(&shown, rest, "mysql://USER:PASSWORD@HOST:PORT/DATABASE")?;
                let url = format!("mysql://{rest}");
                sqlx::mysql::MySqlConnectOptions::from_str(&url)
                    .map(drop)
                    .map_err(|e| e.to_string())
                    .map(|()| DatabaseUrl::Mysql(url))
            }
            _ => {
                return Err(format!(
                    "`{shown}` is not a database URL: expected sqlite://PATH, \
                     postgres://USER@HOST/DATABASE or mysql://USER@HOST/DATABASE \
                     (mariadb:// also works)"
                ));
            }
        };
        // sqlx's parse errors do not echo the URL, so they cannot leak the password.
        parsed.map_err(|reason| format!("`{shown}` is not a valid {scheme} URL: {reason}"))
    }
}

/// A server URL must name a database: the tables live in it, and sqlx would otherwise fall
/// back to a default (PostgreSQL: the user's name; MySQL: none, failing at the first migration
/// with a vaguer message). The host may be empty (localhost, or a socket given as an option).
fn check_server_url(shown: &str, rest: &str, example: &str) -> Result<(), String> {
    let path = rest.split_once('/').map_or("", |(_, path)| path);
    let database = path.split(['?', '#']).next().unwrap_or("");
    if database.is_empty() {
        return Err(format!("`{shown}` names no database: use {example}"));
    }
    Ok(())
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) | DatabaseUrl::Mysql(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (variant, shown) = match self {
            DatabaseUrl::Sqlite(_) => ("Sqlite", self.to_string()),
            DatabaseUrl::Postgres(_) => ("Postgres", self.to_string()),
            DatabaseUrl::Mysql(_) => ("Mysql", self.to_string()),
        };
        f.debug_tuple(variant).field(&shown).finish()
    }
}

/// `url` with its password replaced by `***`, both in the user-info part
/// (`postgres://user:***@host/db`) and in `password=` query parameters. Works on any text, so
/// it can redact a URL that failed to parse.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut shown = format!("{scheme}://");
    // The last `@` ends the user info: a password may contain an unencoded `@`.
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => shown.push_str(&format!("{user}:***")),
                None => shown.push_str(userinfo),
            }
            shown.push('@');
            shown.push_str(host);
        }
        None => shown.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            shown.push_str(path);
            shown.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            shown.push_str(&pairs.join("&"));
        }
        None => shown.push_str(tail),
    }
    shown
}

/// How long a server adapter waits for a pooled connection before the call fails: short, so
/// that `health` (and `/readyz`) answer within seconds when the database is down.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a server adapter's `health` may take, connection included, before it fails.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `open` waits for the first connection to a server database.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `open` waits for another node that is migrating the same database. Long enough
/// for a real migration; a node that died releases the lock with its session at once.
pub(crate) const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Connections of a server store's read pool (searches, counts, counters).
pub(crate) const MAX_CONNECTIONS: u32 = 8;

/// Connections of its writer pool: the store writer's batches and the counter commits, each one
/// at a time.
pub(crate) const WRITER_CONNECTIONS: u32 = 2;

/// A batch slower than this is logged at `warn`, with its size: sqlx's own statement logging
/// is off because a multi-row statement's text holds thousands of placeholders.
pub(crate) const SLOW_BATCH: Duration = Duration::from_secs(2);

/// The events of a batch that a server adapter inserts: one per id (the first occurrence, as
/// SQLite keeps), sorted by id. Every writer touching rows in the same order is what keeps
/// concurrent writers with overlapping batches from deadlocking on each other's index entries.
pub(crate) fn unique_by_id(events: &[Arc<Event>]) -> Vec<&Event> {
    let mut unique: Vec<&Event> = events.iter().map(Arc::as_ref).collect();
    // Stable: among equal ids the first occurrence stays first, and `dedup_by` keeps it.
    unique.sort_by(|a, b| a.id.cmp(&b.id));
    unique.dedup_by(|later, first| later.id == first.id);
    unique
}

/// Inserted rows per (service, severity), in key order: the order in which every writer
/// upserts `service_severity`, so that they take its row locks in the same order.
pub(crate) fn tally<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<(&'a str, &'a str), i64> {
    let mut counts = BTreeMap::new();
    for key in rows {
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// A sqlx error as a [`StoreError`], naming the (redacted) database when it could not be
/// reached, which is what an operator needs to act on.
pub(crate) fn sqlx_error(shown_url: &str, error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut => StoreError::Database(format!(
            "no connection to {shown_url} within {} s: the database is unreachable or every \
             connection is busy",
            ACQUIRE_TIMEOUT.as_secs()
        )),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Database(format!("{shown_url}: {error}"))
        }
        other => StoreError::Database(other.to_string()),
    }
}

/// Runs a server adapter's health round trip, failing after [`HEALTH_TIMEOUT`] even if the
/// connection hangs (a black-holed network answers nothing rather than refusing).
pub(crate) async fn health_check<T>(
    shown_url: &str,
    round_trip: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<(), StoreError> {
    match tokio::time::timeout(HEALTH_TIMEOUT, round_trip).await {
        Ok(result) => result.map(drop).map_err(|e| sqlx_error(shown_url, e)),
        Err(_) => Err(StoreError::Database(format!(
            "{shown_url} did not answer within {} s",
            HEALTH_TIMEOUT.as_secs()
        ))),
    }
}

/// Logs a batch that took longer than [`SLOW_BATCH`].
pub(crate) fn log_if_slow(started: Instant, events: usize, outcome: &BatchOutcome) {
    let elapsed = started.elapsed();
    if elapsed > SLOW_BATCH {
        tracing::warn!(
            events,
            inserted = outcome.inserted,
            elapsed_ms = elapsed.as_millis() as u64,
            "A batch took long to commit."
        );
    }
}

/// Opens the store named by `url`, running migrations, with the default counter limits.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, CounterLimits::default()).await
}

/// Opens the store named by `url`, running migrations. Adding a backend adds one arm here.
pub async fn open_with(
    url: &DatabaseUrl,
    counter_limits: CounterLimits,
) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => Ok(Arc::new(
            sqlite::SqliteStore::open(path.clone(), counter_limits).await?,
        )),
        DatabaseUrl::Postgres(url) => Ok(Arc::new(
            postgres::PostgresStore::open(url, counter_limits).await?,
        )),
        DatabaseUrl::Mysql(url) => Ok(Arc::new(
            mysql::MysqlStore::open(url, counter_limits).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_parse_or_say_why_not() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db"),
            Ok(DatabaseUrl::Sqlite("data/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/x.db"),
            Ok(DatabaseUrl::Sqlite("/var/lib/x.db".into()))
        );
        for url in [
            "postgres://u:p@db.example:5433/logs?sslmode=require",
            "postgresql://u@db.example/logs",
        ] {
            assert_eq!(
                DatabaseUrl::parse(url),
                Ok(DatabaseUrl::Postgres(url.into()))
            );
        }
        assert_eq!(
            DatabaseUrl::parse("mysql://u:p@db.example:3306/logs"),
            Ok(DatabaseUrl::Mysql(
                "mysql://u:p@db.example:3306/logs".into()
            ))
        );
        assert_eq!(
            DatabaseUrl::parse("mariadb://u:p@db.example/logs"),
            Ok(DatabaseUrl::Mysql("mysql://u:p@db.example/logs".into()))
        );
        let refused = [
            ("sqlite://", "names no file"),
            ("x.db", "not a database URL"),
            (
                "oracle://u:secret@h/db",
                "`oracle://u:***@h/db` is not a database URL",
            ),
            (
                "postgres://u:secret@h",
                "`postgres://u:***@h` names no database",
            ),
            ("mysql://u:secret@h/", "names no database"),
            ("mariadb://h:port/db", "not a valid mariadb URL"),
        ];
        for (url, expected) in refused {
            let error = DatabaseUrl::parse(url).unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains("secret"), "{url}: {error}");
        }
    }

    #[test]
    fn query_words_are_runs_of_letters_digits_and_underscores() {
        assert_eq!(
            query_words("Connection TIMEOUT, user_id=42; café!"),
            ["connection", "timeout", "user_id", "42", "café"]
        );
        assert!(query_words(" -- ,;").is_empty());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            ts_us: 1_700_000_000_000_000,
            row_id: 42,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        for bad in ["", "!!", "MTIz", &URL_SAFE_NO_PAD.encode("a:b")] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_out_of_bounds_are_refused() {
        let ok = SearchQuery::default();
        assert!(ok.check().is_ok());
        for bad in [
            SearchQuery {
                limit: 0,
                ..ok.clone()
            },
            SearchQuery {
                limit: 1001,
                ..ok.clone()
            },
            SearchQuery {
                q: Some(" ,; ".into()),
                ..ok.clone()
            },
            SearchQuery {
                q: Some("x".repeat(MAX_QUERY_BYTES + 1)),
                ..ok.clone()
            },
            SearchQuery {
                since: Some(2),
                until: Some(1),
                ..ok.clone()
            },
            SearchQuery {
                attributes: vec![("a\"b".into(), "v".into())],
                ..ok.clone()
            },
            SearchQuery {
                attributes: vec![("a".into(), "v".repeat(MAX_ATTRIBUTE_VALUE_BYTES + 1))],
                ..ok.clone()
            },
            SearchQuery {
                attributes: vec![("a".into(), "v".into()); MAX_ATTRIBUTE_FILTERS + 1],
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.check(), Err(StoreError::InvalidQuery(_))),
                "{bad:?}"
            );
        }
        let warn = SearchQuery {
            severity: Some(Severity::Warn),
            ..ok
        };
        assert_eq!(warn.severities().unwrap(), ["warn", "error", "fatal"]);
    }

    #[test]
    fn urls_are_shown_without_passwords() {
        for (url, shown) in [
            (
                "postgres://user:s3cr@t@host:5432/db",
                "postgres://user:***@host:5432/db",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            (
                "mysql://root:pw@h/db?ssl-mode=required&password=pw2",
                "mysql://root:***@h/db?ssl-mode=required&password=***",
            ),
            ("mysql://h/db", "mysql://h/db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        let url = DatabaseUrl::parse("mariadb://root:pw@h/db").unwrap();
        assert_eq!(url.to_string(), "mysql://root:***@h/db");
        assert_eq!(format!("{url:?}"), r#"Mysql("mysql://root:***@h/db")"#);
        assert_eq!(
            DatabaseUrl::Sqlite("a/b.db".into()).to_string(),
            "sqlite://a/b.db"
        );
    }
}
