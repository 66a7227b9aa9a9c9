//! End to end: the whole platform in-process on random ports, with its own databases and
//! stream namespace, against the machine's real Postgres and NATS JetStream.

mod support;

use serde_json::{Value, json};
use support::{DEADLINE, TestPlatform, authorized, graphql, item};
use tillstream_proto::order::v1 as order_pb;
use tillstream_proto::user::v1 as user_pb;
use tillstream_testkit::eventually;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn an_order_placed_over_grpc_is_answered_by_graphql() {
    let platform = TestPlatform::start().await;
    let addrs = platform.addrs;
    let mut users = platform.users().await;
    let mut orders = platform.orders().await;

    let registered = users
        .register_user(user_pb::RegisterUserRequest {
            email: "Grace@Example.com".into(),
            username: "grace".into(),
            password: "a long enough password".into(),
            full_name: "Grace Hopper".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("registration succeeds")
        .into_inner();
    assert_eq!(registered.version, 1);

    let duplicate = users
        .register_user(user_pb::RegisterUserRequest {
            email: "grace@example.com".into(),
            username: "grace2".into(),
            password: "another long password".into(),
            full_name: "Someone Else".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("the email is taken");
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let wrong = users
        .login(user_pb::LoginRequest {
            email: "grace@example.com".into(),
            password: "not the password".into(),
        })
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let login = users
        .login(user_pb::LoginRequest {
            email: "grace@example.com".into(),
            password: "a long enough password".into(),
        })
        .await
        .expect("login succeeds")
        .into_inner();
    assert_eq!(login.user_id, registered.id);
    let token = login.access_token;

    // Without a token, and with an empty order: refused with clear codes.
    let anonymous = orders
        .place_order(order_pb::PlaceOrderRequest {
            user_id: registered.id.clone(),
            items: vec![item("A", "a", 1, 1)],
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .expect_err("a token is required");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let empty = orders
        .place_order(authorized(
            order_pb::PlaceOrderRequest {
                user_id: registered.id.clone(),
                items: vec![],
                currency: "EUR".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect_err("an order needs items");
    assert_eq!(empty.code(), Code::InvalidArgument);

    let placed = orders
        .place_order(authorized(
            order_pb::PlaceOrderRequest {
                user_id: registered.id.clone(),
                items: vec![
                    item("TEA-1", "Green tea", 3, 450),
                    item("MUG-2", "Mug", 1, 1200),
                ],
                currency: "EUR".into(),
                note: "e2e".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("the order is placed")
        .into_inner();
    assert_eq!(placed.version, 1);

    // The order travels event store → relay → JetStream → projector → read model → GraphQL.
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", addrs.gateway_http);
    let query = "query($id: ID!) { order(id: $id) { id userId status totalCents currency version \
                 items { sku name quantity unitPriceCents lineTotalCents } } }";
    let order = eventually(DEADLINE, "the order in GraphQL", || async {
        let body = graphql(&http, &url, &token, query, json!({ "id": placed.id })).await;
        let order = body["data"]["order"].clone();
        (!order.is_null()).then_some(order)
    })
    .await;
    assert_eq!(order["userId"], json!(registered.id));
    assert_eq!(order["status"], "PLACED");
    assert_eq!(order["totalCents"], 3 * 450 + 1200);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(
        order["items"],
        json!([
            {"sku": "TEA-1", "name": "Green tea", "quantity": 3, "unitPriceCents": 450, "lineTotalCents": 1350},
            {"sku": "MUG-2", "name": "Mug", "quantity": 1, "unitPriceCents": 1200, "lineTotalCents": 1200},
        ])
    );

    let page = graphql(
        &http,
        &url,
        &token,
        "query($u: ID!) { orders(userId: $u, first: 10) { edges { node { id totalCents } } pageInfo { hasNextPage } } }",
        json!({ "u": registered.id }),
    )
    .await;
    assert_eq!(
        page["data"]["orders"]["edges"][0]["node"]["id"],
        json!(placed.id)
    );
    assert_eq!(page["data"]["orders"]["pageInfo"]["hasNextPage"], false);

    let user = eventually(DEADLINE, "the user with their order in GraphQL", || async {
        let body = graphql(
            &http,
            &url,
            &token,
            "query($id: ID!) { user(id: $id) { email fullName role status orderCount totalSpentCents } }",
            json!({ "id": registered.id }),
        )
        .await;
        let user = body["data"]["user"].clone();
        (user["orderCount"] == 1).then_some(user)
    })
    .await;
    assert_eq!(
        user,
        json!({"email": "grace@example.com", "fullName": "Grace Hopper", "role": "CUSTOMER", "status": "ACTIVE",
               "orderCount": 1, "totalSpentCents": 0})
    );
    let history = graphql(
        &http,
        &url,
        &token,
        "query($id: ID!) { order(id: $id) { history { sequence eventType actorId actorRole } } }",
        json!({ "id": placed.id }),
    )
    .await;
    assert_eq!(
        history["data"]["order"]["history"],
        json!([{"sequence": 1, "eventType": "OrderPlaced", "actorId": registered.id, "actorRole": "customer"}])
    );

    let bad = graphql(
        &http,
        &url,
        &token,
        "{ order(id: \"nope\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // Reads need a token, and customers see only their own things.
    let anonymous: Value = http
        .post(&url)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let me = graphql(&http, &url, &token, "{ me { id email } }", json!({})).await;
    assert_eq!(me["data"]["me"]["id"], json!(registered.id));
    let (_, bob_token) = platform.customer("bob").await;
    let bobs_view = graphql(
        &http,
        &url,
        &bob_token,
        "query($id: ID!) { order(id: $id) { id } }",
        json!({ "id": placed.id }),
    )
    .await;
    assert_eq!(
        bobs_view["data"]["order"],
        Value::Null,
        "another customer's order reads as missing"
    );
    let snooping = graphql(
        &http,
        &url,
        &bob_token,
        "query($id: ID!) { user(id: $id) { email } }",
        json!({ "id": registered.id }),
    )
    .await;
    assert_eq!(snooping["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let listing = graphql(
        &http,
        &url,
        &bob_token,
        "query($u: ID!) { orders(userId: $u) { edges { node { id } } } }",
        json!({ "u": registered.id }),
    )
    .await;
    assert_eq!(listing["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let own = graphql(
        &http,
        &url,
        &bob_token,
        "{ orders { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        own["data"]["orders"]["edges"],
        json!([]),
        "bob's own (empty) history, not everyone's: {own}"
    );
    let admin = platform.admin_token().await;
    let everything = graphql(
        &http,
        &url,
        &admin,
        "query($id: ID!) { order(id: $id) { id } }",
        json!({ "id": placed.id }),
    )
    .await;
    assert_eq!(
        everything["data"]["order"]["id"],
        json!(placed.id),
        "admins see every order"
    );

    // Standard gRPC tooling works: grpc.health.v1 answers SERVING for both services.
    for (addr, service) in [
        (addrs.user_grpc, "tillstream.user.v1.UserService"),
        (addrs.order_grpc, "tillstream.order.v1.OrderService"),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "{service} is serving"
        );
    }

    // Every service reports ready.
    for ops in addrs.ops.iter().chain([&addrs.gateway_http]) {
        let ready = http
            .get(format!("http://{ops}/readyz"))
            .send()
            .await
            .unwrap();
        assert!(ready.status().is_success(), "{ops} is ready");
    }

    // Prometheus metrics tell the same story.
    let metrics = http
        .get(format!("http://{}/metrics", addrs.gateway_http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "tillstream_commands_total{aggregate=\"order\",outcome=\"ok\"}",
        "tillstream_relay_published_total",
        "tillstream_projection_applied_total",
        "tillstream_http_requests_total{route=\"/graphql\",status=\"2xx\"}",
    ] {
        assert!(metrics.contains(expected), "/metrics has {expected}");
    }

    platform.stop().await;
}

#[tokio::test]
async fn graphql_mutations_reach_the_command_services() {
    let platform = TestPlatform::start().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", platform.addrs.gateway_http);
    let anonymous = |query: &'static str, variables: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(&url)
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let registered = anonymous(
        "mutation($i: RegisterInput!) { register(input: $i) { id version } }",
        json!({ "i": { "email": "gql@example.com", "username": "gql", "password": "a long enough password", "fullName": "Graph Q" } }),
    )
    .await;
    let user_id = registered["data"]["register"]["id"]
        .as_str()
        .expect("registered")
        .to_owned();
    let login = anonymous(
        "mutation { login(email: \"gql@example.com\", password: \"a long enough password\") { accessToken userId role } }",
        json!({}),
    )
    .await;
    assert_eq!(login["data"]["login"]["userId"], json!(user_id));
    assert_eq!(login["data"]["login"]["role"], "CUSTOMER");
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let place = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id version } }";
    let invalid = graphql(
        &http,
        &url,
        &token,
        place,
        json!({ "i": { "items": [], "currency": "EUR" } }),
    )
    .await;
    assert_eq!(invalid["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(
        invalid["errors"][0]["extensions"]["details"][0]["field"],
        "items"
    );

    let items = json!([{ "sku": "A-1", "name": "Apple", "quantity": 4, "unitPriceCents": 125 }]);
    let placed = graphql(
        &http,
        &url,
        &token,
        place,
        json!({ "i": { "items": items, "currency": "EUR" } }),
    )
    .await;
    let order_id = placed["data"]["placeOrder"]["id"]
        .as_str()
        .expect("placed")
        .to_owned();
    assert_eq!(placed["data"]["placeOrder"]["version"], 1);
    let wrong = graphql(
        &http,
        &url,
        &token,
        "mutation($id: ID!) { payOrder(id: $id, paymentReference: \"p\", amountCents: 1) { version } }",
        json!({ "id": order_id }),
    )
    .await;
    assert_eq!(wrong["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let paid = graphql(
        &http,
        &url,
        &token,
        "mutation($id: ID!) { payOrder(id: $id, paymentReference: \"p\", amountCents: 500) { version } }",
        json!({ "id": order_id }),
    )
    .await;
    assert_eq!(paid["data"]["payOrder"]["version"], 2);
    let order = eventually(DEADLINE, "the paid order in GraphQL", || async {
        let body = graphql(
            &http,
            &url,
            &token,
            "query($id: ID!) { order(id: $id) { status totalCents } }",
            json!({ "id": order_id }),
        )
        .await;
        (body["data"]["order"]["status"] == "PAID").then_some(body["data"]["order"].clone())
    })
    .await;
    assert_eq!(order["totalCents"], 500);
    let promote = graphql(
        &http,
        &url,
        &token,
        "mutation($id: ID!) { changeUserRole(id: $id, role: ADMIN) { version } }",
        json!({ "id": user_id }),
    )
    .await;
    assert_eq!(
        promote["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "customers cannot promote themselves"
    );
    platform.stop().await;
}
