//! What the gateway can do, independent of the transport: GraphQL resolvers and REST
//! handlers both call these, so the visibility rules, page limits, read-your-writes wait
//! and error mapping are the same on every path.
//!
//! Reads come from the read models; commands are forwarded to the command services with
//! the caller's token and correlation id ([`Forward`]). Every failure is an [`ApiError`].

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tillstream_events::Role;
use tillstream_projections::applied::Watched;
use tillstream_projections::queries::{OrderWithItems, Reads, UserRow};
use tillstream_projections::{ReadCache, ReadModelWatch};
use tillstream_proto::audit::v1 as audit_pb;
use tillstream_proto::order::v1 as order_pb;
use tillstream_proto::user::v1 as user_pb;
use tillstream_runtime::gate::CachedAccountStatus;
use tillstream_runtime::grpc::Caller;
use uuid::Uuid;

use crate::auth::{self, Forward, Viewer};
use crate::backends::Backends;
use crate::error::ApiError;

/// Largest page a list returns.
pub const MAX_PAGE: i32 = 100;
/// Page size when the client names none.
pub const DEFAULT_PAGE: i32 = 20;
/// Longest a read waits for its `minVersion` to reach the read model.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

const ORDER_CURSOR: &str = "order:";
const USER_CURSOR: &str = "user:";

/// The order states of API.md, as the read model spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Placed => "PLACED",
            OrderState::Paid => "PAID",
            OrderState::Shipped => "SHIPPED",
            OrderState::Delivered => "DELIVERED",
            OrderState::Cancelled => "CANCELLED",
        }
    }
}

/// Which page of a list: at most `first` items after the cursor `after`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub first: Option<i32>,
    pub after: Option<String>,
}

/// One page, newest first; each item with the cursor that continues after it.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<(String, T)>,
    pub has_previous: bool,
    pub has_next: bool,
}

impl<T> Page<T> {
    /// The cursor of the next page, when there is one.
    pub fn next_cursor(&self) -> Option<String> {
        if self.has_next {
            self.items.last().map(|(cursor, _)| cursor.clone())
        } else {
            None
        }
    }
}

/// What a command answers: the aggregate and its version after the command.
#[derive(Debug, Clone)]
pub struct Written {
    pub id: String,
    pub version: u64,
}

/// What `login` answers.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub expires_in_seconds: u64,
    pub user_id: String,
    pub role: Role,
}

pub struct NewUser {
    pub email: String,
    pub username: String,
    pub password: String,
    pub full_name: String,
    pub idempotency_key: Option<String>,
}

pub struct NewOrderItem {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

pub struct NewOrder {
    /// Defaults to the signed-in user.
    pub user_id: Option<String>,
    pub items: Vec<NewOrderItem>,
    pub currency: String,
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A UUID argument, or BAD_USER_INPUT naming it.
pub fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadUserInput {
        message: format!("`{what}` must be a UUID"),
        details: vec![crate::error::FieldViolation {
            field: what.to_owned(),
            description: "must be a UUID".to_owned(),
        }],
    })
}

fn encode_cursor(kind: &str, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}{id}"))
}

fn decode_cursor(cursor: &str, kind: &str) -> Result<Uuid, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| s.strip_prefix(kind).and_then(|id| Uuid::parse_str(id).ok()))
        .ok_or_else(|| ApiError::bad_input("`after` is not a cursor this API returned"))
}

/// The cursor that continues after order `id`.
pub fn order_cursor(id: Uuid) -> String {
    encode_cursor(ORDER_CURSOR, id)
}

/// The page size asked for, checked: 1 to [`MAX_PAGE`].
pub fn page_size(first: Option<i32>) -> Result<i64, ApiError> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(ApiError::BadUserInput {
            message: format!("`first` must be 1 to {MAX_PAGE}"),
            details: vec![crate::error::FieldViolation {
                field: "first".to_owned(),
                description: format!("must be 1 to {MAX_PAGE}"),
            }],
        });
    }
    Ok(i64::from(first))
}

/// Turns `limit + 1` rows into a page of at most `limit`.
fn paged<T>(
    mut rows: Vec<T>,
    limit: i64,
    after: Option<Uuid>,
    cursor: impl Fn(&T) -> String,
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_next = rows.len() > limit;
    rows.truncate(limit);
    Page {
        items: rows.into_iter().map(|row| (cursor(&row), row)).collect(),
        has_previous: after.is_some(),
        has_next,
    }
}

/// The longest a waiting read goes without looking at its row.
const POLL_MAX: Duration = Duration::from_millis(100);

/// Reads with `load` until the row has at least `min_version` (when asked), for at most
/// `wait`; then says plainly that the write is not visible yet. A `min_version` below 1
/// (versions start at 1) is bad input, answered at once.
///
/// Between reads it waits for the projector's notification that `watched` was applied
/// ([`ReadModelWatch`]), or for a poll interval, whichever comes first. While the watch is
/// listening, the notification is what wakes the read, and the poll, every
/// [`POLL_MAX`], only bounds the wait should one go missing: polling sooner would cost a
/// query per step for nothing (docs/performance.md, Fix 14). Without a listener the poll
/// is the only way to see the write: 5 ms, doubling to [`POLL_MAX`].
async fn read_your_write<T, F, Fut>(
    min_version: Option<i64>,
    wait: Duration,
    watched: Option<Watched>,
    load: F,
    version: impl Fn(&T) -> i64,
) -> Result<Option<T>, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, sqlx::Error>>,
{
    if min_version.is_some_and(|v| v < 1) {
        return Err(ApiError::field(
            "min_version",
            "must be at least 1 (the first version of an aggregate)",
        ));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        // Watching starts before the read, so a commit right after it still wakes us.
        let changed = watched.as_ref().map(Watched::changed);
        let row = load().await.map_err(ApiError::reads)?;
        let Some(wanted) = min_version else {
            return Ok(row);
        };
        if row.as_ref().is_some_and(|r| version(r) >= wanted) {
            return Ok(row);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(format!(
                "version {wanted} is not in the read model yet; retry shortly"
            )));
        }
        let notified = async {
            match changed {
                Some(changed) => changed.await,
                None => std::future::pending().await,
            }
        };
        let poll = if watched.as_ref().is_some_and(Watched::is_listening) {
            POLL_MAX
        } else {
            pause
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + poll)) => {}
        }
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// A row from `cache` when it holds `id` at `min_version` or newer (the projector's
/// notifications keep it exact; see [`tillstream_projections::read_cache`]), otherwise
/// from `read`, and kept for the next read.
async fn through_cache<V, F, Fut>(
    cache: &ReadCache<V>,
    id: Uuid,
    min_version: Option<i64>,
    read: F,
    version: impl Fn(&V) -> i64,
) -> Result<Option<V>, ApiError>
where
    V: Clone,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<V>, ApiError>>,
{
    // A version below one is bad input, which `read` reports.
    if min_version.is_none_or(|v| v >= 1)
        && let Some(hit) = cache.get(&id, min_version)
    {
        return Ok(Some(V::clone(&hit)));
    }
    let ticket = cache.ticket();
    let row = read().await?;
    if let Some(row) = &row {
        cache.put(ticket, id, version(row), Arc::new(row.clone()));
    }
    Ok(row)
}

/// The read models and command services, as both transports use them.
#[derive(Clone)]
pub struct Operations {
    pub reads: Reads,
    pub backends: Backends,
    /// Whether a caller's account is still active, each answer remembered for a second.
    accounts: Arc<CachedAccountStatus<Reads>>,
    /// Wakes reads waiting for a version when the projector applies it; without a
    /// listener (the default) they poll only.
    pub watch: ReadModelWatch,
}

impl Operations {
    pub fn new(reads: Reads, backends: Backends) -> Self {
        Operations {
            accounts: Arc::new(CachedAccountStatus::new(reads.clone())),
            reads,
            backends,
            watch: ReadModelWatch::default(),
        }
    }

    /// Waiting reads wake on `watch`'s notifications too.
    pub fn with_watch(mut self, watch: ReadModelWatch) -> Self {
        self.watch = watch;
        self
    }

    /// Interest in one aggregate, for a read that waits for `min_version`.
    fn watched(&self, aggregate_type: &str, id: Uuid, min_version: Option<i64>) -> Option<Watched> {
        min_version.map(|_| self.watch.watch(aggregate_type, &id.to_string()))
    }

    /// The signed-in, active caller, or UNAUTHENTICATED.
    pub async fn caller(&self, viewer: &Viewer) -> Result<Caller, ApiError> {
        auth::authenticate(self.accounts.as_ref(), viewer).await
    }

    /// The signed-in user (None for a service token, which has no user).
    pub async fn me(&self, caller: &Caller) -> Result<Option<UserRow>, ApiError> {
        let Ok(id) = Uuid::parse_str(&caller.user_id) else {
            return Ok(None);
        };
        // Not cached: a user's order count and total change with order events, which do
        // not change the user's version.
        self.reads.user(id).await.map_err(ApiError::reads)
    }

    /// A user; customers may read only themselves (FORBIDDEN otherwise). With
    /// `min_version`, waits for the read model to have it.
    pub async fn user(
        &self,
        caller: &Caller,
        id: Uuid,
        min_version: Option<i64>,
    ) -> Result<Option<UserRow>, ApiError> {
        if !auth::may_see(caller, id) {
            return Err(ApiError::Forbidden(
                "customers may read only themselves".to_owned(),
            ));
        }
        // Not cached, as `me`.
        read_your_write(
            min_version,
            READ_YOUR_WRITES_WAIT,
            self.watched(tillstream_events::user::AGGREGATE_TYPE, id, min_version),
            || self.reads.user(id),
            |u| u.version,
        )
        .await
    }

    /// An order, or None when there is none or it is another customer's (so its existence
    /// does not leak). With `min_version`, waits for the read model to have it.
    pub async fn order(
        &self,
        caller: &Caller,
        id: Uuid,
        min_version: Option<i64>,
    ) -> Result<Option<OrderWithItems>, ApiError> {
        self.order_within(caller, id, min_version, READ_YOUR_WRITES_WAIT)
            .await
    }

    /// [`Operations::order`], waiting up to `wait` for `min_version`.
    pub async fn order_within(
        &self,
        caller: &Caller,
        id: Uuid,
        min_version: Option<i64>,
        wait: Duration,
    ) -> Result<Option<OrderWithItems>, ApiError> {
        let order = through_cache(
            self.watch.orders(),
            id,
            min_version,
            || {
                read_your_write(
                    min_version,
                    wait,
                    self.watched(tillstream_events::order::AGGREGATE_TYPE, id, min_version),
                    || self.reads.order(id),
                    |o| o.order.version,
                )
            },
            |o| o.order.version,
        )
        .await?;
        Ok(order.filter(|o| auth::may_see(caller, o.order.user_id)))
    }

    /// Every user, newest first (admins only).
    pub async fn users(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Page<UserRow>, ApiError> {
        if caller.role != Role::Admin {
            return Err(ApiError::Forbidden("only admins may list users".to_owned()));
        }
        let limit = page_size(page.first)?;
        let after = page
            .after
            .as_deref()
            .map(|c| decode_cursor(c, USER_CURSOR))
            .transpose()?;
        let rows = self
            .reads
            .users(after, limit + 1)
            .await
            .map_err(ApiError::reads)?;
        Ok(paged(rows, limit, after, |u| {
            encode_cursor(USER_CURSOR, u.id)
        }))
    }

    /// Orders newest first, optionally of one user and in one state. Customers list only
    /// their own (without `user_id`, theirs; with another's, FORBIDDEN); admins and
    /// services list anyone's, or everyone's without `user_id`.
    pub async fn orders(
        &self,
        caller: &Caller,
        user_id: Option<Uuid>,
        status: Option<OrderState>,
        page: PageRequest,
    ) -> Result<Page<OrderWithItems>, ApiError> {
        let limit = page_size(page.first)?;
        let user_id = match (caller.role, user_id) {
            (Role::Customer, Some(id)) if !auth::may_see(caller, id) => {
                return Err(ApiError::Forbidden(
                    "customers may list only their own orders".to_owned(),
                ));
            }
            (Role::Customer, None) => Some(parse_id(&caller.user_id, "userId")?),
            (_, user_id) => user_id,
        };
        let after = page
            .after
            .as_deref()
            .map(|c| decode_cursor(c, ORDER_CURSOR))
            .transpose()?;
        let rows = self
            .reads
            .orders(user_id, status.map(OrderState::as_str), after, limit + 1)
            .await
            .map_err(ApiError::reads)?;
        Ok(paged(rows, limit, after, |o| {
            encode_cursor(ORDER_CURSOR, o.order.id)
        }))
    }

    /// Opens an account (no token needed).
    pub async fn register(&self, forward: &Forward, user: NewUser) -> Result<Written, ApiError> {
        let request = user_pb::RegisterUserRequest {
            email: user.email,
            username: user.username,
            password: user.password,
            full_name: user.full_name,
            idempotency_key: user.idempotency_key.unwrap_or_default(),
        };
        let reply = self
            .backends
            .users
            .clone()
            .register_user(forward.request(request))
            .await?
            .into_inner();
        Ok(Written {
            id: reply.id,
            version: reply.version,
        })
    }

    /// Exchanges email and password for an access token.
    pub async fn login(
        &self,
        forward: &Forward,
        email: String,
        password: String,
    ) -> Result<Session, ApiError> {
        let reply = self
            .backends
            .users
            .clone()
            .login(forward.request(user_pb::LoginRequest { email, password }))
            .await?
            .into_inner();
        let role = match user_pb::Role::try_from(reply.role) {
            Ok(user_pb::Role::Admin) => Role::Admin,
            Ok(user_pb::Role::Service) => Role::Service,
            _ => Role::Customer,
        };
        Ok(Session {
            access_token: reply.access_token,
            expires_in_seconds: reply.expires_in_seconds,
            user_id: reply.user_id,
            role,
        })
    }

    /// Places an order for `order.user_id`, or for the signed-in user.
    pub async fn place_order(
        &self,
        forward: &Forward,
        viewer: &Viewer,
        order: NewOrder,
    ) -> Result<Written, ApiError> {
        let user_id = match (order.user_id, viewer) {
            (Some(id), _) => id,
            (None, Viewer::Caller(caller)) => caller.user_id.clone(),
            (None, _) => {
                return Err(ApiError::Unauthenticated(
                    "sign in, or name `userId`".to_owned(),
                ));
            }
        };
        let mut items = Vec::with_capacity(order.items.len());
        let mut violations = Vec::new();
        for (index, item) in order.items.into_iter().enumerate() {
            let Ok(quantity) = u32::try_from(item.quantity) else {
                violations.push(crate::error::FieldViolation {
                    field: format!("items[{index}].quantity"),
                    description: "must be 0 to 4294967295".to_owned(),
                });
                continue;
            };
            items.push(order_pb::OrderItem {
                sku: item.sku,
                name: item.name,
                quantity,
                unit_price_cents: item.unit_price_cents,
            });
        }
        if !violations.is_empty() {
            return Err(ApiError::BadUserInput {
                message: "invalid order items".to_owned(),
                details: violations,
            });
        }
        let request = order_pb::PlaceOrderRequest {
            user_id,
            items,
            currency: order.currency,
            shipping_address: None,
            note: order.note.unwrap_or_default(),
            idempotency_key: order.idempotency_key.unwrap_or_default(),
        };
        let reply = self
            .backends
            .orders
            .clone()
            .place_order(forward.request(request))
            .await?
            .into_inner();
        Ok(Written {
            id: reply.id,
            version: reply.version,
        })
    }

    pub async fn pay_order(
        &self,
        forward: &Forward,
        id: String,
        payment_reference: String,
        amount_cents: i64,
    ) -> Result<Written, ApiError> {
        let request = order_pb::PayOrderRequest {
            order_id: id,
            payment_reference,
            amount_cents,
            idempotency_key: String::new(),
        };
        let reply = self
            .backends
            .orders
            .clone()
            .pay_order(forward.request(request))
            .await?
            .into_inner();
        Ok(Written {
            id: reply.id,
            version: reply.version,
        })
    }

    pub async fn cancel_order(
        &self,
        forward: &Forward,
        id: String,
        reason: Option<String>,
    ) -> Result<Written, ApiError> {
        let request = order_pb::CancelOrderRequest {
            order_id: id,
            reason: reason.unwrap_or_default(),
            idempotency_key: String::new(),
        };
        let reply = self
            .backends
            .orders
            .clone()
            .cancel_order(forward.request(request))
            .await?
            .into_inner();
        Ok(Written {
            id: reply.id,
            version: reply.version,
        })
    }

    /// Admin only (the command service that owns the aggregate decides): its history from
    /// the event store, with the state after each event.
    pub async fn audit_trail(
        &self,
        forward: &Forward,
        aggregate_type: &str,
        id: String,
        as_of_version: Option<i64>,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<audit_pb::AuditTrail, ApiError> {
        let as_of_version = match as_of_version {
            None => 0,
            Some(v) if v >= 1 => v as u64,
            Some(_) => {
                return Err(ApiError::field(
                    "asOfVersion",
                    "must be 1 or more (a version is an event's sequence)",
                ));
            }
        };
        let request = audit_pb::GetAuditTrailRequest {
            id,
            as_of_version,
            as_of: as_of.map(|t| t.to_rfc3339()).unwrap_or_default(),
        };
        let trail = match aggregate_type {
            "order" => {
                self.backends
                    .orders
                    .clone()
                    .get_audit_trail(forward.request(request))
                    .await?
            }
            "user" => {
                self.backends
                    .users
                    .clone()
                    .get_audit_trail(forward.request(request))
                    .await?
            }
            _ => {
                return Err(ApiError::field(
                    "aggregateType",
                    "must be `order` or `user`",
                ));
            }
        };
        Ok(trail.into_inner())
    }

    /// Admin only (the user service decides).
    pub async fn change_user_role(
        &self,
        forward: &Forward,
        id: String,
        role: Role,
    ) -> Result<Written, ApiError> {
        let role = match role {
            Role::Customer => user_pb::Role::Customer,
            Role::Admin => user_pb::Role::Admin,
            Role::Service => user_pb::Role::Service,
        };
        let request = user_pb::ChangeUserRoleRequest {
            user_id: id,
            role: role.into(),
            idempotency_key: String::new(),
        };
        let reply = self
            .backends
            .users
            .clone()
            .change_user_role(forward.request(request))
            .await?
            .into_inner();
        Ok(Written {
            id: reply.id,
            version: reply.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(
            decode_cursor(&encode_cursor(ORDER_CURSOR, id), ORDER_CURSOR).unwrap(),
            id
        );
        assert!(decode_cursor("not-a-cursor", ORDER_CURSOR).is_err());
        assert!(
            decode_cursor(&encode_cursor(USER_CURSOR, id), ORDER_CURSOR).is_err(),
            "a user cursor is not an order cursor"
        );
    }

    /// Found by fuzzing: `min_version=-9223372036854775808` on an unknown order waited 2 s
    /// and answered 503 UNAVAILABLE, as if the version could still arrive.
    #[tokio::test]
    async fn min_versions_below_one_are_bad_input_at_once() {
        for bad in [0, -1, i64::MIN] {
            let answer = read_your_write(
                Some(bad),
                Duration::from_secs(3600),
                None,
                || async { Ok::<Option<i64>, sqlx::Error>(None) },
                |version| *version,
            )
            .await;
            let error = answer.expect_err("refused");
            assert_eq!(error.code(), "BAD_USER_INPUT", "{bad}: {error}");
        }
        let found = read_your_write(
            Some(1),
            Duration::from_secs(3600),
            None,
            || async { Ok::<Option<i64>, sqlx::Error>(Some(1)) },
            |version| *version,
        )
        .await
        .expect("version 1 is there");
        assert_eq!(found, Some(1));
    }

    #[test]
    fn page_sizes_outside_one_to_a_hundred_are_refused() {
        assert_eq!(page_size(None).unwrap(), 20);
        assert_eq!(page_size(Some(100)).unwrap(), 100);
        for bad in [0, -1, 101] {
            assert_eq!(page_size(Some(bad)).unwrap_err().code(), "BAD_USER_INPUT");
        }
    }
}
