//! The request body size limit of the HTTP API: a body over the limit is answered with
//! 413 and the API's JSON error, before any handler or GraphQL parser sees it.
//!
//! The body is read (up to the limit) here and handed on in memory; GraphQL and REST
//! bodies are small JSON documents that the handlers would buffer anyway.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;

use crate::error::ApiError;

/// Most bytes a request body may have.
#[derive(Debug, Clone, Copy)]
pub struct MaxBody(pub usize);

pub async fn limit_body(
    State(MaxBody(max)): State<MaxBody>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return ApiError::PayloadTooLarge { limit: max }.into_response();
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge { limit: max }.into_response()
            } else {
                ApiError::bad_input("the request body could not be read").into_response()
            }
        }
    }
}
