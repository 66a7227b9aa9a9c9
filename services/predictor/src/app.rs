//! Building and running the predictor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use tillstream_events::Namespace;
use tillstream_runtime::grpc_host::{self, HostError};
use tillstream_runtime::nats::{self, NatsReady};
use tillstream_runtime::ops::{self, Readiness};
use tillstream_runtime::retry::Backoff;
use tillstream_runtime::{Shutdown, StartError, resources};
use tokio::net::TcpListener;

use crate::Config;
use crate::clock::{Clock, SystemClock};
use crate::ingest::ingest;
use crate::outputs::Outputs;
use crate::predictor::Predictor;

pub struct App {
    config: Config,
    client: async_nats::Client,
    js: jetstream::Context,
    namespace: Namespace,
    clock: Arc<dyn Clock>,
    ops: TcpListener,
    readiness: Readiness,
}

impl App {
    /// Connects to NATS, creates the streams if missing and binds the ops listener.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`App::build`], with windows closed and rules evaluated by `clock` (tests drive
    /// minutes of metrics through with a [`crate::ManualClock`]).
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let client = config.nats.connect("tillstream-predictor", true).await?;
        let namespace = Namespace::new(config.nats.namespace.clone())?;
        let js = jetstream::new(client.clone());
        nats::ensure_streams(&js, &namespace, config.nats.stream_replicas).await?;
        Ok(App {
            readiness: Readiness::default().with(NatsReady(client.clone())),
            ops: grpc_host::bind(config.ops_addr).await?,
            config,
            client,
            js,
            namespace,
            clock,
        })
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Consumes the METRICS stream, closes windows every tick and publishes forecasts and
    /// decisions, until `shutdown` fires. Windows and models live as long as the process:
    /// a lost consumer is re-created (with backoff) without forgetting them.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), HostError> {
        resources::report(
            self.client.clone(),
            &self.namespace,
            "predictor",
            shutdown.clone(),
        );
        let ops_server = ops::serve(self.ops, ops::router(self.readiness), shutdown.clone());
        let worker = Worker {
            predictor: Predictor::new(self.config.predictor()),
            outputs: Outputs::new(
                self.js.clone(),
                &self.namespace,
                self.config.webhook_url.clone(),
                self.config.command.clone(),
            ),
            js: self.js,
            namespace: self.namespace,
            consumer: self.config.consumer.clone(),
            tick: Duration::from_millis(self.config.tick_ms.max(1)),
            clock: self.clock,
        };
        let (_, ops_result) = tokio::join!(worker.run(shutdown.clone()), ops_server);
        ops_result.map_err(HostError::Ops)
    }
}

struct Worker {
    predictor: Predictor,
    outputs: Outputs,
    js: jetstream::Context,
    namespace: Namespace,
    consumer: String,
    tick: Duration,
    clock: Arc<dyn Clock>,
}

impl Worker {
    async fn run(mut self, shutdown: Shutdown) {
        let mut backoff = Backoff::default();
        loop {
            match self.consume(&shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "predictor lost its consumer; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        tracing::info!("predictor stopped");
    }

    async fn consume(&mut self, shutdown: &Shutdown) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(self.namespace.stream("METRICS"))
            .await
            .map_err(|e| e.to_string())?;
        let durable = self.namespace.consumer(&self.consumer);
        // Metrics are telemetry: no acks (a redelivery would only count a request twice),
        // and a new consumer starts at the live edge.
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.namespace.metrics_wildcard(),
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    deliver_policy: jetstream::consumer::DeliverPolicy::New,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(consumer = %durable, "predictor consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => self.tick().await,
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        if let Err(error) = ingest(&mut self.predictor, &message.subject, &message.payload) {
                            tracing::debug!(%error, "metric skipped");
                            metrics::counter!("tillstream_predictor_unreadable_total").increment(1);
                        }
                    }
                    Some(Err(error)) => return Err(error.to_string()),
                    None => return Err("message stream ended".to_owned()),
                },
            }
        }
    }

    async fn tick(&mut self) {
        let steps = self.predictor.tick(self.clock.now());
        if !steps.is_empty() {
            publish_window_gauges(&self.predictor);
        }
        let counters = self.predictor.counters();
        metrics::gauge!("tillstream_predictor_late_dropped").set(counters.late_dropped as f64);
        metrics::gauge!("tillstream_predictor_future_dropped").set(counters.future_dropped as f64);
        for step in steps {
            if let Some(decision) = &step.decision {
                self.outputs.decision(decision).await;
            }
            self.outputs.forecast(&step.forecast).await;
        }
    }
}

/// The newest closed window of each service and of the total (`service="*"`) as gauges.
fn publish_window_gauges(predictor: &Predictor) {
    for (service, window) in predictor.windows().latest() {
        let service = service.to_owned();
        metrics::gauge!("tillstream_predictor_window_rate", "service" => service.clone())
            .set(window.rate);
        metrics::gauge!("tillstream_predictor_window_error_rate", "service" => service.clone())
            .set(window.error_rate);
        for (quantile, value) in [("0.5", window.p50_ms), ("0.95", window.p95_ms)] {
            if let Some(ms) = value {
                metrics::gauge!("tillstream_predictor_window_latency_ms",
                    "service" => service.clone(), "quantile" => quantile)
                .set(ms);
            }
        }
        if let Some(cpu) = window.cpu_percent {
            metrics::gauge!("tillstream_predictor_window_cpu_percent", "service" => service)
                .set(cpu);
        }
    }
}
