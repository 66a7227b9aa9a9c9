//! Fixed, epoch-aligned windows of the metric streams, per service and in total.
//!
//! Window `i` covers `[i·width, (i+1)·width)`. It stays open until the clock passes its end
//! plus the grace period, so messages that arrive late or out of order within the grace
//! are folded into the window they belong to (each message carries its own timestamp).
//! Messages for a window that has already closed are counted in
//! [`WindowCounters::late_dropped`] and dropped; messages too far in the future (a producer
//! whose clock is off) in [`WindowCounters::future_dropped`]. Closed windows go into a
//! bounded ring per series; the oldest fall off.
//!
//! Every series closes the same windows at the same time, and a window without traffic is
//! closed empty (rate 0, no CPU), so the series stay aligned and gap-free for the model.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tillstream_events::{RequestMetric, ResourceSample};

/// The series key of the sum over every service.
pub const TOTAL: &str = "*";

/// How windows are cut and kept.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    /// Width of one window.
    pub width: Duration,
    /// How long after a window's end messages for it are still folded in.
    pub grace: Duration,
    /// Closed windows kept per series.
    pub capacity: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            width: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            capacity: 8640,
        }
    }
}

/// One closed window of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowStats {
    pub start: DateTime<Utc>,
    pub requests: u64,
    /// Requests per second.
    pub rate: f64,
    pub errors: u64,
    /// Share of requests answered 5xx (0 without requests).
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Mean CPU of the samples in the window (percent of one core), None without samples.
    pub cpu_percent: Option<f64>,
}

/// What happened to the messages offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounters {
    pub accepted: u64,
    pub late_dropped: u64,
    pub future_dropped: u64,
}

/// Latencies in log-linear buckets: 16 per power of two, so a percentile is within 1/32
/// of the true value, in constant memory whatever the traffic.
#[derive(Debug, Clone, Default)]
struct LatencyHistogram {
    counts: Vec<u32>,
    total: u64,
}

const SUB_BUCKETS: u64 = 16;

impl LatencyHistogram {
    fn bucket(value: u64) -> usize {
        if value < SUB_BUCKETS {
            return value as usize;
        }
        let msb = 63 - u64::from(value.leading_zeros());
        let shift = msb - 4;
        ((shift + 1) * SUB_BUCKETS + ((value >> shift) - SUB_BUCKETS)) as usize
    }

    /// The middle of bucket `index`.
    fn value(index: usize) -> f64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index as f64;
        }
        let shift = index / SUB_BUCKETS - 1;
        let lower = (index % SUB_BUCKETS + SUB_BUCKETS) << shift;
        lower as f64 + ((1u64 << shift) as f64 - 1.0) / 2.0
    }

    fn record(&mut self, value: u64) {
        let index = Self::bucket(value);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
    }

    fn percentile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                return Some(Self::value(index));
            }
        }
        None
    }
}

#[derive(Debug, Default)]
struct OpenWindow {
    requests: u64,
    errors: u64,
    latency_us: LatencyHistogram,
    cpu_sum: f64,
    cpu_samples: u32,
}

impl OpenWindow {
    fn close(self, start: DateTime<Utc>, width: Duration) -> WindowStats {
        let seconds = width.as_secs_f64();
        WindowStats {
            start,
            requests: self.requests,
            rate: self.requests as f64 / seconds,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            p50_ms: self.latency_us.percentile(0.50).map(|us| us / 1000.0),
            p95_ms: self.latency_us.percentile(0.95).map(|us| us / 1000.0),
            cpu_percent: (self.cpu_samples > 0).then(|| self.cpu_sum / f64::from(self.cpu_samples)),
        }
    }
}

#[derive(Debug, Default)]
struct Series {
    open: BTreeMap<i64, OpenWindow>,
    closed: VecDeque<WindowStats>,
}

/// The windows of every series. Not thread-safe by itself: one ingest loop owns it.
#[derive(Debug)]
pub struct Windows {
    config: WindowConfig,
    width_ms: i64,
    series: HashMap<String, Series>,
    /// Index of the oldest window still open; None until the first message or close.
    first_open: Option<i64>,
    /// Oldest window a message was accepted for before the first close.
    earliest_seen: Option<i64>,
    counters: WindowCounters,
}

/// How far ahead of the oldest open window a message may be before it is taken for a
/// producer with a wrong clock.
const MAX_OPEN_WINDOWS: i64 = 360;

impl Windows {
    pub fn new(config: WindowConfig) -> Self {
        let width_ms = (config.width.as_millis() as i64).max(1);
        let mut series = HashMap::new();
        series.insert(TOTAL.to_owned(), Series::default());
        Windows {
            config,
            width_ms,
            series,
            first_open: None,
            earliest_seen: None,
            counters: WindowCounters::default(),
        }
    }

    pub fn config(&self) -> WindowConfig {
        self.config
    }

    pub fn counters(&self) -> WindowCounters {
        self.counters
    }

    fn index(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp_millis().div_euclid(self.width_ms)
    }

    fn start_of(&self, index: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(index * self.width_ms)
            .single()
            .unwrap_or_default()
    }

    /// The window a message at `at` belongs to, or None (counted) when that window has
    /// already closed or lies too far ahead. Before the first close nothing is late yet.
    fn admit(&mut self, at: DateTime<Utc>) -> Option<i64> {
        let index = self.index(at);
        let reference = match self.first_open {
            Some(first_open) if index < first_open => {
                self.counters.late_dropped += 1;
                return None;
            }
            Some(first_open) => first_open,
            None => *self.earliest_seen.get_or_insert(index),
        };
        if index >= reference + MAX_OPEN_WINDOWS {
            self.counters.future_dropped += 1;
            return None;
        }
        if self.first_open.is_none() {
            self.earliest_seen = Some(reference.min(index));
        }
        self.counters.accepted += 1;
        Some(index)
    }

    fn apply(&mut self, service: &str, index: i64, f: impl Fn(&mut OpenWindow)) {
        f(self
            .series
            .entry(TOTAL.to_owned())
            .or_default()
            .open
            .entry(index)
            .or_default());
        match self.series.get_mut(service) {
            Some(series) => f(series.open.entry(index).or_default()),
            None => {
                let mut series = Series::default();
                f(series.open.entry(index).or_default());
                self.series.insert(service.to_owned(), series);
            }
        }
    }

    /// Folds one request into its window. Returns whether it was accepted.
    pub fn add_request(&mut self, metric: &RequestMetric) -> bool {
        let Some(index) = self.admit(metric.at) else {
            return false;
        };
        let (error, latency) = (metric.is_error(), metric.latency_us);
        self.apply(&metric.service, index, |w| {
            w.requests += 1;
            w.errors += u64::from(error);
            w.latency_us.record(latency);
        });
        true
    }

    /// Folds one resource sample into its window. Returns whether it was accepted.
    pub fn add_resource(&mut self, sample: &ResourceSample) -> bool {
        let Some(index) = self.admit(sample.at) else {
            return false;
        };
        let cpu = sample.cpu_percent;
        self.apply(&sample.service, index, |w| {
            w.cpu_sum += cpu;
            w.cpu_samples += 1;
        });
        true
    }

    /// Closes every window whose end plus grace is at or before `now`, in every series,
    /// and returns how many windows closed per series.
    pub fn close_until(&mut self, now: DateTime<Utc>) -> usize {
        let grace_ms = self.config.grace.as_millis() as i64;
        // Window i may close once now >= (i + 1)·width + grace.
        let last_closable = (now.timestamp_millis() - grace_ms).div_euclid(self.width_ms) - 1;
        let first_open = match self.first_open {
            Some(first_open) => first_open,
            None => self
                .earliest_seen
                .map_or(last_closable + 1, |seen| seen.min(last_closable + 1)),
        };
        self.first_open = Some(first_open);
        if last_closable < first_open {
            return 0;
        }
        // After a long pause only the windows the ring can hold matter.
        let from = first_open.max(last_closable + 1 - self.config.capacity as i64);
        let (width, capacity) = (self.config.width, self.config.capacity);
        for index in from..=last_closable {
            let start = self.start_of(index);
            for series in self.series.values_mut() {
                let window = series.open.remove(&index).unwrap_or_default();
                series.closed.push_back(window.close(start, width));
                while series.closed.len() > capacity {
                    series.closed.pop_front();
                }
            }
        }
        for series in self.series.values_mut() {
            // Anything older than what just closed (only after a skipped stretch).
            series.open = series.open.split_off(&(last_closable + 1));
        }
        self.first_open = Some(last_closable + 1);
        (last_closable - from + 1) as usize
    }

    /// The closed windows of `service` (or [`TOTAL`]), oldest first.
    pub fn closed(&self, service: &str) -> Option<&VecDeque<WindowStats>> {
        self.series.get(service).map(|s| &s.closed)
    }

    /// The newest closed window of every series, the total (`*`) included.
    pub fn latest(&self) -> impl Iterator<Item = (&str, &WindowStats)> {
        self.series
            .iter()
            .filter_map(|(name, series)| series.closed.back().map(|w| (name.as_str(), w)))
    }

    /// Every series key except the total, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .series
            .keys()
            .filter(|k| k.as_str() != TOTAL)
            .cloned()
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: f64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt((1_800_000_000.0 * 1000.0 + seconds * 1000.0) as i64)
            .unwrap()
    }

    fn request(service: &str, at: f64, status: u16, latency_ms: u64) -> RequestMetric {
        RequestMetric {
            service: service.to_owned(),
            instance: "i1".to_owned(),
            operation: "GET /x".to_owned(),
            status,
            latency_us: latency_ms * 1000,
            bytes: 10,
            at: t(at),
        }
    }

    fn cpu(service: &str, at: f64, percent: f64) -> ResourceSample {
        ResourceSample {
            service: service.to_owned(),
            instance: "i1".to_owned(),
            cpu_percent: percent,
            rss_bytes: 1,
            at: t(at),
        }
    }

    fn windows() -> Windows {
        Windows::new(WindowConfig {
            width: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            capacity: 4,
        })
    }

    #[test]
    fn rate_errors_percentiles_and_cpu_per_service_and_total() {
        let mut w = windows();
        for i in 0..100u32 {
            w.add_request(&request(
                "gateway",
                0.05 * f64::from(i),
                200,
                u64::from(i) + 1,
            ));
        }
        for _ in 0..10 {
            w.add_request(&request("order", 1.0, 503, 50));
        }
        w.add_resource(&cpu("gateway", 2.0, 40.0));
        w.add_resource(&cpu("gateway", 7.0, 60.0));
        w.add_resource(&cpu("order", 3.0, 10.0));
        assert_eq!(w.close_until(t(14.9)), 0, "grace not over yet");
        assert_eq!(w.close_until(t(15.0)), 1);

        let gw = &w.closed("gateway").unwrap()[0];
        assert_eq!(gw.start, t(0.0));
        assert_eq!(gw.requests, 100);
        assert!((gw.rate - 10.0).abs() < 1e-9);
        assert_eq!(gw.error_rate, 0.0);
        let p50 = gw.p50_ms.unwrap();
        let p95 = gw.p95_ms.unwrap();
        assert!((p50 - 50.0).abs() <= 50.0 / 16.0, "p50 {p50}");
        assert!((p95 - 95.0).abs() <= 95.0 / 16.0, "p95 {p95}");
        assert_eq!(gw.cpu_percent, Some(50.0));

        let order = &w.closed("order").unwrap()[0];
        assert_eq!(order.errors, 10);
        assert_eq!(order.error_rate, 1.0);

        let total = &w.closed(TOTAL).unwrap()[0];
        assert_eq!(total.requests, 110);
        assert!((total.rate - 11.0).abs() < 1e-9);
        assert!((total.error_rate - 10.0 / 110.0).abs() < 1e-9);
        assert_eq!(total.cpu_percent, Some((40.0 + 60.0 + 10.0) / 3.0));
        assert_eq!(w.services(), vec!["gateway", "order"]);
    }

    #[test]
    fn late_within_grace_and_out_of_order_are_folded_in() {
        let mut w = windows();
        // Out of order: window 1 before window 0.
        assert!(w.add_request(&request("gateway", 12.0, 200, 1)));
        assert!(w.add_request(&request("gateway", 3.0, 200, 1)));
        // Window 0 ended at 10 s; at 13 s it is still open (grace 5 s).
        assert_eq!(w.close_until(t(13.0)), 0);
        assert!(w.add_request(&request("gateway", 9.9, 200, 1)));
        assert_eq!(w.close_until(t(15.0)), 1);
        // Now too late for window 0, still fine for window 1.
        assert!(!w.add_request(&request("gateway", 9.0, 200, 1)));
        assert!(w.add_request(&request("gateway", 11.0, 200, 1)));
        assert_eq!(w.close_until(t(25.0)), 1);
        let closed: Vec<u64> = w
            .closed("gateway")
            .unwrap()
            .iter()
            .map(|s| s.requests)
            .collect();
        assert_eq!(closed, vec![2, 2]);
        assert_eq!(
            w.counters(),
            WindowCounters {
                accepted: 4,
                late_dropped: 1,
                future_dropped: 0
            }
        );
    }

    #[test]
    fn quiet_windows_close_empty_and_the_ring_is_bounded() {
        let mut w = windows();
        w.add_request(&request("gateway", 1.0, 200, 1));
        w.add_resource(&cpu("gateway", 1.0, 30.0));
        assert_eq!(
            w.close_until(t(65.0)),
            4,
            "six windows passed, the ring holds four"
        );
        let closed = w.closed("gateway").unwrap();
        assert_eq!(closed.len(), 4);
        assert_eq!(closed[0].start, t(20.0));
        assert!(
            closed
                .iter()
                .all(|s| s.requests == 0 && s.cpu_percent.is_none())
        );
        assert!(
            !w.add_request(&request("gateway", 40.0, 200, 1)),
            "already closed"
        );
    }

    #[test]
    fn far_future_messages_are_dropped() {
        let mut w = windows();
        w.add_request(&request("gateway", 1.0, 200, 1));
        assert!(!w.add_request(&request("gateway", 10.0 * 400.0, 200, 1)));
        assert_eq!(w.counters().future_dropped, 1);
    }

    #[test]
    fn histogram_buckets_round_trip() {
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1000,
            123_456,
            u64::MAX / 2,
        ] {
            let mid = LatencyHistogram::value(LatencyHistogram::bucket(v));
            let err = (mid - v as f64).abs() / (v as f64).max(1.0);
            assert!(err <= 1.0 / 16.0, "{v} -> {mid}");
        }
    }
}
