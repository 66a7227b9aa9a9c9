//! The gRPC edge of the order service: who may do what, decoding, and mapping every
//! failure to a status once. Business rules live in the aggregate.

use std::sync::Arc;
use std::time::Duration;

use tillstream_events::{Address, OrderStatus, Role};
use tillstream_projections::queries::Reads;
use tillstream_proto::KeyedRequest;
use tillstream_proto::order::v1 as pb;
use tillstream_runtime::event_store::{CommandBus, CommandError, Committed};
use tillstream_runtime::gate::Gate;
use tillstream_runtime::grpc::{self, Caller, CommandContext, Violations};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{ItemInput, Order, OrderCommand, OrderError, Placement, PlacementInput};

/// How long PlaceOrder waits for a just-registered user to reach the read model.
const USER_VISIBILITY_WAIT: Duration = Duration::from_secs(2);

pub struct OrderGrpc {
    pub(crate) commands: Arc<CommandBus<Order>>,
    pub(crate) gate: Gate,
    pub(crate) reads: Reads,
}

fn rejected(error: OrderError) -> Status {
    match error {
        OrderError::AlreadyPlaced => Status::already_exists(error.to_string()),
        OrderError::NotFound => Status::not_found(error.to_string()),
        OrderError::IllegalTransition { .. } => Status::failed_precondition(error.to_string()),
        OrderError::AmountMismatch { .. } => {
            grpc::invalid_field("amount_cents", &error.to_string())
        }
    }
}

fn command_status(error: CommandError<OrderError>) -> Status {
    grpc::command_status(error, rejected)
}

fn reply(committed: Committed) -> Response<pb::CommandReply> {
    Response::new(pb::CommandReply {
        id: committed.id,
        version: committed.version,
    })
}

fn status_to_proto(status: Option<OrderStatus>) -> pb::OrderStatus {
    match status {
        None => pb::OrderStatus::Unspecified,
        Some(OrderStatus::Placed) => pb::OrderStatus::Placed,
        Some(OrderStatus::Paid) => pb::OrderStatus::Paid,
        Some(OrderStatus::Shipped) => pb::OrderStatus::Shipped,
        Some(OrderStatus::Delivered) => pb::OrderStatus::Delivered,
        Some(OrderStatus::Cancelled) => pb::OrderStatus::Cancelled,
    }
}

fn status_from_read_model(status: &str) -> pb::OrderStatus {
    pb::OrderStatus::from_str_name(&format!("ORDER_STATUS_{status}"))
        .unwrap_or(pb::OrderStatus::Unspecified)
}

fn unavailable(error: sqlx::Error) -> Status {
    tracing::warn!(%error, "read model unavailable");
    Status::unavailable("the read model is unavailable; retry")
}

impl OrderGrpc {
    /// Runs `command` on order `order_id` for `caller`, who must be the order's owner, an
    /// admin, or (for `staff_only` commands) an admin or a service.
    async fn change<T: KeyedRequest>(
        &self,
        caller: &Caller,
        request: &Request<T>,
        order_id: &str,
        command: OrderCommand,
        staff_only: bool,
    ) -> Result<Response<pb::CommandReply>, Status> {
        if staff_only && !matches!(caller.role, Role::Admin | Role::Service) {
            return Err(Status::permission_denied(
                "only admins and services may do this",
            ));
        }
        let (order, _) = self.commands.load(order_id).await.map_err(command_status)?;
        // Someone else's order is reported as missing, so ids of other orders do not leak.
        if !order.exists() || !caller.may_act_for(&order.user_id) {
            return Err(Status::not_found(format!("order {order_id} not found")));
        }
        let context = CommandContext::of(request, Some(caller))?;
        let committed = self
            .commands
            .execute(
                order_id,
                command,
                &context.metadata,
                context.idempotency.as_ref(),
                None,
            )
            .await
            .map_err(command_status)?;
        Ok(reply(committed))
    }

    /// The user must exist and be active. A caller ordering for themselves proves their
    /// account exists (tokens are issued only to registered, active accounts, and the gate
    /// has already refused a deactivated one), so it is not asked about again, even when
    /// the read model does not have it yet; an admin or service ordering for someone else gives a
    /// just-registered account a short grace period to reach the read model.
    async fn require_active_user(&self, caller: &Caller, user_id: &str) -> Result<(), Status> {
        let id = Uuid::parse_str(user_id)
            .map_err(|_| grpc::invalid_field("user_id", "must be a UUID"))?;
        let ordering_for_self =
            caller.role != Role::Service && Uuid::parse_str(&caller.user_id).ok() == Some(id);
        if ordering_for_self {
            // The gate has just asked about this very account (`Gate::caller`): not
            // deactivated, as of at most `ACCOUNT_STATUS_TTL` ago.
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + USER_VISIBILITY_WAIT;
        loop {
            match self
                .reads
                .user_status(id)
                .await
                .map_err(unavailable)?
                .as_deref()
            {
                Some("ACTIVE") => return Ok(()),
                Some(_) => {
                    return Err(Status::failed_precondition(format!(
                        "user {user_id} is deactivated"
                    )));
                }
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(Status::failed_precondition(format!(
                        "user {user_id} does not exist"
                    )));
                }
                None => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }
}

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderGrpc {
    async fn get_audit_trail(
        &self,
        request: Request<tillstream_proto::audit::v1::GetAuditTrailRequest>,
    ) -> Result<Response<tillstream_proto::audit::v1::AuditTrail>, Status> {
        let caller = self.gate.caller(&request).await?;
        tillstream_runtime::audit::grpc_trail::<Order>(
            self.commands.pool(),
            &caller,
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let context = CommandContext::of(&request, Some(&caller))?;
        let placement = Placement::parse(&PlacementInput {
            user_id: &req.user_id,
            items: req
                .items
                .iter()
                .map(|i| ItemInput {
                    sku: &i.sku,
                    name: &i.name,
                    quantity: i.quantity,
                    unit_price_cents: i.unit_price_cents,
                })
                .collect(),
            currency: &req.currency,
            shipping_address: req.shipping_address.clone().map(|a| Address {
                name: a.name,
                line1: a.line1,
                line2: a.line2,
                city: a.city,
                postal_code: a.postal_code,
                country: a.country,
            }),
            note: &req.note,
        })
        .map_err(Violations::status)?;
        if !caller.may_act_for(&placement.user_id) {
            return Err(Status::permission_denied(
                "customers may place orders only for themselves",
            ));
        }
        self.require_active_user(&caller, &placement.user_id)
            .await?;
        let order_id = Uuid::now_v7().to_string();
        let committed = self
            .commands
            .execute_new(
                &order_id,
                OrderCommand::Place(placement),
                &context.metadata,
                context.idempotency.as_ref(),
            )
            .await
            .map_err(command_status)?;
        if !committed.replayed {
            tracing::info!(order_id = %committed.id, correlation_id = %context.metadata.correlation_id, "order placed");
        }
        Ok(reply(committed))
    }

    async fn pay_order(
        &self,
        request: Request<pb::PayOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let order_id = grpc::uuid_field("order_id", &req.order_id)?;
        let command = OrderCommand::Pay {
            payment_reference: grpc::short_text("payment_reference", &req.payment_reference, true)?,
            amount_cents: req.amount_cents,
        };
        self.change(&caller, &request, &order_id, command, false)
            .await
    }

    async fn ship_order(
        &self,
        request: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let order_id = grpc::uuid_field("order_id", &req.order_id)?;
        let command = OrderCommand::Ship {
            carrier: grpc::short_text("carrier", &req.carrier, true)?,
            tracking_number: grpc::short_text("tracking_number", &req.tracking_number, true)?,
        };
        self.change(&caller, &request, &order_id, command, true)
            .await
    }

    async fn deliver_order(
        &self,
        request: Request<pb::DeliverOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let order_id = grpc::uuid_field("order_id", &req.order_id)?;
        self.change(&caller, &request, &order_id, OrderCommand::Deliver, true)
            .await
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.get_ref();
        let order_id = grpc::uuid_field("order_id", &req.order_id)?;
        let command = OrderCommand::Cancel {
            reason: grpc::short_text("reason", &req.reason, false)?,
        };
        self.change(&caller, &request, &order_id, command, false)
            .await
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = self.gate.caller(&request).await?;
        let order_id = grpc::uuid_field("order_id", &request.get_ref().order_id)?;
        let (order, version) = self
            .commands
            .load(&order_id)
            .await
            .map_err(command_status)?;
        // Someone else's order is reported as missing, so ids of other orders do not leak.
        if !order.exists() || !caller.may_act_for(&order.user_id) {
            return Err(Status::not_found(format!("order {order_id} not found")));
        }
        Ok(Response::new(pb::Order {
            id: order_id,
            user_id: order.user_id,
            status: status_to_proto(order.status).into(),
            items: order
                .items
                .into_iter()
                .map(|l| pb::OrderLine {
                    sku: l.sku,
                    name: l.name,
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                    line_total_cents: l.line_total_cents,
                })
                .collect(),
            total_cents: order.total_cents,
            currency: order.currency,
            version,
            refund_due_cents: order.refund_due_cents,
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersReply>, Status> {
        let caller = self.gate.caller(&request).await?;
        let req = request.into_inner();
        let user_id = grpc::uuid_field("user_id", &req.user_id)?;
        if !caller.may_act_for(&user_id) {
            return Err(Status::permission_denied(
                "customers may list only their own orders",
            ));
        }
        let limit = grpc::page_size(req.page_size)?;
        let before = grpc::decode_page_token(&req.page_token)?;
        let status = match pb::OrderStatus::try_from(req.status) {
            Ok(pb::OrderStatus::Unspecified) => None,
            Ok(status) => Some(
                status
                    .as_str_name()
                    .trim_start_matches("ORDER_STATUS_")
                    .to_owned(),
            ),
            Err(_) => return Err(grpc::invalid_field("status", "is not an OrderStatus")),
        };
        let user = Uuid::parse_str(&user_id)
            .map_err(|_| grpc::invalid_field("user_id", "must be a UUID"))?;
        let mut rows = self
            .reads
            .orders(Some(user), status.as_deref(), before, limit + 1)
            .await
            .map_err(unavailable)?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => grpc::encode_page_token(last.order.id),
            _ => String::new(),
        };
        let orders = rows
            .into_iter()
            .map(|row| pb::OrderSummary {
                id: row.order.id.to_string(),
                status: status_from_read_model(&row.order.status).into(),
                total_cents: row.order.total_cents,
                currency: row.order.currency,
                item_count: row.items.len() as u32,
                created_at: row.order.created_at.to_rfc3339(),
                version: row.order.version as u64,
            })
            .collect();
        Ok(Response::new(pb::ListOrdersReply {
            orders,
            next_page_token,
        }))
    }
}
