use super::Placement;

/// What can be asked of an order aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Place the order. Items are already validated and priced ([`Placement`]).
    Place(Placement),
}
