//! The read models and how each event changes them. Every function runs inside the
//! projector's transaction; none commits.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use tillstream_events::{
    EventEnvelope, OrderEvent, OrderStatus, UserEvent, UserStatus, order, user,
};
use uuid::Uuid;

/// The name under which this projection keeps its checkpoints.
pub const PROJECTION: &str = "main";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("event payload does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("aggregate id `{0}` is not a UUID")]
    BadId(String),
    #[error("unknown aggregate type `{0}`")]
    UnknownAggregate(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub(crate) fn uuid(raw: &str) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(raw).map_err(|_| ApplyError::BadId(raw.to_owned()))
}

/// Applies one event to the read models.
pub async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
) -> Result<(), ApplyError> {
    match event.aggregate_type.as_str() {
        user::AGGREGATE_TYPE => apply_user(tx, event, event.decode()?).await,
        order::AGGREGATE_TYPE => apply_order(tx, event, event.decode()?).await,
        other => Err(ApplyError::UnknownAggregate(other.to_owned())),
    }
}

async fn apply_user(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
    payload: UserEvent,
) -> Result<(), ApplyError> {
    let id = uuid(&event.aggregate_id)?;
    match payload {
        UserEvent::UserRegistered(e) => {
            sqlx::query(
                "INSERT INTO users (id, email, username, full_name, role, status, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
            )
            .bind(id)
            .bind(&e.email)
            .bind(&e.username)
            .bind(&e.full_name)
            .bind(e.role.as_str())
            .bind(UserStatus::Active.as_str())
            .bind(event.occurred_at)
            .bind(event.sequence as i64)
            .execute(&mut **tx)
            .await?;
        }
        UserEvent::UserProfileUpdated(e) => {
            set_user_column(tx, event, id, "full_name", &e.full_name).await?;
        }
        UserEvent::UserRoleChanged(e) => {
            set_user_column(tx, event, id, "role", e.to.as_str()).await?;
        }
        UserEvent::UserDeactivated(_) => {
            set_user_column(tx, event, id, "status", UserStatus::Deactivated.as_str()).await?;
        }
    }
    Ok(())
}

/// Sets one text column of a user row, with its version and update time. `column` is one
/// of this module's literals, never input.
async fn set_user_column(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
    id: Uuid,
    column: &'static str,
    value: &str,
) -> Result<(), ApplyError> {
    let sql =
        format!("UPDATE users SET {column} = $2, updated_at = $3, version = $4 WHERE id = $1");
    sqlx::query(&sql)
        .bind(id)
        .bind(value)
        .bind(event.occurred_at)
        .bind(event.sequence as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves an order to `status` (recording `refund_due_cents`), with its version and time.
async fn set_order_status(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
    id: Uuid,
    status: OrderStatus,
    refund_due_cents: i64,
) -> Result<(), ApplyError> {
    sqlx::query(
        "UPDATE orders SET status = $2, refund_due_cents = $3, updated_at = $4, version = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(refund_due_cents)
    .bind(event.occurred_at)
    .bind(event.sequence as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_order(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
    payload: OrderEvent,
) -> Result<(), ApplyError> {
    let id = uuid(&event.aggregate_id)?;
    record_history(tx, event, id).await?;
    let stats = StatsChange::of(&payload);
    match payload {
        OrderEvent::OrderPlaced(e) => {
            sqlx::query(
                "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
            )
            .bind(id)
            .bind(uuid(&e.user_id)?)
            .bind(OrderStatus::Placed.as_str())
            .bind(e.total_cents)
            .bind(&e.currency)
            .bind(event.occurred_at)
            .bind(event.sequence as i64)
            .execute(&mut **tx)
            .await?;
            let line_nos: Vec<i32> = (1..=e.items.len() as i32).collect();
            let skus: Vec<&str> = e.items.iter().map(|i| i.sku.as_str()).collect();
            let names: Vec<&str> = e.items.iter().map(|i| i.name.as_str()).collect();
            let quantities: Vec<i32> = e.items.iter().map(|i| i.quantity as i32).collect();
            let prices: Vec<i64> = e.items.iter().map(|i| i.unit_price_cents).collect();
            let totals: Vec<i64> = e.items.iter().map(|i| i.line_total_cents).collect();
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents, line_total_cents) \
                 SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::bigint[])",
            )
            .bind(id)
            .bind(&line_nos)
            .bind(&skus)
            .bind(&names)
            .bind(&quantities)
            .bind(&prices)
            .bind(&totals)
            .execute(&mut **tx)
            .await?;
        }
        OrderEvent::OrderPaid(_) => set_order_status(tx, event, id, OrderStatus::Paid, 0).await?,
        OrderEvent::OrderShipped(_) => {
            set_order_status(tx, event, id, OrderStatus::Shipped, 0).await?
        }
        OrderEvent::OrderDelivered(_) => {
            set_order_status(tx, event, id, OrderStatus::Delivered, 0).await?
        }
        OrderEvent::OrderCancelled(e) => {
            set_order_status(tx, event, id, OrderStatus::Cancelled, e.refund_due_cents).await?
        }
    }
    stats.apply(tx, event, id).await
}

/// Appends the event to `order_history`.
async fn record_history(
    tx: &mut Transaction<'_, Postgres>,
    event: &EventEnvelope,
    id: Uuid,
) -> Result<(), ApplyError> {
    sqlx::query(
        "INSERT INTO order_history (order_id, sequence, event_type, actor_id, actor_role, correlation_id, occurred_at, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(event.sequence as i64)
    .bind(&event.event_type)
    .bind(&event.metadata.actor.id)
    .bind(event.metadata.actor.role.map(|r| r.as_str()))
    .bind(&event.metadata.correlation_id)
    .bind(event.occurred_at)
    .bind(&event.payload)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How one order event changes its customer's figures (`users` and `user_order_stats`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatsChange {
    pub(crate) placed: i64,
    pub(crate) paid: i64,
    pub(crate) delivered: i64,
    pub(crate) cancelled: i64,
    pub(crate) spent_cents: i64,
    pub(crate) refunds_cents: i64,
}

impl StatsChange {
    pub(crate) fn of(event: &OrderEvent) -> Self {
        match event {
            OrderEvent::OrderPlaced(_) => StatsChange {
                placed: 1,
                ..Default::default()
            },
            OrderEvent::OrderPaid(e) => StatsChange {
                paid: 1,
                spent_cents: e.amount_cents,
                ..Default::default()
            },
            OrderEvent::OrderShipped(_) => StatsChange::default(),
            OrderEvent::OrderDelivered(_) => StatsChange {
                delivered: 1,
                ..Default::default()
            },
            // A refunded payment is no longer money spent.
            OrderEvent::OrderCancelled(e) => StatsChange {
                cancelled: 1,
                spent_cents: -e.refund_due_cents,
                refunds_cents: e.refund_due_cents,
                ..Default::default()
            },
        }
    }

    async fn apply(
        self,
        tx: &mut Transaction<'_, Postgres>,
        event: &EventEnvelope,
        order_id: Uuid,
    ) -> Result<(), ApplyError> {
        if self == StatsChange::default() {
            return Ok(());
        }
        let user_id: Uuid = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_one(&mut **tx)
            .await?;
        sqlx::query(
            "UPDATE users SET order_count = order_count + $2, total_spent_cents = total_spent_cents + $3 WHERE id = $1",
        )
        .bind(user_id)
        .bind(self.placed)
        .bind(self.spent_cents)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO user_order_stats AS s (user_id, orders_placed, orders_paid, orders_delivered, orders_cancelled, \
                 total_spent_cents, refunds_due_cents, last_order_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $2 > 0 THEN $8 END) \
             ON CONFLICT (user_id) DO UPDATE SET \
                 orders_placed = s.orders_placed + EXCLUDED.orders_placed, \
                 orders_paid = s.orders_paid + EXCLUDED.orders_paid, \
                 orders_delivered = s.orders_delivered + EXCLUDED.orders_delivered, \
                 orders_cancelled = s.orders_cancelled + EXCLUDED.orders_cancelled, \
                 total_spent_cents = s.total_spent_cents + EXCLUDED.total_spent_cents, \
                 refunds_due_cents = s.refunds_due_cents + EXCLUDED.refunds_due_cents, \
                 last_order_at = GREATEST(s.last_order_at, EXCLUDED.last_order_at)",
        )
        .bind(user_id)
        .bind(self.placed)
        .bind(self.paid)
        .bind(self.delivered)
        .bind(self.cancelled)
        .bind(self.spent_cents)
        .bind(self.refunds_cents)
        .bind(event.occurred_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// An `order_items` row, as the set-based writers (the projector's batches, the rebuild's
/// image) collect them before one multi-row insert.
pub(crate) struct ItemRow {
    pub(crate) order_id: Uuid,
    pub(crate) line_no: i32,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) quantity: i32,
    pub(crate) unit_price_cents: i64,
    pub(crate) line_total_cents: i64,
}

impl ItemRow {
    /// The rows of a placed order's lines, numbered from 1.
    pub(crate) fn of_order(
        order_id: Uuid,
        lines: Vec<order::OrderLine>,
    ) -> impl Iterator<Item = ItemRow> {
        lines
            .into_iter()
            .enumerate()
            .map(move |(line, item)| ItemRow {
                order_id,
                line_no: line as i32 + 1,
                sku: item.sku,
                name: item.name,
                quantity: item.quantity as i32,
                unit_price_cents: item.unit_price_cents,
                line_total_cents: item.line_total_cents,
            })
    }
}

/// An `order_history` row, as the set-based writers collect them.
pub(crate) struct HistoryRow {
    pub(crate) order_id: Uuid,
    pub(crate) sequence: i64,
    pub(crate) event_type: String,
    pub(crate) actor_id: Option<String>,
    pub(crate) actor_role: Option<&'static str>,
    pub(crate) correlation_id: String,
    pub(crate) occurred_at: DateTime<Utc>,
    /// JSON text; Postgres reads it into `jsonb`, as it does the event-by-event path's value.
    pub(crate) payload: String,
}
