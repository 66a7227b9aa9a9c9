//! Nested fields are batched: a page of orders with each order's items, history, customer
//! and the customer's recent orders costs the same number of SQL statements for 10 orders
//! as for 100 (counted by the read-model handle, on a real Postgres database).

use async_graphql::Request;
use serde_json::{Value, json};
use tillstream_events::Role;
use tillstream_gateway::auth::{Forward, Viewer};
use tillstream_gateway::backends::Backends;
use tillstream_gateway::config::Limits;
use tillstream_gateway::graphql::{self, GatewaySchema};
use tillstream_gateway::operations::Operations;
use tillstream_projections::queries::Reads;
use tillstream_runtime::grpc::Caller;
use tillstream_testkit::TestEnv;
use uuid::Uuid;

const QUERY: &str = "query($n: Int!) { orders(first: $n) { edges { node {
    id items { sku } history { eventType }
    user { email orders(first: 3) { edges { node { id status } } } } } } } }";

/// `customers` customers with `per_customer` orders each; every order has two lines and
/// two history rows.
async fn seed(pool: &sqlx::PgPool, customers: usize, per_customer: usize) {
    let mut tx = pool.begin().await.unwrap();
    for c in 0..customers {
        let user = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, email, username, full_name, role, status, created_at, updated_at, version) \
             VALUES ($1, $2, $3, 'Test', 'customer', 'ACTIVE', now(), now(), 1)",
        )
        .bind(user)
        .bind(format!("c{c}@example.com"))
        .bind(format!("c{c}"))
        .execute(&mut *tx)
        .await
        .unwrap();
        for _ in 0..per_customer {
            let order = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at, updated_at, version) \
                 VALUES ($1, $2, 'PAID', 300, 'EUR', now(), now(), 2)",
            )
            .bind(order)
            .bind(user)
            .execute(&mut *tx)
            .await
            .unwrap();
            for line in 1..=2_i32 {
                sqlx::query(
                    "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents, line_total_cents) \
                     VALUES ($1, $2, 'SKU', 'thing', 1, 150, 150)",
                )
                .bind(order)
                .bind(line)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            for (sequence, event) in [(1_i64, "OrderPlaced"), (2, "OrderPaid")] {
                sqlx::query(
                    "INSERT INTO order_history (order_id, sequence, event_type, correlation_id, occurred_at, payload) \
                     VALUES ($1, $2, $3, 'c', now(), '{}')",
                )
                .bind(order)
                .bind(sequence)
                .bind(event)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
        }
    }
    tx.commit().await.unwrap();
}

/// Runs the query for a page of `n` as an admin: (statements sent, answer).
async fn run(schema: &GatewaySchema, reads: &Reads, n: i64) -> (u64, Value) {
    let admin = Viewer::Caller(Caller {
        user_id: Uuid::now_v7().to_string(),
        role: Role::Admin,
    });
    let request = Request::new(QUERY)
        .variables(async_graphql::Variables::from_json(json!({ "n": n })))
        .data(admin)
        .data(Forward::from_headers(&Default::default()));
    let before = reads.statements_issued();
    let response = schema.execute(graphql::with_loaders(schema, request)).await;
    let statements = reads.statements_issued() - before;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    (statements, response.data.into_json().unwrap())
}

#[tokio::test]
async fn a_page_of_orders_costs_a_constant_number_of_statements() {
    let env = TestEnv::new();
    let url = env.database_url("reads");
    let reads = Reads::connect(&url, 5).await.unwrap();
    let (_, pool) = (url.clone(), env.connect("reads"));
    seed(&pool, 20, 5).await;
    let backends = Backends::connect(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        None,
        "localhost",
    )
    .unwrap();
    let limits = Limits {
        graphql_max_complexity: 1_000_000,
        ..Limits::default()
    };
    let nats = async_nats::connect(tillstream_testkit::nats_url())
        .await
        .unwrap();
    let streams = graphql::Streams::new(nats, env.namespace.clone());
    let schema = graphql::schema(Operations::new(reads.clone(), backends), streams, &limits);

    let (small, _) = run(&schema, &reads, 10).await;
    let (large, answer) = run(&schema, &reads, 100).await;
    let edges = answer["orders"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 100);
    for edge in edges {
        let node = &edge["node"];
        assert_eq!(node["items"].as_array().unwrap().len(), 2);
        assert_eq!(node["history"].as_array().unwrap().len(), 2);
        assert!(
            node["user"]["email"]
                .as_str()
                .unwrap()
                .ends_with("@example.com")
        );
        assert_eq!(node["user"]["orders"]["edges"].as_array().unwrap().len(), 3);
    }
    // Account check, orders + lines, customers, their recent orders + lines, histories.
    assert_eq!(large, small, "100 orders cost what 10 cost");
    assert!(large <= 7, "{large} statements for a page of 100");
    drop(schema);
    drop(reads);
    pool.close().await;
    env.cleanup().await;
}
