//! The REST mirror of the GraphQL API under `/api/v1` (shared/API.md's endpoints), with
//! its OpenAPI document generated from these handlers (`/api/v1/openapi.json`) and an
//! interactive reference page (`/api/v1/docs`).
//!
//! Handlers only translate: every rule lives in [`Operations`], so REST and GraphQL
//! answer alike; every error is an [`ApiError`], answered as
//! `{"error": {"code", "message", "details"}}` with its HTTP status.

pub mod model;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Forward, MinVersions, Viewer};
use crate::error::{ApiError, ErrorBody};
use crate::operations::{NewOrder, NewOrderItem, NewUser, Operations, PageRequest, parse_id};
use model::{
    CancelOrderRequest, CommandResult, LoginRequest, LoginResponse, Order, OrderListParams,
    OrderPage, PageParams, PayOrderRequest, PlaceOrderRequest, ReadParams, RegisterRequest, User,
    UserPage,
};

/// Where the REST API lives.
pub const BASE: &str = "/api/v1";

/// A JSON body; malformed JSON is BAD_USER_INPUT, in the API's
/// error shape rather than axum's plain-text rejection.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::bad_input(rejection.body_text())),
        }
    }
}

/// Query parameters; bad ones are BAD_USER_INPUT in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| ApiError::bad_input(rejection.body_text()))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tillstream REST API",
        description = "Users and orders. The same rules as the GraphQL API: customers see only \
            themselves and their own orders; admins see everything. Errors are \
            `{\"error\": {\"code\", \"message\", \"details\"}}`."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody)),
    tags(
        (name = "auth", description = "Accounts and access tokens"),
        (name = "users", description = "Users (read model)"),
        (name = "orders", description = "Orders: commands and the read model"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The REST routes under [`BASE`], plus the OpenAPI document and the reference page.
pub fn router(operations: Operations) -> axum::Router {
    let (routes, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            BASE,
            OpenApiRouter::new()
                .routes(routes!(register, list_users))
                .routes(routes!(login))
                .routes(routes!(get_user))
                .routes(routes!(list_user_orders))
                .routes(routes!(place_order))
                .routes(routes!(get_order))
                .routes(routes!(pay_order))
                .routes(routes!(cancel_order)),
        )
        .with_state(operations)
        .split_for_parts();
    let document = api.clone();
    routes
        .route(
            &format!("{BASE}/openapi.json"),
            axum::routing::get(move || async move { Json(document) }),
        )
        .merge(utoipa_scalar::Scalar::with_url(format!("{BASE}/docs"), api))
}

use utoipa_scalar::Servable as _;

/// Opens an account (no token needed).
#[utoipa::path(post, path = "/users", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, body = CommandResult, description = "Registered"),
        (status = 400, body = ErrorBody, description = "BAD_USER_INPUT, with one detail per bad field"),
        (status = 409, body = ErrorBody, description = "CONFLICT: the email is taken"),
    ))]
async fn register(
    State(ops): State<Operations>,
    forward: Forward,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let user = NewUser {
        email: body.email,
        username: body.username,
        password: body.password,
        full_name: body.full_name,
        idempotency_key: body.idempotency_key,
    };
    let written = ops.register(&forward, user).await?;
    Ok((StatusCode::CREATED, Json(CommandResult::from(written))))
}

/// Exchanges email and password for an access token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, body = ErrorBody, description = "UNAUTHENTICATED: wrong email or password"),
    ))]
async fn login(
    State(ops): State<Operations>,
    forward: Forward,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let session = ops.login(&forward, body.email, body.password).await?;
    Ok(Json(session.into()))
}

/// Every user, newest first (admins only).
#[utoipa::path(get, path = "/users", tag = "users", params(PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = UserPage),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 400, body = ErrorBody, description = "BAD_USER_INPUT: page size or cursor"),
    ))]
async fn list_users(
    State(ops): State<Operations>,
    viewer: Viewer,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<UserPage>, ApiError> {
    let caller = ops.caller(&viewer).await?;
    let page = ops
        .users(
            &caller,
            PageRequest {
                first: params.first,
                after: params.after,
            },
        )
        .await?;
    let next_cursor = page.next_cursor();
    Ok(Json(UserPage {
        items: page.items.into_iter().map(|(_, u)| User::from(u)).collect(),
        next_cursor,
    }))
}

/// A user. Customers may read only themselves.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id (UUID)"), ReadParams,
        ("x-min-version" = Option<String>, Header, description = "`user:<id>:<version>`: read your own write, as `min_version`")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = User),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE: `min_version` not reached within 2 s"),
    ))]
async fn get_user(
    State(ops): State<Operations>,
    viewer: Viewer,
    hints: MinVersions,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<User>, ApiError> {
    let caller = ops.caller(&viewer).await?;
    let id = parse_id(&id, "id")?;
    ops.user(&caller, id, hints.for_read("user", id, params.min_version))
        .await?
        .map(|u| Json(User::from(u)))
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))
}

/// A user's orders, newest first, optionally in one state. Customers list only their own.
#[utoipa::path(get, path = "/users/{id}/orders", tag = "orders",
    params(("id" = String, Path, description = "User id (UUID)"), OrderListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = OrderPage),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 400, body = ErrorBody),
    ))]
async fn list_user_orders(
    State(ops): State<Operations>,
    viewer: Viewer,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<OrderListParams>,
) -> Result<Json<OrderPage>, ApiError> {
    let caller = ops.caller(&viewer).await?;
    let id = parse_id(&id, "id")?;
    let page = ops
        .orders(
            &caller,
            Some(id),
            params.status.map(model::OrderStatus::state),
            PageRequest {
                first: params.first,
                after: params.after,
            },
        )
        .await?;
    let next_cursor = page.next_cursor();
    Ok(Json(OrderPage {
        items: page
            .items
            .into_iter()
            .map(|(_, o)| Order::from(o))
            .collect(),
        next_cursor,
    }))
}

/// Places an order (for the signed-in user unless `user_id` names another one an admin
/// or service may act for).
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = PlaceOrderRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = CommandResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
async fn place_order(
    State(ops): State<Operations>,
    viewer: Viewer,
    forward: Forward,
    ApiJson(body): ApiJson<PlaceOrderRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let order = NewOrder {
        user_id: body.user_id,
        items: body
            .items
            .into_iter()
            .map(|item| NewOrderItem {
                sku: item.sku,
                name: item.name,
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents,
            })
            .collect(),
        currency: body.currency,
        note: body.note,
        idempotency_key: body.idempotency_key,
    };
    let written = ops.place_order(&forward, &viewer, order).await?;
    Ok((StatusCode::CREATED, Json(CommandResult::from(written))))
}

/// An order with its items. Another customer's order is NOT_FOUND.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID)"), ReadParams,
        ("x-min-version" = Option<String>, Header, description = "`order:<id>:<version>`: read your own write, as `min_version`")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Order),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "UNAVAILABLE: `min_version` not reached within 2 s"),
    ))]
async fn get_order(
    State(ops): State<Operations>,
    viewer: Viewer,
    hints: MinVersions,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<Order>, ApiError> {
    let caller = ops.caller(&viewer).await?;
    let id = parse_id(&id, "id")?;
    ops.order(&caller, id, hints.for_read("order", id, params.min_version))
        .await?
        .map(|o| Json(Order::from(o)))
        .ok_or_else(|| ApiError::NotFound(format!("no order {id}")))
}

/// Pays an order.
#[utoipa::path(post, path = "/orders/{id}/pay", tag = "orders", request_body = PayOrderRequest,
    params(("id" = String, Path, description = "Order id (UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CommandResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "CONFLICT: not payable in its state"),
    ))]
async fn pay_order(
    State(ops): State<Operations>,
    forward: Forward,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PayOrderRequest>,
) -> Result<Json<CommandResult>, ApiError> {
    let written = ops
        .pay_order(&forward, id, body.payment_reference, body.amount_cents)
        .await?;
    Ok(Json(written.into()))
}

/// Cancels an order (from PLACED or PAID).
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", request_body = CancelOrderRequest,
    params(("id" = String, Path, description = "Order id (UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CommandResult),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "CONFLICT: not cancellable in its state"),
    ))]
async fn cancel_order(
    State(ops): State<Operations>,
    forward: Forward,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CancelOrderRequest>,
) -> Result<Json<CommandResult>, ApiError> {
    let written = ops.cancel_order(&forward, id, body.reason).await?;
    Ok(Json(written.into()))
}
