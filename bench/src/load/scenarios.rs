//! What a virtual user sends, scenario by scenario. Every user acts as one of the seeded
//! customers (user `u` as customer `u mod customers`) and reads that customer's orders.

use std::sync::Arc;
use std::time::Duration;

use tillstream_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

use super::driver::{self, Jitter, Measured, Shape};
use super::seed::{self, Customer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// GraphQL `order(id)` with its items.
    GraphqlOrder,
    /// GraphQL `orders(first: 20)`: the customer's newest orders.
    GraphqlOrdersPage,
    /// GraphQL `me` with the order count.
    GraphqlMe,
    /// REST `GET /api/v1/orders/{id}`.
    RestOrder,
    /// gRPC PlaceOrder (durable: acknowledged once the events are committed).
    GrpcPlaceOrder,
    /// The reads mixed: 40 % order(id), 20 % orders page, 20 % me, 20 % REST order.
    Mixed,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::GraphqlOrder => "graphql-order",
            Scenario::GraphqlOrdersPage => "graphql-orders-page",
            Scenario::GraphqlMe => "graphql-me",
            Scenario::RestOrder => "rest-order",
            Scenario::GrpcPlaceOrder => "grpc-place-order",
            Scenario::Mixed => "mixed",
        }
    }

    /// The request a user sends: itself, or for `Mixed` one of the reads (40 % order(id),
    /// 20 % each of orders page, me, REST order), varying with the iteration.
    fn pick(self, user: usize, iteration: u64) -> Scenario {
        if self != Scenario::Mixed {
            return self;
        }
        match Jitter::new(user as u64 + iteration * 7919).next_u64() % 5 {
            0 | 1 => Scenario::GraphqlOrder,
            2 => Scenario::GraphqlOrdersPage,
            3 => Scenario::GraphqlMe,
            _ => Scenario::RestOrder,
        }
    }
}

const ORDER: &str = "query($id: ID!) { order(id: $id) { id status totalCents currency items { sku quantity lineTotalCents } } }";
const ORDERS_PAGE: &str = "{ orders(first: 20) { edges { node { id status totalCents } } } }";
const ME: &str = "{ me { id email orderCount } }";
const ORDER_AT_VERSION: &str =
    "query($id: ID!, $v: Int!) { order(id: $id, minVersion: $v) { id status } }";

/// A running platform as the virtual users see it.
pub struct Target {
    pub http: reqwest::Client,
    pub graphql_url: String,
    pub rest_url: String,
    pub customers: Vec<Customer>,
    /// gRPC connections to the order service; user `u` uses `orders[u mod len]`.
    pub orders: Vec<OrderServiceClient<Channel>>,
}

impl Target {
    /// An HTTP client that keeps one connection per concurrent request (up to `users`).
    pub fn http_client(users: usize) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .pool_max_idle_per_host(users.max(1))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    fn customer(&self, user: usize) -> &Customer {
        &self.customers[user % self.customers.len()]
    }

    /// One of the customer's orders, varying with the iteration.
    fn order_of(&self, user: usize, iteration: u64) -> &str {
        let orders = &self.customer(user).orders;
        let pick = Jitter::new(user as u64 ^ iteration.rotate_left(20)).next_u64();
        &orders[pick as usize % orders.len()]
    }

    async fn graphql(&self, user: usize, query: &str, variables: serde_json::Value) -> Outcome {
        let response = self
            .http
            .post(&self.graphql_url)
            .bearer_auth(&self.customer(user).token)
            .json(&serde_json::json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        if !status.is_success() {
            return Err(format!("http {}", status.as_u16()));
        }
        if let Some(code) = graphql_error(&body) {
            return Err(code);
        }
        if contains(&body, b"{\"order\":null") {
            return Err("null result".into());
        }
        Ok(())
    }

    async fn rest_order(&self, user: usize, iteration: u64) -> Outcome {
        let url = format!(
            "{}/orders/{}",
            self.rest_url,
            self.order_of(user, iteration)
        );
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.customer(user).token)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("http {}", status.as_u16()))
        }
    }

    async fn place_order(&self, user: usize) -> Result<(String, u64), String> {
        let mut client = self.orders[user % self.orders.len()].clone();
        seed::place_order(&mut client, self.customer(user))
            .await
            .map_err(|e| match e.downcast_ref::<tonic::Status>() {
                Some(status) => format!("grpc {:?}", status.code()),
                None => "grpc transport".to_owned(),
            })
    }

    /// One request of `scenario` for `user`.
    pub async fn once(&self, scenario: Scenario, user: usize, iteration: u64) -> Outcome {
        match scenario.pick(user, iteration) {
            Scenario::GraphqlOrder | Scenario::Mixed => {
                let id = self.order_of(user, iteration);
                self.graphql(user, ORDER, serde_json::json!({ "id": id }))
                    .await
            }
            Scenario::GraphqlOrdersPage => {
                self.graphql(user, ORDERS_PAGE, serde_json::Value::Null)
                    .await
            }
            Scenario::GraphqlMe => self.graphql(user, ME, serde_json::Value::Null).await,
            Scenario::RestOrder => self.rest_order(user, iteration).await,
            Scenario::GrpcPlaceOrder => self.place_order(user).await.map(|_| ()),
        }
    }

    /// Places an order and reads it back through GraphQL with `minVersion` (the gateway
    /// answers as soon as its read model has the order): (ack latency, ack → visible).
    pub async fn place_and_see(&self, user: usize) -> Result<(Duration, Duration), String> {
        let sent = std::time::Instant::now();
        let (id, version) = self.place_order(user).await?;
        let acked = std::time::Instant::now();
        self.graphql(
            user,
            ORDER_AT_VERSION,
            serde_json::json!({ "id": id, "v": version }),
        )
        .await?;
        Ok((acked - sent, acked.elapsed()))
    }
}

pub type Outcome = Result<(), String>;

/// Runs `scenario` against `target` with `shape`.
pub async fn run(
    target: Arc<Target>,
    scenario: Scenario,
    shape: Shape,
) -> anyhow::Result<Measured> {
    driver::drive(scenario.name(), shape, move |user, iteration| {
        let target = target.clone();
        async move { target.once(scenario, user, iteration).await }
    })
    .await
}

fn transport_error(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// The `extensions.code` of the first GraphQL error in `body`, if it has errors.
fn graphql_error(body: &[u8]) -> Option<String> {
    if !contains(body, b"\"errors\"") {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let code = text
        .split("\"code\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("graphql error");
    Some(code.to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
