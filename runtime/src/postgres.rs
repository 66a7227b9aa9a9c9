//! Postgres connections: pools, databases created on demand, readiness.

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
pub use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::ops::ReadinessCheck;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("invalid Postgres URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("Postgres URL `{0}` names no database")]
    NoDatabase(String),
    #[error("cannot reach Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create database `{name}`: {source}")]
    Create {
        name: String,
        #[source]
        source: sqlx::Error,
    },
}

/// A pool on `url`. Connections are made lazily and checked before use, so a process
/// starts while Postgres is still coming up and recovers after Postgres restarts.
pub fn pool(url: &str, max_connections: u32) -> Result<PgPool, PostgresError> {
    let options = PgConnectOptions::from_str(url).map_err(PostgresError::InvalidUrl)?;
    Ok(pool_options(max_connections).connect_lazy_with(options.disable_statement_logging()))
}

/// A pool like [`pool`] whose sessions plan each statement for the values it is given
/// (`plan_cache_mode = force_custom_plan`), for the read models' queries.
///
/// Why: sqlx prepares every statement once per connection, and after five executions
/// Postgres may keep a generic plan for it. A plan made while a table was small (a
/// sequential scan of `order_items`) then stays while the table grows a hundredfold, as
/// long as nothing re-analyzes it (with autovacuum off, nothing does); and optional filters
/// (`$1 IS NULL OR user_id = $1`) can only use an index in a plan for the actual values.
/// Planning these short queries costs far less than one wrong scan.
pub fn pool_planning_each_query(url: &str, max_connections: u32) -> Result<PgPool, PostgresError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(PostgresError::InvalidUrl)?
        .options([("plan_cache_mode", "force_custom_plan")]);
    Ok(pool_options(max_connections).connect_lazy_with(options.disable_statement_logging()))
}

/// sqlx pings each connection before handing it out (and again when it comes back): a
/// round trip more per query, kept so that a connection a Postgres restart broke is
/// replaced instead of failing a request, and a server gone silent ends in the acquire
/// timeout instead of a hung query (docs/performance.md, Fix 10).
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
}

/// Creates the database named in `url` when it does not exist, connecting to the
/// server's `postgres` database to do so. Safe to race with another process doing the same.
pub async fn ensure_database(url: &str) -> Result<(), PostgresError> {
    let (name, mut admin) = admin_connection(url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .map_err(PostgresError::Connect)?;
    if !exists {
        let create = format!("CREATE DATABASE {}", quote_ident(&name));
        if let Err(source) = sqlx::query(&create).execute(&mut admin).await {
            let raced = source
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !raced {
                return Err(PostgresError::Create { name, source });
            }
        }
        tracing::info!(database = %name, "created database");
    }
    let _ = admin.close().await;
    Ok(())
}

/// Drops the database named in `url`, disconnecting its sessions (used by tests).
pub async fn drop_database(url: &str) -> Result<(), PostgresError> {
    let (name, mut admin) = admin_connection(url).await?;
    let drop = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&name)
    );
    sqlx::query(&drop)
        .execute(&mut admin)
        .await
        .map_err(|source| PostgresError::Create { name, source })?;
    let _ = admin.close().await;
    Ok(())
}

/// The database name of `url`, and a connection to the same server's `postgres` database.
async fn admin_connection(url: &str) -> Result<(String, sqlx::PgConnection), PostgresError> {
    let options = PgConnectOptions::from_str(url).map_err(PostgresError::InvalidUrl)?;
    let name = options
        .get_database()
        .ok_or_else(|| PostgresError::NoDatabase(redact(url)))?
        .to_owned();
    let admin = options
        .database("postgres")
        .connect()
        .await
        .map_err(PostgresError::Connect)?;
    Ok((name, admin))
}

/// `url` with the database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> Result<String, PostgresError> {
    let mut parsed = url::Url::parse(url)
        .map_err(|e| PostgresError::InvalidUrl(sqlx::Error::Configuration(Box::new(e))))?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

/// `url` without its password, for logs and error messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<invalid url>".to_owned(),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Readiness: the pool can run `SELECT 1`.
pub struct PostgresReady {
    pub name: &'static str,
    pub pool: PgPool,
}

impl ReadinessCheck for PostgresReady {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|e| format!("Postgres unreachable: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_and_password_hidden() {
        let url = with_database("postgres://u:secret@127.0.0.1:5432/x", "reads").unwrap();
        assert_eq!(url, "postgres://u:secret@127.0.0.1:5432/reads");
        assert_eq!(redact(&url), "postgres://u:***@127.0.0.1:5432/reads");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
