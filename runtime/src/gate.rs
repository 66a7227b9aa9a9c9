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
use quick_cache::sync::{EntryAction, EntryResult};
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
/// How long [`CachedAccountStatus`] waits for the read model's answer, for itself and every
/// lookup waiting with it.
pub const ACCOUNT_STATUS_DEADLINE: Duration = Duration::from_secs(5);
/// Accounts [`CachedAccountStatus`] remembers at most.
const ACCOUNT_STATUS_CAPACITY: usize = 100_000;

/// The read model's answer about one account, when it was asked for, and when it came.
#[derive(Clone)]
struct Answer {
    answer: Result<Option<bool>, String>,
    asked: Instant,
    answered: Instant,
}

/// An [`AccountStatus`] that remembers each known answer for [`ACCOUNT_STATUS_TTL`], so a
/// busy caller's requests do not each cost a read-model query.
///
/// One question per account is in flight at a time: lookups that arrive while it is
/// asked wait for its answer (whatever it is: active, unknown, or an error) instead of
/// asking too. Without that, a thousand concurrent requests of one account all asked at
/// once whenever its answer expired; once the queue for the read model's connections grew
/// longer than the TTL, every answer had expired before it was used and each request cost
/// a query. An unknown account (`None`) or a failed question is asked again by any lookup
/// that begins after its answer came: the account may be projected, or the database back,
/// any moment.
pub struct CachedAccountStatus<A> {
    inner: A,
    answers: quick_cache::sync::Cache<String, Answer>,
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

    /// Whether `answer` is a known one younger than the TTL, which any lookup may use.
    fn fresh(&self, answer: &Answer) -> bool {
        matches!(answer.answer, Ok(Some(_))) && answer.asked.elapsed() < self.ttl
    }

    /// Whether a lookup that began at `started` may use `answer`: one that came while the
    /// lookup waited always, a [fresh](Self::fresh) one too.
    fn usable(&self, answer: &Answer, started: Instant) -> bool {
        answer.answered > started || self.fresh(answer)
    }

    /// The read model's answer, or an error once [`ACCOUNT_STATUS_DEADLINE`] has passed:
    /// every lookup of the account waits for this question, so it must not hang.
    async fn ask(&self, user_id: &str) -> Result<Option<bool>, String> {
        tokio::time::timeout(ACCOUNT_STATUS_DEADLINE, self.inner.is_active(user_id))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no account status within {ACCOUNT_STATUS_DEADLINE:?}"
                ))
            })
    }
}

impl<A: AccountStatus> AccountStatus for CachedAccountStatus<A> {
    fn is_active(&self, user_id: &str) -> BoxFuture<'_, Result<Option<bool>, String>> {
        if let Some(answer) = self.answers.get(user_id)
            && self.fresh(&answer)
        {
            return Box::pin(std::future::ready(answer.answer));
        }
        let user_id = user_id.to_owned();
        Box::pin(async move {
            let started = Instant::now();
            let entry = self
                .answers
                .entry_async(&user_id, |_, answer| {
                    if self.usable(answer, started) {
                        EntryAction::Retain(answer.answer.clone())
                    } else {
                        EntryAction::ReplaceWithGuard
                    }
                })
                .await;
            let guard = match entry {
                EntryResult::Retained(answer) => return answer,
                EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => guard,
                // Neither is returned for this callback (it never removes, and
                // `entry_async` has no timeout); ask without the cache.
                EntryResult::Removed(..) | EntryResult::Timeout => {
                    return self.ask(&user_id).await;
                }
            };
            let asked = Instant::now();
            let answer = self.ask(&user_id).await;
            // Err only when the placeholder was removed meanwhile; the answer stands.
            let _ = guard.insert(Answer {
                answer: answer.clone(),
                asked,
                answered: Instant::now(),
            });
            answer
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
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// Answers `answer` once the gate opens, counting the questions.
    struct Gated {
        open: tokio::sync::watch::Receiver<bool>,
        asked: AtomicUsize,
        answer: Result<Option<bool>, String>,
    }

    impl AccountStatus for Gated {
        fn is_active(&self, _: &str) -> BoxFuture<'_, Result<Option<bool>, String>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.clone();
            Box::pin(async move {
                let _ = open.wait_for(|open| *open).await;
                self.answer.clone()
            })
        }
    }

    /// Lookups of one account that begin while its question is out wait for that answer,
    /// whatever it is, instead of asking too.
    #[tokio::test]
    async fn concurrent_lookups_of_one_account_share_one_question() {
        for answer in [Ok(Some(true)), Ok(None), Err("database away".to_owned())] {
            let (open, gate) = tokio::sync::watch::channel(false);
            let cached = Arc::new(CachedAccountStatus::with_ttl(
                Gated {
                    open: gate,
                    asked: AtomicUsize::new(0),
                    answer: answer.clone(),
                },
                Duration::from_secs(3600),
            ));
            let begun = Arc::new(AtomicUsize::new(0));
            let lookups: Vec<_> = (0..50)
                .map(|_| {
                    let (cached, begun) = (cached.clone(), begun.clone());
                    tokio::spawn(async move {
                        begun.fetch_add(1, Ordering::SeqCst);
                        cached.is_active("ann").await
                    })
                })
                .collect();
            // Every lookup has begun (and is waiting) before the answer comes.
            tokio::time::timeout(Duration::from_secs(10), async {
                while begun.load(Ordering::SeqCst) < 50 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("lookups begin");
            open.send(true).unwrap();
            for lookup in lookups {
                assert_eq!(lookup.await.unwrap(), answer);
            }
            assert_eq!(cached.inner.asked.load(Ordering::SeqCst), 1, "{answer:?}");
        }
    }

    /// A question that never comes back fails its lookups at the deadline, once for all
    /// of them.
    #[tokio::test(start_paused = true)]
    async fn a_question_without_an_answer_fails_its_lookups_at_the_deadline() {
        let (_closed, gate) = tokio::sync::watch::channel(false);
        let cached = Arc::new(CachedAccountStatus::with_ttl(
            Gated {
                open: gate,
                asked: AtomicUsize::new(0),
                answer: Ok(Some(true)),
            },
            Duration::from_secs(3600),
        ));
        let started = tokio::time::Instant::now();
        let lookups: Vec<_> = (0..3)
            .map(|_| {
                let cached = cached.clone();
                tokio::spawn(async move { cached.is_active("ann").await })
            })
            .collect();
        for lookup in lookups {
            assert!(lookup.await.unwrap().is_err());
        }
        assert!(started.elapsed() >= ACCOUNT_STATUS_DEADLINE);
        assert_eq!(cached.inner.asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_question_is_asked_again_by_the_next_lookup() {
        let (_open, gate) = tokio::sync::watch::channel(true);
        let cached = CachedAccountStatus::with_ttl(
            Gated {
                open: gate,
                asked: AtomicUsize::new(0),
                answer: Err("database away".to_owned()),
            },
            Duration::from_secs(3600),
        );
        assert!(cached.is_active("ann").await.is_err());
        assert!(cached.is_active("ann").await.is_err());
        assert_eq!(cached.inner.asked.load(Ordering::SeqCst), 2);
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
