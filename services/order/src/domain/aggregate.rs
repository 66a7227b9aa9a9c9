use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use tillstream_events::order::AGGREGATE_TYPE;
use tillstream_events::{
    OrderCancelled, OrderDelivered, OrderEvent, OrderLine, OrderPaid, OrderPlaced, OrderShipped,
    OrderStatus,
};

use super::{OrderCommand, OrderError};

/// An order as the command side knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub user_id: String,
    pub status: Option<OrderStatus>,
    pub items: Vec<OrderLine>,
    pub currency: String,
    pub total_cents: i64,
    pub refund_due_cents: i64,
}

impl Order {
    pub fn exists(&self) -> bool {
        self.status.is_some()
    }

    /// The current status, or NotFound for an order never placed.
    fn current(&self) -> Result<OrderStatus, OrderError> {
        self.status.ok_or(OrderError::NotFound)
    }

    /// Checks that `action` may happen in the current status.
    fn expect(
        &self,
        action: &'static str,
        allowed: &[OrderStatus],
    ) -> Result<OrderStatus, OrderError> {
        let current = self.current()?;
        if allowed.contains(&current) {
            Ok(current)
        } else {
            Err(OrderError::IllegalTransition { action, current })
        }
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
            OrderCommand::Pay {
                payment_reference,
                amount_cents,
            } => {
                self.expect("pay", &[OrderStatus::Placed])?;
                if amount_cents != self.total_cents {
                    return Err(OrderError::AmountMismatch {
                        paid: amount_cents,
                        total: self.total_cents,
                    });
                }
                let event = OrderEvent::OrderPaid(OrderPaid {
                    payment_reference,
                    amount_cents,
                });
                sink.write(event, self).await;
                Ok(())
            }
            OrderCommand::Ship {
                carrier,
                tracking_number,
            } => {
                self.expect("ship", &[OrderStatus::Paid])?;
                let event = OrderEvent::OrderShipped(OrderShipped {
                    carrier,
                    tracking_number,
                });
                sink.write(event, self).await;
                Ok(())
            }
            OrderCommand::Deliver => {
                self.expect("deliver", &[OrderStatus::Shipped])?;
                sink.write(OrderEvent::OrderDelivered(OrderDelivered {}), self)
                    .await;
                Ok(())
            }
            OrderCommand::Cancel { reason } => {
                let current = self.expect("cancel", &[OrderStatus::Placed, OrderStatus::Paid])?;
                let refund_due_cents = if current == OrderStatus::Paid {
                    self.total_cents
                } else {
                    0
                };
                let event = OrderEvent::OrderCancelled(OrderCancelled {
                    reason,
                    refund_due_cents,
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
            OrderEvent::OrderPaid(_) => self.status = Some(OrderStatus::Paid),
            OrderEvent::OrderShipped(_) => self.status = Some(OrderStatus::Shipped),
            OrderEvent::OrderDelivered(_) => self.status = Some(OrderStatus::Delivered),
            OrderEvent::OrderCancelled(e) => {
                self.status = Some(OrderStatus::Cancelled);
                self.refund_due_cents = e.refund_due_cents;
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

    fn paid() -> OrderEvent {
        OrderEvent::OrderPaid(OrderPaid {
            payment_reference: "pay-1".into(),
            amount_cents: 2550,
        })
    }

    fn shipped() -> OrderEvent {
        OrderEvent::OrderShipped(OrderShipped {
            carrier: "DHL".into(),
            tracking_number: "T1".into(),
        })
    }

    fn pay(amount_cents: i64) -> OrderCommand {
        OrderCommand::Pay {
            payment_reference: "pay-1".into(),
            amount_cents,
        }
    }

    fn ship() -> OrderCommand {
        OrderCommand::Ship {
            carrier: "DHL".into(),
            tracking_number: "T1".into(),
        }
    }

    fn cancel() -> OrderCommand {
        OrderCommand::Cancel {
            reason: "changed my mind".into(),
        }
    }

    fn illegal(action: &'static str, current: OrderStatus) -> OrderError {
        OrderError::IllegalTransition { action, current }
    }

    async fn expect_events(given: Vec<OrderEvent>, command: OrderCommand, events: Vec<OrderEvent>) {
        TestFramework::<Order>::with(())
            .given(given)
            .when_async(command)
            .await
            .then_expect_events(events);
    }

    async fn expect_error(given: Vec<OrderEvent>, command: OrderCommand, error: OrderError) {
        TestFramework::<Order>::with(())
            .given(given)
            .when_async(command)
            .await
            .then_expect_error(error);
    }

    #[tokio::test]
    async fn the_happy_path_is_placed_paid_shipped_delivered() {
        expect_events(vec![placed()], pay(2550), vec![paid()]).await;
        expect_events(vec![placed(), paid()], ship(), vec![shipped()]).await;
        expect_events(
            vec![placed(), paid(), shipped()],
            OrderCommand::Deliver,
            vec![OrderEvent::OrderDelivered(OrderDelivered {})],
        )
        .await;
    }

    #[tokio::test]
    async fn payment_must_equal_the_total() {
        expect_error(
            vec![placed()],
            pay(2549),
            OrderError::AmountMismatch {
                paid: 2549,
                total: 2550,
            },
        )
        .await;
    }

    #[tokio::test]
    async fn illegal_transitions_name_the_current_state() {
        expect_error(vec![placed()], ship(), illegal("ship", OrderStatus::Placed)).await;
        expect_error(
            vec![placed()],
            OrderCommand::Deliver,
            illegal("deliver", OrderStatus::Placed),
        )
        .await;
        expect_error(
            vec![placed(), paid()],
            pay(2550),
            illegal("pay", OrderStatus::Paid),
        )
        .await;
        expect_error(
            vec![placed(), paid(), shipped()],
            cancel(),
            illegal("cancel", OrderStatus::Shipped),
        )
        .await;
        let cancelled = OrderEvent::OrderCancelled(OrderCancelled {
            reason: "x".into(),
            refund_due_cents: 0,
        });
        expect_error(
            vec![placed(), cancelled],
            pay(2550),
            illegal("pay", OrderStatus::Cancelled),
        )
        .await;
        let message = illegal("ship", OrderStatus::Placed).to_string();
        assert_eq!(message, "cannot ship an order that is PLACED");
    }

    #[tokio::test]
    async fn commands_on_a_missing_order_are_refused() {
        expect_error(vec![], pay(1), OrderError::NotFound).await;
        expect_error(vec![], cancel(), OrderError::NotFound).await;
    }

    #[tokio::test]
    async fn cancelling_a_paid_order_records_the_refund_due() {
        let refund = |refund_due_cents| {
            vec![OrderEvent::OrderCancelled(OrderCancelled {
                reason: "changed my mind".into(),
                refund_due_cents,
            })]
        };
        expect_events(vec![placed()], cancel(), refund(0)).await;
        expect_events(vec![placed(), paid()], cancel(), refund(2550)).await;
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
