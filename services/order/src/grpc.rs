//! The gRPC edge of the order service.

use std::sync::Arc;

use tillstream_events::{Address, OrderStatus};
use tillstream_proto::order::v1 as pb;
use tillstream_runtime::event_store::CommandBus;
use tillstream_runtime::grpc::{self, Violations};
use tillstream_runtime::tokens::TokenVerifier;
use tonic::{Request, Response, Status};

use crate::domain::{ItemInput, Order, OrderCommand, OrderError, Placement, PlacementInput};

pub struct OrderGrpc {
    pub(crate) commands: Arc<CommandBus<Order>>,
    pub(crate) verifier: TokenVerifier,
}

fn rejected(error: OrderError) -> Status {
    match error {
        OrderError::AlreadyPlaced => Status::already_exists(error.to_string()),
    }
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

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderGrpc {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::CommandReply>, Status> {
        let caller = grpc::authenticate(&self.verifier, request.metadata())?;
        let meta = grpc::event_metadata(
            request.metadata(),
            Some(&caller),
            &request.get_ref().idempotency_key,
        );
        let req = request.into_inner();
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
            shipping_address: req.shipping_address.map(|a| Address {
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
        let order_id = uuid::Uuid::now_v7().to_string();
        let version = self
            .commands
            .execute(&order_id, OrderCommand::Place(placement), &meta)
            .await
            .map_err(|e| grpc::command_status(e, rejected))?;
        tracing::info!(%order_id, correlation_id = %meta.correlation_id, "order placed");
        Ok(Response::new(pb::CommandReply {
            id: order_id,
            version,
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = grpc::authenticate(&self.verifier, request.metadata())?;
        let order_id = uuid::Uuid::parse_str(&request.get_ref().order_id)
            .map_err(|_| grpc::invalid_field("order_id", "must be a UUID"))?
            .to_string();
        let (order, version) = self
            .commands
            .load(&order_id)
            .await
            .map_err(|e| grpc::command_status(e, rejected))?;
        if !order.exists() {
            return Err(Status::not_found(format!("order {order_id} not found")));
        }
        if !caller.may_act_for(&order.user_id) {
            return Err(Status::permission_denied(
                "customers may read only their own orders",
            ));
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
        }))
    }
}
