//! What the platform's integration tests share: the whole platform started in-process on
//! random ports, with its own databases, namespace and data folder, and typed clients.

#![allow(dead_code)] // each test binary uses a different part

pub mod consistency;
pub mod split;

use std::net::SocketAddr;
use std::time::Duration;

use tillstream::platform::Addresses;
use tillstream::{Platform, PlatformConfig};
use tillstream_proto::order::v1::{self as order_pb, order_service_client::OrderServiceClient};
use tillstream_proto::user::v1::{self as user_pb, user_service_client::UserServiceClient};
use tillstream_runtime::{PgPool, Shutdown};
use tillstream_testkit::{TestEnv, eventually, nats_url, postgres_url};
use tonic::Request;
use tonic::transport::Channel;

pub const DEADLINE: Duration = Duration::from_secs(30);
pub const ADMIN_EMAIL: &str = "admin@test.local";
pub const ADMIN_PASSWORD: &str = "an admin password for tests";
pub const PASSWORD: &str = "a long enough password";

/// The sum over all label sets of the Prometheus metric `name` in the exposition `text`
/// (0 when the metric is not in it).
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// [`metric_in`] this process's own metrics: those of a platform started in-process,
/// recorded since the test binary began (0 before the recorder is installed).
pub fn local_metric(name: &str) -> f64 {
    tillstream_runtime::ops::prometheus().map_or(0.0, |metrics| metric_in(&metrics.render(), name))
}

pub struct TestPlatform {
    pub env: TestEnv,
    pub addrs: Addresses,
    config: PlatformConfig,
    shutdown: Shutdown,
    running: tokio::task::JoinHandle<Result<(), tillstream::platform::PlatformError>>,
}

impl TestPlatform {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts the platform after `adjust` has changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut PlatformConfig)) -> Self {
        let env = TestEnv::new();
        for db in ["users", "orders", "reads"] {
            env.database_url(db); // registered for cleanup; the platform creates them
        }
        let mut config = PlatformConfig::on_random_ports(
            postgres_url(),
            env.id.clone(),
            nats_url(),
            env.namespace.prefix().to_owned(),
            env.data_dir.clone(),
        );
        config.admin_email = Some(ADMIN_EMAIL.to_owned());
        config.admin_password = Some(ADMIN_PASSWORD.to_owned());
        adjust(&mut config);
        Self::launch(env, config).await
    }

    async fn launch(env: TestEnv, config: PlatformConfig) -> Self {
        let platform = Platform::build(config.clone())
            .await
            .expect("platform starts");
        let addrs = platform.addresses();
        let shutdown = Shutdown::new();
        let running = tokio::spawn(platform.run(shutdown.clone()));
        TestPlatform {
            env,
            addrs,
            config,
            shutdown,
            running,
        }
    }

    /// Stops every part and starts them again on the same databases and streams.
    pub async fn restart(self) -> Self {
        self.shutdown.cancel();
        self.running
            .await
            .expect("platform task")
            .expect("platform stops cleanly");
        Self::launch(self.env, self.config).await
    }

    /// Typed clients of this platform's command services.
    pub fn clients(&self) -> Clients {
        Clients {
            user_grpc: self.addrs.user_grpc,
            order_grpc: self.addrs.order_grpc,
            reads: self.env.connect("reads"),
        }
    }

    pub async fn users(&self) -> UserServiceClient<Channel> {
        self.clients().users().await
    }

    pub async fn orders(&self) -> OrderServiceClient<Channel> {
        self.clients().orders().await
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.clients().login(email, password).await
    }

    /// See [`Clients::customer`].
    pub async fn customer(&self, name: &str) -> (String, String) {
        self.clients().customer(name).await
    }

    pub async fn admin_token(&self) -> String {
        self.clients().admin_token().await
    }

    /// See [`Clients::order_for`].
    pub async fn order_for(&self, user_id: &str, token: &str) -> String {
        self.clients().order_for(user_id, token).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running
            .await
            .expect("platform task")
            .expect("platform stops cleanly");
        self.env.cleanup().await;
    }
}

/// Typed clients of a running platform's command services, in one process
/// ([`TestPlatform`]) or as separate processes (`split::SplitPlatform`).
#[derive(Clone)]
pub struct Clients {
    pub user_grpc: SocketAddr,
    pub order_grpc: SocketAddr,
    /// The read models, where a new customer is awaited.
    pub reads: PgPool,
}

impl Clients {
    pub async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(format!("http://{}", self.user_grpc))
            .await
            .expect("user service answers")
    }

    pub async fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::connect(format!("http://{}", self.order_grpc))
            .await
            .expect("order service answers")
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.users()
            .await
            .login(user_pb::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .expect("login succeeds")
            .into_inner()
            .access_token
    }

    /// Registers a customer, logs in, and waits until the read model knows the customer
    /// (an admin's PlaceOrder for them checks the customer there, with only a short grace
    /// period; several platforms starting at once on two cores can take longer than that to
    /// catch up): (user id, token).
    pub async fn customer(&self, name: &str) -> (String, String) {
        let email = format!("{name}@example.com");
        let id = self
            .users()
            .await
            .register_user(register(&email, name))
            .await
            .expect("registration succeeds")
            .into_inner()
            .id;
        let uuid = uuid::Uuid::parse_str(&id).expect("user ids are UUIDs");
        eventually(DEADLINE, "the new customer in the read model", || async {
            let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1")
                .bind(uuid)
                .fetch_optional(&self.reads)
                .await
                .expect("read model answers");
            known.map(|_| ())
        })
        .await;
        (id, self.login(&email, PASSWORD).await)
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Places a two-item order (total 2550 EUR cents) for `user_id`; returns its id.
    pub async fn order_for(&self, user_id: &str, token: &str) -> String {
        self.orders()
            .await
            .place_order(authorized(place(user_id), token))
            .await
            .expect("order placed")
            .into_inner()
            .id
    }
}

/// Sends a GraphQL request with a bearer token; the JSON body of the answer.
pub async fn graphql(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    variables: serde_json::Value,
) -> serde_json::Value {
    http.post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("gateway answers")
        .json()
        .await
        .expect("JSON body")
}

/// A forecast as the predictor publishes it: `rate` requests/s measured, twice that
/// forecast, at `minute` minutes past the epoch.
pub fn forecast(service: &str, minute: i64, rate: f64) -> tillstream_events::LoadForecast {
    tillstream_events::LoadForecast {
        service: service.to_owned(),
        at: chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(minute),
        horizon_secs: 300,
        measured_rate: rate,
        measured_cpu_percent: Some(40.0),
        forecast_rate: rate * 2.0,
        forecast_cpu_percent: Some(80.0),
        rate_mape: Some(0.1),
        cpu_mape: None,
        confidence: 0.9,
        desired_replicas: 2,
    }
}

pub fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII token"),
    );
    request
}

pub fn register(email: &str, username: &str) -> user_pb::RegisterUserRequest {
    user_pb::RegisterUserRequest {
        email: email.into(),
        username: username.into(),
        password: PASSWORD.into(),
        full_name: "Test Person".into(),
        idempotency_key: String::new(),
    }
}

pub fn item(sku: &str, name: &str, quantity: u32, unit_price_cents: i64) -> order_pb::OrderItem {
    order_pb::OrderItem {
        sku: sku.into(),
        name: name.into(),
        quantity,
        unit_price_cents,
    }
}

pub fn place(user_id: &str) -> order_pb::PlaceOrderRequest {
    order_pb::PlaceOrderRequest {
        user_id: user_id.into(),
        items: vec![
            item("TEA-1", "Green tea", 3, 450),
            item("MUG-2", "Mug", 1, 1200),
        ],
        currency: "EUR".into(),
        ..Default::default()
    }
}
