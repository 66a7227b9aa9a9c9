//! Passwords: argon2id hashes in the `credentials` table, keyed by user id, unique by email.
//!
//! Hashing is CPU-bound (tens of milliseconds by design), so it runs on the blocking pool,
//! never on the async workers. A login for an unknown email still verifies against a dummy
//! hash, so response time does not tell whether an email is registered.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tillstream_runtime::event_store::Enlisted;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("too many password checks in progress")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// At most this many argon2 computations run at once (each takes ~19 MiB and a core for
/// tens of milliseconds); more wait their turn, for at most [`HASHING_QUEUE_WAIT`].
const MAX_CONCURRENT_HASHES: usize = 4;
const HASHING_QUEUE_WAIT: Duration = Duration::from_secs(5);

static HASHING: Semaphore = Semaphore::const_new(MAX_CONCURRENT_HASHES);

/// Runs `work` on the blocking pool once a hashing slot is free.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CredentialError> {
    let _slot = tokio::time::timeout(HASHING_QUEUE_WAIT, HASHING.acquire())
        .await
        .map_err(|_| CredentialError::Busy)?
        .map_err(|e| CredentialError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Hashes `password` with argon2id and a random salt.
pub async fn hash_password(password: String) -> Result<String, CredentialError> {
    hashing(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| CredentialError::Hash(e.to_string()))
    })
    .await?
}

/// Whether `password` matches `hash`; a malformed hash never matches.
pub async fn verify_password(password: String, hash: String) -> Result<bool, CredentialError> {
    hashing(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
}

/// A hash of a random string, verified against when an email is unknown.
async fn dummy_hash() -> Result<&'static str, CredentialError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_password(uuid::Uuid::new_v4().to_string()).await?;
    Ok(DUMMY.get_or_init(|| hash))
}

/// The unique index that makes an email belong to one account.
pub const EMAIL_CONSTRAINT: &str = "credentials_email_key";

/// A new account's credentials, written in the same transaction as its `UserRegistered`
/// event: two registrations racing for one email both try to commit, the unique index lets
/// exactly one through, and the other commits nothing at all (no event, no row).
pub struct CredentialRow {
    pub user_id: String,
    pub email: String,
    pub password_hash: String,
}

impl Enlisted for CredentialRow {
    fn write<'a>(&'a self, conn: &'a mut PgConnection) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO credentials (user_id, email, password_hash) VALUES ($1, $2, $3)",
            )
            .bind(&self.user_id)
            .bind(&self.email)
            .bind(&self.password_hash)
            .execute(conn)
            .await
            .map(|_| ())
        })
    }
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
                .await?
                .then_some(user_id)),
            None => {
                verify_password(password.to_owned(), dummy_hash().await?.to_owned()).await?;
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
        assert!(
            verify_password("correct horse battery".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse battery".into(), hash)
                .await
                .unwrap()
        );
        assert!(
            !verify_password("x".into(), "not a hash".into())
                .await
                .unwrap()
        );
    }
}
