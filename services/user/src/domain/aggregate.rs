use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use tillstream_events::user::AGGREGATE_TYPE;
use tillstream_events::{Role, UserEvent, UserRegistered, UserStatus};

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

    #[test]
    fn registration_makes_an_active_user() {
        let mut user = User::default();
        user.apply(registered());
        assert!(user.is_active());
        assert_eq!(user.role, Some(Role::Customer));
    }
}
