//! Events of the `user` aggregate.

use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metadata::Role;

/// Aggregate type of users: the `aggregate_type` column and the `user` in `events.user.<id>`.
pub const AGGREGATE_TYPE: &str = "user";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserRegistered {
    pub email: String,
    pub username: String,
    pub full_name: String,
    pub role: Role,
}

/// The user changed their profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserProfileUpdated {
    pub full_name: String,
}

/// An admin changed the user's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserRoleChanged {
    pub from: Role,
    pub to: Role,
}

/// The account was closed (by an admin or the user). It can no longer log in, and its
/// tokens stop working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserDeactivated {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UserEvent {
    UserRegistered(UserRegistered),
    UserProfileUpdated(UserProfileUpdated),
    UserRoleChanged(UserRoleChanged),
    UserDeactivated(UserDeactivated),
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered(_) => "UserRegistered",
            UserEvent::UserProfileUpdated(_) => "UserProfileUpdated",
            UserEvent::UserRoleChanged(_) => "UserRoleChanged",
            UserEvent::UserDeactivated(_) => "UserDeactivated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}
