//! Who may call: the token check shared by every gRPC service.
//!
//! A tonic interceptor ([`Gate::interceptor`]) verifies the bearer token when one is sent
//! (a bad token is refused at once with UNAUTHENTICATED) and leaves the [`Caller`] in the
//! request's extensions. Handlers of protected methods then ask [`Gate::caller`], which
//! requires a caller and checks the account is still active: a deactivated user's tokens
//! stop working as soon as the read model knows, without waiting for them to expire.
//! Open methods (`RegisterUser`, `Login`) simply do not ask.

use std::sync::Arc;

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
