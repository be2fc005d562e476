//! Conformance of the work backends: every test runs against the embedded backend (SQLite and
//! files) and against the JetStream backend (KV, work-queue stream, object store), through the
//! `WorkBackend` port alone, so both keep the promises the worker and the API rely on:
//! compare-and-swap records (a claim with a stale revision loses), one creation per callback,
//! a queue lease that in-progress acks renew and that expires when they stop, retry-after, and
//! completion recorded at most once when two workers race.

mod common;

use logmesh::work::jetstream::JetStreamWork;
use logmesh::work::local::LocalWork;
use logmesh::work::{Created, JobRecord, Kind, Status, WorkBackend};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Short, so that expiry is seen quickly; long enough that a loaded machine renews in time.
const LEASE: Duration = Duration::from_secs(2);
const TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    JetStream,
}

/// A backend of its own: a temp dir, and for JetStream a stream name no other test uses.
struct Opened {
    work: Arc<dyn WorkBackend>,
    _dir: TempDir,
}

async fn open(backend: Backend) -> Opened {
    let dir = tempfile::tempdir().expect("temp dir");
    let work: Arc<dyn WorkBackend> = match backend {
        Backend::Embedded => Arc::new(
            LocalWork::open(dir.path(), TTL, LEASE, 1_000, 1 << 20)
                .await
                .expect("open the embedded work backend"),
        ),
        Backend::JetStream => {
            let client = async_nats::connect(common::services::nats_url())
                .await
                .expect("connect to NATS");
            let stream = format!("WB_{}", uuid::Uuid::now_v7().simple());
            Arc::new(
                JetStreamWork::open(
                    async_nats::jetstream::new(client),
                    &stream,
                    TTL,
                    LEASE,
                    1_000,
                    1 << 20,
                    &dir.path().join("staging"),
                )
                .await
                .expect("open the JetStream work backend"),
            )
        }
    };
    Opened { work, _dir: dir }
}

fn record(callback: &str) -> JobRecord {
    let now = logmesh::event::now_us();
    JobRecord {
        callback: callback.to_owned(),
        kind: Kind::Search,
        data: json!("zeppelin"),
        status: Status::Accepted,
        accepted_by: "node-a".into(),
        worker: None,
        holder: None,
        attempts: 0,
        max_attempts: 3,
        error: None,
        progress: 0,
        submitted_us: now,
        started_us: None,
        finished_us: None,
        updated_us: now,
        lease_until_us: None,
        retry_at_us: None,
        result: None,
    }
}

fn callback(n: u32) -> String {
    format!("{n:032X}")
}

async fn a_callback_is_created_once(backend: Backend) {
    let opened = open(backend).await;
    let work = &opened.work;
    let first = record(&callback(1));
    let Created::New(revision) = work.create(&first).await.unwrap() else {
        panic!("the first create of a callback must be new");
    };
    let mut second = record(&callback(1));
    second.accepted_by = "node-b".into();
    match work.create(&second).await.unwrap() {
        Created::Exists(existing) => {
            assert_eq!(existing.revision, revision);
            assert_eq!(
                existing.record.accepted_by, "node-a",
                "the first record stays"
            );
        }
        Created::New(_) => panic!("a second create of a live callback must find the first"),
    }
    assert!(work.get(&callback(2)).await.unwrap().is_none());
}

async fn a_claim_with_a_stale_revision_loses(backend: Backend) {
    let opened = open(backend).await;
    let work = &opened.work;
    let Created::New(created) = work.create(&record(&callback(1))).await.unwrap() else {
        panic!("new");
    };
    let mut claimed = record(&callback(1));
    claimed.status = Status::Working;
    claimed.worker = Some("node-a".into());
    let renewed = work
        .replace(&claimed, created)
        .await
        .unwrap()
        .expect("a claim naming the current revision wins");
    assert_ne!(renewed, created, "a replace moves the revision");

    let mut late = record(&callback(1));
    late.status = Status::Working;
    late.worker = Some("node-b".into());
    assert_eq!(
        work.replace(&late, created).await.unwrap(),
        None,
        "a claim naming a stale revision must lose"
    );
    let stored = work.get(&callback(1)).await.unwrap().expect("still there");
    assert_eq!(stored.revision, renewed);
    assert_eq!(stored.record.worker.as_deref(), Some("node-a"));

    // Removal is compare-and-swap too.
    work.remove(&callback(1), created).await.unwrap();
    assert!(
        work.get(&callback(1)).await.unwrap().is_some(),
        "a remove naming a stale revision leaves the record"
    );
    work.remove(&callback(1), renewed).await.unwrap();
    assert!(work.get(&callback(1)).await.unwrap().is_none());
}

async fn completion_is_recorded_at_most_once(backend: Backend) {
    let opened = open(backend).await;
    let work = opened.work.clone();
    let Created::New(revision) = work.create(&record(&callback(7))).await.unwrap() else {
        panic!("new");
    };
    // Eight workers read the same revision and each try to record the job as worked.
    let racers = (0..8).map(|i| {
        let work = work.clone();
        tokio::spawn(async move {
            let mut worked = record(&callback(7));
            worked.status = Status::Worked;
            worked.worker = Some(format!("node-{i}"));
            worked.attempts = 1;
            work.replace(&worked, revision).await.unwrap().map(|_| i)
        })
    });
    let mut winners = Vec::new();
    for racer in racers {
        if let Some(winner) = racer.await.unwrap() {
            winners.push(winner);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one completion wins: {winners:?}");
    let stored = work.get(&callback(7)).await.unwrap().unwrap().record;
    assert_eq!(stored.status, Status::Worked);
    assert_eq!(stored.worker, Some(format!("node-{}", winners[0])));
}

/// Takes the next delivery, waiting up to `deadline` for one.
async fn next_within(work: &dyn WorkBackend, deadline: Duration) -> Option<String> {
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Some(delivery) = work
            .next(left.min(Duration::from_millis(500)))
            .await
            .unwrap()
        {
            return Some(delivery.callback().to_owned());
        }
    }
}

async fn a_lease_renewed_holds_the_job_and_an_expired_one_frees_it(backend: Backend) {
    let opened = open(backend).await;
    let work = opened.work.as_ref();
    work.enqueue(&callback(3)).await.unwrap();
    let held = work
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the queued job is delivered");
    assert_eq!(held.callback(), callback(3));

    // Renewed every quarter lease for two leases: nobody else gets it.
    let renewing_until = Instant::now() + LEASE * 2;
    while Instant::now() < renewing_until {
        held.in_progress().await.unwrap();
        assert_eq!(
            next_within(work, LEASE / 4).await,
            None,
            "a job whose lease is renewed must not be delivered again"
        );
    }
    // No more renewals: once the lease runs out, the job is delivered again.
    let stopped = Instant::now();
    let again = next_within(work, LEASE * 5).await;
    assert_eq!(
        again.as_deref(),
        Some(callback(3).as_str()),
        "an expired lease frees the job"
    );
    assert!(
        stopped.elapsed() >= LEASE / 2,
        "delivered again {:?} after the last renewal, before the lease ran out",
        stopped.elapsed()
    );
    drop(held);
}

async fn retry_after_delays_the_next_delivery(backend: Backend) {
    let opened = open(backend).await;
    let work = opened.work.as_ref();
    work.enqueue(&callback(4)).await.unwrap();
    let first = work
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("delivered");
    let delay = Duration::from_secs(3);
    let given_back = Instant::now();
    first.retry_after(delay).await.unwrap();
    let again = next_within(work, delay * 4).await;
    assert_eq!(again.as_deref(), Some(callback(4).as_str()));
    // Slack for clocks: JetStream's NAK delay and SQLite's due time both count from the give
    // back, which happened just before `given_back` was taken... or just after.
    assert!(
        given_back.elapsed() >= delay - Duration::from_millis(500),
        "delivered again after {:?}, before the {delay:?} retry delay",
        given_back.elapsed()
    );
}

async fn an_acked_job_is_not_delivered_again(backend: Backend) {
    let opened = open(backend).await;
    let work = opened.work.as_ref();
    work.enqueue(&callback(5)).await.unwrap();
    let delivery = work
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("delivered");
    delivery.ack().await.unwrap();
    assert_eq!(
        next_within(work, LEASE * 2).await,
        None,
        "an acknowledged job must not come back, not even after its lease"
    );
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Embedded).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::needs!(Nats);
                    super::$test(super::Backend::JetStream).await;
                }
            )*
        }
    };
}

conformance!(
    a_callback_is_created_once,
    a_claim_with_a_stale_revision_loses,
    completion_is_recorded_at_most_once,
    a_lease_renewed_holds_the_job_and_an_expired_one_frees_it,
    retry_after_delays_the_next_delivery,
    an_acked_job_is_not_delivered_again,
);
