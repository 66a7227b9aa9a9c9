use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use tillstream_events::user::AGGREGATE_TYPE;
use tillstream_events::{
    Role, UserDeactivated, UserEvent, UserProfileUpdated, UserRegistered, UserRoleChanged,
    UserStatus,
};

use super::{UserCommand, UserError};

/// A user as the command side knows it: enough state to decide on commands and to answer
/// `GetUser` and `Login` without waiting for a projection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub registered: bool,
    pub email: String,
    pub username: String,
    pub full_name: String,
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
}

impl User {
    pub fn is_active(&self) -> bool {
        self.registered && self.status == Some(UserStatus::Active)
    }

    /// Changes other than registration need an existing, active account.
    fn expect_active(&self) -> Result<(), UserError> {
        if !self.registered {
            Err(UserError::NotFound)
        } else if !self.is_active() {
            Err(UserError::Deactivated)
        } else {
            Ok(())
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        match command {
            UserCommand::Register {
                email,
                username,
                full_name,
                role,
            } => {
                if self.registered {
                    return Err(UserError::AlreadyRegistered);
                }
                let event = UserEvent::UserRegistered(UserRegistered {
                    email,
                    username,
                    full_name,
                    role,
                });
                sink.write(event, self).await;
                Ok(())
            }
            UserCommand::UpdateProfile { full_name } => {
                self.expect_active()?;
                if full_name != self.full_name {
                    let event = UserEvent::UserProfileUpdated(UserProfileUpdated { full_name });
                    sink.write(event, self).await;
                }
                Ok(())
            }
            UserCommand::ChangeRole { role } => {
                self.expect_active()?;
                match self.role {
                    Some(from) if from != role => {
                        let event = UserEvent::UserRoleChanged(UserRoleChanged { from, to: role });
                        sink.write(event, self).await;
                    }
                    _ => {} // already in that role: nothing happens
                }
                Ok(())
            }
            UserCommand::Deactivate { reason } => {
                self.expect_active()?;
                sink.write(UserEvent::UserDeactivated(UserDeactivated { reason }), self)
                    .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserRegistered(e) => {
                self.registered = true;
                self.email = e.email;
                self.username = e.username;
                self.full_name = e.full_name;
                self.role = Some(e.role);
                self.status = Some(UserStatus::Active);
            }
            UserEvent::UserProfileUpdated(e) => self.full_name = e.full_name,
            UserEvent::UserRoleChanged(e) => self.role = Some(e.to),
            UserEvent::UserDeactivated(_) => self.status = Some(UserStatus::Deactivated),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn register() -> UserCommand {
        UserCommand::Register {
            email: "ada@example.com".into(),
            username: "ada".into(),
            full_name: "Ada Lovelace".into(),
            role: Role::Customer,
        }
    }

    fn registered() -> UserEvent {
        UserEvent::UserRegistered(UserRegistered {
            email: "ada@example.com".into(),
            username: "ada".into(),
            full_name: "Ada Lovelace".into(),
            role: Role::Customer,
        })
    }

    #[tokio::test]
    async fn a_new_user_registers() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when_async(register())
            .await
            .then_expect_events(vec![registered()]);
    }

    #[tokio::test]
    async fn a_user_cannot_register_twice() {
        TestFramework::<User>::with(())
            .given(vec![registered()])
            .when_async(register())
            .await
            .then_expect_error(UserError::AlreadyRegistered);
    }

    fn deactivated() -> UserEvent {
        UserEvent::UserDeactivated(UserDeactivated {
            reason: "bye".into(),
        })
    }

    async fn then(
        given: Vec<UserEvent>,
        command: UserCommand,
    ) -> cqrs_es::test::AggregateResultValidator<User> {
        TestFramework::<User>::with(())
            .given(given)
            .when_async(command)
            .await
    }

    #[tokio::test]
    async fn profile_role_and_deactivation_change_an_active_user() {
        then(
            vec![registered()],
            UserCommand::UpdateProfile {
                full_name: "Ada King".into(),
            },
        )
        .await
        .then_expect_events(vec![UserEvent::UserProfileUpdated(UserProfileUpdated {
            full_name: "Ada King".into(),
        })]);
        then(
            vec![registered()],
            UserCommand::ChangeRole { role: Role::Admin },
        )
        .await
        .then_expect_events(vec![UserEvent::UserRoleChanged(UserRoleChanged {
            from: Role::Customer,
            to: Role::Admin,
        })]);
        then(
            vec![registered()],
            UserCommand::Deactivate {
                reason: "bye".into(),
            },
        )
        .await
        .then_expect_events(vec![deactivated()]);
    }

    #[tokio::test]
    async fn unchanged_values_produce_no_event() {
        then(
            vec![registered()],
            UserCommand::ChangeRole {
                role: Role::Customer,
            },
        )
        .await
        .then_expect_events(vec![]);
        then(
            vec![registered()],
            UserCommand::UpdateProfile {
                full_name: "Ada Lovelace".into(),
            },
        )
        .await
        .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn deactivated_or_missing_users_cannot_change() {
        then(
            vec![registered(), deactivated()],
            UserCommand::ChangeRole { role: Role::Admin },
        )
        .await
        .then_expect_error(UserError::Deactivated);
        then(
            vec![registered(), deactivated()],
            UserCommand::Deactivate {
                reason: "again".into(),
            },
        )
        .await
        .then_expect_error(UserError::Deactivated);
        then(
            vec![],
            UserCommand::UpdateProfile {
                full_name: "x".into(),
            },
        )
        .await
        .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn deactivation_makes_a_user_inactive() {
        let mut user = User::default();
        user.apply(registered());
        user.apply(deactivated());
        assert!(!user.is_active());
    }

    #[test]
    fn registration_makes_an_active_user() {
        let mut user = User::default();
        user.apply(registered());
        assert!(user.is_active());
        assert_eq!(user.role, Some(Role::Customer));
    }
}
