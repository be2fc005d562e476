//! Cluster membership: who is in the cluster and how to reach them.
//!
//! In the cluster shape each node writes its [`Member`] record into a JetStream key-value bucket
//! whose entries expire after the membership TTL, and rewrites it every third of the TTL (the
//! heartbeat). A node that stops heart-beating disappears once the TTL passes; there is no
//! static peer list anywhere. In the embedded shape the node is the only member.
//!
//! Invariants:
//! - A record is only ever written by the node it describes.
//! - Two live nodes never share a name: a node refuses to join while another instance with its
//!   name and a different address is still heart-beating (names key the per-node consumers).

use crate::nats::{nats_safe_name, open_kv_with_ttl};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

/// A member as it describes itself, plus the state a reader derives from its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// Base URL of the member's HTTP API, as other nodes should use it.
    pub address: String,
    pub version: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub last_heartbeat: String,
    pub state: MemberState,
    /// Tells two runs of a node with the same name apart.
    pub instance: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Heart-beating and serving requests.
    Serving,
    /// Shutting down; gone at the next heartbeat or the TTL.
    Leaving,
    /// Its record has not been refreshed for two heartbeats: probably gone, not yet expired.
    Unresponsive,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot open the membership bucket {bucket}: {reason}")]
    Bucket { bucket: String, reason: String },
    #[error(
        "a node named {name} is already a member (at {address}, last heartbeat {last_heartbeat}); \
         pick another --node-name, or wait for its membership to expire"
    )]
    NameTaken {
        name: String,
        address: String,
        last_heartbeat: String,
    },
    #[error("cannot read the cluster membership: {0}")]
    Unavailable(String),
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("the current time formats")
}

fn age(rfc3339: &str) -> Option<Duration> {
    let then = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    Some(
        (OffsetDateTime::now_utc() - then)
            .try_into()
            .unwrap_or(Duration::ZERO),
    )
}

impl Member {
    /// This node's record, as of now.
    pub fn new(name: &str, address: &str) -> Member {
        let now = now_rfc3339();
        Member {
            name: name.to_owned(),
            address: address.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now.clone(),
            last_heartbeat: now,
            state: MemberState::Serving,
            instance: uuid::Uuid::now_v7().to_string(),
        }
    }
}

pub struct Membership {
    me: Mutex<Member>,
    /// `None` in the embedded shape.
    bucket: Option<kv::Store>,
    ttl: Duration,
}

impl Membership {
    /// The embedded shape: this node alone.
    pub fn standalone(me: Member) -> Membership {
        Membership {
            me: Mutex::new(me),
            bucket: None,
            ttl: Duration::ZERO,
        }
    }

    /// Opens (creating if needed) the membership bucket and registers `me` in it. When the
    /// bucket exists, its TTL wins over `ttl`, so that every member heart-beats often enough.
    pub async fn join(
        jetstream: &jetstream::Context,
        bucket_name: &str,
        me: Member,
        ttl: Duration,
    ) -> Result<Membership, ClusterError> {
        let (bucket, ttl) = open_bucket(jetstream, bucket_name, ttl).await?;
        let key = nats_safe_name(&me.name);
        if let Ok(Some(entry)) = bucket.get(&key).await
            && let Ok(other) = serde_json::from_slice::<Member>(&entry)
            && other.instance != me.instance
            && other.address != me.address
            && other.state == MemberState::Serving
            && age(&other.last_heartbeat).is_some_and(|age| age < ttl)
        {
            return Err(ClusterError::NameTaken {
                name: other.name,
                address: other.address,
                last_heartbeat: other.last_heartbeat,
            });
        }
        let membership = Membership {
            me: Mutex::new(me),
            bucket: Some(bucket),
            ttl,
        };
        membership
            .heartbeat()
            .await
            .map_err(ClusterError::Unavailable)?;
        Ok(membership)
    }

    /// How often a member rewrites its record.
    pub fn heartbeat_interval(&self) -> Duration {
        self.ttl / 3
    }

    fn me(&self) -> Member {
        self.me.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rewrites this node's record with a fresh heartbeat time.
    pub async fn heartbeat(&self) -> Result<(), String> {
        let record = {
            let mut me = self.me.lock().unwrap_or_else(|p| p.into_inner());
            me.last_heartbeat = now_rfc3339();
            me.clone()
        };
        let Some(bucket) = &self.bucket else {
            return Ok(());
        };
        let value = serde_json::to_vec(&record).expect("members serialise");
        bucket
            .put(nats_safe_name(&record.name), value.into())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Every live member, sorted by name.
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let Some(bucket) = &self.bucket else {
            let mut me = self.me();
            me.last_heartbeat = now_rfc3339();
            return Ok(vec![me]);
        };
        let failed = |e: &dyn std::fmt::Display| ClusterError::Unavailable(e.to_string());
        let mut keys = bucket.keys().await.map_err(|e| failed(&e))?;
        let mut members = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| failed(&e))?;
            let Some(value) = bucket.get(&key).await.map_err(|e| failed(&e))? else {
                continue;
            };
            match serde_json::from_slice::<Member>(&value) {
                Ok(mut member) => {
                    let stale = age(&member.last_heartbeat)
                        .is_none_or(|age| age > 2 * self.heartbeat_interval());
                    if stale && member.state == MemberState::Serving {
                        member.state = MemberState::Unresponsive;
                    }
                    members.push(member);
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "Ignoring a membership record that does not parse.")
                }
            }
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(members)
    }

    /// Heart-beats until `shutdown` turns true, then marks this node as leaving and removes its
    /// record, so that the others see it go at once rather than after the TTL.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        if self.bucket.is_none() {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.heartbeat_interval()) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            match self.heartbeat().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("Membership heartbeats are getting through again.");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "Could not write a membership heartbeat; retrying.");
                }
                Err(_) => {}
            }
        }
        self.leave().await;
    }

    async fn leave(&self) {
        let Some(bucket) = &self.bucket else {
            return;
        };
        let name = self.me().name;
        if let Err(error) = bucket.delete(nats_safe_name(&name)).await {
            tracing::warn!(%error, "Could not remove this node's membership record; it expires after the TTL.");
        }
    }
}

/// The bucket and the TTL of its entries.
async fn open_bucket(
    jetstream: &jetstream::Context,
    name: &str,
    ttl: Duration,
) -> Result<(kv::Store, Duration), ClusterError> {
    open_kv_with_ttl(jetstream, name, "logmesh cluster members", ttl)
        .await
        .map_err(|reason| ClusterError::Bucket {
            bucket: name.to_owned(),
            reason,
        })
}
