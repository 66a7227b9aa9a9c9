//! Over the real NATS: synthetic request metrics and CPU samples go onto the METRICS
//! stream of a test namespace, the predictor's clock is moved window by window (eight
//! minutes of load in a second or two), and the scale-out it decides is read back from
//! `autoscale.decisions`; the command hook sees the same decision.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, TimeZone, Utc};
use tillstream_events::{
    LoadForecast, RequestMetric, ResourceSample, ScalingDecision, ScalingDirection,
};
use tillstream_predictor::{App, Config, ManualClock};
use tillstream_runtime::nats::NatsConfig;
use tillstream_testkit::{TestEnv, eventually};

const WINDOWS: i64 = 40;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

async fn last_on<T: serde::de::DeserializeOwned>(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Option<T> {
    let stream = js.get_stream(stream).await.ok()?;
    let message = stream.get_last_raw_message_by_subject(subject).await.ok()?;
    serde_json::from_slice(&message.payload).ok()
}

#[tokio::test]
async fn sustained_high_cpu_becomes_a_scale_out_decision_on_autoscale_decisions()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let (_client, js) = env.jetstream().await;
    let hook_out = env.data_dir.join("hook");
    std::fs::create_dir_all(&env.data_dir)?;

    let mut config = Config::with_defaults(NatsConfig {
        nats_url: tillstream_testkit::nats_url(),
        credentials: Default::default(),
        namespace: env.id.clone(),
        stream_replicas: 1,
    })?;
    config.ops_addr = "127.0.0.1:0".parse()?;
    config.tick_ms = 10;
    config.command = Some(format!(
        "echo \"$TILLSTREAM_SCALE_SERVICE $TILLSTREAM_SCALE_DIRECTION $TILLSTREAM_SCALE_FROM $TILLSTREAM_SCALE_TO\" > {}",
        hook_out.display()
    ));
    let clock = ManualClock::starting_at(t0());
    let app = App::build_with_clock(config, Arc::new(clock.clone())).await?;
    let ops = app.ops_addr();
    let shutdown = tillstream_runtime::Shutdown::new();
    let running = tokio::spawn(app.run(shutdown.clone()));

    // The consumer starts at the live edge: publish once it exists.
    let metrics_stream = env.namespace.stream("METRICS");
    let durable = env.namespace.consumer("predictor");
    eventually(
        Duration::from_secs(10),
        "the predictor's consumer",
        || async {
            let stream = js.get_stream(&metrics_stream).await.ok()?;
            stream.consumer_info(&durable).await.ok().map(|_| ())
        },
    )
    .await;

    // 20 requests per window (2/s) and two CPU samples at 85%, published newest window
    // first within each minute, so the predictor sees them out of order.
    let mut acks = Vec::new();
    for minute in 0..(WINDOWS / 6 + 1) {
        for w in (minute * 6..((minute + 1) * 6).min(WINDOWS)).rev() {
            let start = t0() + chrono::Duration::seconds(10 * w);
            for i in 0..20u64 {
                let metric = RequestMetric {
                    service: "order".to_owned(),
                    instance: "order-1".to_owned(),
                    operation: "PlaceOrder".to_owned(),
                    status: 200,
                    latency_us: 1_000 + 100 * i,
                    bytes: 100,
                    at: start + chrono::Duration::milliseconds(i as i64 * 450),
                };
                acks.push(
                    js.publish(
                        env.namespace.request_metrics_subject("order"),
                        serde_json::to_vec(&metric)?.into(),
                    )
                    .await?,
                );
            }
            for s in 0..2 {
                let sample = ResourceSample {
                    service: "order".to_owned(),
                    instance: "order-1".to_owned(),
                    cpu_percent: 85.0,
                    rss_bytes: 1 << 26,
                    at: start + chrono::Duration::seconds(5 * s),
                };
                acks.push(
                    js.publish(
                        env.namespace.resource_metrics_subject("order"),
                        serde_json::to_vec(&sample)?.into(),
                    )
                    .await?,
                );
            }
        }
    }
    let published = acks.len() as u64;
    for ack in acks {
        ack.await?;
    }
    eventually(
        Duration::from_secs(10),
        "the predictor to read every metric",
        || async {
            let stream = js.get_stream(&metrics_stream).await.ok()?;
            let info = stream.consumer_info(&durable).await.ok()?;
            (info.num_pending == 0 && info.delivered.stream_sequence >= published).then_some(())
        },
    )
    .await;

    // Move the clock one window at a time; after each, the predictor publishes its
    // forecast for the window that just closed.
    let streams = env.namespace.stream("AUTOSCALE");
    let forecasts = env.namespace.autoscale_forecast_subject("order");
    let grace = chrono::Duration::seconds(5);
    let mut last_forecast = None;
    for w in 1..=WINDOWS {
        let end = t0() + chrono::Duration::seconds(10 * w);
        clock.set(end + grace);
        let forecast: LoadForecast =
            eventually(Duration::from_secs(10), "the window's forecast", || async {
                last_on::<LoadForecast>(&js, &streams, &forecasts)
                    .await
                    .filter(|f| f.at == end)
            })
            .await;
        last_forecast = Some(forecast);
    }
    let forecast = last_forecast.expect("windows closed");
    assert_eq!(forecast.service, "order");
    assert!((forecast.measured_rate - 2.0).abs() < 1e-9, "{forecast:?}");
    assert_eq!(forecast.measured_cpu_percent, Some(85.0));

    let decision: ScalingDecision =
        eventually(Duration::from_secs(10), "a scaling decision", || async {
            last_on(&js, &streams, &env.namespace.autoscale_decisions_subject()).await
        })
        .await;
    assert_eq!(decision.service, "order");
    assert_eq!(decision.direction, ScalingDirection::Out);
    assert_eq!((decision.from_replicas, decision.to_replicas), (1, 2));
    assert!(
        decision.reason.starts_with("cpu 85% > 70% for 5m"),
        "{}",
        decision.reason
    );
    // Five minutes of windows after the first sample: window 30 closes at 09:05:10.
    assert_eq!(decision.at, t0() + chrono::Duration::seconds(310));

    let hook = eventually(Duration::from_secs(10), "the command hook", || async {
        std::fs::read_to_string(&hook_out)
            .ok()
            .filter(|s| s.ends_with('\n'))
    })
    .await;
    assert_eq!(hook.trim(), "order out 1 2");

    let metrics = reqwest::get(format!("http://{ops}/metrics"))
        .await?
        .text()
        .await?;
    for line in [
        "tillstream_desired_replicas{service=\"order\"} 2",
        "tillstream_predictor_window_rate{service=\"order\"} 2",
        "tillstream_predictor_window_cpu_percent{service=\"*\"} 85",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    shutdown.cancel();
    running.await??;
    env.cleanup().await;
    Ok(())
}
