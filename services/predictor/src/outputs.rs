//! Where forecasts and decisions go: JetStream (`autoscale.forecasts.<service>`,
//! `autoscale.decisions`), Prometheus gauges, and the optional hooks (an HTTP webhook, a
//! shell command such as `kubectl scale`).
//!
//! Hooks run in their own tasks with a timeout, so a slow webhook never holds up the
//! windows; a hook's failure is logged and counted, never retried (the next decision
//! carries the then-current target anyway).

use std::time::Duration;

use async_nats::jetstream;
use tillstream_events::{LoadForecast, Namespace, ScalingDecision, ScalingDirection};

const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Outputs {
    js: jetstream::Context,
    namespace: Namespace,
    decisions_subject: String,
    webhook: Option<(reqwest::Client, url::Url)>,
    command: Option<String>,
}

impl Outputs {
    pub fn new(
        js: jetstream::Context,
        namespace: &Namespace,
        webhook: Option<url::Url>,
        command: Option<String>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(HOOK_TIMEOUT)
            .build()
            .unwrap_or_default();
        Outputs {
            js,
            namespace: namespace.clone(),
            decisions_subject: namespace.autoscale_decisions_subject(),
            webhook: webhook.map(|url| (client, url)),
            command,
        }
    }

    /// Gauges, then the forecast on `autoscale.forecasts.<service>` (best effort: not awaited
    /// for an ack).
    pub async fn forecast(&self, forecast: &LoadForecast) {
        let service = forecast.service.clone();
        metrics::gauge!("tillstream_predictor_forecast_rate", "service" => service.clone())
            .set(forecast.forecast_rate);
        if let Some(cpu) = forecast.forecast_cpu_percent {
            metrics::gauge!("tillstream_predictor_forecast_cpu_percent", "service" => service.clone())
                .set(cpu);
        }
        metrics::gauge!("tillstream_desired_replicas", "service" => service.clone())
            .set(f64::from(forecast.desired_replicas));
        for (series, mape) in [("rate", forecast.rate_mape), ("cpu", forecast.cpu_mape)] {
            if let Some(mape) = mape {
                metrics::gauge!("tillstream_predictor_mape", "service" => service.clone(), "series" => series)
                    .set(mape);
            }
        }
        let subject = self.namespace.autoscale_forecast_subject(&forecast.service);
        self.publish(&subject, forecast, false).await;
    }

    /// The decision on `autoscale.decisions` (awaiting JetStream's ack), then the hooks.
    pub async fn decision(&self, decision: &ScalingDecision) {
        tracing::info!(
            service = %decision.service,
            from = decision.from_replicas,
            to = decision.to_replicas,
            reason = %decision.reason,
            "scaling decision"
        );
        let direction = match decision.direction {
            ScalingDirection::Out => "out",
            ScalingDirection::In => "in",
        };
        metrics::counter!("tillstream_predictor_decisions_total",
            "service" => decision.service.clone(), "direction" => direction)
        .increment(1);
        metrics::gauge!("tillstream_desired_replicas", "service" => decision.service.clone())
            .set(f64::from(decision.to_replicas));
        self.publish(&self.decisions_subject, decision, true).await;
        if let Some((client, url)) = &self.webhook {
            let (client, url, body) = (client.clone(), url.clone(), decision.clone());
            tokio::spawn(async move {
                let result = client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                if let Err(error) = result {
                    hook_failed("webhook", &error.to_string());
                }
            });
        }
        if let Some(command) = &self.command {
            let mut process = tokio::process::Command::new("sh");
            process
                .arg("-c")
                .arg(command)
                .env("TILLSTREAM_SCALE_SERVICE", &decision.service)
                .env("TILLSTREAM_SCALE_DIRECTION", direction)
                .env("TILLSTREAM_SCALE_FROM", decision.from_replicas.to_string())
                .env("TILLSTREAM_SCALE_TO", decision.to_replicas.to_string())
                .env("TILLSTREAM_SCALE_REASON", &decision.reason)
                .kill_on_drop(true);
            tokio::spawn(async move {
                match tokio::time::timeout(HOOK_TIMEOUT, process.status()).await {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => hook_failed("command", &status.to_string()),
                    Ok(Err(error)) => hook_failed("command", &error.to_string()),
                    Err(_) => hook_failed("command", "timed out"),
                }
            });
        }
    }

    async fn publish(&self, subject: &str, message: &impl serde::Serialize, await_ack: bool) {
        let payload = match serde_json::to_vec(message) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%error, "cannot encode predictor output");
                return;
            }
        };
        match self.js.publish(subject.to_owned(), payload.into()).await {
            Ok(ack) if await_ack => {
                if let Err(error) = ack.await {
                    tracing::warn!(%error, subject, "predictor output not acknowledged");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, subject, "cannot publish predictor output"),
        }
    }
}

fn hook_failed(hook: &'static str, error: &str) {
    tracing::warn!(hook, error, "scaling hook failed");
    metrics::counter!("tillstream_predictor_hook_failures_total", "hook" => hook).increment(1);
}
