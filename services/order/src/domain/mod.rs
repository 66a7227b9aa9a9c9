//! The order aggregate: its commands, errors and the validation of an order's items.
//! Pure: no I/O, tested with cqrs-es's given/when/then framework.

mod aggregate;
mod command;
mod error;
mod placement;

pub use aggregate::Order;
pub use command::OrderCommand;
pub use error::OrderError;
pub use placement::{ItemInput, Placement, PlacementInput};
