//! The read models folded in memory, for a rebuild from the start of the log.
//!
//! Applying a million events one SQL statement at a time is bound by round trips; folding
//! them in memory and writing each table once with a few large `INSERT … SELECT FROM
//! UNNEST(…)` statements is bound by Postgres's bulk write speed instead. The fold here
//! must give exactly what [`crate::read_model::apply`] gives event by event: the rebuild
//! test compares both, table by table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use tillstream_events::{
    EventEnvelope, OrderEvent, OrderStatus, UserEvent, UserStatus, order, user,
};
use uuid::Uuid;

use crate::read_model::{ApplyError, PROJECTION};

/// Rows per bulk insert statement.
const CHUNK: usize = 10_000;

/// What folding one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    Applied,
    Duplicate,
    /// An earlier event of the aggregate is missing from the log.
    Gap {
        expected: u64,
    },
}

struct UserRow {
    email: String,
    username: String,
    full_name: String,
    role: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    order_count: i64,
    total_spent_cents: i64,
}

struct OrderRow {
    user_id: Uuid,
    status: &'static str,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    refund_due_cents: i64,
}

struct ItemRow {
    order_id: Uuid,
    line_no: i32,
    sku: String,
    name: String,
    quantity: i32,
    unit_price_cents: i64,
    line_total_cents: i64,
}

struct HistoryRow {
    order_id: Uuid,
    sequence: i64,
    event_type: String,
    actor_id: Option<String>,
    actor_role: Option<&'static str>,
    correlation_id: String,
    occurred_at: DateTime<Utc>,
    payload: Value,
}

#[derive(Default)]
struct StatsRow {
    placed: i64,
    paid: i64,
    delivered: i64,
    cancelled: i64,
    spent_cents: i64,
    refunds_cents: i64,
    last_order_at: Option<DateTime<Utc>>,
}

/// Every read-model table, in memory.
#[derive(Default)]
pub struct Image {
    users: HashMap<Uuid, UserRow>,
    orders: HashMap<Uuid, OrderRow>,
    items: Vec<ItemRow>,
    history: Vec<HistoryRow>,
    stats: HashMap<Uuid, StatsRow>,
    checkpoints: HashMap<(String, String), i64>,
}

fn uuid(raw: &str) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(raw).map_err(|_| ApplyError::BadId(raw.to_owned()))
}

impl Image {
    /// Folds one event in, with the projector's exactly-once rule on the aggregate's
    /// sequence. An error leaves the image as it was.
    pub fn fold(&mut self, event: &EventEnvelope) -> Result<Folded, ApplyError> {
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let current = self.checkpoints.get(&key).copied().unwrap_or(0);
        let sequence = event.sequence as i64;
        if sequence <= current {
            return Ok(Folded::Duplicate);
        }
        if sequence != current + 1 {
            return Ok(Folded::Gap {
                expected: current as u64 + 1,
            });
        }
        match event.aggregate_type.as_str() {
            user::AGGREGATE_TYPE => self.fold_user(event, event.decode()?)?,
            order::AGGREGATE_TYPE => self.fold_order(event, event.decode()?)?,
            other => return Err(ApplyError::UnknownAggregate(other.to_owned())),
        }
        self.checkpoints.insert(key, sequence);
        Ok(Folded::Applied)
    }

    fn fold_user(&mut self, event: &EventEnvelope, payload: UserEvent) -> Result<(), ApplyError> {
        let id = uuid(&event.aggregate_id)?;
        let version = event.sequence as i64;
        if let UserEvent::UserRegistered(e) = payload {
            if self.users.contains_key(&id) {
                return Err(ApplyError::Database(sqlx::Error::Protocol(format!(
                    "user {id} registered twice"
                ))));
            }
            self.users.insert(
                id,
                UserRow {
                    email: e.email,
                    username: e.username,
                    full_name: e.full_name,
                    role: e.role.as_str().to_owned(),
                    status: UserStatus::Active.as_str().to_owned(),
                    created_at: event.occurred_at,
                    updated_at: event.occurred_at,
                    version,
                    order_count: 0,
                    total_spent_cents: 0,
                },
            );
            return Ok(());
        }
        // Like the SQL UPDATEs: no row, no change.
        let Some(row) = self.users.get_mut(&id) else {
            return Ok(());
        };
        match payload {
            UserEvent::UserRegistered(_) => {}
            UserEvent::UserProfileUpdated(e) => row.full_name = e.full_name,
            UserEvent::UserRoleChanged(e) => row.role = e.to.as_str().to_owned(),
            UserEvent::UserDeactivated(_) => {
                row.status = UserStatus::Deactivated.as_str().to_owned()
            }
        }
        row.updated_at = event.occurred_at;
        row.version = version;
        Ok(())
    }

    fn fold_order(&mut self, event: &EventEnvelope, payload: OrderEvent) -> Result<(), ApplyError> {
        let id = uuid(&event.aggregate_id)?;
        let version = event.sequence as i64;
        let user_id = match &payload {
            OrderEvent::OrderPlaced(e) => {
                if self.orders.contains_key(&id) {
                    return Err(ApplyError::Database(sqlx::Error::Protocol(format!(
                        "order {id} placed twice"
                    ))));
                }
                uuid(&e.user_id)?
            }
            _ => match self.orders.get(&id) {
                Some(order) => order.user_id,
                // The SQL path fails here too (`SELECT user_id FROM orders` finds no row).
                None => return Err(ApplyError::Database(sqlx::Error::RowNotFound)),
            },
        };
        self.history.push(HistoryRow {
            order_id: id,
            sequence: version,
            event_type: event.event_type.clone(),
            actor_id: event.metadata.actor.id.clone(),
            actor_role: event.metadata.actor.role.map(|r| r.as_str()),
            correlation_id: event.metadata.correlation_id.clone(),
            occurred_at: event.occurred_at,
            payload: event.payload.clone(),
        });
        let mut stats = StatsRow::default();
        let status_change =
            |status: OrderStatus, refund: i64, orders: &mut HashMap<Uuid, OrderRow>| {
                if let Some(order) = orders.get_mut(&id) {
                    order.status = status.as_str();
                    order.refund_due_cents = refund;
                    order.updated_at = event.occurred_at;
                    order.version = version;
                }
            };
        match payload {
            OrderEvent::OrderPlaced(e) => {
                for (line, item) in e.items.into_iter().enumerate() {
                    self.items.push(ItemRow {
                        order_id: id,
                        line_no: line as i32 + 1,
                        sku: item.sku,
                        name: item.name,
                        quantity: item.quantity as i32,
                        unit_price_cents: item.unit_price_cents,
                        line_total_cents: item.line_total_cents,
                    });
                }
                self.orders.insert(
                    id,
                    OrderRow {
                        user_id,
                        status: OrderStatus::Placed.as_str(),
                        total_cents: e.total_cents,
                        currency: e.currency,
                        created_at: event.occurred_at,
                        updated_at: event.occurred_at,
                        version,
                        refund_due_cents: 0,
                    },
                );
                stats.placed = 1;
                stats.last_order_at = Some(event.occurred_at);
            }
            OrderEvent::OrderPaid(e) => {
                status_change(OrderStatus::Paid, 0, &mut self.orders);
                stats.paid = 1;
                stats.spent_cents = e.amount_cents;
            }
            OrderEvent::OrderShipped(_) => {
                status_change(OrderStatus::Shipped, 0, &mut self.orders);
                return Ok(());
            }
            OrderEvent::OrderDelivered(_) => {
                status_change(OrderStatus::Delivered, 0, &mut self.orders);
                stats.delivered = 1;
            }
            OrderEvent::OrderCancelled(e) => {
                status_change(OrderStatus::Cancelled, e.refund_due_cents, &mut self.orders);
                stats.cancelled = 1;
                stats.spent_cents = -e.refund_due_cents;
                stats.refunds_cents = e.refund_due_cents;
            }
        }
        if let Some(user) = self.users.get_mut(&user_id) {
            user.order_count += stats.placed;
            user.total_spent_cents += stats.spent_cents;
        }
        let row = self.stats.entry(user_id).or_default();
        row.placed += stats.placed;
        row.paid += stats.paid;
        row.delivered += stats.delivered;
        row.cancelled += stats.cancelled;
        row.spent_cents += stats.spent_cents;
        row.refunds_cents += stats.refunds_cents;
        row.last_order_at = row.last_order_at.max(stats.last_order_at);
        Ok(())
    }

    /// Rows the image will write, for progress reporting.
    pub fn rows(&self) -> usize {
        self.users.len()
            + self.orders.len()
            + self.items.len()
            + self.history.len()
            + self.stats.len()
            + self.checkpoints.len()
    }

    /// Writes every table with bulk inserts into the tables `conn`'s search path names
    /// (the shadow schema). `written` is told how many rows each statement wrote.
    pub async fn write(
        self,
        conn: &mut PgConnection,
        written: &(dyn Fn(u64) + Sync),
    ) -> Result<(), sqlx::Error> {
        let users: Vec<_> = self.users.into_iter().collect();
        for chunk in users.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO users (id, email, username, full_name, role, status, created_at, updated_at, version, \
                     order_count, total_spent_cents) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::bigint[], $11::bigint[])",
            )
            .bind(chunk.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.email.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.username.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.full_name.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.role.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.status.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.created_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.updated_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.version).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.order_count).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, u)| u.total_spent_cents).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            written(chunk.len() as u64);
        }
        let orders: Vec<_> = self.orders.into_iter().collect();
        for chunk in orders.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at, updated_at, version, \
                     refund_due_cents) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], \
                     $6::timestamptz[], $7::timestamptz[], $8::bigint[], $9::bigint[])",
            )
            .bind(chunk.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.user_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.status).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.total_cents).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.currency.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.created_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.updated_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.version).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.refund_due_cents).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            written(chunk.len() as u64);
        }
        for chunk in self.items.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents, line_total_cents) \
                 SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::bigint[])",
            )
            .bind(chunk.iter().map(|i| i.order_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|i| i.line_no).collect::<Vec<_>>())
            .bind(chunk.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|i| i.name.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|i| i.quantity).collect::<Vec<_>>())
            .bind(chunk.iter().map(|i| i.unit_price_cents).collect::<Vec<_>>())
            .bind(chunk.iter().map(|i| i.line_total_cents).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            written(chunk.len() as u64);
        }
        for chunk in self.history.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO order_history (order_id, sequence, event_type, actor_id, actor_role, correlation_id, \
                     occurred_at, payload) \
                 SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::timestamptz[], $8::jsonb[])",
            )
            .bind(chunk.iter().map(|h| h.order_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|h| h.sequence).collect::<Vec<_>>())
            .bind(chunk.iter().map(|h| h.event_type.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|h| h.actor_id.as_deref()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|h| h.actor_role).collect::<Vec<_>>())
            .bind(chunk.iter().map(|h| h.correlation_id.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|h| h.occurred_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|h| &h.payload).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            written(chunk.len() as u64);
        }
        let stats: Vec<_> = self.stats.into_iter().collect();
        for chunk in stats.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO user_order_stats (user_id, orders_placed, orders_paid, orders_delivered, orders_cancelled, \
                     total_spent_cents, refunds_due_cents, last_order_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
                     $6::bigint[], $7::bigint[], $8::timestamptz[])",
            )
            .bind(chunk.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| s.placed).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| s.paid).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| s.delivered).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| s.cancelled).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| s.spent_cents).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| s.refunds_cents).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| s.last_order_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            written(chunk.len() as u64);
        }
        let checkpoints: Vec<_> = self.checkpoints.into_iter().collect();
        for chunk in checkpoints.chunks(CHUNK) {
            sqlx::query(
                "INSERT INTO projection_checkpoints (projection, aggregate_type, aggregate_id, sequence) \
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[])",
            )
            .bind(PROJECTION)
            .bind(chunk.iter().map(|((t, _), _)| t.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|((_, id), _)| id.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s)| *s).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            written(chunk.len() as u64);
        }
        Ok(())
    }
}
