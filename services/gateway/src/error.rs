//! The one error type of the gateway, and the one place it becomes what a client sees:
//! a GraphQL error with `extensions.code` (and `extensions.details`), or an HTTP status
//! with the JSON body `{"error": {"code", "message", "details"}}` (shared/API.md).
//!
//! Internal failures are logged here with their cause and reach the client only as a
//! code and a plain message, never with internals.

use async_graphql::ErrorExtensions;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;
use utoipa::ToSchema;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldViolation {
    /// The field, as the request named it (`items[1].quantity`).
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    BadUserInput {
        message: String,
        details: Vec<FieldViolation>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        ApiError::BadUserInput {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// One bad field, named as the request named it.
    pub fn field(field: &str, description: &str) -> Self {
        ApiError::BadUserInput {
            message: format!("{field} {description}"),
            details: vec![FieldViolation {
                field: field.to_owned(),
                description: description.to_owned(),
            }],
        }
    }

    /// A read-model failure: logged in full, answered as UNAVAILABLE without internals.
    pub fn reads(error: sqlx::Error) -> Self {
        tracing::warn!(%error, "read model query failed");
        ApiError::Unavailable("the read models are unavailable; retry".to_owned())
    }

    /// The `code` clients branch on (API.md's list, plus the transport-level ones).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::BadUserInput { .. } => "BAD_USER_INPUT",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::Internal => "INTERNAL",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadUserInput { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn details(&self) -> &[FieldViolation] {
        match self {
            ApiError::BadUserInput { details, .. } => details,
            _ => &[],
        }
    }

    /// As a GraphQL error: `extensions.code`, and `extensions.details` for bad fields.
    pub fn graphql(self) -> async_graphql::Error {
        self.extend()
    }
}

/// A command service's answer: API.md's gRPC codes mapped to the gateway's.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted => {
                let details = status
                    .get_details_bad_request()
                    .map(|bad| {
                        bad.field_violations
                            .into_iter()
                            .map(|v| FieldViolation {
                                field: v.field,
                                description: v.description,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ApiError::BadUserInput { message, details }
            }
            Code::Unauthenticated => ApiError::Unauthenticated(message),
            Code::PermissionDenied => ApiError::Forbidden(message),
            Code::NotFound => ApiError::NotFound(message),
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => {
                ApiError::Conflict(message)
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                ApiError::Unavailable(message)
            }
            // A status the client made itself from a failed transport (the service died
            // mid-call, reset the connection) carries that error as its source; one the
            // service sent never does. The service may be restarting: the caller retries,
            // with the same idempotency key, since the command may have been applied.
            Code::Unknown | Code::Internal if std::error::Error::source(&status).is_some() => {
                tracing::warn!(code = ?status.code(), %message, "command service unreachable");
                ApiError::Unavailable(
                    "the command service did not answer; retry with the same idempotency key"
                        .to_owned(),
                )
            }
            code => {
                tracing::error!(?code, %message, "command service failed");
                ApiError::Internal
            }
        }
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        let code = self.code();
        let details: Vec<async_graphql::Value> = self
            .details()
            .iter()
            .map(|v| {
                let mut fields = async_graphql::indexmap::IndexMap::new();
                fields.insert(
                    async_graphql::Name::new("field"),
                    async_graphql::Value::from(v.field.clone()),
                );
                fields.insert(
                    async_graphql::Name::new("description"),
                    async_graphql::Value::from(v.description.clone()),
                );
                async_graphql::Value::Object(fields)
            })
            .collect();
        async_graphql::Error::new(self.to_string()).extend_with(move |_, e| {
            e.set("code", code);
            if !details.is_empty() {
                e.set("details", async_graphql::Value::List(details.clone()));
            }
        })
    }
}

/// The JSON body of every REST error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `UNAUTHENTICATED`, `FORBIDDEN`, `BAD_USER_INPUT`, `NOT_FOUND`, `CONFLICT`,
    /// `UNAVAILABLE`, `RATE_LIMITED`, `PAYLOAD_TOO_LARGE` or `INTERNAL`.
    pub code: String,
    pub message: String,
    /// One entry per bad field (`BAD_USER_INPUT` only; empty otherwise).
    pub details: Vec<FieldViolation>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                details: self.details().to_vec(),
            },
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the chaos test: the order service killed during a REST `POST /orders`
    /// made the gateway answer 500 INTERNAL; a client must be told to retry.
    #[test]
    fn a_transport_failure_is_unavailable_and_a_sent_unknown_is_internal() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let broken = tonic::Status::from_error(Box::new(reset));
        assert_eq!(broken.code(), Code::Unknown);
        assert_eq!(ApiError::from(broken).code(), "UNAVAILABLE");
        let sent = tonic::Status::unknown("the service said so");
        assert_eq!(ApiError::from(sent).code(), "INTERNAL");
    }
}
