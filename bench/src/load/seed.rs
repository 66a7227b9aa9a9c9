//! Customers and orders to read: registered and placed through the command services, and
//! awaited in the read models before any load starts.

use std::time::Duration;

use anyhow::Context;
use tillstream_proto::order::v1::{
    OrderItem, PlaceOrderRequest, order_service_client::OrderServiceClient,
};
use tillstream_proto::user::v1::{
    LoginRequest, RegisterUserRequest, user_service_client::UserServiceClient,
};
use tonic::Request;
use tonic::transport::Channel;

use super::platform::RunningPlatform;

const PASSWORD: &str = "a bench customer's password";

/// A customer the virtual users act as: its id, an access token and its orders' ids.
#[derive(Clone)]
pub struct Customer {
    pub id: String,
    pub token: String,
    pub orders: Vec<String>,
}

/// Registers `customers` customers (each a password hash: kept few, the virtual users
/// share them), places `orders_each` orders for each, and waits until the read models
/// hold every one of them.
pub async fn seed(
    platform: &RunningPlatform,
    customers: usize,
    orders_each: usize,
) -> anyhow::Result<Vec<Customer>> {
    let users = UserServiceClient::connect(format!("http://{}", platform.user_grpc)).await?;
    let orders = OrderServiceClient::connect(format!("http://{}", platform.order_grpc)).await?;
    let mut seeded = Vec::with_capacity(customers);
    for n in 0..customers {
        let id = users
            .clone()
            .register_user(RegisterUserRequest {
                email: format!("customer{n}@bench.local"),
                username: format!("customer{n}"),
                password: PASSWORD.into(),
                full_name: format!("Bench Customer {n}"),
                idempotency_key: String::new(),
            })
            .await
            .context("registering a customer")?
            .into_inner()
            .id;
        seeded.push(Customer {
            id,
            token: String::new(),
            orders: Vec::new(),
        });
    }
    let reads = platform.env.connect("reads");
    await_count(&reads, "SELECT count(*) FROM users", customers as i64 + 1).await?;
    for (n, customer) in seeded.iter_mut().enumerate() {
        customer.token = users
            .clone()
            .login(LoginRequest {
                email: format!("customer{n}@bench.local"),
                password: PASSWORD.into(),
            })
            .await
            .context("logging in")?
            .into_inner()
            .access_token;
        for _ in 0..orders_each {
            let reply = place_order(&mut orders.clone(), customer).await?;
            customer.orders.push(reply.0);
        }
    }
    let expected = (customers * orders_each) as i64;
    await_count(&reads, "SELECT count(*) FROM orders", expected).await?;
    reads.close().await;
    Ok(seeded)
}

/// Places a two-line order for `customer`: (order id, version).
pub async fn place_order(
    orders: &mut OrderServiceClient<Channel>,
    customer: &Customer,
) -> anyhow::Result<(String, u64)> {
    let mut request = Request::new(PlaceOrderRequest {
        user_id: customer.id.clone(),
        items: vec![
            OrderItem {
                sku: "TEA-1".into(),
                name: "Green tea".into(),
                quantity: 3,
                unit_price_cents: 450,
            },
            OrderItem {
                sku: "MUG-2".into(),
                name: "Mug".into(),
                quantity: 1,
                unit_price_cents: 1200,
            },
        ],
        currency: "EUR".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", customer.token).parse()?,
    );
    let reply = orders.place_order(request).await?.into_inner();
    Ok((reply.id, reply.version))
}

/// Waits (up to 120 s) until `query` counts at least `at_least` rows in a read model.
pub async fn await_count(
    reads: &tillstream_testkit::sqlx_pool::PgPool,
    query: &str,
    at_least: i64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let count: i64 = sqlx::query_scalar(query).fetch_one(reads).await?;
        if count >= at_least {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "read model has {count} of {at_least} rows for `{query}` after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
