//! The JSON shapes of the REST API, with their OpenAPI schemas. Field names are
//! snake_case like the gRPC contract; money is integer minor units.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tillstream_projections::queries::{OrderItemRow, OrderWithItems, UserRow};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::operations::{OrderState, Session, Written};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
    Service,
}

impl From<tillstream_events::Role> for Role {
    fn from(role: tillstream_events::Role) -> Self {
        match role {
            tillstream_events::Role::Customer => Role::Customer,
            tillstream_events::Role::Admin => Role::Admin,
            tillstream_events::Role::Service => Role::Service,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub fn state(self) -> OrderState {
        match self {
            OrderStatus::Placed => OrderState::Placed,
            OrderStatus::Paid => OrderState::Paid,
            OrderStatus::Shipped => OrderState::Shipped,
            OrderStatus::Delivered => OrderState::Delivered,
            OrderStatus::Cancelled => OrderState::Cancelled,
        }
    }

    fn from_read_model(value: &str) -> Self {
        match value {
            "PAID" => OrderStatus::Paid,
            "SHIPPED" => OrderStatus::Shipped,
            "DELIVERED" => OrderStatus::Delivered,
            "CANCELLED" => OrderStatus::Cancelled,
            _ => OrderStatus::Placed,
        }
    }
}

/// The answer to every command: the aggregate and its version after it. Read
/// `GET /orders/{id}?min_version=<version>` to read your own write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandResult {
    pub id: String,
    pub version: u64,
}

impl From<Written> for CommandResult {
    fn from(written: Written) -> Self {
        CommandResult {
            id: written.id,
            version: written.version,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub username: String,
    pub password: String,
    pub full_name: String,
    /// A retry with the same key returns the first answer and writes nothing.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    pub expires_in_seconds: u64,
    pub user_id: String,
    pub role: Role,
}

impl From<Session> for LoginResponse {
    fn from(session: Session) -> Self {
        LoginResponse {
            access_token: session.access_token,
            expires_in_seconds: session.expires_in_seconds,
            user_id: session.user_id,
            role: session.role.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub full_name: String,
    /// `customer`, `admin` or `service`.
    pub role: String,
    /// `ACTIVE` or `DEACTIVATED`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sequence of the last event applied to this row.
    pub version: i64,
    pub order_count: i64,
    /// Paid minus refunded, in minor units.
    pub total_spent_cents: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            username: row.username,
            email: row.email,
            full_name: row.full_name,
            role: row.role,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
            order_count: row.order_count,
            total_spent_cents: row.total_spent_cents,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItem {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

impl From<OrderItemRow> for OrderItem {
    fn from(row: OrderItemRow) -> Self {
        OrderItem {
            sku: row.sku,
            name: row.name,
            quantity: row.quantity,
            unit_price_cents: row.unit_price_cents,
            line_total_cents: row.line_total_cents,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    /// Sum of the lines, in minor units of `currency`.
    pub total_cents: i64,
    /// ISO 4217.
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sequence of the last event applied to this row.
    pub version: i64,
}

impl From<OrderWithItems> for Order {
    fn from(o: OrderWithItems) -> Self {
        Order {
            id: o.order.id,
            user_id: o.order.user_id,
            status: OrderStatus::from_read_model(&o.order.status),
            items: o.items.into_iter().map(OrderItem::from).collect(),
            total_cents: o.order.total_cents,
            currency: o.order.currency,
            created_at: o.order.created_at,
            updated_at: o.order.updated_at,
            version: o.order.version,
        }
    }
}

/// One page of users, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OrderItemInput {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PlaceOrderRequest {
    /// Defaults to the signed-in user.
    pub user_id: Option<String>,
    pub items: Vec<OrderItemInput>,
    /// ISO 4217.
    pub currency: String,
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PayOrderRequest {
    pub payment_reference: String,
    pub amount_cents: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CancelOrderRequest {
    pub reason: Option<String>,
}

/// Which page of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 100 (default 20).
    pub first: Option<i32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

/// Which page of a user's orders, optionally in one state.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderListParams {
    pub status: Option<OrderStatus>,
    /// Page size, 1 to 100 (default 20).
    pub first: Option<i32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

/// Read your own write: wait (up to 2 s) until the read model has this version.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Wait up to 2 s for the read model to reach this version (from 1).
    #[param(minimum = 1)]
    pub min_version: Option<i64>,
}
