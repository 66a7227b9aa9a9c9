//! Postgres connections: pools, databases created on demand, readiness.

use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
pub use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection};

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
    pool_with_settings(url, max_connections, &[])
}

/// A pool like [`pool`] for the read models' queries, whose sessions never choose a
/// sequential scan where an index can answer (`enable_seqscan = off`).
///
/// Why: sqlx prepares every statement once per connection, and after five executions
/// Postgres may keep a generic plan for it, made from the statistics of that moment: it
/// does when that plan costs no more than planning afresh, as for the keyed reads
/// (`order(id)`, a customer's page). A plan made while a table was small (a sequential
/// scan of `order_items`) would then stay while the table grows a hundredfold, as long as
/// nothing re-analyzes it (with autovacuum off, nothing does). Every read-model query but
/// an admin's status-only list (which walks the primary key, newest first) finds its rows
/// through an index condition, so with sequential scans ruled out the generic plan is right
/// at any size. Until Fix 20 (docs/performance.md) these sessions planned every statement
/// afresh (`plan_cache_mode = force_custom_plan`), and planning came to cost five times
/// what running the statement did. Statements whose generic plan would cost more (one
/// limited by a parameter alone, such as an admin's unfiltered list) are still planned
/// each time, by Postgres's own choice. A query must not rely on its parameters to pick its plan: no
/// optional filters (`$1 IS NULL OR user_id = $1`), one statement per shape.
pub fn pool_for_indexed_reads(url: &str, max_connections: u32) -> Result<PgPool, PostgresError> {
    pool_with_settings(url, max_connections, &[("enable_seqscan", "off")])
}

/// How every connection here reaches the server of `url`: as sqlx reads the URL (and the
/// `PG*` variables), except that a server on this host (a loopback address, `localhost` or
/// a socket) is reached without TLS unless the URL or the environment says anything about
/// TLS (`sslmode`, a certificate or key: `ssl*` parameters, `PGSSLMODE`, `PGSSLCERT`,
/// `PGSSLKEY`, `PGSSLROOTCERT`).
///
/// sqlx, like libpq, tries TLS by default (`sslmode=prefer`) and verifies nothing then, so
/// on loopback it guards against no one while encrypting every round trip on both ends:
/// a quarter of a durable insert's throughput here, and a quarter of the median time from
/// an order's ack to its visibility at 1000 orders/s (docs/performance.md, Fix 25). A server whose `pg_hba.conf`
/// accepts only TLS on loopback (`hostssl`) needs `sslmode=require` in the URL, and so
/// does a loopback port that forwards to another host (a tunnel, a TCP proxy).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, PostgresError> {
    let options = PgConnectOptions::from_str(url).map_err(PostgresError::InvalidUrl)?;
    if tls_chosen(url) || !on_this_host(&options) {
        return Ok(options);
    }
    Ok(options.ssl_mode(PgSslMode::Disable))
}

/// Whether `url` or the environment says anything about TLS: a mode, or a certificate or
/// key to use (a client certificate login must keep TLS).
fn tls_chosen(url: &str) -> bool {
    let in_url = url::Url::parse(url)
        .is_ok_and(|parsed| parsed.query_pairs().any(|(key, _)| key.starts_with("ssl")));
    in_url
        || ["PGSSLMODE", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT"]
            .iter()
            .any(|name| std::env::var_os(name).is_some())
}

fn on_this_host(options: &PgConnectOptions) -> bool {
    if options.get_socket().is_some() {
        return true;
    }
    let host = options.get_host();
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A pool on `url` as [`pool`] builds it, each of its sessions with `settings` set.
fn pool_with_settings(
    url: &str,
    max_connections: u32,
    settings: &[(&str, &str)],
) -> Result<PgPool, PostgresError> {
    let mut options = connect_options(url)?;
    if !settings.is_empty() {
        options = options.options(settings.iter().copied());
    }
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

/// A connection idle for longer is checked (a round trip) before its next use; one used
/// more recently is trusted.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);
/// A connection older than this is closed rather than used again (sqlx's pools do the same).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long a statement on an [`OwnConnection`] may go unanswered before its loop gives up
/// on it (and on the connection): as long as the gRPC call that may be waiting for it.
pub const STATEMENT_DEADLINE: Duration = Duration::from_secs(30);

/// A connection of one's own, outside any pool, for a loop that sends one statement after
/// another: the relay, the projector, the event store's committer and announcer.
///
/// Why not the pool: sqlx pings a pooled connection before handing it out and again when
/// it comes back, so each use costs two round trips more, each waking a backend and a
/// worker (docs/performance.md, Fixes 13 and 14). This one is checked with a ping only
/// after [`TRUSTED_IDLE`] without use, is forgotten after a failure that may have broken
/// it ([`OwnConnection::check`]), and lives [`CONNECTION_LIFETIME`] at most; the next use
/// then connects afresh. The cost: a connection a Postgres restart broke less than a
/// second after its last use fails its next statement, where a pool would have found it
/// broken first.
pub struct OwnConnection {
    options: PgConnectOptions,
    /// How long making a connection (or checking an idle one) may take: the pool's
    /// acquire timeout.
    connect_timeout: Duration,
    held: Option<Held>,
}

struct Held {
    connection: PgConnection,
    used: Instant,
    made: Instant,
}

impl OwnConnection {
    /// Connects where `pool` does and as it does, with each `(name, value)` of `settings`
    /// set for the session (for example `("statement_timeout", "25s")`). Nothing is
    /// connected until the first [`get`](Self::get).
    pub fn like(pool: &PgPool, settings: &[(&str, &str)]) -> Self {
        let mut options = (*pool.connect_options()).clone();
        if !settings.is_empty() {
            options = options.options(settings.iter().copied());
        }
        OwnConnection {
            options,
            connect_timeout: pool.options().get_acquire_timeout(),
            held: None,
        }
    }

    /// The connection, and when it was made: a later instant than the last one means a
    /// new session, whose locks, settings and `LISTEN`s start afresh. Made now when there
    /// is none; checked first when idle for over [`TRUSTED_IDLE`]; replaced when older
    /// than [`CONNECTION_LIFETIME`].
    pub async fn get(&mut self) -> Result<(&mut PgConnection, Instant), sqlx::Error> {
        let kept = match self.held.take() {
            Some(held) if held.made.elapsed() >= CONNECTION_LIFETIME => {
                // Closed before the next is made: what the session holds (a relay's lock)
                // is free for the new one.
                let _ = within(self.connect_timeout, "closing", held.connection.close()).await;
                None
            }
            Some(mut held) => {
                let trusted = held.used.elapsed() < TRUSTED_IDLE
                    || within(self.connect_timeout, "checking", held.connection.ping())
                        .await
                        .is_ok();
                trusted.then_some(held)
            }
            None => None,
        };
        let held = match kept {
            Some(held) => held,
            None => self.connect().await?,
        };
        let held = self.held.insert(held);
        held.used = Instant::now();
        Ok((&mut held.connection, held.made))
    }

    async fn connect(&self) -> Result<Held, sqlx::Error> {
        let made = Instant::now();
        let connected = within(
            self.connect_timeout,
            "no connection to Postgres",
            PgConnection::connect_with(&self.options),
        )
        .await?;
        Ok(Held {
            connection: connected,
            used: made,
            made,
        })
    }

    /// Forgets the connection when `result` failed in a way that may have broken it
    /// ([`breaks_connection`]): the next [`get`](Self::get) connects afresh.
    pub fn check<T>(&mut self, result: &Result<T, sqlx::Error>) {
        if let Err(error) = result {
            self.failed(error);
        }
    }

    /// Forgets the connection when a statement's `error` may have broken it.
    pub fn failed(&mut self, error: &sqlx::Error) {
        if breaks_connection(error) {
            self.held = None;
        }
    }

    /// Closes the connection, if there is one, telling the server: what its session
    /// holds (advisory locks) is released at once.
    pub async fn close(&mut self) {
        if let Some(held) = self.held.take() {
            let _ = within(self.connect_timeout, "closing", held.connection.close()).await;
        }
    }
}

/// `operation`'s outcome, or a timeout error (an I/O error, so [`is_unavailable`]) when
/// Postgres has not answered within `deadline`: a server gone silent fails the operation
/// instead of hanging it.
pub async fn within<T>(
    deadline: Duration,
    what: &str,
    operation: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(deadline, operation)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{what} within {deadline:?}"),
            )))
        })
}

/// Whether `error` says the database could not be reached or used, rather than anything
/// about the statement.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // Connection-level failures reported by the server (admin shutdown, too many
        // connections, cannot connect now).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57") || code == "53300"
        }),
        // A connection that cannot be made or broke mid-conversation (a proxy that accepts
        // and closes answers the TLS request with garbage: a protocol error).
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        _ => false,
    }
}

/// Whether the server ended the connection with `error` (severity FATAL or PANIC).
pub fn is_fatal(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
        .is_some_and(|db| {
            matches!(
                db.severity(),
                sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
            )
        })
}

/// Whether a statement that failed with `error` may have left its connection unusable:
/// the connection failed (I/O, TLS, the protocol, a deadline passed mid-statement), or the
/// server ended the session or reported a connection exception (class 08). An error the
/// server answered with (a constraint, a cancelled statement) or one decoding the answer
/// leaves it usable.
pub fn breaks_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            is_fatal(error) || db.code().is_some_and(|code| code.starts_with("08"))
        }
        _ => false,
    }
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
    let options = connect_options(url)?;
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

    /// No `PGSSL*` variable is set where the tests run (one would decide every case below).
    #[test]
    fn tls_is_off_for_a_server_on_this_host_unless_asked_for() {
        if std::env::vars_os().any(|(name, _)| name.to_string_lossy().starts_with("PGSSL")) {
            eprintln!("skipped: a PGSSL* variable is set");
            return;
        }
        let mode = |url: &str| format!("{:?}", connect_options(url).unwrap().get_ssl_mode());
        for local in [
            "postgres://u@127.0.0.1:5432/x",
            "postgres://u@127.0.0.9/x",
            "postgres://u@localhost/x",
            "postgres://u@[::1]:5432/x",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
        ] {
            assert_eq!(mode(local), "Disable", "{local}");
        }
        assert_eq!(mode("postgres://u@db.internal:5432/x"), "Prefer");
        assert_eq!(mode("postgres://u@10.0.0.5/x"), "Prefer");
        assert_eq!(mode("postgres://u@127.0.0.1/x?sslmode=require"), "Require");
        assert_eq!(mode("postgres://u@127.0.0.1/x?sslmode=prefer"), "Prefer");
        assert_eq!(
            mode("postgres://u@localhost/x?ssl-mode=verify-full"),
            "VerifyFull"
        );
        // A client certificate keeps sqlx's default.
        assert_eq!(
            mode("postgres://u@127.0.0.1/x?sslcert=/c.pem&sslkey=/k.pem"),
            "Prefer"
        );
    }
}
