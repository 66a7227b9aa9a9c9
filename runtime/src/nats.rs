//! NATS connections and the JetStream streams of `nats/streams.json`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::future::BoxFuture;
use serde::Deserialize;
use tillstream_events::Namespace;

use crate::ops::ReadinessCheck;

/// The stream definitions shipped in `nats/streams.json`, compiled in so every binary
/// agrees on them.
const STREAMS_JSON: &str = include_str!("../../nats/streams.json");

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("nats/streams.json is invalid: {0}")]
    Definitions(#[from] serde_json::Error),
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
}

/// Where the streams are: shared by every process that talks to JetStream.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL.
    #[arg(
        long = "nats-url",
        env = "TILLSTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,
    /// Prefix of every stream and subject (empty: the public names).
    #[arg(long = "namespace", env = "TILLSTREAM_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Replicas of each stream (1 on one machine, 3 in a cluster).
    #[arg(
        long = "stream-replicas",
        env = "TILLSTREAM_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub stream_replicas: usize,
}

/// Connects to NATS. When `wait` is false the client returns at once and keeps trying
/// in the background, so a process can start (and commit to Postgres) while NATS is down.
pub async fn connect(url: &str, name: &str, wait: bool) -> Result<async_nats::Client, NatsError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if !wait {
        options = options.retry_on_initial_connect();
    }
    options
        .connect(url)
        .await
        .map_err(|source| NatsError::Connect {
            url: url.to_owned(),
            source,
        })
}

#[derive(Debug, Deserialize)]
struct Definitions {
    streams: Vec<StreamDefinition>,
}

#[derive(Debug, Deserialize)]
struct StreamDefinition {
    name: String,
    subjects: Vec<String>,
    retention: String,
    storage: String,
    max_age_secs: u64,
    duplicate_window_secs: u64,
}

/// The JetStream configuration of every stream in `nats/streams.json`, in `namespace`,
/// with `replicas` copies each.
pub fn stream_configs(
    namespace: &Namespace,
    replicas: usize,
) -> Result<Vec<stream::Config>, NatsError> {
    let definitions: Definitions = serde_json::from_str(STREAMS_JSON)?;
    Ok(definitions
        .streams
        .into_iter()
        .map(|def| {
            let subjects = def
                .subjects
                .iter()
                .map(|s| match namespace.prefix() {
                    "" => s.clone(),
                    prefix => format!("{prefix}.{s}"),
                })
                .collect();
            let name = namespace.stream(&def.name);
            stream::Config {
                name,
                subjects,
                retention: match def.retention.as_str() {
                    "interest" => stream::RetentionPolicy::Interest,
                    "workqueue" => stream::RetentionPolicy::WorkQueue,
                    _ => stream::RetentionPolicy::Limits,
                },
                storage: match def.storage.as_str() {
                    "memory" => stream::StorageType::Memory,
                    _ => stream::StorageType::File,
                },
                max_age: Duration::from_secs(def.max_age_secs),
                duplicate_window: Duration::from_secs(def.duplicate_window_secs),
                num_replicas: replicas.max(1),
                ..Default::default()
            }
        })
        .collect())
}

/// Creates the streams, or updates them to the shipped definitions. Idempotent.
pub async fn ensure_streams(
    js: &jetstream::Context,
    namespace: &Namespace,
    replicas: usize,
) -> Result<(), NatsError> {
    for config in stream_configs(namespace, replicas)? {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|source| NatsError::Stream {
                name: name.clone(),
                source,
            })?;
        tracing::debug!(stream = %name, "stream ready");
    }
    Ok(())
}

/// Deletes the namespace's streams (used by tests to leave nothing behind).
pub async fn delete_streams(
    js: &jetstream::Context,
    namespace: &Namespace,
) -> Result<(), NatsError> {
    for config in stream_configs(namespace, 1)? {
        let _ = js.delete_stream(&config.name).await;
    }
    Ok(())
}

/// Readiness: the client is connected.
pub struct NatsReady(pub async_nats::Client);

impl ReadinessCheck for NatsReady {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.0.connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                state => Err(format!("NATS {state}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_parse_and_follow_the_namespace() {
        let configs = stream_configs(&Namespace::new("t1").unwrap(), 3).unwrap();
        let events = configs.iter().find(|c| c.name == "T1_EVENTS").unwrap();
        assert_eq!(
            events.subjects,
            vec!["t1.events.user.*", "t1.events.order.*"]
        );
        assert_eq!(events.num_replicas, 3);
        assert!(events.duplicate_window >= Duration::from_secs(600));
    }
}
