//! `tillstream events tail`: follow the EVENTS stream like any outside subscriber would,
//! through an ordered (ephemeral, gap-detecting) JetStream consumer.

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tillstream_events::{EventEnvelope, Namespace};

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The whole log.
    FromStart,
    /// Events stored at or after this time.
    Since(DateTime<Utc>),
    /// Only events published from now on.
    New,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("JetStream: {0}")]
    Stream(String),
    #[error("message on {subject} is not an event envelope: {source}")]
    NotAnEvent {
        subject: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The events of `namespace` on subjects matching `filter` (default: all), in stream order.
pub async fn follow(
    client: async_nats::Client,
    namespace: &Namespace,
    filter: Option<String>,
    start: Start,
) -> Result<impl Stream<Item = Result<EventEnvelope, TailError>>, TailError> {
    let js = jetstream::new(client);
    let stream = js
        .get_stream(namespace.events_stream())
        .await
        .map_err(|e| TailError::Stream(e.to_string()))?;
    let deliver_policy = match start {
        Start::FromStart => DeliverPolicy::All,
        Start::New => DeliverPolicy::New,
        Start::Since(time) => DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::parse_rfc3339(&time.to_rfc3339())
                .map_err(|e| TailError::Stream(e.to_string()))?,
        },
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.unwrap_or_else(|| namespace.events_wildcard()),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| TailError::Stream(e.to_string()))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| TailError::Stream(e.to_string()))?;
    Ok(messages.map(|message| {
        let message = message.map_err(|e| TailError::Stream(e.to_string()))?;
        serde_json::from_slice(&message.payload).map_err(|source| TailError::NotAnEvent {
            subject: message.subject.to_string(),
            source,
        })
    }))
}
