use super::Placement;

/// What can be asked of an order aggregate. Who may ask is checked at the transport edge;
/// whether the order's state allows it is checked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Place the order. Items are already validated and priced ([`Placement`]).
    Place(Placement),
    /// Pay it in full: `amount_cents` must equal the total.
    Pay {
        payment_reference: String,
        amount_cents: i64,
    },
    Ship {
        carrier: String,
        tracking_number: String,
    },
    Deliver,
    Cancel {
        reason: String,
    },
}
