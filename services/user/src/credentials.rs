//! Passwords: argon2id hashes in the `credentials` table, keyed by user id, unique by email.
//!
//! Hashing is CPU-bound (tens of milliseconds by design), so it runs on the blocking pool,
//! never on the async workers. A login for an unknown email still verifies against a dummy
//! hash, so response time does not tell whether an email is registered.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("email is already registered")]
    EmailTaken,
    #[error("credential store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes `password` with argon2id and a random salt.
pub async fn hash_password(password: String) -> Result<String, CredentialError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| CredentialError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| CredentialError::Hash(e.to_string()))?
}

/// Whether `password` matches `hash`; a malformed hash never matches.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash of a random string, verified against when an email is unknown.
async fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return hash;
    }
    let hash = hash_password(uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_or_default();
    DUMMY.get_or_init(|| hash)
}

/// The `credentials` table.
#[derive(Clone)]
pub struct Credentials {
    pool: PgPool,
}

impl Credentials {
    pub fn new(pool: PgPool) -> Self {
        Credentials { pool }
    }

    /// Reserves `email` for `user_id`. Exactly one of several concurrent reservations of
    /// one email succeeds (the unique index decides); the others get `EmailTaken`.
    pub async fn reserve(
        &self,
        user_id: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<(), CredentialError> {
        let result = sqlx::query(
            "INSERT INTO credentials (user_id, email, password_hash) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(email)
        .bind(password_hash)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "23505") =>
            {
                Err(CredentialError::EmailTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Releases a reservation whose registration did not commit.
    pub async fn release(&self, user_id: &str) -> Result<(), CredentialError> {
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user id whose password is `password` and email `email`, or None. Takes about as
    /// long for an unknown email as for a wrong password.
    pub async fn authenticate(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<String>, CredentialError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT user_id, password_hash FROM credentials WHERE email = $1")
                .bind(email.trim().to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some((user_id, hash)) => Ok(verify_password(password.to_owned(), hash)
                .await
                .then_some(user_id)),
            None => {
                let _ = verify_password(password.to_owned(), dummy_hash().await.to_owned()).await;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery".into(), hash.clone()).await);
        assert!(!verify_password("wrong horse battery".into(), hash).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }
}
