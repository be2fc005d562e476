//! The embedded shape's work backend: records and the queue in one SQLite file
//! (`<data-dir>/work/work.db`, WAL), result blobs as files in `<data-dir>/work/results/`.
//! A submission's record and queue entry commit with `synchronous=FULL`, so an accepted job
//! survives a crash and a power cut; the job's later steps commit with `synchronous=NORMAL`
//! (see [`Durability`]), which saves most of a job's fsyncs.
//!
//! The queue behaves like JetStream's work queue: taking a job hides it for the lease (its
//! `due_us` moves forward), renewing pushes that further, acknowledging deletes it, and a job
//! never acknowledged comes back when its time is up. At start-up every queued job is due at
//! once: whoever held one was an earlier run of this process, which the data directory lock
//! proves dead.

use super::{
    Capped, Created, Delivery, JobRecord, ResultReader, Versioned, WorkBackend, WorkError,
    result_limit, us,
};
use crate::event::now_us;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// How often expired records and their result files are swept, at most (half the TTL when
/// that is shorter).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct LocalWork {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Mutex<Connection>,
    results: PathBuf,
    ttl: Duration,
    lease: Duration,
    /// Jobs the queue may hold; past it, `enqueue` refuses.
    max_queued: usize,
    /// Bytes the result files may hold together.
    max_results_bytes: u64,
    /// Wakes a waiting worker when a job becomes due.
    queued: Notify,
    last_sweep: Mutex<Instant>,
}

/// How the commits of one call reach the disk. Only what a 202 promises is synced each time;
/// the rest of a job's life may be undone by a power cut (never by a crash of the process: the
/// WAL is written before each commit returns), which at worst runs the job again.
#[derive(Debug, Clone, Copy)]
enum Durability {
    /// `synchronous=FULL`: on disk when the call returns (a submission's record and queue
    /// entry).
    Full,
    /// `synchronous=NORMAL` (WAL): on disk at the next durable commit or checkpoint (claims,
    /// leases, status changes, acknowledgements, sweeps).
    Relaxed,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> WorkError {
    WorkError::Unavailable(format!("the work database: {error}"))
}

impl LocalWork {
    /// Opens (creating) the work database and result directory under `dir`.
    pub async fn open(
        dir: &Path,
        ttl: Duration,
        lease: Duration,
        max_queued: usize,
        max_results_bytes: u64,
    ) -> Result<LocalWork, WorkError> {
        let dir = dir.to_owned();
        let results = dir.join("results");
        let opened = {
            let results = results.clone();
            tokio::task::spawn_blocking(move || -> Result<Connection, String> {
                std::fs::create_dir_all(&results)
                    .map_err(|e| format!("{}: {e}", results.display()))?;
                let path = dir.join("work.db");
                let connection =
                    Connection::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                connection
                    .execute_batch(
                        "PRAGMA journal_mode = WAL;
                         PRAGMA synchronous = FULL;
                         PRAGMA busy_timeout = 5000;
                         CREATE TABLE IF NOT EXISTS jobs (
                             callback TEXT PRIMARY KEY,
                             record TEXT NOT NULL,
                             revision INTEGER NOT NULL,
                             expires_us INTEGER NOT NULL
                         );
                         CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_us);
                         CREATE TABLE IF NOT EXISTS queue (
                             callback TEXT PRIMARY KEY,
                             due_us INTEGER NOT NULL
                         );
                         CREATE INDEX IF NOT EXISTS queue_due ON queue (due_us);
                         UPDATE queue SET due_us = 0;",
                    )
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(connection)
            })
            .await
            .expect("opening the work database does not panic")
        };
        let connection = opened.map_err(|e| WorkError::Config(format!("cannot open {e}")))?;
        let work = LocalWork {
            inner: Arc::new(Inner {
                connection: Mutex::new(connection),
                results,
                ttl,
                lease,
                max_queued,
                max_results_bytes,
                queued: Notify::new(),
                last_sweep: Mutex::new(Instant::now()),
            }),
        };
        work.remove_orphans().await?;
        Ok(work)
    }

    /// Runs `f` on the work database's connection, its commits synced as `durability` says.
    async fn with<T, F>(&self, durability: Durability, f: F) -> Result<T, WorkError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = inner
                .connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            connection.pragma_update(None, "synchronous", durability.pragma())?;
            f(&mut connection, &inner)
        })
        .await
        .expect("a work database call does not panic")
        .map_err(unavailable)
    }

    /// Deletes expired records and their result files.
    pub async fn sweep(&self) -> Result<(), WorkError> {
        let expired = self
            .with(Durability::Relaxed, |connection, _| {
                let now = now_us();
                let transaction = connection.transaction()?;
                let keys = result_keys(&transaction, "expires_us <= ?1", now)?;
                transaction.execute(
                    "DELETE FROM queue WHERE callback IN
                     (SELECT callback FROM jobs WHERE expires_us <= ?1)",
                    params![now],
                )?;
                transaction.execute("DELETE FROM jobs WHERE expires_us <= ?1", params![now])?;
                transaction.commit()?;
                Ok(keys)
            })
            .await?;
        for key in expired {
            self.delete_result(&key).await?;
        }
        Ok(())
    }

    /// At start-up, when no upload can be running: deletes result files no live record names
    /// (attempts a crash cut short, or whose record expired while the node was down).
    async fn remove_orphans(&self) -> Result<(), WorkError> {
        let live: HashSet<String> = self
            .with(Durability::Relaxed, |connection, _| {
                result_keys(connection, "expires_us > ?1", now_us()).map(HashSet::from_iter)
            })
            .await?;
        let results = self.inner.results.clone();
        tokio::task::spawn_blocking(move || {
            let entries = std::fs::read_dir(&results)
                .map_err(|e| WorkError::Config(format!("{}: {e}", results.display())))?;
            for entry in entries.flatten() {
                if !live.contains(entry.file_name().to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(())
        })
        .await
        .expect("removing orphans does not panic")
    }

    /// The bytes the result files hold now (partial ones included).
    async fn results_bytes(&self) -> Result<u64, WorkError> {
        let dir = self.inner.results.clone();
        tokio::task::spawn_blocking(move || {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| WorkError::Unavailable(format!("{}: {e}", dir.display())))?;
            Ok(entries
                .flatten()
                .filter_map(|entry| entry.metadata().ok())
                .filter(|meta| meta.is_file())
                .map(|meta| meta.len())
                .sum())
        })
        .await
        .map_err(|e| WorkError::Unavailable(format!("counting the results failed: {e}")))?
    }

    fn result_path(&self, key: &str) -> Result<PathBuf, WorkError> {
        // Keys are `<callback>.<attempt>`: nothing in them can leave the directory.
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
            return Err(WorkError::Unavailable(format!(
                "`{key}` is not a result key"
            )));
        }
        Ok(self.inner.results.join(key))
    }
}

/// The result keys of the records matching `condition` (on `expires_us`, bound to `now`).
fn result_keys(
    connection: &Connection,
    condition: &str,
    now: i64,
) -> rusqlite::Result<Vec<String>> {
    let mut statement =
        connection.prepare(&format!("SELECT record FROM jobs WHERE {condition}"))?;
    let records = statement.query_map(params![now], |row| row.get::<_, String>(0))?;
    let mut keys = Vec::new();
    for record in records {
        if let Ok(record) = serde_json::from_str::<JobRecord>(&record?)
            && let Some(result) = record.result
        {
            keys.push(result.key);
        }
    }
    Ok(keys)
}

fn read(row: Option<(String, i64)>) -> rusqlite::Result<Option<Versioned>> {
    row.map(|(text, revision)| {
        serde_json::from_str(&text)
            .map(|record| Versioned {
                record,
                revision: revision as u64,
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    })
    .transpose()
}

#[async_trait]
impl WorkBackend for LocalWork {
    async fn create(&self, record: &JobRecord) -> Result<Created, WorkError> {
        let text = serde_json::to_string(record).expect("a record serialises");
        let callback = record.callback.clone();
        self.with(Durability::Full, move |connection, inner| {
            let now = now_us();
            let transaction = connection.transaction()?;
            let existing = transaction
                .query_row(
                    "SELECT record, revision FROM jobs WHERE callback = ?1 AND expires_us > ?2",
                    params![callback, now],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some(existing) = read(existing)? {
                return Ok(Created::Exists(Box::new(existing)));
            }
            // An expired record of the same work may still be there: replaced, not kept.
            transaction.execute(
                "INSERT INTO jobs (callback, record, revision, expires_us) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (callback) DO UPDATE SET record = excluded.record,
                     revision = jobs.revision + 1, expires_us = excluded.expires_us",
                params![callback, text, now + us(inner.ttl)],
            )?;
            let revision: i64 = transaction.query_row(
                "SELECT revision FROM jobs WHERE callback = ?1",
                params![callback],
                |row| row.get(0),
            )?;
            transaction.commit()?;
            Ok(Created::New(revision as u64))
        })
        .await
    }

    async fn get(&self, callback: &str) -> Result<Option<Versioned>, WorkError> {
        let callback = callback.to_owned();
        self.with(Durability::Relaxed, move |connection, _| {
            let row = connection
                .query_row(
                    "SELECT record, revision FROM jobs WHERE callback = ?1 AND expires_us > ?2",
                    params![callback, now_us()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            read(row)
        })
        .await
    }

    async fn replace(&self, record: &JobRecord, revision: u64) -> Result<Option<u64>, WorkError> {
        let text = serde_json::to_string(record).expect("a record serialises");
        let callback = record.callback.clone();
        self.with(Durability::Relaxed, move |connection, inner| {
            let now = now_us();
            let changed = connection.execute(
                "UPDATE jobs SET record = ?1, revision = revision + 1, expires_us = ?2
                 WHERE callback = ?3 AND revision = ?4 AND expires_us > ?5",
                params![text, now + us(inner.ttl), callback, revision as i64, now],
            )?;
            Ok((changed == 1).then_some(revision + 1))
        })
        .await
    }

    async fn remove(&self, callback: &str, revision: u64) -> Result<(), WorkError> {
        let callback = callback.to_owned();
        self.with(Durability::Relaxed, move |connection, _| {
            connection.execute(
                "DELETE FROM jobs WHERE callback = ?1 AND revision = ?2",
                params![callback, revision as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn enqueue(&self, callback: &str) -> Result<(), WorkError> {
        let callback = callback.to_owned();
        let queued = self
            .with(Durability::Full, move |connection, inner| {
                let transaction = connection.transaction()?;
                let queued: i64 =
                    transaction.query_row("SELECT COUNT(*) FROM queue", [], |row| row.get(0))?;
                if queued >= inner.max_queued as i64 {
                    return Ok(false);
                }
                transaction.execute(
                    "INSERT INTO queue (callback, due_us) VALUES (?1, ?2)
                     ON CONFLICT (callback) DO UPDATE SET due_us = excluded.due_us",
                    params![callback, now_us()],
                )?;
                transaction.commit()?;
                Ok(true)
            })
            .await?;
        if !queued {
            return Err(WorkError::Full(format!(
                "{} jobs are already queued (--work-max-queued); try again later",
                self.inner.max_queued
            )));
        }
        self.inner.queued.notify_one();
        Ok(())
    }

    async fn next(&self, wait: Duration) -> Result<Option<Box<dyn Delivery>>, WorkError> {
        let sweep_due = {
            let mut last = self
                .inner
                .last_sweep
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.elapsed() >= SWEEP_EVERY.min(self.inner.ttl / 2);
            if due {
                *last = Instant::now();
            }
            due
        };
        if sweep_due && let Err(error) = self.sweep().await {
            tracing::warn!(%error, "Cannot sweep expired work records.");
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (taken, next_due) = self
                .with(Durability::Relaxed, |connection, inner| {
                    let now = now_us();
                    let taken: Option<String> = connection
                        .query_row(
                            "UPDATE queue SET due_us = ?1 WHERE callback =
                             (SELECT callback FROM queue WHERE due_us <= ?2
                              ORDER BY due_us LIMIT 1)
                             RETURNING callback",
                            params![now + us(inner.lease), now],
                            |row| row.get(0),
                        )
                        .optional()?;
                    let next_due: Option<i64> = match taken {
                        Some(_) => None,
                        None => {
                            connection
                                .query_row("SELECT MIN(due_us) FROM queue", [], |row| row.get(0))?
                        }
                    };
                    Ok((taken, next_due.map(|due| due - now)))
                })
                .await?;
            if let Some(callback) = taken {
                return Ok(Some(Box::new(LocalDelivery {
                    work: LocalWork {
                        inner: self.inner.clone(),
                    },
                    callback,
                })));
            }
            let mut until = deadline;
            if let Some(left) = next_due {
                until = until
                    .min(tokio::time::Instant::now() + Duration::from_micros(left.max(0) as u64));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout_at(until, self.inner.queued.notified()).await;
        }
    }

    async fn put_result(
        &self,
        key: &str,
        data: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        max_bytes: u64,
    ) -> Result<u64, WorkError> {
        let path = self.result_path(key)?;
        // Keys already hold a dot (`<callback>.<attempt>`): append, never replace, the suffix.
        let partial = self.inner.results.join(format!("{key}.part"));
        let failed =
            |e: std::io::Error| WorkError::Unavailable(format!("{}: {e}", partial.display()));
        let used = self.results_bytes().await?;
        let allowed = max_bytes.min(self.inner.max_results_bytes.saturating_sub(used));
        let mut file = tokio::fs::File::create(&partial).await.map_err(failed)?;
        let mut capped = Capped::new(data, allowed);
        let copied = tokio::io::copy(&mut capped, &mut file).await;
        if capped.exceeded() {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(result_limit(max_bytes, used, self.inner.max_results_bytes));
        }
        let bytes = match copied {
            Ok(bytes) => bytes,
            Err(error) => {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(failed(error));
            }
        };
        file.flush().await.map_err(failed)?;
        file.sync_all().await.map_err(failed)?;
        drop(file);
        tokio::fs::rename(&partial, &path).await.map_err(failed)?;
        Ok(bytes)
    }

    async fn open_result(&self, key: &str) -> Result<Option<ResultReader>, WorkError> {
        let path = self.result_path(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(WorkError::Unavailable(format!(
                "{}: {error}",
                path.display()
            ))),
        }
    }

    async fn delete_result(&self, key: &str) -> Result<(), WorkError> {
        let path = self.result_path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(WorkError::Unavailable(format!(
                "{}: {error}",
                path.display()
            ))),
        }
    }

    fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    fn exclusive(&self) -> bool {
        true
    }
}

struct LocalDelivery {
    work: LocalWork,
    callback: String,
}

impl LocalDelivery {
    async fn set_due(&self, delay: Duration) -> Result<(), WorkError> {
        let callback = self.callback.clone();
        self.work
            .with(Durability::Relaxed, move |connection, _| {
                connection.execute(
                    "UPDATE queue SET due_us = ?1 WHERE callback = ?2",
                    params![now_us() + us(delay), callback],
                )
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Delivery for LocalDelivery {
    fn callback(&self) -> &str {
        &self.callback
    }

    async fn in_progress(&self) -> Result<(), WorkError> {
        self.set_due(self.work.inner.lease).await
    }

    async fn ack(self: Box<Self>) -> Result<(), WorkError> {
        let callback = self.callback.clone();
        self.work
            .with(Durability::Relaxed, move |connection, _| {
                connection.execute("DELETE FROM queue WHERE callback = ?1", params![callback])
            })
            .await?;
        Ok(())
    }

    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), WorkError> {
        self.set_due(delay).await?;
        // A waiting worker must notice the new due time if it is sooner than what it waits for.
        self.work.inner.queued.notify_one();
        Ok(())
    }
}
