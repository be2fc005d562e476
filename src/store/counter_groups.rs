//! Group commit for counter increments, shared by every adapter.
//!
//! Increments that arrive while a commit runs wait, then go together into the next one: each
//! distinct counter is upserted once with the sum of its increments, in one transaction (keys
//! sorted, so concurrent nodes lock rows in the same order). A hot counter then costs one row
//! update and one commit per group instead of one per increment, which is what bounds it when
//! every increment must wait for the previous one's row lock and fsync.
//!
//! Invariants:
//! - A series (a name and label set) is created only within [`CounterLimits`]: an increment
//!   that would create one past a limit is refused with [`StoreError::LimitExceeded`] and
//!   changes nothing. Series this writer knows to exist cost no query; a new one costs a look
//!   up of the keys and of the counts, in the database every node shares. Two nodes creating
//!   the last free series at the same moment may both succeed: the limits can be overshot by
//!   at most a group per node, never grown without bound.
//! - A caller is answered only after the commit that holds its increment, with the value its
//!   own increment produced (as if the group's increments ran one after another in arrival
//!   order), so a read through any node right after sees at least that value.
//! - An increment that would pass `i64::MAX` is refused on its own; the rest of its group
//!   commits.

use super::StoreError;
use crate::counters::{CounterKey, CounterLimits};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most increments committed together.
const MAX_PER_GROUP: usize = 4096;
/// Increments that may wait; past that, callers wait for room.
const QUEUE: usize = 16 * 1024;

/// What an adapter provides: apply totals to distinct, sorted keys in one transaction.
#[async_trait]
pub trait ApplyIncrements: Send + Sync + 'static {
    /// Adds each total to its counter (creating it at 0 first) in one transaction and returns
    /// the new values in the same order. Fails whole, with [`StoreError::Rejected`] when a
    /// counter would pass `i64::MAX`.
    async fn apply(&self, totals: &[(CounterKey, i64)]) -> Result<Vec<i64>, StoreError>;

    /// Which of these storage keys exist.
    async fn existing(&self, keys: &[String]) -> Result<HashSet<String>, StoreError>;

    /// How many series exist, per metric name.
    async fn series_per_name(&self) -> Result<HashMap<String, u64>, StoreError>;
}

struct Pending {
    key: CounterKey,
    by: i64,
    reply: oneshot::Sender<Result<i64, StoreError>>,
}

pub struct CounterGroups {
    sender: mpsc::Sender<Pending>,
}

impl CounterGroups {
    /// Starts the group writer; it ends when the `CounterGroups` is dropped.
    pub fn start(applier: Arc<dyn ApplyIncrements>, limits: CounterLimits) -> CounterGroups {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(applier, limits, receiver));
        CounterGroups { sender }
    }

    pub async fn increment(&self, key: &CounterKey, by: i64) -> Result<i64, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key: key.clone(),
            by,
            reply,
        };
        let gone = || StoreError::Database("the counter writer stopped".into());
        self.sender.send(pending).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(
    applier: Arc<dyn ApplyIncrements>,
    limits: CounterLimits,
    mut receiver: mpsc::Receiver<Pending>,
) {
    let mut arrived = Vec::with_capacity(MAX_PER_GROUP);
    let mut known = HashSet::new();
    let mut counts = SeriesCounts::default();
    while receiver.recv_many(&mut arrived, MAX_PER_GROUP).await > 0 {
        let mut groups: BTreeMap<CounterKey, Vec<Pending>> = BTreeMap::new();
        for pending in arrived.drain(..) {
            if let Err(error) = limits.check_shape(&pending.key) {
                let _ = pending
                    .reply
                    .send(Err(StoreError::LimitExceeded(error.to_string())));
                continue;
            }
            groups.entry(pending.key.clone()).or_default().push(pending);
        }
        let groups = admit(applier.as_ref(), &limits, &mut known, &mut counts, groups).await;
        let admitted: Vec<String> = groups.keys().map(CounterKey::storage_key).collect();
        if commit(applier.as_ref(), groups).await {
            known.extend(admitted);
        }
    }
}

/// How long series counts that refused a new series are trusted to refuse again: a client
/// minting new label sets past a limit costs one count per this, not one per request. Counts
/// are always read afresh before a series is created, so the limits stay exact.
const COUNTS_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Series per metric name, as last read (plus what this writer created since).
#[derive(Default)]
struct SeriesCounts {
    per_name: HashMap<String, u64>,
    read_at: Option<std::time::Instant>,
}

impl SeriesCounts {
    /// Whether counts read within [`COUNTS_FRESH_FOR`] already refuse every one of `new`.
    fn refuse_all(&self, new: &[&CounterKey], limits: &CounterLimits) -> bool {
        let fresh = self
            .read_at
            .is_some_and(|at| at.elapsed() < COUNTS_FRESH_FOR);
        let total: u64 = self.per_name.values().sum();
        fresh
            && new.iter().all(|key| {
                total >= limits.max_series as u64
                    || self.per_name.get(&key.name).copied().unwrap_or(0)
                        >= limits.max_series_per_metric as u64
            })
    }
}

/// Keeps the groups of series that exist or fit within the limits; answers the others'
/// callers with [`StoreError::LimitExceeded`]. `known` holds keys seen to exist.
async fn admit(
    applier: &dyn ApplyIncrements,
    limits: &CounterLimits,
    known: &mut HashSet<String>,
    counts: &mut SeriesCounts,
    groups: BTreeMap<CounterKey, Vec<Pending>>,
) -> BTreeMap<CounterKey, Vec<Pending>> {
    let unknown: Vec<String> = groups
        .keys()
        .map(CounterKey::storage_key)
        .filter(|key| !known.contains(key))
        .collect();
    if unknown.is_empty() {
        return groups;
    }
    let looked_up = match applier.existing(&unknown).await {
        Ok(existing) => {
            let new: Vec<&CounterKey> = groups
                .keys()
                .filter(|key| {
                    let storage_key = key.storage_key();
                    !known.contains(&storage_key) && !existing.contains(&storage_key)
                })
                .collect();
            if counts.refuse_all(&new, limits) {
                Ok((existing, std::mem::take(&mut counts.per_name)))
            } else {
                counts.read_at = Some(std::time::Instant::now());
                applier.series_per_name().await.map(|read| (existing, read))
            }
        }
        Err(error) => Err(error),
    };
    let (existing, mut per_name) = match looked_up {
        Ok(found) => found,
        Err(error) => {
            // The counts were taken out for this group: read them again next time.
            counts.read_at = None;
            for pendings in groups.into_values() {
                answer_all(pendings, &error);
            }
            return BTreeMap::new();
        }
    };
    known.extend(existing.iter().cloned());
    let mut total: u64 = per_name.values().sum();
    let mut admitted = BTreeMap::new();
    for (key, pendings) in groups {
        let storage_key = key.storage_key();
        if known.contains(&storage_key) {
            admitted.insert(key, pendings);
            continue;
        }
        let of_name = per_name.entry(key.name.clone()).or_default();
        let refusal = if total >= limits.max_series as u64 {
            Some(format!(
                "creating counter {} would pass the {} series this cluster may hold \
                 (--counter-max-series); existing counters can still be incremented",
                key.name, limits.max_series
            ))
        } else if *of_name >= limits.max_series_per_metric as u64 {
            Some(format!(
                "counter {} already has {} label sets, the most one name may have \
                 (--counter-max-series-per-metric); existing ones can still be incremented",
                key.name, limits.max_series_per_metric
            ))
        } else {
            None
        };
        match refusal {
            Some(message) => answer_all(pendings, &StoreError::LimitExceeded(message)),
            None => {
                total += 1;
                *of_name += 1;
                admitted.insert(key, pendings);
            }
        }
    }
    counts.per_name = per_name;
    admitted
}

/// The sum of a key's increments, or `None` if it alone would overflow.
fn total(pendings: &[Pending]) -> Option<i64> {
    pendings
        .iter()
        .try_fold(0i64, |sum, p| sum.checked_add(p.by))
}

/// Commits the groups; answers whether every series in them now exists.
async fn commit(applier: &dyn ApplyIncrements, groups: BTreeMap<CounterKey, Vec<Pending>>) -> bool {
    let mut totals = Vec::with_capacity(groups.len());
    let mut waiting = Vec::with_capacity(groups.len());
    for (key, pendings) in groups {
        match total(&pendings) {
            Some(sum) => {
                totals.push((key, sum));
                waiting.push(pendings);
            }
            // Even on their own these could not all fit.
            None => apply_one_by_one(applier, pendings).await,
        }
    }
    if totals.is_empty() {
        return false;
    }
    match applier.apply(&totals).await {
        Ok(values) => {
            for (value, pendings) in values.into_iter().zip(waiting) {
                answer_in_order(value, pendings);
            }
            true
        }
        Err(StoreError::Rejected(_)) => {
            // Some counter would overflow: commit each key on its own, so that only its
            // callers are refused.
            for ((key, sum), pendings) in totals.into_iter().zip(waiting) {
                match applier.apply(&[(key.clone(), sum)]).await {
                    Ok(values) => answer_in_order(values[0], pendings),
                    Err(StoreError::Rejected(_)) => apply_one_by_one(applier, pendings).await,
                    Err(error) => answer_all(pendings, &error),
                }
            }
            false
        }
        Err(error) => {
            for pendings in waiting {
                answer_all(pendings, &error);
            }
            false
        }
    }
}

/// Commits each increment on its own, so that only the ones that overflow are refused.
async fn apply_one_by_one(applier: &dyn ApplyIncrements, pendings: Vec<Pending>) {
    for pending in pendings {
        let answer = applier
            .apply(&[(pending.key.clone(), pending.by)])
            .await
            .map(|values| values[0]);
        let _ = pending.reply.send(answer);
    }
}

/// `value` is the counter after all of `pendings`; each caller gets the value right after its
/// own increment.
fn answer_in_order(value: i64, pendings: Vec<Pending>) {
    let mut after = value;
    let mut values = Vec::with_capacity(pendings.len());
    for pending in pendings.iter().rev() {
        values.push(after);
        after -= pending.by;
    }
    for (pending, value) in pendings.into_iter().zip(values.into_iter().rev()) {
        let _ = pending.reply.send(Ok(value));
    }
}

fn answer_all(pendings: Vec<Pending>, error: &StoreError) {
    for pending in pendings {
        let answer = match error {
            StoreError::LimitExceeded(message) => StoreError::LimitExceeded(message.clone()),
            other => StoreError::Database(other.to_string()),
        };
        let _ = pending.reply.send(Err(answer));
    }
}
