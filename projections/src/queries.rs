//! Queries on the read models (`users`, `orders`, `order_items`), for the gateway and for
//! the command services' list and precondition checks. Every query is parameterised.
//!
//! Each [`Reads`] handle counts the SQL statements it sends ([`Reads::statements_issued`]),
//! so a test can bound what one request costs (no N+1 queries) without a server-side
//! extension.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub full_name: String,
    pub role: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub order_count: i64,
    pub total_spent_cents: i64,
}

/// One event of an order, as `order_history` keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderHistoryRow {
    pub order_id: Uuid,
    pub sequence: i64,
    pub event_type: String,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub correlation_id: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderItemRow {
    pub order_id: Uuid,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// An order with its lines.
#[derive(Debug, Clone)]
pub struct OrderWithItems {
    pub order: OrderRow,
    pub items: Vec<OrderItemRow>,
}

#[derive(Clone)]
pub struct Reads {
    pub(crate) pool: PgPool,
    statements: Arc<AtomicU64>,
}

const USER_COLUMNS: &str = "id, email, username, full_name, role, status, created_at, updated_at, version, order_count, total_spent_cents";

impl Reads {
    pub fn new(pool: PgPool) -> Self {
        Reads {
            pool,
            statements: Arc::default(),
        }
    }

    /// The pool, counting one statement.
    fn counted(&self) -> &PgPool {
        self.statements.fetch_add(1, Ordering::Relaxed);
        &self.pool
    }

    /// SQL statements sent through this handle (and its clones) so far.
    pub fn statements_issued(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Connects to the read-model database at `url`, creating it and applying the schema
    /// when needed (a reader may start before the projector).
    pub async fn connect(
        url: &str,
        pool_size: u32,
    ) -> Result<Self, tillstream_runtime::StartError> {
        tillstream_runtime::postgres::ensure_database(url).await?;
        let pool = tillstream_runtime::postgres::pool_planning_each_query(url, pool_size)?;
        crate::migrate(&pool).await?;
        Ok(Reads::new(pool))
    }

    /// Readiness of the read-model database.
    pub fn readiness(&self) -> tillstream_runtime::postgres::PostgresReady {
        tillstream_runtime::postgres::PostgresReady {
            name: "reads",
            pool: self.pool.clone(),
        }
    }

    /// Users newest first (UUIDv7 ids sort by creation time), strictly older than `before`.
    pub async fn users(
        &self,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<UserRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, email, username, full_name, role, status, created_at, updated_at, version, order_count, total_spent_cents FROM users \
             WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(self.counted())
        .await
    }

    /// The status of user `id` (`ACTIVE`, `DEACTIVATED`), or None when the read model does
    /// not have the user (yet).
    pub async fn user_status(&self, id: Uuid) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT status FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.counted())
            .await
    }

    /// The events of order `id`, oldest first.
    pub async fn order_history(&self, id: Uuid) -> Result<Vec<OrderHistoryRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, sequence, event_type, actor_id, actor_role, correlation_id, occurred_at, payload \
             FROM order_history WHERE order_id = $1 ORDER BY sequence",
        )
        .bind(id)
        .fetch_all(self.counted())
        .await
    }

    /// The events of every order in `ids`, oldest first per order, in one query.
    pub async fn order_histories(&self, ids: &[Uuid]) -> Result<Vec<OrderHistoryRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, sequence, event_type, actor_id, actor_role, correlation_id, occurred_at, payload \
             FROM order_history WHERE order_id = ANY($1) ORDER BY order_id, sequence",
        )
        .bind(ids)
        .fetch_all(self.counted())
        .await
    }

    /// The users in `ids` that exist, in one query.
    pub async fn users_by_ids(&self, ids: &[Uuid]) -> Result<Vec<UserRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(self.counted())
        .await
    }

    /// The newest `per_user` orders of each user in `user_ids`, newest first per user,
    /// with their lines: two queries whatever the number of users.
    pub async fn recent_orders_of(
        &self,
        user_ids: &[Uuid],
        per_user: i64,
    ) -> Result<Vec<OrderWithItems>, sqlx::Error> {
        let orders: Vec<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, total_cents, currency, created_at, updated_at, version FROM \
               (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY id DESC) AS rank \
                FROM orders WHERE user_id = ANY($1)) ranked \
             WHERE rank <= $2 ORDER BY user_id, id DESC",
        )
        .bind(user_ids)
        .bind(per_user)
        .fetch_all(self.counted())
        .await?;
        self.with_items(orders).await
    }

    pub async fn user(&self, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as("SELECT id, email, username, full_name, role, status, created_at, updated_at, version, order_count, total_spent_cents FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.counted())
            .await
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderWithItems>, sqlx::Error> {
        let order: Option<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, total_cents, currency, created_at, updated_at, version FROM orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.counted())
        .await?;
        match order {
            Some(order) => Ok(self.with_items(vec![order]).await?.pop()),
            None => Ok(None),
        }
    }

    /// Orders newest first (UUIDv7 ids sort by creation time), optionally of one user,
    /// strictly older than `before` when given. Returns up to `limit` orders.
    pub async fn orders(
        &self,
        user_id: Option<Uuid>,
        status: Option<&str>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<OrderWithItems>, sqlx::Error> {
        let orders: Vec<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, total_cents, currency, created_at, updated_at, version FROM orders \
             WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2) \
               AND ($3::uuid IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(user_id)
        .bind(status)
        .bind(before)
        .bind(limit)
        .fetch_all(self.counted())
        .await?;
        self.with_items(orders).await
    }

    /// Loads the lines of every order in one query.
    async fn with_items(&self, orders: Vec<OrderRow>) -> Result<Vec<OrderWithItems>, sqlx::Error> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
        let rows: Vec<OrderItemRow> = sqlx::query_as(
            "SELECT order_id, sku, name, quantity, unit_price_cents, line_total_cents FROM order_items \
             WHERE order_id = ANY($1) ORDER BY order_id, line_no",
        )
        .bind(&ids)
        .fetch_all(self.counted())
        .await?;
        let mut by_order: HashMap<Uuid, Vec<OrderItemRow>> = HashMap::new();
        for row in rows {
            by_order.entry(row.order_id).or_default().push(row);
        }
        Ok(orders
            .into_iter()
            .map(|order| OrderWithItems {
                items: by_order.remove(&order.id).unwrap_or_default(),
                order,
            })
            .collect())
    }
}

impl tillstream_runtime::gate::AccountStatus for Reads {
    fn is_active(
        &self,
        user_id: &str,
    ) -> futures::future::BoxFuture<'_, Result<Option<bool>, String>> {
        let id = Uuid::parse_str(user_id);
        Box::pin(async move {
            let Ok(id) = id else { return Ok(None) };
            self.user_status(id)
                .await
                .map(|status| status.map(|s| s == tillstream_events::UserStatus::Active.as_str()))
                .map_err(|e| e.to_string())
        })
    }
}
