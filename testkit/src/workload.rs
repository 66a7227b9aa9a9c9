//! A synthetic log: customers and their orders through every lifecycle, as the relay would
//! publish them. Deterministic for a seed, so two runs (or a live projection and a rebuild)
//! see the same events.

use async_nats::jetstream::{self, context::PublishAckFuture};
use chrono::{DateTime, Duration, Utc};
use cqrs_es::DomainEvent;
use tillstream_events::{
    Actor, EventEnvelope, EventMetadata, Namespace, OrderCancelled, OrderDelivered, OrderEvent,
    OrderLine, OrderPaid, OrderPlaced, OrderShipped, Role, UserDeactivated, UserEvent,
    UserProfileUpdated, UserRegistered, UserRoleChanged, envelope::event_id, upcast, wire_payload,
};
use uuid::Uuid;

/// How much log to make.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub users: usize,
    pub orders_per_user: usize,
    pub seed: u64,
}

/// A small, fast pseudo-random generator (xorshift64*): enough for test data.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

impl Workload {
    /// Every event, in a commit order that interleaves aggregates but keeps each
    /// aggregate's own sequence order; `position` is the index from 1.
    pub fn events(&self) -> Vec<EventEnvelope> {
        let mut dice = Dice(self.seed.max(1));
        let base = DateTime::from_timestamp(1_760_000_000, 0).unwrap_or_else(Utc::now);
        // (time offset in ms, tie-breaker, event)
        let mut timed: Vec<(i64, u64, EventEnvelope)> = Vec::new();
        for u in 0..self.users {
            let user_id = uuid(&mut dice);
            let mut t = (u as i64) * 40 + dice.below(40) as i64;
            let mut user_seq = 0;
            let mut user_event = |t: i64, event: UserEvent, timed: &mut Vec<_>, dice: &mut Dice| {
                user_seq += 1;
                let env = envelope(
                    "user",
                    user_id,
                    user_seq,
                    &event.event_type(),
                    serde_json::to_value(&event),
                    base,
                    t,
                    Actor::user(user_id.to_string(), Role::Customer),
                );
                timed.push((t, dice.next(), env));
            };
            user_event(
                t,
                UserEvent::UserRegistered(UserRegistered {
                    email: format!("user{u}-{}@example.com", self.seed),
                    username: format!("user{u}"),
                    full_name: format!("User {u}"),
                    role: Role::Customer,
                }),
                &mut timed,
                &mut dice,
            );
            for o in 0..self.orders_per_user {
                let order_id = uuid(&mut dice);
                t += 1 + dice.below(200) as i64;
                let actor = Actor::user(user_id.to_string(), Role::Customer);
                let items: Vec<OrderLine> = (0..1 + dice.below(3))
                    .map(|i| {
                        let quantity = 1 + dice.below(4) as u32;
                        let unit = 100 + dice.below(9_900) as i64;
                        OrderLine {
                            sku: format!("SKU-{}", dice.below(500)),
                            name: format!("Item {i}"),
                            quantity,
                            unit_price_cents: unit,
                            line_total_cents: unit * quantity as i64,
                        }
                    })
                    .collect();
                let total: i64 = items.iter().map(|i| i.line_total_cents).sum();
                let mut events = vec![OrderEvent::OrderPlaced(OrderPlaced {
                    user_id: user_id.to_string(),
                    items,
                    currency: if o % 5 == 4 { "USD" } else { "EUR" }.to_owned(),
                    total_cents: total,
                    shipping_address: None,
                    note: String::new(),
                })];
                let paid = OrderEvent::OrderPaid(OrderPaid {
                    payment_reference: format!("psp-{}", dice.next() % 1_000_000),
                    amount_cents: total,
                });
                match dice.below(6) {
                    0 => {}
                    1 => events.push(OrderEvent::OrderCancelled(OrderCancelled {
                        reason: "changed my mind".into(),
                        refund_due_cents: 0,
                    })),
                    2 => events.extend([
                        paid,
                        OrderEvent::OrderCancelled(OrderCancelled {
                            reason: "out of stock".into(),
                            refund_due_cents: total,
                        }),
                    ]),
                    3 => events.push(paid),
                    4 => events.extend([
                        paid,
                        OrderEvent::OrderShipped(OrderShipped {
                            carrier: "DHL".into(),
                            tracking_number: format!("TRK{}", dice.below(1_000_000)),
                        }),
                    ]),
                    _ => events.extend([
                        paid,
                        OrderEvent::OrderShipped(OrderShipped {
                            carrier: "UPS".into(),
                            tracking_number: format!("TRK{}", dice.below(1_000_000)),
                        }),
                        OrderEvent::OrderDelivered(OrderDelivered {}),
                    ]),
                }
                let mut ot = t;
                for (i, event) in events.into_iter().enumerate() {
                    let name = event.event_type();
                    let env = envelope(
                        "order",
                        order_id,
                        i as u64 + 1,
                        &name,
                        serde_json::to_value(&event),
                        base,
                        ot,
                        actor.clone(),
                    );
                    timed.push((ot, dice.next(), env));
                    ot += 1 + dice.below(5_000) as i64;
                }
            }
            t += 1 + dice.below(100) as i64;
            match dice.below(10) {
                0 => user_event(
                    t,
                    UserEvent::UserProfileUpdated(UserProfileUpdated {
                        full_name: format!("User {u} Renamed"),
                    }),
                    &mut timed,
                    &mut dice,
                ),
                1 => user_event(
                    t,
                    UserEvent::UserRoleChanged(UserRoleChanged {
                        from: Role::Customer,
                        to: Role::Admin,
                    }),
                    &mut timed,
                    &mut dice,
                ),
                2 => user_event(
                    t,
                    UserEvent::UserDeactivated(UserDeactivated {
                        reason: "closed".into(),
                    }),
                    &mut timed,
                    &mut dice,
                ),
                _ => {}
            }
        }
        // Offsets grow along each aggregate, so sorting by time keeps every aggregate's
        // order while interleaving them; ties are broken at random.
        timed.sort_by_key(|(t, tie, _)| (*t, *tie));
        timed
            .into_iter()
            .enumerate()
            .map(|(i, (_, _, mut env))| {
                env.position = i as i64 + 1;
                env
            })
            .collect()
    }
}

fn uuid(dice: &mut Dice) -> Uuid {
    let bytes = (u128::from(dice.next()) << 64) | u128::from(dice.next());
    uuid::Builder::from_random_bytes(bytes.to_le_bytes()).into_uuid()
}

#[allow(clippy::too_many_arguments)]
fn envelope(
    aggregate_type: &str,
    id: Uuid,
    sequence: u64,
    event_type: &str,
    stored: Result<serde_json::Value, serde_json::Error>,
    base: DateTime<Utc>,
    offset_ms: i64,
    actor: Actor,
) -> EventEnvelope {
    let occurred_at = base + Duration::milliseconds(offset_ms);
    let aggregate_id = id.to_string();
    EventEnvelope {
        event_id: event_id(aggregate_type, &aggregate_id, sequence, occurred_at),
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id,
        sequence,
        position: 0,
        event_type: event_type.to_owned(),
        event_version: upcast::current_version(event_type).to_owned(),
        occurred_at,
        payload: wire_payload(event_type, stored.unwrap_or_default()),
        metadata: EventMetadata::new(format!("corr-{sequence}"), actor),
    }
}

/// Publishes `events` on the namespace's EVENTS stream as the relay does (subject
/// `events.<aggregate>.<id>`, `Nats-Msg-Id`), with up to `window` acks in flight.
pub async fn publish(
    js: &jetstream::Context,
    namespace: &Namespace,
    events: &[EventEnvelope],
    window: usize,
) -> Result<(), String> {
    let mut pending: std::collections::VecDeque<PublishAckFuture> =
        std::collections::VecDeque::with_capacity(window);
    for event in events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.message_id().as_str());
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let ack = js
            .publish_with_headers(
                namespace.event_subject(&event.aggregate_type, &event.aggregate_id),
                headers,
                body.into(),
            )
            .await
            .map_err(|e| e.to_string())?;
        pending.push_back(ack);
        if pending.len() >= window
            && let Some(ack) = pending.pop_front()
        {
            ack.await.map_err(|e| e.to_string())?;
        }
    }
    for ack in pending {
        ack.await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
