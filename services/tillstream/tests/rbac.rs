//! Who may do what through GraphQL and REST: every operation × every kind of caller ×
//! own or someone else's resource, with the expected outcome.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{DEADLINE, TestPlatform};
use tillstream_events::Role;
use tillstream_runtime::tokens::{KeyPaths, TokenIssuer};
use tillstream_testkit::eventually;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// `data.<field>` is a non-null answer.
    Answer,
    /// `data.<field>` is null (the thing is not visible to this caller).
    Null,
    /// The first error's `extensions.code`.
    Code(&'static str),
}
use Expect::*;

async fn run(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: &Value,
) -> Value {
    let mut request = http
        .post(url)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// The HTTP status of a REST call; every error must come with the API's JSON error body.
async fn rest_status(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &Option<Value>,
) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    if status >= 400 {
        assert!(body["error"]["code"].is_string(), "{url}: {body}");
    }
    status
}

fn outcome(body: &Value, field: &str) -> Expect {
    if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
        return Code(match code {
            "UNAUTHENTICATED" => "UNAUTHENTICATED",
            "FORBIDDEN" => "FORBIDDEN",
            "NOT_FOUND" => "NOT_FOUND",
            "BAD_USER_INPUT" => "BAD_USER_INPUT",
            "CONFLICT" => "CONFLICT",
            _ => "OTHER",
        });
    }
    if body["data"][field].is_null() {
        Null
    } else {
        Answer
    }
}

#[tokio::test]
async fn every_operation_for_every_kind_of_caller() {
    let platform = TestPlatform::start().await;
    let (alice, alice_token) = platform.customer("alice").await;
    let (bob, bob_token) = platform.customer("bob").await;
    let admin = platform.admin_token().await;
    let keys = KeyPaths::in_dir(&platform.env.data_dir);
    let service = TokenIssuer::load(&keys, Duration::from_secs(300))
        .unwrap()
        .issue("warehouse", Role::Service)
        .unwrap();
    let order = platform.order_for(&alice, &alice_token).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", platform.addrs.gateway_http);
    // The read model has caught up before the table is checked.
    eventually(DEADLINE, "alice's order in the read model", || async {
        let body = run(
            &http,
            &url,
            Some(&admin),
            "query($o: ID!) { order(id: $o) { id } }",
            &json!({ "o": order }),
        )
        .await;
        (outcome(&body, "order") == Answer).then_some(())
    })
    .await;

    // A forecast as the predictor publishes it, so an admin's loadForecast is an answer.
    let client = async_nats::connect(tillstream_testkit::nats_url())
        .await
        .unwrap();
    let forecast = support::forecast("rbac", 1, 1.0);
    async_nats::jetstream::new(client)
        .publish(
            platform.env.namespace.autoscale_forecast_subject("rbac"),
            serde_json::to_vec(&forecast).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let vars = json!({ "alice": alice, "bob": bob, "order": order });
    let callers: [(&str, Option<&str>); 5] = [
        ("anonymous", None),
        ("alice (owner)", Some(&alice_token)),
        ("bob (another customer)", Some(&bob_token)),
        ("admin", Some(&admin)),
        ("service", Some(&service)),
    ];
    // One row per operation: expected outcome for anonymous, alice, bob, admin, service.
    let table: Vec<(&str, &str, [Expect; 5])> = vec![
        (
            "me",
            "{ me { id } }",
            [Code("UNAUTHENTICATED"), Answer, Answer, Answer, Null],
        ),
        (
            "user",
            "query($alice: ID!) { user(id: $alice) { id } }",
            [
                Code("UNAUTHENTICATED"),
                Answer,
                Code("FORBIDDEN"),
                Answer,
                Answer,
            ],
        ),
        (
            "order",
            "query($order: ID!) { order(id: $order) { id } }",
            [Code("UNAUTHENTICATED"), Answer, Null, Answer, Answer],
        ),
        (
            "orders",
            "query($alice: ID!) { orders(userId: $alice) { edges { node { id } } } }",
            [
                Code("UNAUTHENTICATED"),
                Answer,
                Code("FORBIDDEN"),
                Answer,
                Answer,
            ],
        ),
        (
            "users",
            "{ users { edges { node { id } } } }",
            [
                Code("UNAUTHENTICATED"),
                Code("FORBIDDEN"),
                Code("FORBIDDEN"),
                Answer,
                Code("FORBIDDEN"),
            ],
        ),
        (
            "loadForecast",
            "{ loadForecast { services { service } } }",
            [
                Code("UNAUTHENTICATED"),
                Code("FORBIDDEN"),
                Code("FORBIDDEN"),
                Answer,
                Code("FORBIDDEN"),
            ],
        ),
        (
            "placeOrder",
            "mutation($alice: ID!) { placeOrder(input: { userId: $alice, currency: \"EUR\", items: [{ sku: \"S\", name: \"n\", quantity: 1, unitPriceCents: 5 }] }) { id } }",
            [
                Code("UNAUTHENTICATED"),
                Answer,
                Code("FORBIDDEN"),
                Answer,
                Answer,
            ],
        ),
        (
            "changeUserRole",
            "mutation($bob: ID!) { changeUserRole(id: $bob, role: CUSTOMER) { id } }",
            [
                Code("UNAUTHENTICATED"),
                Code("FORBIDDEN"),
                Code("FORBIDDEN"),
                Answer,
                Code("FORBIDDEN"),
            ],
        ),
    ];
    let mut mismatches = Vec::new();
    for (field, query, expected) in &table {
        for ((who, token), want) in callers.iter().zip(expected) {
            let got = outcome(&run(&http, &url, *token, query, &vars).await, field);
            if got != *want {
                mismatches.push(format!("{field} as {who}: expected {want:?}, got {got:?}"));
            }
        }
    }
    // Cancelling: another customer's order does not exist for them; the owner may.
    let cancel = "mutation($order: ID!) { cancelOrder(id: $order, reason: \"r\") { version } }";
    for (who, token, want) in [
        ("anonymous", None, Code("UNAUTHENTICATED")),
        (
            "bob (another customer)",
            Some(bob_token.as_str()),
            Code("NOT_FOUND"),
        ),
        ("alice (owner)", Some(alice_token.as_str()), Answer),
    ] {
        let got = outcome(&run(&http, &url, token, cancel, &vars).await, "cancelOrder");
        if got != want {
            mismatches.push(format!(
                "cancelOrder as {who}: expected {want:?}, got {got:?}"
            ));
        }
    }
    // The REST mirror: the same rules, as HTTP statuses.
    let second_order = platform.order_for(&alice, &alice_token).await;
    let rest = format!("http://{}/api/v1", platform.addrs.gateway_http);
    let place = json!({ "user_id": alice, "currency": "EUR",
        "items": [{ "sku": "S", "name": "n", "quantity": 1, "unit_price_cents": 5 }] });
    let rest_table: Vec<(&str, String, Option<Value>, [u16; 5])> = vec![
        (
            "GET",
            format!("/users/{alice}"),
            None,
            [401, 200, 403, 200, 200],
        ),
        (
            "GET",
            format!("/orders/{order}"),
            None,
            [401, 200, 404, 200, 200],
        ),
        (
            "GET",
            format!("/users/{alice}/orders"),
            None,
            [401, 200, 403, 200, 200],
        ),
        ("GET", "/users".to_owned(), None, [401, 403, 403, 200, 403]),
        (
            "POST",
            "/orders".to_owned(),
            Some(place),
            [401, 201, 403, 201, 201],
        ),
    ];
    for (method, path, body, expected) in &rest_table {
        for ((who, token), want) in callers.iter().zip(expected) {
            let got = rest_status(&http, method, &format!("{rest}{path}"), *token, body).await;
            if got != *want {
                mismatches.push(format!(
                    "{method} {path} as {who}: expected {want}, got {got}"
                ));
            }
        }
    }
    let cancel_path = format!("{rest}/orders/{second_order}/cancel");
    let reason = Some(json!({ "reason": "r" }));
    for (who, token, want) in [
        ("anonymous", None, 401),
        ("bob (another customer)", Some(bob_token.as_str()), 404),
        ("alice (owner)", Some(alice_token.as_str()), 200),
    ] {
        let got = rest_status(&http, "POST", &cancel_path, token, &reason).await;
        if got != want {
            mismatches.push(format!(
                "POST /orders/{{id}}/cancel as {who}: expected {want}, got {got}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "RBAC mismatches:\n{}",
        mismatches.join("\n")
    );
    platform.stop().await;
}
