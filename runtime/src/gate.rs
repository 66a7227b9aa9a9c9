//! Who may call: the token check shared by every gRPC service.
//!
//! A tonic interceptor ([`Gate::interceptor`]) verifies the bearer token when one is sent
//! (a bad token is refused at once with UNAUTHENTICATED) and leaves the [`Caller`] in the
//! request's extensions. Handlers of protected methods then ask [`Gate::caller`], which
//! requires a caller and checks the account is still active: a deactivated user's tokens
//! stop working as soon as the read model knows (within [`ACCOUNT_STATUS_TTL`], for which
//! [`CachedAccountStatus`] remembers an answer), without waiting for them to expire.
//! Open methods (`RegisterUser`, `Login`) simply do not ask.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tillstream_events::Role;
use tonic::{Request, Status};

use crate::grpc::Caller;
use crate::tokens::TokenVerifier;

/// Whether an account may still act. Implemented on the read model.
pub trait AccountStatus: Send + Sync + 'static {
    /// `Some(true)` active, `Some(false)` deactivated, `None` not known (yet).
    fn is_active(&self, user_id: &str) -> BoxFuture<'_, Result<Option<bool>, String>>;
}

/// How long [`CachedAccountStatus`] trusts an answer: a deactivation bites at most this
/// long after the read model has it.
pub const ACCOUNT_STATUS_TTL: Duration = Duration::from_secs(1);
/// Accounts [`CachedAccountStatus`] remembers at most.
const ACCOUNT_STATUS_CAPACITY: usize = 100_000;

/// An [`AccountStatus`] that remembers each known answer for [`ACCOUNT_STATUS_TTL`], so a
/// busy caller's requests do not each cost a read-model query. An unknown account
/// (`None`) is asked again every time: it may be projected any moment.
pub struct CachedAccountStatus<A> {
    inner: A,
    answers: quick_cache::sync::Cache<String, (bool, Instant)>,
    ttl: Duration,
}

impl<A: AccountStatus> CachedAccountStatus<A> {
    pub fn new(inner: A) -> Self {
        Self::with_ttl(inner, ACCOUNT_STATUS_TTL)
    }

    pub fn with_ttl(inner: A, ttl: Duration) -> Self {
        CachedAccountStatus {
            inner,
            answers: quick_cache::sync::Cache::new(ACCOUNT_STATUS_CAPACITY),
            ttl,
        }
    }
}

impl<A: AccountStatus> AccountStatus for CachedAccountStatus<A> {
    fn is_active(&self, user_id: &str) -> BoxFuture<'_, Result<Option<bool>, String>> {
        if let Some((active, at)) = self.answers.get(user_id)
            && at.elapsed() < self.ttl
        {
            return Box::pin(std::future::ready(Ok(Some(active))));
        }
        let user_id = user_id.to_owned();
        Box::pin(async move {
            let asked = Instant::now();
            let answer = self.inner.is_active(&user_id).await?;
            if let Some(active) = answer {
                self.answers.insert(user_id, (active, asked));
            }
            Ok(answer)
        })
    }
}

#[derive(Clone)]
pub struct Gate {
    verifier: TokenVerifier,
    accounts: Arc<dyn AccountStatus>,
}

impl Gate {
    pub fn new(verifier: TokenVerifier, accounts: Arc<dyn AccountStatus>) -> Self {
        Gate { verifier, accounts }
    }

    /// The interceptor to wrap a service in.
    pub fn interceptor(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let verifier = self.verifier.clone();
        move |mut request: Request<()>| {
            if request.metadata().contains_key("authorization") {
                let caller = crate::grpc::authenticate(&verifier, request.metadata())?;
                request.extensions_mut().insert(caller);
            }
            Ok(request)
        }
    }

    /// The verified caller of a protected method, whose account is active.
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
            })?;
        match still_active(self.accounts.as_ref(), &caller).await {
            Ok(true) => Ok(caller),
            Ok(false) => Err(Status::unauthenticated("the account is deactivated")),
            Err(error) => {
                tracing::warn!(%error, "account status unavailable");
                Err(Status::unavailable(
                    "cannot check the account right now; retry",
                ))
            }
        }
    }
}

/// Whether `caller` may still act: services always; users unless the read model says their
/// account is deactivated (an account not projected yet counts as active: a token is only
/// issued to an existing, active account). Shared by the gRPC gate and the gateway.
pub async fn still_active(accounts: &dyn AccountStatus, caller: &Caller) -> Result<bool, String> {
    if caller.role == Role::Service {
        return Ok(true);
    }
    Ok(accounts.is_active(&caller.user_id).await? != Some(false))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers from a table, counting the questions.
    #[derive(Default)]
    struct Table {
        answers: Mutex<Vec<(String, Option<bool>)>>,
        asked: Mutex<usize>,
    }

    impl Table {
        fn set(&self, user: &str, answer: Option<bool>) {
            let mut answers = self.answers.lock().unwrap();
            answers.retain(|(u, _)| u != user);
            answers.push((user.to_owned(), answer));
        }
    }

    impl AccountStatus for Table {
        fn is_active(&self, user_id: &str) -> BoxFuture<'_, Result<Option<bool>, String>> {
            *self.asked.lock().unwrap() += 1;
            let answer = self
                .answers
                .lock()
                .unwrap()
                .iter()
                .find(|(u, _)| u == user_id)
                .and_then(|(_, a)| *a);
            Box::pin(std::future::ready(Ok(answer)))
        }
    }

    #[tokio::test]
    async fn a_known_answer_is_reused_until_it_is_too_old() {
        let cached = CachedAccountStatus::with_ttl(Table::default(), Duration::from_secs(3600));
        cached.inner.set("ann", Some(true));
        assert_eq!(cached.is_active("ann").await, Ok(Some(true)));
        cached.inner.set("ann", Some(false));
        assert_eq!(cached.is_active("ann").await, Ok(Some(true)));
        assert_eq!(*cached.inner.asked.lock().unwrap(), 1);

        let fresh = CachedAccountStatus::with_ttl(Table::default(), Duration::ZERO);
        fresh.inner.set("ann", Some(true));
        assert_eq!(fresh.is_active("ann").await, Ok(Some(true)));
        fresh.inner.set("ann", Some(false));
        assert_eq!(fresh.is_active("ann").await, Ok(Some(false)));
        assert_eq!(*fresh.inner.asked.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn an_unknown_account_is_asked_about_every_time() {
        let cached = CachedAccountStatus::with_ttl(Table::default(), Duration::from_secs(3600));
        assert_eq!(cached.is_active("bob").await, Ok(None));
        cached.inner.set("bob", Some(true));
        assert_eq!(cached.is_active("bob").await, Ok(Some(true)));
        assert_eq!(cached.is_active("bob").await, Ok(Some(true)));
        assert_eq!(*cached.inner.asked.lock().unwrap(), 2);
    }
}
