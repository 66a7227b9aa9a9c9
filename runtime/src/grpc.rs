//! The gRPC edge shared by the command services: who is calling, which request this is,
//! how validation failures are reported (`google.rpc.BadRequest` field violations), and
//! how event-store failures map to status codes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tillstream_events::{Actor, EventMetadata, Role};
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::event_store::{CommandError, Idempotency, MAX_IDEMPOTENCY_KEY_BYTES};
use crate::tokens::{Claims, TokenVerifier};
use crate::{Shutdown, trace_context};

/// Request metadata key carrying the correlation id across services.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The authenticated principal of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub role: Role,
}

impl Caller {
    /// Whether the caller may act on resources owned by `owner_id`.
    pub fn may_act_for(&self, owner_id: &str) -> bool {
        matches!(self.role, Role::Admin | Role::Service) || self.user_id == owner_id
    }
}

impl From<Claims> for Caller {
    fn from(claims: Claims) -> Self {
        Caller {
            user_id: claims.sub,
            role: claims.role,
        }
    }
}

/// Reads and verifies `authorization: Bearer <jwt>`.
pub fn authenticate(verifier: &TokenVerifier, metadata: &MetadataMap) -> Result<Caller, Status> {
    let header = metadata.get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("authorization metadata must be `Bearer <token>`")
        })?;
    verifier
        .verify(token.trim())
        .map(Caller::from)
        .map_err(|_| Status::unauthenticated("invalid or expired access token"))
}

/// Request metadata key naming one request (the causation id of its events).
pub const REQUEST_HEADER: &str = "x-request-id";

/// A short, printable metadata value.
fn header(metadata: &MetadataMap, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

/// The request's correlation id, or a new one when the caller sent none (or an unusable one).
pub fn correlation_id(metadata: &MetadataMap) -> String {
    header(metadata, CORRELATION_HEADER).unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Event metadata for a command from `caller` (None for open commands).
pub fn event_metadata(
    metadata: &MetadataMap,
    caller: Option<&Caller>,
    idempotency_key: &str,
) -> EventMetadata {
    let actor = caller.map_or_else(Actor::anonymous, |c| Actor::user(c.user_id.clone(), c.role));
    let mut meta = EventMetadata::new(correlation_id(metadata), actor);
    // A correlation id made up here shows in the request's log lines too.
    tracing::Span::current().record("correlation_id", meta.correlation_id.as_str());
    // The cause of a command's events is the command itself: the caller's request id when it
    // sends one (`x-request-id`), else a fresh id for this request.
    meta.causation_id =
        Some(header(metadata, REQUEST_HEADER).unwrap_or_else(|| uuid::Uuid::now_v7().to_string()));
    if !idempotency_key.is_empty() {
        meta.idempotency_key = Some(idempotency_key.to_owned());
    }
    // The trace the events belong to: this request's span when spans are exported (a child
    // of the caller's `traceparent`), else the caller's `traceparent` itself.
    let incoming = header(metadata, trace_context::TRACEPARENT)
        .as_deref()
        .and_then(trace_context::parse);
    if let Some(context) = trace_context::outgoing(&tracing::Span::current(), incoming.as_ref()) {
        meta.trace_id = Some(context.trace_id().to_string());
        meta.span_id = Some(context.span_id().to_string());
    }
    meta
}

/// The span of one gRPC request, named by its method and carrying its correlation id, as
/// a child of the caller's `traceparent` when there is one. Installed on every command
/// service's server ([`crate::grpc_host::GrpcHost::router`]).
pub fn request_span(request: &http::Request<()>) -> tracing::Span {
    let correlation = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128);
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %request.uri().path(),
        otel.kind = "server",
        rpc.system = "grpc",
        correlation_id = correlation,
    );
    trace_context::continue_from(&span, trace_context::from_http(request.headers()).as_ref());
    span
}

/// What every command carries besides its own fields: event metadata (correlation id,
/// actor, idempotency key) and its idempotency (key and request digest).
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub metadata: EventMetadata,
    pub idempotency: Option<Idempotency>,
}

impl CommandContext {
    /// The context of `request` from `caller` (None for open commands).
    pub fn of<T: tillstream_proto::KeyedRequest>(
        request: &tonic::Request<T>,
        caller: Option<&Caller>,
    ) -> Result<Self, Status> {
        let message = request.get_ref();
        Self::new(
            request.metadata(),
            caller,
            message.idempotency_key(),
            &message.unkeyed().encode_to_vec(),
        )
    }

    /// `unkeyed` is the request encoded without its idempotency key.
    pub fn new(
        metadata: &MetadataMap,
        caller: Option<&Caller>,
        key: &str,
        unkeyed: &[u8],
    ) -> Result<Self, Status> {
        Ok(CommandContext {
            idempotency: idempotency(caller, key, unkeyed)?,
            metadata: event_metadata(metadata, caller, key),
        })
    }
}

/// The idempotency of a command: its key scoped to the caller (`anonymous` for open
/// commands) and a digest of `request`, which must be the request encoded without its key.
pub fn idempotency(
    caller: Option<&Caller>,
    key: &str,
    request: &[u8],
) -> Result<Option<Idempotency>, Status> {
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(invalid_field(
            "idempotency_key",
            &format!("must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
        ));
    }
    let scope = caller.map_or("anonymous", |c| c.user_id.as_str());
    Ok(Idempotency::new(scope, key, request))
}

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;
const MAX_TEXT_CHARS: usize = 200;

/// A list request's page size: 0 means 20, at most 100.
pub fn page_size(raw: u32) -> Result<i64, Status> {
    match raw {
        0 => Ok(i64::from(DEFAULT_PAGE)),
        1..=MAX_PAGE => Ok(i64::from(raw)),
        _ => Err(invalid_field(
            "page_size",
            &format!("must be at most {MAX_PAGE}"),
        )),
    }
}

/// The opaque page token after the item `last` (lists are ordered by UUIDv7 id).
pub fn encode_page_token(last: uuid::Uuid) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// The id a page token continues after; None for the first page.
pub fn decode_page_token(token: &str) -> Result<Option<uuid::Uuid>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| invalid_field("page_token", "is not a token this API returned"))
}

/// A UUID field, in canonical form.
pub fn uuid_field(field: &str, raw: &str) -> Result<String, Status> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| invalid_field(field, "must be a UUID"))
}

/// A short free-text field: trimmed, at most 200 characters, no control characters;
/// `required` ones must not be empty.
pub fn short_text(field: &str, raw: &str, required: bool) -> Result<String, Status> {
    let value = raw.trim();
    if required && value.is_empty() {
        return Err(invalid_field(field, "must not be empty"));
    }
    if value.chars().count() > MAX_TEXT_CHARS || value.chars().any(char::is_control) {
        return Err(invalid_field(
            field,
            &format!("must be at most {MAX_TEXT_CHARS} characters, without control characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Collects field violations; [`Violations::into_result`] turns them into one
/// `INVALID_ARGUMENT` status listing every bad field.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// An `INVALID_ARGUMENT` status listing `(field, problem)` pairs from a domain parser.
    pub fn status<F: Into<String>, P: Into<String>>(
        problems: impl IntoIterator<Item = (F, P)>,
    ) -> Status {
        let mut violations = Violations::default();
        for (field, problem) in problems {
            violations.add(field, problem);
        }
        violations
            .into_result()
            .err()
            .unwrap_or_else(|| Status::invalid_argument("invalid request"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let summary = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {summary}"),
            ErrorDetails::with_bad_request(self.0),
        ))
    }
}

/// One violation as a status.
pub fn invalid_field(field: &str, description: &str) -> Status {
    Violations::status([(field, description)])
}

/// Maps an event-store failure to a status; `rejected` maps the aggregate's own errors.
pub fn command_status<E: std::error::Error>(
    error: CommandError<E>,
    rejected: impl FnOnce(E) -> Status,
) -> Status {
    match error {
        CommandError::Rejected(e) => rejected(e),
        conflict @ CommandError::Conflict { .. } => Status::aborted(conflict.to_string()),
        mismatch @ CommandError::IdempotencyMismatch { .. } => {
            invalid_field("idempotency_key", &mismatch.to_string())
        }
        CommandError::Unique { constraint } => {
            Status::already_exists(format!("already exists ({constraint})"))
        }
        CommandError::Unavailable(detail) => {
            tracing::warn!(%detail, "event store unavailable");
            Status::unavailable(
                "the event store is unavailable; retry with the same idempotency key",
            )
        }
        CommandError::Internal(detail) => {
            tracing::error!(%detail, "event store error");
            Status::internal("internal error")
        }
    }
}

/// Serves a tonic router on `listener` until `shutdown` fires. Accepted connections send
/// without delay (`TCP_NODELAY`, tonic's own default, which a listener handed to it does
/// not get): a response's later frames do not wait for the peer's acknowledgement of the
/// first.
pub async fn serve(
    router: crate::grpc_host::GrpcRouter,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
}
