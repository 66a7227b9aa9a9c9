//! Demo data for `tillstream up`: one customer and an order with two items, placed through
//! the public gRPC API like any client would.
//!
//! The customer's password is random, generated at the first seeding and written to
//! `<data_dir>/demo.json` (mode 0600) before anything is registered; the commands carry
//! fixed idempotency keys. A seeding interrupted at any point is therefore finished by
//! the next start, and later starts show the same data instead of adding more.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;
use tillstream_proto::order::v1::{self as order_pb, order_service_client::OrderServiceClient};
use tillstream_proto::user::v1::{self as user_pb, user_service_client::UserServiceClient};
use tonic::Request;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const DEMO_FILE: &str = "demo.json";
const DEMO_EMAIL: &str = "demo@tillstream.local";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot reach a service: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Rejected(#[from] tonic::Status),
    #[error("demo file: {0}")]
    File(#[from] std::io::Error),
    #[error("demo file is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot generate a password: {0}")]
    Random(String),
}

/// What the demo consists of.
#[derive(Debug, Clone)]
pub struct Demo {
    pub email: String,
    pub password: String,
    pub user_id: String,
    pub order_id: String,
    /// A fresh access token of the demo customer.
    pub token: String,
}

fn random_password() -> Result<String, DemoError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| DemoError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A channel to `addr`, over TLS when `tls` is given (its server name, not the address, is
/// what the certificate is checked against).
pub async fn channel(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<Channel, DemoError> {
    let endpoint = match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint.connect().await?)
}

/// Seeds the demo once per data folder; returns what was seeded (now or before).
pub async fn seed(
    data_dir: &Path,
    user_grpc: SocketAddr,
    order_grpc: SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<Demo, DemoError> {
    let file = data_dir.join(DEMO_FILE);
    let mut saved: serde_json::Value = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text)?,
        Err(_) => {
            let fresh = json!({ "email": DEMO_EMAIL, "password": random_password()? });
            tillstream_runtime::secret_file::write(
                &file,
                serde_json::to_string_pretty(&fresh)?.as_bytes(),
            )?;
            fresh
        }
    };
    let field =
        |saved: &serde_json::Value, k: &str| saved[k].as_str().unwrap_or_default().to_owned();
    let (email, password) = (field(&saved, "email"), field(&saved, "password"));
    let mut users = UserServiceClient::new(channel(user_grpc, tls.clone()).await?);
    if !field(&saved, "order_id").is_empty() {
        let token = login(&mut users, &email, &password).await?;
        return Ok(Demo {
            email,
            password,
            user_id: field(&saved, "user_id"),
            order_id: field(&saved, "order_id"),
            token,
        });
    }
    let mut orders = OrderServiceClient::new(channel(order_grpc, tls).await?);
    let registered = users
        .register_user(user_pb::RegisterUserRequest {
            email: email.clone(),
            username: "demo".to_owned(),
            password: password.clone(),
            full_name: "Demo Customer".to_owned(),
            idempotency_key: "demo-customer".to_owned(),
        })
        .await?
        .into_inner();
    let token = login(&mut users, &email, &password).await?;
    let mut place = Request::new(order_pb::PlaceOrderRequest {
        user_id: registered.id.clone(),
        items: vec![
            order_pb::OrderItem {
                sku: "TEA-GREEN-100G".to_owned(),
                name: "Green tea, 100 g".to_owned(),
                quantity: 2,
                unit_price_cents: 650,
            },
            order_pb::OrderItem {
                sku: "MUG-STONE".to_owned(),
                name: "Stoneware mug".to_owned(),
                quantity: 1,
                unit_price_cents: 1800,
            },
        ],
        currency: "EUR".to_owned(),
        shipping_address: None,
        note: "demo order".to_owned(),
        idempotency_key: "demo-order".to_owned(),
    });
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::internal("token is not valid metadata"))?;
    place.metadata_mut().insert("authorization", bearer);
    let placed = orders.place_order(place).await?.into_inner();

    saved["user_id"] = json!(registered.id);
    saved["order_id"] = json!(placed.id);
    tillstream_runtime::secret_file::write(
        &file,
        serde_json::to_string_pretty(&saved)?.as_bytes(),
    )?;
    Ok(Demo {
        email,
        password,
        user_id: registered.id,
        order_id: placed.id,
        token,
    })
}

async fn login(
    users: &mut UserServiceClient<Channel>,
    email: &str,
    password: &str,
) -> Result<String, DemoError> {
    Ok(users
        .login(user_pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner()
        .access_token)
}
