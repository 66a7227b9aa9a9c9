//! Subscription root: `orderUpdated(id)`, fed from the EVENTS stream.
//!
//! Each subscription reads the order subjects of the namespace with its own ordered,
//! ephemeral JetStream consumer (created before the current state is read, starting at
//! new messages, so no change falls between the two). For every event it waits, bounded,
//! until the read model has that version and sends the order as the read model has it —
//! the same shape and the same visibility rule as `order(id)`: customers receive only
//! their own orders. With `id`, the order as it is now comes first, then each change.

use async_graphql::{Context, ID, Result, Subscription};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tillstream_events::{EventEnvelope, Namespace};
use uuid::Uuid;

use super::types::Order;
use super::{caller, operations};
use crate::error::ApiError;
use crate::operations::parse_id;

/// Where order events are read: the JetStream context and the namespace.
#[derive(Clone)]
pub struct OrderEvents {
    js: async_nats::jetstream::Context,
    namespace: Namespace,
}

impl OrderEvents {
    pub fn new(client: async_nats::Client, namespace: Namespace) -> Self {
        OrderEvents {
            js: async_nats::jetstream::new(client),
            namespace,
        }
    }

    /// Events on `subject` from now on, in stream order.
    async fn follow(&self, subject: String) -> Result<BoxStream<'static, EventEnvelope>, ApiError> {
        let unavailable = |error: String| {
            tracing::warn!(%error, "order events unavailable");
            ApiError::Unavailable("order events are unavailable; retry".to_owned())
        };
        let stream = self
            .js
            .get_stream(self.namespace.events_stream())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subject,
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(messages
            .filter_map(|message| async move {
                let message = message.ok()?;
                serde_json::from_slice::<EventEnvelope>(&message.payload).ok()
            })
            .boxed())
    }
}

/// Longest an update waits for the read model to reach the event's version before the
/// subscriber is told UNAVAILABLE (longer than a query's 2 s: nobody is blocked on it).
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// An order each time it changes (all visible orders without `id`). With `id`, the
    /// order as it is now comes first; another customer's order is NOT_FOUND.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
    ) -> Result<BoxStream<'static, Result<Order>>> {
        let caller = caller(ctx).await?;
        let ops = operations(ctx)?.clone();
        let events = ctx.data::<OrderEvents>()?;
        let id = id
            .map(|id| parse_id(&id, "id"))
            .transpose()
            .map_err(ApiError::graphql)?;
        let subject = events.namespace.event_subject(
            "order",
            &id.map_or_else(|| "*".to_owned(), |id| id.to_string()),
        );
        let changes = events.follow(subject).await.map_err(ApiError::graphql)?;
        let current = match id {
            Some(id) => Some(
                ops.order(&caller, id, None)
                    .await
                    .map_err(ApiError::graphql)?
                    .ok_or_else(|| ApiError::NotFound(format!("no order {id}")).graphql())?,
            ),
            None => None,
        };
        let seen = current.as_ref().map_or(0, |o| o.order.version);
        let first = futures::stream::iter(current.map(|o| Ok(Order::from(o))));
        let updates = changes.filter_map(move |event| {
            let (ops, caller) = (ops.clone(), caller.clone());
            async move {
                let version = i64::try_from(event.sequence).ok()?;
                if version <= seen {
                    return None;
                }
                let order_id = Uuid::parse_str(&event.aggregate_id).ok()?;
                match ops
                    .order_within(&caller, order_id, Some(version), CATCH_UP_WAIT)
                    .await
                {
                    Ok(Some(order)) => Some(Ok(Order::from(order))),
                    Ok(None) => None, // not this caller's
                    Err(error) => Some(Err(error.graphql())),
                }
            }
        });
        Ok(first.chain(updates).boxed())
    }
}
