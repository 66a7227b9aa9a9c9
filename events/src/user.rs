//! Events of the `user` aggregate.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::metadata::Role;

/// Aggregate type of users: the `aggregate_type` column and the `user` in `events.user.<id>`.
pub const AGGREGATE_TYPE: &str = "user";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    Active,
    Deactivated,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "ACTIVE",
            UserStatus::Deactivated => "DEACTIVATED",
        }
    }
}

/// A person opened an account. The password never appears in an event: its hash lives in
/// the user service's credential table, so the log can be handed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub email: String,
    pub username: String,
    pub full_name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered(UserRegistered),
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered(_) => "UserRegistered".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
