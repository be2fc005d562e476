//! The NATS side every cluster capability shares: connecting (with the server version this
//! code needs checked up front), the key-value buckets membership and work keep, names safe
//! for consumers, and telling a full stream from other refusals.

use async_nats::jetstream;
use std::time::Duration;

/// How long `connect` waits for the server before the node refuses to start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a JetStream request (publish acknowledgement, API call) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the server at `url` as this node, reconnecting for ever once connected, and
/// refuses a server older than [`MINIMUM_SERVER`] naming both versions.
pub async fn connect(
    url: &str,
    node_name: &str,
) -> Result<(async_nats::Client, jetstream::Context), String> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("logmesh {node_name}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("Lost the connection to NATS; reconnecting.")
                }
                async_nats::Event::Connected => tracing::info!("Connected to NATS."),
                other => tracing::debug!(event = %other, "NATS client event."),
            }
        })
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    // Older servers answer JetStream requests in shapes the client cannot read ("data did
    // not match any variant of untagged enum Response"): say plainly what is needed.
    let version = client.server_info().version;
    if !server_version_at_least(&version, MINIMUM_SERVER) {
        return Err(format!(
            "the NATS server at {url} is version {version}; logmesh needs NATS {}.{} or newer \
             with JetStream enabled (2.12 or newer for requests larger than one message)",
            MINIMUM_SERVER.0, MINIMUM_SERVER.1
        ));
    }
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone());
    Ok((client, jetstream))
}

/// The oldest NATS server logmesh runs on.
pub const MINIMUM_SERVER: (u64, u64) = (2, 10);

/// Whether a server `version` ("2.12.1", "v2.10.0-beta") is `at_least` (major, minor).
pub fn server_version_at_least(version: &str, at_least: (u64, u64)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|part| part.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= at_least
}

/// Consumer names may not hold `.`, `*`, `>`, whitespace or path separators; node names may.
/// Each other byte becomes `_XX` (hex), so two node names never share a consumer.
/// Opens the key-value bucket `name` (history 1, file storage), creating it with `max_age` =
/// `ttl` if it does not exist. An existing bucket's TTL wins over `ttl`, with a warning, so
/// that every node sees entries expire alike; it is returned with the bucket.
pub async fn open_kv_with_ttl(
    jetstream: &jetstream::Context,
    name: &str,
    description: &str,
    ttl: Duration,
) -> Result<(jetstream::kv::Store, Duration), String> {
    if let Ok(bucket) = jetstream.get_key_value(name).await {
        let status = bucket.status().await.map_err(|e| e.to_string())?;
        let bucket_ttl = status.max_age();
        if bucket_ttl != ttl {
            tracing::warn!(
                bucket = name,
                ttl_ms = bucket_ttl.as_millis() as u64,
                "The bucket exists with another TTL than this node's setting; using the bucket's."
            );
        }
        return Ok((bucket, bucket_ttl));
    }
    let created = jetstream
        .create_key_value(jetstream::kv::Config {
            bucket: name.to_owned(),
            description: description.to_owned(),
            history: 1,
            max_age: ttl,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(bucket) => Ok((bucket, ttl)),
        // Another node created it at the same moment.
        Err(error) => jetstream
            .get_key_value(name)
            .await
            .map(|bucket| (bucket, ttl))
            .map_err(|_| error.to_string()),
    }
}

pub fn nats_safe_name(name: &str) -> String {
    let mut safe = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            safe.push(byte as char);
        } else {
            safe.push_str(&format!("_{byte:02x}"));
        }
    }
    safe
}

/// Whether JetStream refused a publish because the stream is at its limits (discard new), or
/// holds its most open atomic batches (50 per stream by default): either way, the client should
/// come back a little later.
pub fn means_full(code: jetstream::ErrorCode) -> bool {
    matches!(
        code,
        jetstream::ErrorCode::STREAM_STORE_FAILED
            | jetstream::ErrorCode::INSUFFICIENT_RESOURCES
            | jetstream::ErrorCode::ATOMIC_PUBLISH_TOO_MANY_INFLIGHT
    )
}

/// Whether JetStream refused a publish because the stream is at its limits (discard new).
pub fn publish_refused_as_full(error: &async_nats::jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    error
        .source()
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| means_full(e.error_code()))
}

/// A lease held in a key-value bucket whose `max_age` is the lease's length: the holder renews
/// it by updating its entry (compare-and-set on the revision it wrote); a holder that stops
/// renewing loses it when the entry expires, and another node may then create it. Used so that
/// one node of a cluster at a time does a job all could do (expiry).
pub struct KvLease {
    bucket: jetstream::kv::Store,
    key: String,
    holder: String,
    /// The revision of our entry while we hold the lease.
    revision: Option<u64>,
}

impl KvLease {
    pub fn new(bucket: jetstream::kv::Store, key: &str, holder: &str) -> KvLease {
        KvLease {
            bucket,
            key: key.to_owned(),
            holder: holder.to_owned(),
            revision: None,
        }
    }

    /// Takes or renews the lease; false while another node holds it (or the bus cannot say).
    pub async fn hold(&mut self) -> bool {
        if let Some(revision) = self.revision {
            match self
                .bucket
                .update(&self.key, self.holder.clone().into(), revision)
                .await
            {
                Ok(renewed) => {
                    self.revision = Some(renewed);
                    return true;
                }
                // Expired (and maybe taken by another node) or the bus is away: take it anew.
                Err(_) => self.revision = None,
            }
        }
        if let Ok(revision) = self
            .bucket
            .create(&self.key, self.holder.clone().into())
            .await
        {
            self.revision = Some(revision);
            return true;
        }
        // Ours from before a restart (node names are unique in a cluster): taken back at once
        // rather than after it lapses.
        let Ok(Some(entry)) = self.bucket.entry(&self.key).await else {
            return false;
        };
        if entry.operation != jetstream::kv::Operation::Put || entry.value != self.holder {
            return false;
        }
        match self
            .bucket
            .update(&self.key, self.holder.clone().into(), entry.revision)
            .await
        {
            Ok(revision) => {
                self.revision = Some(revision);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives the lease up (a node that stops), so that another node takes it at its next look
    /// rather than once it lapses; nothing if it was not held or was lost meanwhile.
    pub async fn release(&mut self) {
        if let Some(revision) = self.revision.take() {
            let _ = self
                .bucket
                .delete_expect_revision(&self.key, Some(revision))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_compare_by_major_and_minor() {
        assert!(server_version_at_least("2.12.0", (2, 12)));
        assert!(server_version_at_least("2.15.1", (2, 12)));
        assert!(server_version_at_least("v3.0.0-beta.1", (2, 12)));
        assert!(!server_version_at_least("2.11.9", (2, 12)));
        assert!(!server_version_at_least("2.9.10", (2, 12)));
        assert!(!server_version_at_least("", (2, 12)));
    }

    #[test]
    fn consumer_names_are_safe_and_distinct() {
        assert_eq!(nats_safe_name("node-1"), "node-1");
        assert_ne!(nats_safe_name("a.b"), nats_safe_name("a_b"));
        assert!(!nats_safe_name("a.b c>*").contains(['.', ' ', '>', '*']));
    }
}
