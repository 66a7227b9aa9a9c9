//! Mutation root: every mutation is a command forwarded to a command service over gRPC,
//! with the caller's token and the request's correlation id. gRPC statuses become GraphQL
//! errors with `extensions.code` (and, for invalid input, the field violations).

use async_graphql::{Context, ErrorExtensions, ID, InputObject, Object, Result, SimpleObject};
use tillstream_proto::order::v1 as order_pb;
use tillstream_proto::user::v1 as user_pb;
use tonic::Code;
use tonic_types::StatusExt;

use super::types::Role;
use crate::auth::{Forward, Viewer};
use crate::backends::Backends;

pub struct MutationRoot;

/// The answer to every command: the aggregate and its version after the command. Ask a
/// query for at least that version to read your own write.
#[derive(SimpleObject)]
pub struct CommandResult {
    pub id: ID,
    pub version: i64,
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    pub access_token: String,
    pub expires_in_seconds: i64,
    pub user_id: ID,
    pub role: Role,
}

#[derive(InputObject)]
pub struct RegisterInput {
    pub email: String,
    pub username: String,
    pub password: String,
    pub full_name: String,
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct OrderItemInput {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

#[derive(InputObject)]
pub struct PlaceOrderInput {
    /// Defaults to the signed-in user.
    pub user_id: Option<ID>,
    pub items: Vec<OrderItemInput>,
    pub currency: String,
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A gRPC status as a GraphQL error (API.md's codes).
fn from_status(status: tonic::Status) -> async_graphql::Error {
    let code = match status.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted => "BAD_USER_INPUT",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "FORBIDDEN",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => "CONFLICT",
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => "UNAVAILABLE",
        _ => {
            tracing::error!(code = ?status.code(), message = status.message(), "command service failed");
            return async_graphql::Error::new("internal error")
                .extend_with(|_, e| e.set("code", "INTERNAL"));
        }
    };
    let violations: Vec<async_graphql::Value> = status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| {
                    let mut fields = async_graphql::indexmap::IndexMap::new();
                    fields.insert(
                        async_graphql::Name::new("field"),
                        async_graphql::Value::from(v.field),
                    );
                    fields.insert(
                        async_graphql::Name::new("description"),
                        async_graphql::Value::from(v.description),
                    );
                    async_graphql::Value::Object(fields)
                })
                .collect()
        })
        .unwrap_or_default();
    async_graphql::Error::new(status.message().to_owned()).extend_with(move |_, e| {
        e.set("code", code);
        if !violations.is_empty() {
            e.set("details", async_graphql::Value::List(violations.clone()));
        }
    })
}

fn result(id: String, version: u64) -> CommandResult {
    CommandResult {
        id: ID(id),
        version: version as i64,
    }
}

fn reply(reply: tonic::Response<order_pb::CommandReply>) -> CommandResult {
    let reply = reply.into_inner();
    result(reply.id, reply.version)
}

fn user_reply(reply: tonic::Response<user_pb::CommandReply>) -> CommandResult {
    let reply = reply.into_inner();
    result(reply.id, reply.version)
}

#[Object]
impl MutationRoot {
    /// Open an account (no token needed).
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> Result<CommandResult> {
        let request = user_pb::RegisterUserRequest {
            email: input.email,
            username: input.username,
            password: input.password,
            full_name: input.full_name,
            idempotency_key: input.idempotency_key.unwrap_or_default(),
        };
        let mut users = ctx.data::<Backends>()?.users.clone();
        let forward = ctx.data::<Forward>()?;
        Ok(user_reply(
            users
                .register_user(forward.request(request))
                .await
                .map_err(from_status)?,
        ))
    }

    /// Exchange email and password for an access token.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> Result<AuthPayload> {
        let mut users = ctx.data::<Backends>()?.users.clone();
        let forward = ctx.data::<Forward>()?;
        let reply = users
            .login(forward.request(user_pb::LoginRequest { email, password }))
            .await
            .map_err(from_status)?
            .into_inner();
        let role = match user_pb::Role::try_from(reply.role) {
            Ok(user_pb::Role::Admin) => Role::Admin,
            Ok(user_pb::Role::Service) => Role::Service,
            _ => Role::Customer,
        };
        Ok(AuthPayload {
            access_token: reply.access_token,
            expires_in_seconds: reply.expires_in_seconds as i64,
            user_id: ID(reply.user_id),
            role,
        })
    }

    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> Result<CommandResult> {
        let user_id = match (input.user_id, ctx.data::<Viewer>()?) {
            (Some(id), _) => id.0,
            (None, Viewer::Caller(caller)) => caller.user_id.clone(),
            (None, _) => return Err(super::coded("sign in, or name `userId`", "UNAUTHENTICATED")),
        };
        let mut items = Vec::with_capacity(input.items.len());
        for (index, item) in input.items.into_iter().enumerate() {
            let quantity = u32::try_from(item.quantity).map_err(|_| {
                super::coded(
                    format!("items[{index}].quantity must not be negative"),
                    "BAD_USER_INPUT",
                )
            })?;
            items.push(order_pb::OrderItem {
                sku: item.sku,
                name: item.name,
                quantity,
                unit_price_cents: item.unit_price_cents,
            });
        }
        let request = order_pb::PlaceOrderRequest {
            user_id,
            items,
            currency: input.currency,
            shipping_address: None,
            note: input.note.unwrap_or_default(),
            idempotency_key: input.idempotency_key.unwrap_or_default(),
        };
        let mut orders = ctx.data::<Backends>()?.orders.clone();
        let forward = ctx.data::<Forward>()?;
        Ok(reply(
            orders
                .place_order(forward.request(request))
                .await
                .map_err(from_status)?,
        ))
    }

    async fn pay_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        payment_reference: String,
        amount_cents: i64,
    ) -> Result<CommandResult> {
        let request = order_pb::PayOrderRequest {
            order_id: id.0,
            payment_reference,
            amount_cents,
            idempotency_key: String::new(),
        };
        let mut orders = ctx.data::<Backends>()?.orders.clone();
        let forward = ctx.data::<Forward>()?;
        Ok(reply(
            orders
                .pay_order(forward.request(request))
                .await
                .map_err(from_status)?,
        ))
    }

    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> Result<CommandResult> {
        let request = order_pb::CancelOrderRequest {
            order_id: id.0,
            reason: reason.unwrap_or_default(),
            idempotency_key: String::new(),
        };
        let mut orders = ctx.data::<Backends>()?.orders.clone();
        let forward = ctx.data::<Forward>()?;
        Ok(reply(
            orders
                .cancel_order(forward.request(request))
                .await
                .map_err(from_status)?,
        ))
    }

    /// Admin only.
    async fn change_user_role(
        &self,
        ctx: &Context<'_>,
        id: ID,
        role: Role,
    ) -> Result<CommandResult> {
        let role = match role {
            Role::Customer => user_pb::Role::Customer,
            Role::Admin => user_pb::Role::Admin,
            Role::Service => user_pb::Role::Service,
        };
        let request = user_pb::ChangeUserRoleRequest {
            user_id: id.0,
            role: role.into(),
            idempotency_key: String::new(),
        };
        let mut users = ctx.data::<Backends>()?.users.clone();
        let forward = ctx.data::<Forward>()?;
        Ok(user_reply(
            users
                .change_user_role(forward.request(request))
                .await
                .map_err(from_status)?,
        ))
    }
}
