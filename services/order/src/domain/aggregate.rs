use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use tillstream_events::order::AGGREGATE_TYPE;
use tillstream_events::{OrderEvent, OrderLine, OrderPlaced, OrderStatus};

use super::{OrderCommand, OrderError};

/// An order as the command side knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub user_id: String,
    pub status: Option<OrderStatus>,
    pub items: Vec<OrderLine>,
    pub currency: String,
    pub total_cents: i64,
}

impl Order {
    pub fn exists(&self) -> bool {
        self.status.is_some()
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: OrderCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), OrderError> {
        match command {
            OrderCommand::Place(placement) => {
                if self.exists() {
                    return Err(OrderError::AlreadyPlaced);
                }
                let event = OrderEvent::OrderPlaced(OrderPlaced {
                    user_id: placement.user_id,
                    items: placement.items,
                    currency: placement.currency,
                    total_cents: placement.total_cents,
                    shipping_address: placement.shipping_address,
                    note: placement.note,
                });
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::OrderPlaced(e) => {
                self.user_id = e.user_id;
                self.items = e.items;
                self.currency = e.currency;
                self.total_cents = e.total_cents;
                self.status = Some(OrderStatus::Placed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::domain::{ItemInput, Placement, PlacementInput};

    fn placement() -> Placement {
        Placement::parse(&PlacementInput {
            user_id: "0190a3c4-0000-7000-8000-000000000001",
            items: vec![
                ItemInput {
                    sku: "TEA-1",
                    name: "Green tea",
                    quantity: 3,
                    unit_price_cents: 450,
                },
                ItemInput {
                    sku: "MUG-2",
                    name: "Mug",
                    quantity: 1,
                    unit_price_cents: 1200,
                },
            ],
            currency: "EUR",
            shipping_address: None,
            note: "",
        })
        .unwrap()
    }

    fn placed() -> OrderEvent {
        let p = placement();
        OrderEvent::OrderPlaced(OrderPlaced {
            user_id: p.user_id,
            items: p.items,
            currency: p.currency,
            total_cents: 2550,
            shipping_address: None,
            note: String::new(),
        })
    }

    #[tokio::test]
    async fn an_order_with_two_items_is_placed_with_its_total() {
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when_async(OrderCommand::Place(placement()))
            .await
            .then_expect_events(vec![placed()]);
    }

    #[tokio::test]
    async fn an_order_is_placed_once() {
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when_async(OrderCommand::Place(placement()))
            .await
            .then_expect_error(OrderError::AlreadyPlaced);
    }
}
