use tillstream_events::Role;

/// What can be asked of a user aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Open the account. Inputs are already validated ([`crate::domain::Registration`]).
    Register {
        email: String,
        username: String,
        full_name: String,
        role: Role,
    },
}
