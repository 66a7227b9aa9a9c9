//! The first admin, created from configuration on first start.
//!
//! Never a built-in password: either the operator configures one, or a random one is
//! generated and written to `<data_dir>/admin-password` (mode 0600). The registration
//! carries a fixed idempotency key, so several instances starting at once create one admin.

use std::path::Path;

use tillstream_events::{Actor, EventMetadata, Role};
use tillstream_runtime::event_store::{CommandBus, CommandError, Idempotency};

use crate::credentials::{self, CredentialRow, EMAIL_CONSTRAINT};
use crate::domain::{Registration, RegistrationInput, User, UserCommand};

const PASSWORD_FILE: &str = "admin-password";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("the configured admin is invalid: {0}")]
    Invalid(String),
    #[error("cannot write {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the first admin: {0}")]
    Store(String),
}

/// Creates the admin `email` unless an account with that email exists.
pub async fn ensure_admin(
    commands: &CommandBus<User>,
    pool: &sqlx::PgPool,
    data_dir: &Path,
    email: &str,
    password: Option<&str>,
) -> Result<(), BootstrapError> {
    let normalized = email.trim().to_lowercase();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM credentials WHERE email = $1)")
            .bind(&normalized)
            .fetch_one(pool)
            .await
            .map_err(|e| BootstrapError::Store(e.to_string()))?;
    if exists {
        return Ok(());
    }
    let password = match password {
        Some(p) => p.to_owned(),
        None => generate_password(data_dir)?,
    };
    let registration = Registration::parse(&RegistrationInput {
        email: &normalized,
        username: "admin",
        password: &password,
        full_name: "Administrator",
    })
    .map_err(|problems| {
        BootstrapError::Invalid(
            problems
                .into_iter()
                .map(|(field, problem)| format!("{field} {problem}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let hash = credentials::hash_password(password)
        .await
        .map_err(|e| BootstrapError::Store(e.to_string()))?;
    let user_id = uuid::Uuid::now_v7().to_string();
    let row = CredentialRow {
        user_id: user_id.clone(),
        email: registration.email.clone(),
        password_hash: hash,
    };
    let command = UserCommand::Register {
        email: registration.email.clone(),
        username: registration.username,
        full_name: registration.full_name,
        role: Role::Admin,
    };
    let meta = EventMetadata::new(
        uuid::Uuid::now_v7().to_string(),
        Actor::user("bootstrap", Role::Service),
    );
    let idempotency = Idempotency::new(
        "bootstrap",
        &format!("first-admin:{}", registration.email),
        b"",
    );
    match commands
        .execute(&user_id, command, &meta, idempotency.as_ref(), Some(&row))
        .await
    {
        Ok(committed) => {
            tracing::info!(email = %registration.email, user_id = %committed.id, "first admin ready");
            Ok(())
        }
        // Another instance created it between our check and our commit.
        Err(CommandError::Unique { constraint }) if constraint == EMAIL_CONSTRAINT => Ok(()),
        Err(other) => Err(BootstrapError::Store(other.to_string())),
    }
}

/// A random password, written to `<data_dir>/admin-password` for the operator.
fn generate_password(data_dir: &Path) -> Result<String, BootstrapError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| BootstrapError::Store(e.to_string()))?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = data_dir.join(PASSWORD_FILE);
    std::fs::create_dir_all(data_dir)
        .and_then(|()| tillstream_runtime::secret_file::write(&path, password.as_bytes()))
        .map_err(|source| BootstrapError::File {
            path: path.display().to_string(),
            source,
        })?;
    tracing::info!(path = %path.display(), "generated the first admin's password");
    Ok(password)
}
