/// Business rules a user command can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user is already registered")]
    AlreadyRegistered,
    #[error("user not found")]
    NotFound,
    #[error("user is deactivated")]
    Deactivated,
}
