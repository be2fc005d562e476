//! The SQL store port: `service_logs` (one row per event) and `service_severity` (counts per
//! service and severity), written in batches by the store writer.
//!
//! Every adapter must:
//! - run its schema migrations in [`open`], before the node serves anything;
//! - write a batch in one transaction: all of it or none of it;
//! - treat an event whose id is already stored as a no-op that does not bump
//!   `service_severity`, so that `sum(service_severity.count) = count(service_logs)` always;
//! - answer [`Store::health`] with a real round trip to the database.
//!
//! Adapters: [`sqlite::SqliteStore`] (embedded shape). The URL scheme picks one in [`open`].

pub mod sqlite;

use crate::event::Event;
use async_trait::async_trait;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// One row of `service_severity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityCount {
    pub service: String,
    pub severity: String,
    pub count: i64,
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
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `events` in one transaction (see the module docs for the guarantees).
    async fn write_batch(&self, events: Vec<Arc<Event>>) -> Result<BatchOutcome, StoreError>;

    /// The `service_severity` table, ordered by service then severity.
    async fn severity_counts(&self) -> Result<Vec<SeverityCount>, StoreError>;

    /// A real round trip to the database.
    async fn health(&self) -> Result<(), StoreError>;
}

/// Where the store lives, parsed from `--database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH` (relative or absolute; `sqlite:///abs/path` also works).
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(format!("`{url}` names no file: use sqlite://PATH"));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        match scheme {
            "postgres" | "postgresql" | "mysql" | "mariadb" => Err(format!(
                "`{scheme}://` databases are not supported by this build yet; use sqlite://PATH"
            )),
            _ => Err(format!(
                "`{url}` is not a database URL: expected sqlite://PATH"
            )),
        }
    }
}

/// Opens the store named by `url`, running migrations. Adding a backend adds one arm here.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path.clone()).await?)),
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
        assert!(
            DatabaseUrl::parse("sqlite://")
                .unwrap_err()
                .contains("names no file")
        );
        assert!(
            DatabaseUrl::parse("postgres://h/db")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            DatabaseUrl::parse("x.db")
                .unwrap_err()
                .contains("not a database URL")
        );
    }
}
