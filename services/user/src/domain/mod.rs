//! The user aggregate: its commands, errors and the validation of what a client sends.
//! Pure: no I/O, tested with cqrs-es's given/when/then framework.

mod aggregate;
mod command;
mod error;
mod registration;

pub use aggregate::User;
pub use command::UserCommand;
pub use error::UserError;
pub use registration::{Registration, RegistrationInput};

/// Bounds the transport edge also applies before any work (e.g. to refuse a huge password early).
pub mod registration_limits {
    pub use super::registration::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
}
