//! Recording real traffic as a trace (`tillstream predictor record`): METRICS messages are
//! folded into windows the way the live predictor folds them — each window closes once the
//! newest message time seen has passed its end plus the grace period, so a recording of an
//! old stretch of the stream reads as it did live — and one series is written out as
//! `at,rate,cpu_percent` for the backtest. [`read_stream`] feeds a recorder from the
//! stream itself; the CLI (`tillstream predictor record`) and the load generator's shaped
//! trace (`tillstream-bench trace`) both record through it.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use tillstream_events::Namespace;

use crate::ingest::{IngestError, ingest};
use crate::trace::TracePoint;
use crate::window::{WindowConfig, Windows};

/// Windows kept: a week of 10 s windows.
const CAPACITY: usize = 60_480;

/// The one field every METRICS message has.
#[derive(serde::Deserialize)]
struct Stamp {
    at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the METRICS stream: {0}")]
    Stream(#[from] jetstream::context::GetStreamError),
    #[error("a consumer of the METRICS stream: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    #[error("reading the METRICS stream: {0}")]
    Messages(#[from] jetstream::consumer::StreamError),
    #[error("reading the METRICS stream: {0}")]
    Message(#[from] jetstream::consumer::pull::OrderedError),
    #[error("a METRICS message without JetStream metadata: {0}")]
    Metadata(String),
    #[error("start time {0} is out of range")]
    Since(DateTime<Utc>),
}

pub struct Recorder {
    windows: Windows,
    /// The newest message time seen: the recording's clock.
    latest: Option<DateTime<Utc>>,
    /// Messages that could not be read, or came too late for their window.
    pub skipped: u64,
    pub read: u64,
}

impl Recorder {
    /// Windows of `width`, each closed `grace` after its end.
    pub fn new(width: Duration, grace: Duration) -> Self {
        Recorder {
            windows: Windows::new(WindowConfig {
                width,
                grace,
                capacity: CAPACITY,
            }),
            latest: None,
            skipped: 0,
            read: 0,
        }
    }

    /// Folds one message of the METRICS stream in.
    pub fn offer(&mut self, subject: &str, payload: &[u8]) {
        self.read += 1;
        match ingest(&mut self.windows, subject, payload) {
            Ok(true) => {}
            Ok(false) | Err(IngestError::Subject(_) | IngestError::Decode { .. }) => {
                self.skipped += 1;
                return;
            }
        }
        if let Ok(Stamp { at }) = serde_json::from_slice(payload)
            && self.latest.is_none_or(|latest| at > latest)
        {
            self.latest = Some(at);
            self.windows.close_until(at);
        }
    }

    /// The windows of `service` (`*`: every service together) from its first data to the
    /// newest message, as a trace (the window still open at the end is partial and left out). A
    /// window without a CPU sample takes the previous window's CPU (the first known one at
    /// the start; 0 when the series has none).
    pub fn finish(mut self, service: &str) -> Vec<TracePoint> {
        if let Some(latest) = self.latest {
            let grace = self.windows.config().grace;
            self.windows
                .close_until(latest + chrono::Duration::from_std(grace).unwrap_or_default());
        }
        let Some(closed) = self.windows.closed(service) else {
            return Vec::new();
        };
        let mut cpu = closed.iter().find_map(|w| w.cpu_percent).unwrap_or(0.0);
        closed
            .iter()
            // The clock may open a window just before the first message: no data yet.
            .skip_while(|w| w.requests == 0 && w.cpu_percent.is_none())
            .map(|w| {
                cpu = w.cpu_percent.unwrap_or(cpu);
                TracePoint {
                    at: w.start,
                    rate: w.rate,
                    cpu_percent: cpu,
                }
            })
            .collect()
    }
}

/// Reads the METRICS stream of `namespace` into `recorder`: every message stored at or
/// after `since` (the whole stream when None) up to the stream's end as it is when the
/// reading starts, so traffic arriving meanwhile does not keep the recording going.
pub async fn read_stream(
    js: &jetstream::Context,
    namespace: &Namespace,
    since: Option<DateTime<Utc>>,
    recorder: &mut Recorder,
) -> Result<(), RecordError> {
    let stream = js.get_stream(namespace.stream("METRICS")).await?;
    // The stream's end as get_stream just read it: the recording stops there.
    let end = stream.cached_info().state.last_sequence;
    let deliver_policy = match since {
        Some(since) => {
            let nanos = since
                .timestamp_nanos_opt()
                .ok_or(RecordError::Since(since))?;
            DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
                    .map_err(|_| RecordError::Since(since))?,
            }
        }
        None => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: namespace.metrics_wildcard(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        recorder.offer(&message.subject, &message.payload);
        let info = message
            .info()
            .map_err(|e| RecordError::Metadata(e.to_string()))?;
        if info.pending == 0 || info.stream_sequence >= end {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tillstream_events::{RequestMetric, ResourceSample};

    fn at(secs: i64) -> DateTime<Utc> {
        // 1_700_000_000 is a multiple of 10: window 0 starts at `at(0)`.
        Utc.timestamp_opt(1_700_000_000 + secs, 0).single().unwrap()
    }

    #[test]
    fn windows_of_one_service_become_an_evenly_spaced_trace() {
        let mut recorder = Recorder::new(Duration::from_secs(10), Duration::from_secs(5));
        let request = |secs: i64, service: &str| RequestMetric {
            service: service.to_owned(),
            instance: "i".to_owned(),
            operation: "op".to_owned(),
            status: 200,
            latency_us: 1000,
            bytes: 10,
            at: at(secs),
        };
        // Window 0: 20 requests and CPU 30%; window 1: nothing; window 2: 5 requests, no
        // CPU sample; another service's traffic is not counted; garbage is skipped.
        for i in 0..20 {
            let body = serde_json::to_vec(&request(i % 10, "gateway")).unwrap();
            recorder.offer("metrics.requests.gateway", &body);
        }
        let sample = ResourceSample {
            service: "gateway".to_owned(),
            instance: "i".to_owned(),
            cpu_percent: 30.0,
            rss_bytes: 1,
            at: at(3),
        };
        recorder.offer(
            "metrics.resources.gateway",
            &serde_json::to_vec(&sample).unwrap(),
        );
        for i in 0..5 {
            let body = serde_json::to_vec(&request(20 + i, "gateway")).unwrap();
            recorder.offer("metrics.requests.gateway", &body);
            let other = serde_json::to_vec(&request(20 + i, "order")).unwrap();
            recorder.offer("metrics.requests.order", &other);
        }
        recorder.offer("metrics.requests.gateway", b"{");
        // The newest message (at 30 s) ends window 2; the open window 3 is left out.
        let last = serde_json::to_vec(&request(30, "order")).unwrap();
        recorder.offer("metrics.requests.order", &last);
        assert_eq!((recorder.read, recorder.skipped), (33, 1));

        let trace = recorder.finish("gateway");
        let rates: Vec<f64> = trace.iter().map(|p| p.rate).collect();
        assert_eq!(rates, vec![2.0, 0.0, 0.5]);
        let cpu: Vec<f64> = trace.iter().map(|p| p.cpu_percent).collect();
        assert_eq!(cpu, vec![30.0, 30.0, 30.0]);
        assert_eq!(trace[1].at - trace[0].at, chrono::Duration::seconds(10));
    }
}
