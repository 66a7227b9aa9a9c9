//! Rate limiting per client: a token bucket (GCRA, `governor`) per signed-in subject, or
//! per remote IP for anonymous callers and invalid tokens (so a garbage token does not buy
//! a fresh bucket). Over the limit a request is answered at once with 429, `Retry-After`
//! and the API's JSON error body; it never waits in a queue.
//!
//! The remote IP is the TCP peer: behind a proxy every anonymous caller shares the
//! proxy's bucket (forwarded headers are not trusted).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::Viewer;
use crate::error::ApiError;

/// How often idle buckets are forgotten.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Subject(String),
    Ip(IpAddr),
    Unknown,
}

/// The limiter; `None` inside when rate limiting is off.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<Client>>>,
    clock: DefaultClock,
}

impl RateLimit {
    /// `per_second` requests per second per client with bursts of `burst`; 0 turns the
    /// limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        RateLimit {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Whether `client` may go on now; otherwise how long until it may (at least 1 s, as
    /// `Retry-After` counts whole seconds).
    fn check(&self, client: &Client) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            u64::try_from(wait.as_millis().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1)
        })
    }

    /// Forgets idle buckets every minute, so memory follows the active clients.
    pub async fn housekeeping(self, shutdown: tillstream_runtime::Shutdown) {
        let Some(limiter) = self.limiter else { return };
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }
        }
    }
}

/// Middleware (after [`crate::auth::identify`]): 429 when the client is over its limit.
pub async fn limit(State(limit): State<RateLimit>, request: Request, next: Next) -> Response {
    let client = match request.extensions().get::<Viewer>() {
        Some(Viewer::Caller(caller)) => Client::Subject(caller.user_id.clone()),
        _ => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Client::Unknown, |info| Client::Ip(info.0.ip())),
    };
    match limit.check(&client) {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => {
            metrics::counter!("tillstream_gateway_rate_limited_total").increment(1);
            ApiError::RateLimited { retry_after_secs }.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_retry_time_per_client() {
        let limit = RateLimit::new(1, 3);
        let alice = Client::Subject("alice".to_owned());
        for _ in 0..3 {
            assert!(limit.check(&alice).is_ok());
        }
        let retry = limit.check(&alice).unwrap_err();
        assert!((1..=2).contains(&retry), "retry after {retry} s");
        assert!(
            limit.check(&Client::Subject("bob".to_owned())).is_ok(),
            "another client has its own bucket"
        );
        let off = RateLimit::new(0, 0);
        for _ in 0..1000 {
            assert!(off.check(&alice).is_ok());
        }
    }
}
