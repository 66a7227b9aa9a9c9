//! GraphQL object types, built from read-model rows.

use async_graphql::{ComplexObject, Context, Enum, ID, SimpleObject};
use chrono::{DateTime, Utc};

use async_graphql::connection::{Connection, Edge};
use uuid::Uuid;

use super::loaders::{Histories, RecentOrders, RecentOrdersOf, Users, load_error};
use crate::error::ApiError;
use crate::operations::{OrderState, PageRequest};
use tillstream_projections::queries::{OrderHistoryRow, OrderItemRow, OrderWithItems, UserRow};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
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

impl From<Role> for tillstream_events::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Customer => tillstream_events::Role::Customer,
            Role::Admin => tillstream_events::Role::Admin,
            Role::Service => tillstream_events::Role::Service,
        }
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Deactivated,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    /// The state a `status` filter asks for.
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

#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct User {
    #[graphql(skip)]
    pub key: Uuid,
    pub id: ID,
    pub username: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The user's version: the sequence of the last event applied to this row.
    pub version: i64,
    /// Orders placed.
    pub order_count: i64,
    /// Paid minus refunded, in minor units.
    pub total_spent_cents: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            key: row.id,
            id: ID(row.id.to_string()),
            username: row.username,
            email: row.email,
            full_name: row.full_name,
            role: match row.role.as_str() {
                "admin" => Role::Admin,
                "service" => Role::Service,
                _ => Role::Customer,
            },
            status: match row.status.as_str() {
                "DEACTIVATED" => UserStatus::Deactivated,
                _ => UserStatus::Active,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
            order_count: row.order_count,
            total_spent_cents: row.total_spent_cents,
        }
    }
}

/// One event in an order's life: who did what, when.
#[derive(SimpleObject, Clone, Debug)]
pub struct OrderEvent {
    pub sequence: i64,
    pub event_type: String,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub correlation_id: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: async_graphql::Json<serde_json::Value>,
}

impl From<OrderHistoryRow> for OrderEvent {
    fn from(row: OrderHistoryRow) -> Self {
        OrderEvent {
            sequence: row.sequence,
            event_type: row.event_type,
            actor_id: row.actor_id,
            actor_role: row.actor_role,
            correlation_id: row.correlation_id,
            occurred_at: row.occurred_at,
            payload: async_graphql::Json(row.payload),
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
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

#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Order {
    #[graphql(skip)]
    pub key: Uuid,
    #[graphql(skip)]
    pub user_key: Uuid,
    pub id: ID,
    pub user_id: ID,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    /// Sum of the lines, in minor units of `currency`.
    pub total_cents: i64,
    /// ISO 4217.
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The order's version: the sequence of the last event applied to this row.
    pub version: i64,
}

#[ComplexObject]
impl Order {
    /// The order's events, oldest first.
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderEvent>> {
        let events = ctx
            .data::<Histories>()?
            .load_one(self.key)
            .await
            .map_err(load_error)?;
        Ok(events.unwrap_or_default())
    }

    /// The customer who placed the order.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        ctx.data::<Users>()?
            .load_one(self.user_key)
            .await
            .map_err(load_error)
    }
}

#[ComplexObject]
impl User {
    /// The user's orders, newest first, as a Relay connection. Pages after the first
    /// (`after`) are read one user at a time; first pages are batched across users.
    #[graphql(complexity = "super::query::page_complexity(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Order>> {
        if after.is_some() {
            let caller = super::caller(ctx).await?;
            let page = super::operations(ctx)?
                .orders(
                    &caller,
                    Some(self.key),
                    None,
                    PageRequest {
                        first: Some(first),
                        after,
                    },
                )
                .await
                .map_err(ApiError::graphql)?;
            let mut connection = Connection::new(page.has_previous, page.has_next);
            connection.edges.extend(
                page.items
                    .into_iter()
                    .map(|(cursor, row)| Edge::new(cursor, Order::from(row))),
            );
            return Ok(connection);
        }
        let size = crate::operations::page_size(Some(first)).map_err(ApiError::graphql)?;
        let mut orders = ctx
            .data::<RecentOrdersOf>()?
            .load_one(RecentOrders {
                user_id: self.key,
                first: size,
            })
            .await
            .map_err(load_error)?
            .unwrap_or_default();
        let has_next = orders.len() as i64 > size;
        orders.truncate(usize::try_from(size).unwrap_or(0));
        let mut connection = Connection::new(false, has_next);
        connection.edges.extend(
            orders
                .into_iter()
                .map(|order| Edge::new(crate::operations::order_cursor(order.key), order)),
        );
        Ok(connection)
    }
}

impl From<OrderWithItems> for Order {
    fn from(o: OrderWithItems) -> Self {
        Order {
            key: o.order.id,
            user_key: o.order.user_id,
            id: ID(o.order.id.to_string()),
            user_id: ID(o.order.user_id.to_string()),
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

/// An aggregate's history from the event store (admins): who did what, when, why, and the
/// state it left behind.
#[derive(SimpleObject)]
pub struct AuditTrail {
    pub aggregate_type: String,
    pub id: ID,
    pub steps: Vec<AuditStep>,
}

/// One event of an audit trail and the aggregate's state after it.
#[derive(SimpleObject)]
pub struct AuditStep {
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    /// The event's payload as read today (older versions upcast).
    pub payload: async_graphql::Json<serde_json::Value>,
    /// The aggregate's state after this event.
    pub state: async_graphql::Json<serde_json::Value>,
}

impl From<tillstream_proto::audit::v1::AuditTrail> for AuditTrail {
    fn from(trail: tillstream_proto::audit::v1::AuditTrail) -> Self {
        let text = |s: String| (!s.is_empty()).then_some(s);
        let json = |s: &str| async_graphql::Json(serde_json::from_str(s).unwrap_or_default());
        AuditTrail {
            aggregate_type: trail.aggregate_type,
            id: ID(trail.id),
            steps: trail
                .steps
                .into_iter()
                .map(|step| AuditStep {
                    sequence: i64::try_from(step.sequence).unwrap_or(i64::MAX),
                    recorded_at: DateTime::parse_from_rfc3339(&step.recorded_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                    payload: json(&step.payload_json),
                    state: json(&step.state_json),
                    event_type: step.event_type,
                    event_version: step.event_version,
                    actor_id: text(step.actor_id),
                    actor_role: text(step.actor_role),
                    correlation_id: step.correlation_id,
                    causation_id: text(step.causation_id),
                })
                .collect(),
        }
    }
}

/// What the predictor expects and what it decided (admins): the latest forecast of every
/// service it has seen and its most recent scaling decisions.
#[derive(SimpleObject)]
pub struct LoadForecast {
    /// The latest forecast of each service, by service name.
    pub services: Vec<ServiceForecast>,
    /// The most recent scaling decisions, newest first.
    pub decisions: Vec<ScalingDecision>,
}

/// The predictor's latest forecast for one service.
#[derive(SimpleObject)]
pub struct ServiceForecast {
    pub service: String,
    /// End of the last window the forecast is based on.
    pub at: DateTime<Utc>,
    /// How far ahead the forecast looks, in seconds.
    pub horizon_seconds: i64,
    /// Requests per second measured over the last minute.
    pub measured_rate: f64,
    /// CPU (percent of one core, mean per instance) measured over the last minute.
    pub measured_cpu_percent: Option<f64>,
    /// Requests per second expected at the horizon.
    pub forecast_rate: f64,
    /// CPU expected at the horizon, when the service reports CPU.
    pub forecast_cpu_percent: Option<f64>,
    /// Mean absolute percentage error of recent rate forecasts (0.1 = 10%).
    pub rate_mape: Option<f64>,
    /// The same for CPU.
    pub cpu_mape: Option<f64>,
    /// 0..1: how much the model is trusted.
    pub confidence: f64,
    /// Replicas the predictor currently wants.
    pub desired_replicas: i64,
}

impl From<tillstream_events::LoadForecast> for ServiceForecast {
    fn from(f: tillstream_events::LoadForecast) -> Self {
        ServiceForecast {
            service: f.service,
            at: f.at,
            horizon_seconds: i64::try_from(f.horizon_secs).unwrap_or(i64::MAX),
            measured_rate: f.measured_rate,
            measured_cpu_percent: f.measured_cpu_percent,
            forecast_rate: f.forecast_rate,
            forecast_cpu_percent: f.forecast_cpu_percent,
            rate_mape: f.rate_mape,
            cpu_mape: f.cpu_mape,
            confidence: f.confidence,
            desired_replicas: i64::from(f.desired_replicas),
        }
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ScalingDirection {
    Out,
    In,
}

/// A decision of the predictor to change a service's replica count.
#[derive(SimpleObject)]
pub struct ScalingDecision {
    pub service: String,
    pub direction: ScalingDirection,
    pub from_replicas: i64,
    pub to_replicas: i64,
    /// Why, in words (`cpu 78% > 70% for 5m`, `forecast cpu 74% within 5m`, ...).
    pub reason: String,
    pub forecast_rate: f64,
    pub forecast_cpu_percent: f64,
    /// 0..1: how much the model was trusted when it decided.
    pub confidence: f64,
    pub at: DateTime<Utc>,
}

impl From<tillstream_events::ScalingDecision> for ScalingDecision {
    fn from(d: tillstream_events::ScalingDecision) -> Self {
        ScalingDecision {
            service: d.service,
            direction: match d.direction {
                tillstream_events::ScalingDirection::Out => ScalingDirection::Out,
                tillstream_events::ScalingDirection::In => ScalingDirection::In,
            },
            from_replicas: i64::from(d.from_replicas),
            to_replicas: i64::from(d.to_replicas),
            reason: d.reason,
            forecast_rate: d.forecast_rate,
            forecast_cpu_percent: d.forecast_cpu_percent,
            confidence: d.confidence,
            at: d.at,
        }
    }
}

impl From<crate::autoscale::LoadView> for LoadForecast {
    fn from(view: crate::autoscale::LoadView) -> Self {
        LoadForecast {
            services: view.forecasts.into_iter().map(Into::into).collect(),
            decisions: view.decisions.into_iter().map(Into::into).collect(),
        }
    }
}
