//! Who is asking: the bearer token of a request (GraphQL or REST), verified with the public key,
//! and the rules of what each role may see.
//!
//! Customers see only themselves and their own orders (another customer's order reads as
//! missing, so its existence does not leak); admins and services see everything. A
//! deactivated account's tokens stop working as soon as the read model has the deactivation.

use axum::http::HeaderMap;
use tillstream_events::Role;
use tillstream_runtime::gate::{AccountStatus, still_active};
use tillstream_runtime::grpc::Caller;
use tillstream_runtime::tokens::TokenVerifier;
use tillstream_runtime::trace_context;
use uuid::Uuid;

use crate::error::ApiError;

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
        match headers.get(axum::http::header::AUTHORIZATION) {
            None => Viewer::Anonymous,
            Some(value) => Self::from_authorization(verifier, value.to_str().ok().unwrap_or("")),
        }
    }

    /// Reads an `authorization` value, `Bearer <jwt>` (a header, or the `authorization`
    /// field of a WebSocket's `connection_init` payload).
    pub fn from_authorization(verifier: &TokenVerifier, value: &str) -> Self {
        match value
            .strip_prefix("Bearer ")
            .map(|t| verifier.verify(t.trim()))
        {
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

/// The signed-in, active caller of `viewer`, or UNAUTHENTICATED.
pub async fn authenticate(
    accounts: &dyn AccountStatus,
    viewer: &Viewer,
) -> Result<Caller, ApiError> {
    let caller = match viewer {
        Viewer::Caller(caller) => caller.clone(),
        Viewer::Anonymous => {
            return Err(ApiError::Unauthenticated(
                "sign in: send `Authorization: Bearer <token>`".to_owned(),
            ));
        }
        Viewer::InvalidToken => {
            return Err(ApiError::Unauthenticated(
                "invalid or expired access token".to_owned(),
            ));
        }
    };
    if caller.role != Role::Service && Uuid::parse_str(&caller.user_id).is_err() {
        return Err(ApiError::Unauthenticated("invalid access token".to_owned()));
    }
    match still_active(accounts, &caller).await {
        Ok(true) => Ok(caller),
        Ok(false) => Err(ApiError::Unauthenticated(
            "the account is deactivated".to_owned(),
        )),
        Err(error) => {
            tracing::warn!(%error, "account status unavailable");
            Err(ApiError::Unavailable(
                "the read models are unavailable; retry".to_owned(),
            ))
        }
    }
}

/// Middleware: verifies the bearer token once per request and leaves the [`Viewer`] in
/// the request's extensions, for the rate limiter, GraphQL and the REST handlers.
pub async fn identify(
    axum::extract::State(verifier): axum::extract::State<TokenVerifier>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let viewer = Viewer::from_headers(&verifier, request.headers());
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

/// The viewer [`identify`] found (anonymous when the middleware did not run).
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Viewer>()
            .cloned()
            .unwrap_or(Viewer::Anonymous))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Forward {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Forward::from_headers(&parts.headers))
    }
}

/// Whether `caller` may see what belongs to `owner`.
pub fn may_see(caller: &Caller, owner: Uuid) -> bool {
    caller.may_act_for(&owner.to_string())
}

/// Read-your-writes hints from `x-min-version: <aggregate>:<id>:<version>` headers (one per
/// header line, or comma-separated): a read of that aggregate waits for that version, as
/// with the `minVersion` argument. Malformed entries are ignored.
#[derive(Debug, Clone, Default)]
pub struct MinVersions(Vec<(String, Uuid, i64)>);

impl MinVersions {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let entries = headers
            .get_all("x-min-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|entry| {
                let mut parts = entry.trim().splitn(3, ':');
                let aggregate = parts.next()?.to_owned();
                let id = Uuid::parse_str(parts.next()?).ok()?;
                let version = parts.next()?.parse().ok()?;
                Some((aggregate, id, version))
            })
            .collect();
        MinVersions(entries)
    }

    /// The version to wait for on aggregate `aggregate` `id`: the larger of `asked` and
    /// the header's hint.
    pub fn for_read(&self, aggregate: &str, id: Uuid, asked: Option<i64>) -> Option<i64> {
        self.0
            .iter()
            .filter(|(a, i, _)| a == aggregate && *i == id)
            .map(|(_, _, v)| *v)
            .chain(asked)
            .max()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for MinVersions {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(MinVersions::from_headers(&parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_version_headers_apply_to_their_aggregate_only() {
        let order = Uuid::now_v7();
        let other = Uuid::now_v7();
        let mut headers = HeaderMap::new();
        headers.append(
            "x-min-version",
            format!("order:{order}:3, user:{other}:2, garbage")
                .parse()
                .unwrap(),
        );
        headers.append("x-min-version", format!("order:{order}:5").parse().unwrap());
        let hints = MinVersions::from_headers(&headers);
        assert_eq!(hints.for_read("order", order, None), Some(5));
        assert_eq!(hints.for_read("order", order, Some(7)), Some(7));
        assert_eq!(hints.for_read("order", other, None), None);
        assert_eq!(hints.for_read("user", other, Some(1)), Some(2));
    }
}
