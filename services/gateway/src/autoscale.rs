//! What the predictor last said, for `loadForecast`: the latest forecast of every service
//! and the most recent scaling decisions, read from the AUTOSCALE stream when asked.
//!
//! Forecasts are on `autoscale.forecasts.<service>`, so the latest per service is the last
//! message on its subject (an ordered consumer delivering the last per subject); decisions
//! are all on `autoscale.decisions`, rare by construction (hysteresis and cool-downs) and
//! kept 30 days, so reading them all and keeping the newest is cheap. Nothing is cached:
//! an admin query costs two short-lived consumers.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures::StreamExt as _;
use tillstream_events::{LoadForecast, Namespace, ScalingDecision};

use crate::error::ApiError;

/// Longest a `loadForecast` read may take before the caller is told UNAVAILABLE.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The predictor's latest output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadView {
    /// The latest forecast of each service, by service name.
    pub forecasts: Vec<LoadForecast>,
    /// The most recent decisions, newest first.
    pub decisions: Vec<ScalingDecision>,
}

/// Reads the AUTOSCALE stream of a namespace.
#[derive(Clone)]
pub struct Autoscale {
    js: jetstream::Context,
    namespace: Namespace,
}

impl Autoscale {
    pub fn new(client: async_nats::Client, namespace: Namespace) -> Self {
        Autoscale {
            js: jetstream::new(client),
            namespace,
        }
    }

    /// The latest forecast per service and the `decisions` newest decisions; `None` when the
    /// predictor has published nothing yet.
    pub async fn latest(&self, decisions: usize) -> Result<Option<LoadView>, ApiError> {
        let read = async {
            let mut forecasts: Vec<LoadForecast> = self
                .read(
                    self.namespace.autoscale_forecasts_wildcard(),
                    DeliverPolicy::LastPerSubject,
                    usize::MAX,
                )
                .await?
                .into();
            forecasts.sort_by(|a, b| a.service.cmp(&b.service));
            let mut recent: Vec<ScalingDecision> = self
                .read(
                    self.namespace.autoscale_decisions_subject(),
                    DeliverPolicy::All,
                    decisions,
                )
                .await?
                .into();
            recent.reverse();
            Ok::<_, async_nats::Error>((forecasts, recent))
        };
        let (forecasts, decisions) = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| "timed out".into())
            .and_then(|read| read)
            .map_err(|error| {
                tracing::warn!(%error, "the predictor's output cannot be read");
                ApiError::Unavailable("the load forecast is unavailable; retry".to_owned())
            })?;
        Ok(
            (!forecasts.is_empty() || !decisions.is_empty()).then_some(LoadView {
                forecasts,
                decisions,
            }),
        )
    }

    /// The messages on `subject` that `policy` delivers, decoded, keeping the last `keep`.
    /// Reads what the stream held when the consumer was created and stops there; a message
    /// that does not decode is skipped.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        policy: DeliverPolicy,
        keep: usize,
    ) -> Result<VecDeque<T>, async_nats::Error> {
        let mut kept = VecDeque::new();
        if keep == 0 {
            return Ok(kept);
        }
        let stream = self
            .js
            .get_stream(self.namespace.stream("AUTOSCALE"))
            .await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subject,
                deliver_policy: policy,
                ..Default::default()
            })
            .await?;
        // The creation's answer already says how many messages wait.
        if consumer.cached_info().num_pending == 0 {
            return Ok(kept);
        }
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            match serde_json::from_slice::<T>(&message.payload) {
                Ok(value) => {
                    if kept.len() == keep {
                        kept.pop_front();
                    }
                    kept.push_back(value);
                }
                Err(error) => {
                    tracing::debug!(%error, subject = %message.subject, "skipping an undecodable autoscale message");
                }
            }
            if message.info()?.pending == 0 {
                break;
            }
        }
        Ok(kept)
    }
}
