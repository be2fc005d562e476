//! Group commit for counter increments, shared by every adapter.
//!
//! Increments that arrive while a commit runs wait, then go together into the next one: each
//! distinct counter is upserted once with the sum of its increments, in one transaction (keys
//! sorted, so concurrent nodes lock rows in the same order). A hot counter then costs one row
//! update and one commit per group instead of one per increment, which is what bounds it when
//! every increment must wait for the previous one's row lock and fsync.
//!
//! Invariants:
//! - A caller is answered only after the commit that holds its increment, with the value its
//!   own increment produced (as if the group's increments ran one after another in arrival
//!   order), so a read through any node right after sees at least that value.
//! - An increment that would pass `i64::MAX` is refused on its own; the rest of its group
//!   commits.

use super::StoreError;
use crate::counters::CounterKey;
use async_trait::async_trait;
use std::collections::BTreeMap;
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
    pub fn start(applier: Arc<dyn ApplyIncrements>) -> CounterGroups {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(applier, receiver));
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

async fn run(applier: Arc<dyn ApplyIncrements>, mut receiver: mpsc::Receiver<Pending>) {
    let mut arrived = Vec::with_capacity(MAX_PER_GROUP);
    while receiver.recv_many(&mut arrived, MAX_PER_GROUP).await > 0 {
        let mut groups: BTreeMap<CounterKey, Vec<Pending>> = BTreeMap::new();
        for pending in arrived.drain(..) {
            groups.entry(pending.key.clone()).or_default().push(pending);
        }
        commit(applier.as_ref(), groups).await;
    }
}

/// The sum of a key's increments, or `None` if it alone would overflow.
fn total(pendings: &[Pending]) -> Option<i64> {
    pendings
        .iter()
        .try_fold(0i64, |sum, p| sum.checked_add(p.by))
}

async fn commit(applier: &dyn ApplyIncrements, groups: BTreeMap<CounterKey, Vec<Pending>>) {
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
        return;
    }
    match applier.apply(&totals).await {
        Ok(values) => {
            for (value, pendings) in values.into_iter().zip(waiting) {
                answer_in_order(value, pendings);
            }
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
        }
        Err(error) => {
            for pendings in waiting {
                answer_all(pendings, &error);
            }
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
        let _ = pending
            .reply
            .send(Err(StoreError::Database(error.to_string())));
    }
}
