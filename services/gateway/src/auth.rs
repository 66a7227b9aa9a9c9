//! Who is asking: the bearer token of a GraphQL request, verified with the public key,
//! and the rules of what each role may see.
//!
//! Customers see only themselves and their own orders (another customer's order reads as
//! missing, so its existence does not leak); admins and services see everything. A
//! deactivated account's tokens stop working as soon as the read model has the deactivation.

use async_graphql::Context;
use axum::http::HeaderMap;
use tillstream_events::Role;
use tillstream_projections::queries::Reads;
use tillstream_runtime::gate::still_active;
use tillstream_runtime::grpc::Caller;
use tillstream_runtime::tokens::TokenVerifier;
use tillstream_runtime::trace_context;
use uuid::Uuid;

use crate::graphql::coded;

/// The viewer of one request, put into the GraphQL request's data by the HTTP handler.
#[derive(Debug, Clone)]
pub enum Viewer {
    Anonymous,
    InvalidToken,
    Caller(Caller),
}

impl Viewer {
    /// Reads `authorization: Bearer <jwt>`.
    pub fn from_headers(verifier: &TokenVerifier, headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Viewer::Anonymous;
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
        match token.map(|t| verifier.verify(t.trim())) {
            Some(Ok(claims)) => Viewer::Caller(Caller::from(claims)),
            _ => Viewer::InvalidToken,
        }
    }
}

/// What the gateway passes on to the command services with each forwarded command: the
/// caller's own `authorization` header (the services verify it again), the request's
/// correlation id (`x-correlation-id` from the HTTP request, or a new one) and its trace
/// context (`traceparent`).
#[derive(Debug, Clone)]
pub struct Forward {
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    correlation_id: String,
    traceparent: Option<opentelemetry::trace::SpanContext>,
}

impl Forward {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let correlation_id = tillstream_runtime::grpc::correlation_id(
            &tonic::metadata::MetadataMap::from_headers(headers.clone()),
        );
        Forward {
            authorization,
            correlation_id,
            traceparent: trace_context::from_http(headers),
        }
    }

    /// `message` as a gRPC request carrying the caller's token, the correlation id and the
    /// trace context (the current span's when spans are exported, else the caller's).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        if let Ok(correlation) = self.correlation_id.parse() {
            request
                .metadata_mut()
                .insert("x-correlation-id", correlation);
        }
        let context = trace_context::outgoing(&tracing::Span::current(), self.traceparent.as_ref());
        if let Some(value) = context
            .as_ref()
            .and_then(trace_context::format)
            .and_then(|v| v.parse().ok())
        {
            request
                .metadata_mut()
                .insert(trace_context::TRACEPARENT, value);
        }
        request
    }
}

/// The signed-in, active caller of this request, or UNAUTHENTICATED.
pub async fn require(ctx: &Context<'_>) -> async_graphql::Result<Caller> {
    let caller = match ctx.data::<Viewer>()? {
        Viewer::Caller(caller) => caller.clone(),
        Viewer::Anonymous => {
            return Err(coded(
                "sign in: send `Authorization: Bearer <token>`",
                "UNAUTHENTICATED",
            ));
        }
        Viewer::InvalidToken => {
            return Err(coded("invalid or expired access token", "UNAUTHENTICATED"));
        }
    };
    if caller.role != Role::Service && Uuid::parse_str(&caller.user_id).is_err() {
        return Err(coded("invalid access token", "UNAUTHENTICATED"));
    }
    let reads: &Reads = ctx.data::<Reads>()?;
    match still_active(reads, &caller).await {
        Ok(true) => {}
        Ok(false) => return Err(coded("the account is deactivated", "UNAUTHENTICATED")),
        Err(error) => {
            tracing::warn!(%error, "account status unavailable");
            return Err(coded(
                "the read models are unavailable; retry",
                "UNAVAILABLE",
            ));
        }
    }
    Ok(caller)
}

/// Whether `caller` may see what belongs to `owner`.
pub fn may_see(caller: &Caller, owner: Uuid) -> bool {
    caller.may_act_for(&owner.to_string())
}
