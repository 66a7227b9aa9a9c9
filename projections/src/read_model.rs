//! The read models and how each event changes them. Every function runs inside the
//! projector's transaction; none commits.

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

fn uuid(raw: &str) -> Result<Uuid, ApplyError> {
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
    Ok(())
}
