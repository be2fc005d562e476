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

/// The nice value [`Favoured`] asks for: the default is 0, and −10 weighs a thread about nine
/// times a default one when they compete for a core.
pub const FAVOURED_NICE: i32 = -10;

/// While alive, the calling thread runs ahead of the process's others when the CPU is contended
/// (nice [`FAVOURED_NICE`] for this thread alone: Linux applies `setpriority` to a thread id);
/// dropping it gives the thread its nice value back. For the store writer while it writes a
/// batch of events: under sustained ingest it otherwise waits for a core behind the request
/// threads that fill the queue it drains (18 % of its time in a profiled run), and what it does
/// not write is refused with 503 anyway. Held for a batch only, not for the thread's life: a
/// thread favoured while it wakes for every small job (counter increments) pre-empts the
/// request threads that feed it (counters looked ~5 % slower so). Without the privilege (root,
/// `CAP_SYS_NICE`, or an `RLIMIT_NICE` allowing it) nothing changes.
pub struct Favoured {
    thread: libc::pid_t,
    /// The nice value to give back, when the favour took.
    previous: Option<i32>,
    /// Dropped on the thread it was taken on.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Favoured {
    pub fn enter() -> Favoured {
        // SAFETY: gettid, getpriority and setpriority take and return plain integers.
        unsafe {
            let thread = libc::gettid();
            let previous = libc::getpriority(libc::PRIO_PROCESS, thread as libc::id_t);
            // A thread already ahead of that (a node started with `nice -n -15`) stays so.
            let took = previous > FAVOURED_NICE
                && libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, FAVOURED_NICE) == 0;
            Favoured {
                thread,
                previous: took.then_some(previous),
                _not_send: std::marker::PhantomData,
            }
        }
    }

    /// Whether this guard changed the thread's priority (false without the privilege, or
    /// when the thread already ran at least as favoured).
    pub fn took(&self) -> bool {
        self.previous.is_some()
    }
}

impl Drop for Favoured {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // SAFETY: as in `enter`. Raising a nice value needs no privilege.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, self.thread as libc::id_t, previous);
            }
        }
    }
}

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

    fn nice_of(thread: libc::pid_t) -> i32 {
        // SAFETY: plain integers in and out.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, thread as libc::id_t) }
    }

    #[test]
    fn a_thread_is_favoured_while_the_guard_lives_and_no_other_is() {
        // SAFETY: plain integers in and out.
        let this_thread = unsafe { libc::gettid() };
        let ours = nice_of(this_thread);
        let (before, took, while_held, after) = std::thread::spawn(move || {
            // SAFETY: as above; raising one's own nice value needs no privilege.
            let thread = unsafe { libc::gettid() };
            let lowered = nice_of(thread) + 1;
            unsafe { libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, lowered) };
            let before = nice_of(thread);
            let favoured = Favoured::enter();
            let while_held = nice_of(thread);
            let took = favoured.took();
            drop(favoured);
            (before, took, while_held, nice_of(thread))
        })
        .join()
        .unwrap();
        if took {
            assert_eq!(while_held, FAVOURED_NICE);
        } else {
            assert_eq!(while_held, before, "refused (no privilege), so unchanged");
        }
        assert_eq!(
            after, before,
            "dropping the guard gives the nice value back"
        );
        assert_eq!(nice_of(this_thread), ours, "no other thread is changed");
    }

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
