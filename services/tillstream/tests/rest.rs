//! The REST mirror (`/api/v1`) through HTTP against the in-process platform: the
//! OpenAPI document and its page, a customer's journey, and the error shape.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{DEADLINE, PASSWORD, TestPlatform};

struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("gateway answers");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status}: body is not JSON: {text}"));
        (status, body)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// A read with a `min_version`: the gateway waits up to 2 s, then answers 503
    /// UNAVAILABLE ("retry shortly"); on a loaded machine the projector can take longer, so
    /// retry as a client would, within the test's deadline.
    async fn read(&self, path: &str, token: &str) -> (StatusCode, Value) {
        tillstream_testkit::eventually(DEADLINE, path, || async {
            let (status, body) = self.get(path, Some(token)).await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
        })
        .await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn the_rest_api_serves_a_customer_journey_with_api_errors() {
    let platform = TestPlatform::start().await;
    let gateway = format!("http://{}", platform.addrs.gateway_http);
    let rest = Rest {
        http: reqwest::Client::new(),
        base: format!("{gateway}/api/v1"),
    };

    // The OpenAPI document lists every endpoint of API.md; the reference page is served.
    let (status, doc) = rest.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/api/v1/users", "post"),
        ("/api/v1/users", "get"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/users/{id}", "get"),
        ("/api/v1/users/{id}/orders", "get"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/pay", "post"),
        ("/api/v1/orders/{id}/cancel", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "OpenAPI documents {method} {path}"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let page = reqwest::get(format!("{gateway}/api/v1/docs"))
        .await
        .expect("docs page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("/api/v1/orders/{id}/pay")
    );

    // Register, log in, place, read back with read-your-writes, pay, cancel.
    let (status, registered) = rest
        .post(
            "/users",
            None,
            json!({ "email": "rita@example.com", "username": "rita", "password": PASSWORD,
                    "full_name": "Rita Levi", "idempotency_key": "signup-rita" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let rita = registered["id"].as_str().unwrap().to_owned();
    let (status, session) = rest
        .post(
            "/auth/login",
            None,
            json!({ "email": "rita@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["user_id"], json!(rita));
    assert_eq!(session["role"], json!("customer"));
    let token = session["access_token"].as_str().unwrap().to_owned();
    let (status, me) = rest
        .read(&format!("/users/{rita}?min_version=1"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], json!("rita@example.com"));

    let (status, placed) = rest
        .post(
            "/orders",
            Some(&token),
            json!({ "currency": "EUR", "items": [
                { "sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price_cents": 650 },
                { "sku": "MUG-2", "name": "Mug", "quantity": 1, "unit_price_cents": 1800 } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let order = placed["id"].as_str().unwrap().to_owned();
    let version = placed["version"].as_u64().unwrap();
    let (status, read) = rest
        .read(&format!("/orders/{order}?min_version={version}"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["status"], json!("PLACED"));
    assert_eq!(read["total_cents"], json!(3100));
    assert_eq!(read["items"].as_array().unwrap().len(), 2);

    let (status, paid) = rest
        .post(
            &format!("/orders/{order}/pay"),
            Some(&token),
            json!({ "payment_reference": "psp-1", "amount_cents": 3100 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    // The read-your-writes hint may also come as a header (API.md's `x-min-version`).
    let (status, read) = tillstream_testkit::eventually(DEADLINE, "the paid order", || async {
        let response = rest
            .http
            .get(format!("{}/orders/{order}", rest.base))
            .bearer_auth(&token)
            .header(
                "x-min-version",
                format!("order:{order}:{}", paid["version"]),
            )
            .send()
            .await
            .unwrap();
        let status = response.status();
        let read: Value = response.json().await.unwrap();
        (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, read))
    })
    .await;
    assert_eq!((status, &read["status"]), (StatusCode::OK, &json!("PAID")));
    let (status, list) = rest
        .get(
            &format!("/users/{rita}/orders?status=PAID&first=5"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["id"], json!(order));
    assert!(list["next_cursor"].is_null());
    let (status, list) = rest
        .get(
            &format!("/users/{rita}/orders?status=CANCELLED"),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, list["items"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );

    // Errors: one JSON shape, the HTTP status of their code.
    let cases: Vec<(&str, (StatusCode, Value), StatusCode, &str)> = vec![
        (
            "no token",
            rest.get(&format!("/orders/{order}"), None).await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
        (
            "garbage token",
            rest.get(&format!("/orders/{order}"), Some("not-a-jwt"))
                .await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
        (
            "not a UUID",
            rest.get("/orders/not-a-uuid", Some(&token)).await,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
        ),
        (
            "unknown order",
            rest.get(&format!("/orders/{}", uuid::Uuid::now_v7()), Some(&token))
                .await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "customer lists users",
            rest.get("/users", Some(&token)).await,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            "page too large",
            rest.get(&format!("/users/{rita}/orders?first=500"), Some(&token))
                .await,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
        ),
        (
            "unknown status",
            rest.get(&format!("/users/{rita}/orders?status=LOST"), Some(&token))
                .await,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
        ),
        (
            "malformed JSON",
            rest.post("/orders", Some(&token), json!({ "currency": 5 }))
                .await,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
        ),
        (
            "paying twice",
            rest.post(
                &format!("/orders/{order}/pay"),
                Some(&token),
                json!({ "payment_reference": "psp-2", "amount_cents": 3100 }),
            )
            .await,
            StatusCode::CONFLICT,
            "CONFLICT",
        ),
        (
            "email taken",
            rest.post(
                "/users",
                None,
                json!({ "email": "rita@example.com", "username": "rita2", "password": PASSWORD,
                        "full_name": "Rita Again" }),
            )
            .await,
            StatusCode::CONFLICT,
            "CONFLICT",
        ),
        (
            "wrong password",
            rest.post(
                "/auth/login",
                None,
                json!({ "email": "rita@example.com", "password": "wrong password!" }),
            )
            .await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
    ];
    for (what, (status, body), want_status, want_code) in &cases {
        assert_eq!(
            (*status, code(body)),
            (*want_status, *want_code),
            "{what}: {body}"
        );
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
        assert!(body["error"]["details"].is_array(), "{what}: {body}");
    }
    // Invalid fields are listed one by one.
    let (status, body) = rest
        .post(
            "/orders",
            Some(&token),
            json!({ "currency": "EUR", "items": [
                { "sku": "", "name": "x", "quantity": 0, "unit_price_cents": 5 } ] }),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "BAD_USER_INPUT")
    );
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert!(
        fields.iter().any(|f| f.starts_with("items[0]")),
        "field violations name the item: {body}"
    );

    let (status, cancelled) = rest
        .post(
            &format!("/orders/{order}/cancel"),
            Some(&token),
            json!({ "reason": "changed my mind" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    platform.stop().await;
}
