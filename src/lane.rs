//! A lane: one dedicated OS thread that owns a value (a SQLite connection, the event log file)
//! and runs the closures sent to it, one after another.
//!
//! The writers and the health checks run on lanes rather than on tokio's blocking pool: the
//! pool is shared with every request (file scans, large body parses, searches), and however
//! many requests hold its threads, a lane's thread is never one of them. Callers wait for
//! their turn asynchronously, holding no thread while they wait.
//!
//! Invariants:
//! - At most [`QUEUE`] closures wait per lane; past that, callers wait (asynchronously) for
//!   room, so a lane's queue never grows without bound.
//! - A closure that panics answers [`LaneGone`] to its caller; the lane goes on.

use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};

/// Closures that may wait for a lane's thread.
const QUEUE: usize = 256;

type Job<T> = Box<dyn FnOnce(&mut T) + Send>;

/// The handle to a lane; cloning it shares the lane.
pub struct Lane<T> {
    name: &'static str,
    jobs: mpsc::Sender<Job<T>>,
}

impl<T> Clone for Lane<T> {
    fn clone(&self) -> Self {
        Lane {
            name: self.name,
            jobs: self.jobs.clone(),
        }
    }
}

/// The lane's thread is gone (the process is stopping) or the closure panicked.
#[derive(Debug, thiserror::Error)]
#[error("the {0} thread stopped")]
pub struct LaneGone(pub &'static str);

impl<T: Send + 'static> Lane<T> {
    /// Starts a thread named `name` owning `value`; it ends when every handle is dropped.
    pub fn spawn(name: &'static str, value: T) -> std::io::Result<Lane<T>> {
        let (jobs, mut queue) = mpsc::channel::<Job<T>>(QUEUE);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut value = value;
                while let Some(job) = queue.blocking_recv() {
                    job(&mut value);
                }
            })?;
        Ok(Lane { name, jobs })
    }

    /// Runs `work` on the lane's thread and answers its result.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut T) -> R + Send + 'static,
    ) -> Result<R, LaneGone> {
        let (answer, result) = oneshot::channel();
        let job: Job<T> = Box::new(move |value: &mut T| {
            if let Ok(result) = std::panic::catch_unwind(AssertUnwindSafe(|| work(value))) {
                let _ = answer.send(result);
            }
        });
        self.jobs.send(job).await.map_err(|_| LaneGone(self.name))?;
        result.await.map_err(|_| LaneGone(self.name))
    }

    /// Queues `work` without waiting, for it or for room: false when the queue is full or the
    /// lane is gone (then `work` is dropped unrun).
    pub fn try_submit(&self, work: impl FnOnce(&mut T) + Send + 'static) -> bool {
        let job: Job<T> = Box::new(move |value: &mut T| {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| work(value)));
        });
        self.jobs.try_send(job).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn submitted_closures_run_in_turn_without_being_waited_for() {
        let lane = Lane::spawn("test-submit", Vec::new()).unwrap();
        assert!(lane.try_submit(|seen: &mut Vec<u32>| seen.push(1)));
        assert!(lane.try_submit(|_: &mut Vec<u32>| panic!("a submitted closure panics")));
        // The lane goes on after the panic, and runs closures in the order they came.
        assert_eq!(lane.run(|seen| seen.clone()).await.unwrap(), [1]);
    }

    #[tokio::test]
    async fn closures_run_in_order_on_the_lanes_own_thread() {
        let lane = Lane::spawn("test-lane", Vec::new()).unwrap();
        for n in 0..10 {
            lane.run(move |seen: &mut Vec<i32>| seen.push(n))
                .await
                .unwrap();
        }
        let (seen, thread) = lane
            .run(|seen: &mut Vec<i32>| {
                (
                    seen.clone(),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .await
            .unwrap();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(thread.as_deref(), Some("test-lane"));
    }

    #[tokio::test]
    async fn a_panicking_closure_fails_alone() {
        let lane = Lane::spawn("test-lane", 0u32).unwrap();
        let failed = lane.run(|_: &mut u32| -> u32 { panic!("boom") }).await;
        assert!(failed.is_err());
        assert_eq!(lane.run(|n: &mut u32| *n + 1).await.unwrap(), 1);
    }
}
