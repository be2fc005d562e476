//! The deployment shape: [`embedded`] builds the backends of one node on its own, [`cluster`]
//! those of a node of a cluster on NATS JetStream and a shared database; both answer the same
//! ports ([`Backends`]), which `Node::start_on` wires without knowing which shape it runs.

use super::{ClusterConfig, NodeConfig, NodeError, staging_dir};
use crate::cluster::{Member, Membership};
use crate::live::LiveFeed;
use crate::queue::IngestQueue;
use crate::queue::jetstream::{JetStreamQueue, JetStreamSettings};
use crate::queue::local::LocalQueue;
use crate::store::{self, Store};
use crate::work::WorkBackend;
use crate::work::jetstream::JetStreamWork;
use crate::work::local::LocalWork;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts the task that feeds the live tail from the bus, until the receiver turns true.
pub type LiveSource =
    Box<dyn FnOnce(Arc<LiveFeed>, watch::Receiver<bool>) -> JoinHandle<()> + Send>;

/// What a shape provides.
pub struct Backends {
    pub queue: Arc<dyn IngestQueue>,
    pub work: Arc<dyn WorkBackend>,
    pub membership: Membership,
    pub store: Arc<dyn Store>,
    /// `Some` when the bus feeds the live tail (every node's events); `None` when this node's
    /// ingest handlers do.
    pub live_source: Option<LiveSource>,
    /// Whether other nodes consume the same queue (so this one need not drain it at shutdown).
    pub shared_queue: bool,
    /// In a cluster, the lease that lets one node at a time expire stored events.
    pub expiry_lease: Option<crate::nats::KvLease>,
}

/// How long the expiry lease lasts unless renewed (its holder renews it between steps).
pub const EXPIRY_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// The backends of `config`'s shape. `floor` is the last `seq` of this node's event log; `me`
/// the member this node is.
pub async fn open(config: &NodeConfig, floor: u64, me: Member) -> Result<Backends, NodeError> {
    match &config.cluster {
        None => embedded(config, floor, me).await,
        Some(cluster) => self::cluster(config, cluster, floor, me).await,
    }
}

/// One node on its own: the local queue, SQLite work, this node as the only member.
pub async fn embedded(config: &NodeConfig, floor: u64, me: Member) -> Result<Backends, NodeError> {
    let queue_dir = config.queue_dir();
    let limits = config.queue_limits;
    let queue = tokio::task::spawn_blocking(move || LocalQueue::open(&queue_dir, limits, floor))
        .await
        .expect("opening the queue does not panic")?;
    let store = store::open_with(&config.database, config.counters).await?;
    let work = LocalWork::open(
        &config.work_dir(),
        config.work.ttl,
        config.work.lease,
        config.work.max_queued,
        config.work.max_results_bytes,
    )
    .await?;
    Ok(Backends {
        queue: Arc::new(queue),
        work: Arc::new(work),
        membership: Membership::standalone(me),
        store,
        live_source: None,
        shared_queue: false,
        expiry_lease: None,
    })
}

/// A node of a cluster: the JetStream stream as the queue, work and membership in JetStream,
/// the shared database as the store, the stream followed for the live tail.
pub async fn cluster(
    config: &NodeConfig,
    cluster: &ClusterConfig,
    floor: u64,
    me: Member,
) -> Result<Backends, NodeError> {
    let settings = JetStreamSettings {
        url: cluster.nats_url.clone(),
        stream: cluster.stream.clone(),
        subject: cluster.subject.clone(),
        max_events: config.queue_limits.max_events,
        max_bytes: config.queue_limits.max_bytes,
        max_ack_pending: cluster.max_ack_pending,
        ack_wait: cluster.ack_wait,
        replica_max_offline: cluster.replica_max_offline,
        node_name: config.node_name.clone(),
    };
    let queue = JetStreamQueue::connect(settings, floor).await?;
    let jetstream = queue.jetstream().clone();
    let work = JetStreamWork::open(
        jetstream.clone(),
        &cluster.stream,
        config.work.ttl,
        config.work.lease,
        config.work.max_queued,
        config.work.max_results_bytes,
        &staging_dir(&config.work_dir())?,
    )
    .await?;
    let membership = Membership::join(
        &jetstream,
        &cluster.membership_bucket(),
        me,
        cluster.member_ttl,
    )
    .await?;
    let store = store::open_with(&config.database, config.counters).await?;
    let (leases, _) = crate::nats::open_kv_with_ttl(
        &jetstream,
        &format!("{}_leases", cluster.stream),
        "logmesh: which node does a cluster-wide job now",
        EXPIRY_LEASE,
    )
    .await
    .map_err(|reason| {
        NodeError::Cluster(crate::cluster::ClusterError::Bucket {
            bucket: format!("{}_leases", cluster.stream),
            reason,
        })
    })?;
    let expiry_lease = Some(crate::nats::KvLease::new(
        leases,
        "expiry",
        &config.node_name,
    ));
    let stream = cluster.stream.clone();
    let live_source: LiveSource = Box::new(move |feed, stop| {
        crate::queue::jetstream_live::follow_live(jetstream, stream, feed, stop)
    });
    Ok(Backends {
        queue: Arc::new(queue),
        work: Arc::new(work),
        membership,
        store,
        live_source: Some(live_source),
        shared_queue: true,
        expiry_lease,
    })
}
