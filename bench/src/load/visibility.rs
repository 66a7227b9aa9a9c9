//! Command → visibility: orders placed over gRPC at a fixed offered rate (open loop: a
//! slow answer does not slow the sender), each read back through GraphQL with the
//! `minVersion` of its acknowledgement. The gateway answers once its read model has the
//! order, so "ack → answer" is the time the write took to become visible (plus one
//! GraphQL round trip).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

use super::driver::round2;
use super::scenarios::Target;

/// Most orders in flight at once; beyond it a tick is skipped and counted.
const IN_FLIGHT: usize = 2_000;

pub async fn measure(
    target: Arc<Target>,
    rate_per_second: f64,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let ack = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let visible = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_second));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut skipped = 0u64;
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        tick.tick().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let user = sent as usize;
        sent += 1;
        let (target, ack, visible, errors) =
            (target.clone(), ack.clone(), visible.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = target.place_and_see(user).await;
            drop(slot);
            match outcome {
                Ok((to_ack, to_visible)) => {
                    ack.lock()
                        .await
                        .saturating_record(to_ack.as_micros().max(1) as u64);
                    visible
                        .lock()
                        .await
                        .saturating_record(to_visible.as_micros().max(1) as u64);
                }
                Err(kind) => *errors.lock().await.entry(kind).or_default() += 1,
            }
        }));
    }
    let offered_window = started.elapsed();
    for task in tasks {
        task.await?;
    }
    let ack = ack.lock().await;
    let visible = visible.lock().await;
    let errors = errors.lock().await;
    let ms = |h: &Histogram<u64>, q: f64| round2(h.value_at_quantile(q) as f64 / 1000.0);
    let summary = |h: &Histogram<u64>| {
        json!({
            "count": h.len(),
            "p50": ms(h, 0.5), "p90": ms(h, 0.9), "p99": ms(h, 0.99),
            "max": round2(h.max() as f64 / 1000.0),
        })
    };
    let result = json!({
        "offered_orders_per_second": rate_per_second,
        "placed_orders_per_second": (sent as f64 / offered_window.as_secs_f64()).round(),
        "completed": visible.len(),
        "skipped_ticks_in_flight_cap": skipped,
        "errors": *errors,
        "errors_total": errors.values().sum::<u64>(),
        "place_order_ack_ms": summary(&ack),
        "ack_to_visible_ms": summary(&visible),
        "note": "GraphQL order(id, minVersion) after each PlaceOrder ack; the gateway re-reads its read model when the projector NOTIFYs that the order was applied, and every 100 ms as a fallback (without a listener: polling at 5 ms, doubling to 100 ms), until the version is there",
    });
    eprintln!(
        "visibility at {rate_per_second}/s: ack→visible p50 {} ms p99 {} ms, {} errors, {skipped} skipped",
        ms(&visible, 0.5),
        ms(&visible, 0.99),
        errors.values().sum::<u64>()
    );
    Ok(result)
}
