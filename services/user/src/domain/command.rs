use tillstream_events::Role;

/// What can be asked of a user aggregate. Who may ask is checked at the transport edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Open the account. Inputs are already validated ([`crate::domain::Registration`]).
    Register {
        email: String,
        username: String,
        full_name: String,
        role: Role,
    },
    UpdateProfile {
        full_name: String,
    },
    ChangeRole {
        role: Role,
    },
    Deactivate {
        reason: String,
    },
}
