//! Mutation root: every mutation is a command forwarded to a command service over gRPC
//! by [`Operations`], with the caller's token and the request's correlation id. gRPC
//! statuses become GraphQL errors with `extensions.code` (and, for invalid input, the
//! field violations in `extensions.details`).

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};

use super::operations;
use super::types::Role;
use crate::auth::{Forward, Viewer};
use crate::error::ApiError;
use crate::operations::{NewOrder, NewOrderItem, NewUser, Written};

pub struct MutationRoot;

/// The answer to every command: the aggregate and its version after the command. Ask a
/// query for at least that version to read your own write.
#[derive(SimpleObject)]
pub struct CommandResult {
    pub id: ID,
    pub version: i64,
}

impl From<Written> for CommandResult {
    fn from(written: Written) -> Self {
        CommandResult {
            id: ID(written.id),
            version: i64::try_from(written.version).unwrap_or(i64::MAX),
        }
    }
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

#[Object]
impl MutationRoot {
    /// Open an account (no token needed).
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> Result<CommandResult> {
        let user = NewUser {
            email: input.email,
            username: input.username,
            password: input.password,
            full_name: input.full_name,
            idempotency_key: input.idempotency_key,
        };
        let written = operations(ctx)?
            .register(ctx.data::<Forward>()?, user)
            .await
            .map_err(ApiError::graphql)?;
        Ok(written.into())
    }

    /// Exchange email and password for an access token.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> Result<AuthPayload> {
        let session = operations(ctx)?
            .login(ctx.data::<Forward>()?, email, password)
            .await
            .map_err(ApiError::graphql)?;
        Ok(AuthPayload {
            access_token: session.access_token,
            expires_in_seconds: i64::try_from(session.expires_in_seconds).unwrap_or(i64::MAX),
            user_id: ID(session.user_id),
            role: session.role.into(),
        })
    }

    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> Result<CommandResult> {
        let order = NewOrder {
            user_id: input.user_id.map(|id| id.0),
            items: input
                .items
                .into_iter()
                .map(|item| NewOrderItem {
                    sku: item.sku,
                    name: item.name,
                    quantity: i64::from(item.quantity),
                    unit_price_cents: item.unit_price_cents,
                })
                .collect(),
            currency: input.currency,
            note: input.note,
            idempotency_key: input.idempotency_key,
        };
        let written = operations(ctx)?
            .place_order(ctx.data::<Forward>()?, ctx.data::<Viewer>()?, order)
            .await
            .map_err(ApiError::graphql)?;
        Ok(written.into())
    }

    async fn pay_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        payment_reference: String,
        amount_cents: i64,
    ) -> Result<CommandResult> {
        let written = operations(ctx)?
            .pay_order(
                ctx.data::<Forward>()?,
                id.0,
                payment_reference,
                amount_cents,
            )
            .await
            .map_err(ApiError::graphql)?;
        Ok(written.into())
    }

    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> Result<CommandResult> {
        let written = operations(ctx)?
            .cancel_order(ctx.data::<Forward>()?, id.0, reason)
            .await
            .map_err(ApiError::graphql)?;
        Ok(written.into())
    }

    /// Admin only.
    async fn change_user_role(
        &self,
        ctx: &Context<'_>,
        id: ID,
        role: Role,
    ) -> Result<CommandResult> {
        let written = operations(ctx)?
            .change_user_role(ctx.data::<Forward>()?, id.0, role.into())
            .await
            .map_err(ApiError::graphql)?;
        Ok(written.into())
    }
}
