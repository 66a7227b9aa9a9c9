use tillstream_events::OrderStatus;

/// Business rules an order command can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order was already placed")]
    AlreadyPlaced,
    #[error("order not found")]
    NotFound,
    #[error("cannot {action} an order that is {}", .current.as_str())]
    IllegalTransition {
        action: &'static str,
        current: OrderStatus,
    },
    #[error("amount {paid} does not equal the order total {total}")]
    AmountMismatch { paid: i64, total: i64 },
}
