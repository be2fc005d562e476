//! The live feed of the cluster shape: an ordered consumer of the event stream, from its
//! newest message, offering every event to this node's live clients ([`crate::live`]), so that
//! they see what every node accepted, and only what JetStream stored. An ordered consumer
//! acknowledges nothing, so it holds no message back from the other consumers.

use super::jetstream::unpack;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How long the follower waits before following again after it lost the stream.
const FOLLOW_AGAIN: Duration = Duration::from_secs(1);

/// Follows `stream_name` from its newest message and offers every event to `feed` until
/// `shutdown`.
pub fn follow_live(
    jetstream: jetstream::Context,
    stream_name: String,
    feed: Arc<crate::live::LiveFeed>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let follow = async {
            loop {
                if let Err(error) = follow_once(&jetstream, &stream_name, &feed).await {
                    tracing::debug!(%error, "The live feed lost the stream; following again.");
                }
                tokio::time::sleep(FOLLOW_AGAIN).await;
            }
        };
        tokio::select! {
            _ = follow => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    })
}

/// Offers every event of every new message to `feed`, until the consumer fails.
async fn follow_once(
    jetstream: &jetstream::Context,
    stream_name: &str,
    feed: &crate::live::LiveFeed,
) -> Result<(), String> {
    let stream = jetstream
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::New,
            description: Some("logmesh live tail".to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        if !feed.has_clients() {
            continue;
        }
        let seq = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        if let Ok(events) = unpack(&message.payload, seq) {
            for event in events {
                feed.offer(event.event);
            }
        }
    }
    Ok(())
}
