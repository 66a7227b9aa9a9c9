/// Business rules an order command can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order was already placed")]
    AlreadyPlaced,
}
