//! Why a service could not start. Every `App::build` returns this one error type, and
//! every `App::run` a [`HostError`](crate::grpc_host::HostError).

use crate::grpc_host::HostError;
use crate::nats::NatsError;
use crate::postgres::PostgresError;
use crate::tokens::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Namespace(#[from] tillstream_events::subject::InvalidNamespace),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{0}")]
    Bootstrap(String),
}
