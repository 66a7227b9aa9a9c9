//! The split deployment: every service its own process on loopback, configured by flags
//! and environment, against one test's databases and namespace. A customer registered
//! over gRPC, an order placed over gRPC and paid through the gateway's GraphQL, all read
//! back through the gateway process.

mod support;

use std::process::Command;

use serde_json::json;
use support::split::{Part, SplitPlatform};
use support::{DEADLINE, PASSWORD, authorized, graphql, place, register};
use tillstream_testkit::process::service_binary;
use tillstream_testkit::{eventually, nats_url};

#[test]
fn every_service_binary_explains_its_flags() {
    for (binary, flags) in [
        (
            "tillstream-user",
            &[
                "--database-url",
                "--grpc-addr",
                "--ops-addr",
                "--admin-email",
            ][..],
        ),
        (
            "tillstream-order",
            &["--database-url", "--grpc-addr", "--reads-database-url"][..],
        ),
        (
            "tillstream-relay",
            &[
                "--database-url",
                "--nats-url",
                "--namespace",
                "--batch-size",
            ][..],
        ),
        (
            "tillstream-projector",
            &["--database-url", "--nats-url", "--ops-addr"][..],
        ),
        (
            "tillstream-gateway",
            &["--database-url", "--http-addr", "--user-grpc-url"][..],
        ),
    ] {
        let output = Command::new(service_binary(binary))
            .arg("--help")
            .output()
            .expect("the binary runs");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{binary} --help: {help}");
        for flag in flags {
            assert!(help.contains(flag), "{binary} --help names {flag}:\n{help}");
        }
        assert!(
            help.contains("[env: TILLSTREAM_"),
            "{binary} --help names its variables:\n{help}"
        );
    }
}

#[tokio::test]
async fn the_five_service_binaries_serve_together_as_separate_processes() {
    let platform = SplitPlatform::start(nats_url(), &Part::ALL).await;
    let clients = platform.clients();
    let (user_id, token) = clients.customer("split").await;
    let order_id = clients.order_for(&user_id, &token).await;

    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", platform.gateway_http);
    let query =
        "query($id: ID!) { order(id: $id) { id userId status totalCents items { sku quantity } } }";
    let order = eventually(DEADLINE, "the order in GraphQL", || async {
        let body = graphql(&http, &url, &token, query, json!({ "id": order_id })).await;
        let order = body["data"]["order"].clone();
        (!order.is_null()).then_some(order)
    })
    .await;
    assert_eq!(
        order,
        json!({"id": order_id, "userId": user_id, "status": "PLACED", "totalCents": 2550,
               "items": [{"sku": "TEA-1", "quantity": 3}, {"sku": "MUG-2", "quantity": 1}]})
    );

    // A mutation crosses from the gateway process to the order process and back.
    let paid = graphql(
        &http,
        &url,
        &token,
        "mutation($id: ID!) { payOrder(id: $id, paymentReference: \"psp-split\", amountCents: 2550) { id version } }",
        json!({ "id": order_id }),
    )
    .await;
    assert_eq!(paid["data"]["payOrder"]["version"], 2, "{paid}");
    let user = eventually(DEADLINE, "the payment in GraphQL", || async {
        let body = graphql(
            &http,
            &url,
            &token,
            "{ me { orderCount totalSpentCents } }",
            json!({}),
        )
        .await;
        let me = body["data"]["me"].clone();
        (me["totalSpentCents"] == 2550).then_some(me)
    })
    .await;
    assert_eq!(user["orderCount"], 1);
    platform.stop().await;
}

#[tokio::test]
async fn a_customer_orders_before_their_registration_is_projected() {
    // No relay and no projector: nothing a command writes reaches the read model.
    let platform = SplitPlatform::start(nats_url(), &[Part::User, Part::Order]).await;
    let clients = platform.clients();
    let id = clients
        .users()
        .await
        .register_user(register("early@example.com", "early"))
        .await
        .expect("registered")
        .into_inner()
        .id;
    let token = clients.login("early@example.com", PASSWORD).await;

    // Their own token proves the account: the order is taken at once.
    let placed = clients
        .orders()
        .await
        .place_order(authorized(place(&id), &token))
        .await;
    assert!(placed.is_ok(), "the customer's own order: {placed:?}");

    // An admin ordering for them has only the read model to go by, and it is empty.
    let admin = clients.admin_token().await;
    let refused = clients
        .orders()
        .await
        .place_order(authorized(place(&id), &admin))
        .await
        .expect_err("the user is not in the read model");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("does not exist"), "{refused:?}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&clients.reads)
        .await
        .expect("read model answers");
    assert_eq!(users, 0, "nothing was projected");
    platform.stop().await;
}
