//! The gRPC contract of tillstream: generated client and server code for
//! `tillstream.user.v1` and `tillstream.order.v1` (see `shared/API.md`).

pub mod user {
    pub mod v1 {
        tonic::include_proto!("tillstream.user.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("tillstream.order.v1");
    }
}

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("tillstream.audit.v1");
    }
}

/// Encoded `FileDescriptorSet` of every tillstream proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tillstream_descriptor.bin"));

/// A command request with an `idempotency_key` field.
pub trait KeyedRequest: prost::Message + Clone {
    fn idempotency_key(&self) -> &str;
    /// The request as compared for idempotency: without its key (and without secrets,
    /// whose unsalted digest must not be stored).
    fn unkeyed(&self) -> Self;
}

/// Requests whose only field left out of the comparison is the key itself.
macro_rules! keyed_requests {
    ($($request:ty),+ $(,)?) => {
        $(impl KeyedRequest for $request {
            fn idempotency_key(&self) -> &str {
                &self.idempotency_key
            }
            fn unkeyed(&self) -> Self {
                Self { idempotency_key: String::new(), ..self.clone() }
            }
        })+
    };
}

keyed_requests!(
    user::v1::UpdateProfileRequest,
    user::v1::ChangeUserRoleRequest,
    user::v1::DeactivateUserRequest,
    order::v1::PlaceOrderRequest,
    order::v1::PayOrderRequest,
    order::v1::ShipOrderRequest,
    order::v1::DeliverOrderRequest,
    order::v1::CancelOrderRequest,
);

impl KeyedRequest for user::v1::RegisterUserRequest {
    fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// Without the password: an unsalted SHA-256 of it must not be stored. (A retry that
    /// changes only the password therefore replays the first registration.)
    fn unkeyed(&self) -> Self {
        Self {
            idempotency_key: String::new(),
            password: String::new(),
            ..self.clone()
        }
    }
}
