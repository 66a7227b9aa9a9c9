//! The command side over real gRPC, Postgres and NATS: idempotency, concurrency, the order
//! state machine, authorization and validation.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::{ADMIN_EMAIL, DEADLINE, PASSWORD, TestPlatform, authorized, item, place, register};
use tillstream_events::Role;
use tillstream_proto::order::v1 as order_pb;
use tillstream_proto::user::v1 as user_pb;
use tillstream_runtime::tokens::{Claims, KeyPaths, TokenIssuer};
use tillstream_testkit::eventually;
use tonic::Code;
use tonic_types::StatusExt;

async fn events_of(platform: &TestPlatform, db: &str, aggregate_id: &str) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT sequence, event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(aggregate_id)
    .fetch_all(&platform.env.connect(db))
    .await
    .unwrap()
}

async fn count(platform: &TestPlatform, db: &str, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&platform.env.connect(db))
        .await
        .unwrap()
}

#[tokio::test]
async fn one_email_registered_concurrently_succeeds_once() {
    let platform = TestPlatform::start().await;
    let users = platform.users().await;
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let request = register("race@example.com", &format!("racer{i}"));
            let mut users = users.clone();
            tokio::spawn(async move {
                users
                    .register_user(request)
                    .await
                    .map(|r| r.into_inner().id)
            })
        })
        .collect();
    let mut codes = BTreeMap::new();
    for attempt in attempts {
        let code = match attempt.await.unwrap() {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        *codes.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    assert_eq!(
        codes,
        BTreeMap::from([("AlreadyExists".to_owned(), 7), ("Ok".to_owned(), 1)])
    );
    let sql = "SELECT count(*) FROM credentials WHERE email = 'race@example.com'";
    assert_eq!(count(&platform, "users", sql).await, 1);
    let sql = "SELECT count(*) FROM events WHERE payload->'UserRegistered'->>'email' = 'race@example.com'";
    assert_eq!(
        count(&platform, "users", sql).await,
        1,
        "the losers wrote no event"
    );
    platform.stop().await;
}

/// A command's commit is announced on the relay's channel after it is made, by the service
/// rather than by the command's own transaction (which would serialize durable commits on
/// PostgreSQL's notification lock; docs/performance.md, Fix 7), and no trigger is left on
/// the events table to do it inside the transaction.
#[tokio::test]
async fn a_committed_command_is_announced_outside_its_transaction() {
    let platform = TestPlatform::start().await;
    let pool = platform.env.connect("users");
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener
        .listen(tillstream_runtime::event_store::EVENTS_CHANNEL)
        .await
        .unwrap();
    let mut users = platform.users().await;
    users
        .register_user(register("announced@example.com", "announced"))
        .await
        .unwrap();
    let notification = tokio::time::timeout(DEADLINE, listener.recv())
        .await
        .expect("a notification within the deadline")
        .unwrap();
    assert_eq!(
        notification.channel(),
        tillstream_runtime::event_store::EVENTS_CHANNEL
    );
    let triggers =
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal";
    assert_eq!(count(&platform, "users", triggers).await, 0);
    platform.stop().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_answer() {
    let platform = TestPlatform::start().await;
    let mut users = platform.users().await;
    let keyed = user_pb::RegisterUserRequest {
        idempotency_key: "signup-1".into(),
        ..register("idem@example.com", "idem")
    };
    let first = users
        .register_user(keyed.clone())
        .await
        .unwrap()
        .into_inner();
    let again = users
        .register_user(keyed.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.id.as_str(), again.version),
        (first.id.as_str(), first.version)
    );
    let different = user_pb::RegisterUserRequest {
        email: "other@example.com".into(),
        ..keyed
    };
    let error = users.register_user(different).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let violations = error
        .get_details_bad_request()
        .expect("field violations")
        .field_violations;
    assert_eq!(violations[0].field, "idempotency_key");

    let token = platform.login("idem@example.com", PASSWORD).await;
    let mut orders = platform.orders().await;
    let keyed = order_pb::PlaceOrderRequest {
        idempotency_key: "checkout-7".into(),
        ..place(&first.id)
    };
    let placed = orders
        .place_order(authorized(keyed.clone(), &token))
        .await
        .unwrap()
        .into_inner();
    let replayed = orders
        .place_order(authorized(keyed, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replayed.id, placed.id,
        "the retry answers with the first order"
    );
    // Ten retries at once: each makes its own order id, one record wins, all answer it.
    let retries = (0..10).map(|_| {
        let mut orders = orders.clone();
        let request = authorized(
            order_pb::PlaceOrderRequest {
                idempotency_key: "checkout-8".into(),
                ..place(&first.id)
            },
            &token,
        );
        async move { orders.place_order(request).await.map(|r| r.into_inner().id) }
    });
    let answers: Vec<String> = futures::future::try_join_all(retries).await.unwrap();
    assert!(
        answers.iter().all(|id| *id == answers[0]),
        "one answer for one key: {answers:?}"
    );
    assert_ne!(answers[0], placed.id);
    let other_order = order_pb::PlaceOrderRequest {
        idempotency_key: "checkout-7".into(),
        currency: "USD".into(),
        ..place(&first.id)
    };
    let error = orders
        .place_order(authorized(other_order, &token))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(
        count(&platform, "orders", "SELECT count(*) FROM events").await,
        2,
        "two orders, one event each"
    );

    let pay = order_pb::PayOrderRequest {
        order_id: placed.id.clone(),
        payment_reference: "psp-1".into(),
        amount_cents: 2550,
        idempotency_key: "pay-7".into(),
    };
    let paid = orders
        .pay_order(authorized(pay.clone(), &token))
        .await
        .unwrap()
        .into_inner();
    let paid_again = orders
        .pay_order(authorized(pay, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (paid.version, paid_again.version),
        (2, 2),
        "a retried payment is not a second payment"
    );
    platform.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_commands_on_one_order_leave_a_consistent_history() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("busy").await;
    let order_id = platform.order_for(&user_id, &token).await;
    let orders = platform.orders().await;
    let commands: Vec<_> = (0..50)
        .map(|i| {
            let (mut orders, token, order_id) = (orders.clone(), token.clone(), order_id.clone());
            tokio::spawn(async move {
                let result = if i % 2 == 0 {
                    let pay = order_pb::PayOrderRequest {
                        order_id,
                        payment_reference: format!("psp-{i}"),
                        amount_cents: 2550,
                        idempotency_key: String::new(),
                    };
                    orders.pay_order(authorized(pay, &token)).await
                } else {
                    let cancel = order_pb::CancelOrderRequest {
                        order_id,
                        reason: format!("attempt {i}"),
                        idempotency_key: String::new(),
                    };
                    orders.cancel_order(authorized(cancel, &token)).await
                };
                result.map(|_| ()).map_err(|s| s.code())
            })
        })
        .collect();
    let mut succeeded = 0;
    for command in commands {
        match command.await.unwrap() {
            Ok(()) => succeeded += 1,
            Err(code) => assert!(
                matches!(code, Code::Aborted | Code::FailedPrecondition),
                "only conflicts and illegal transitions are refused, got {code:?}"
            ),
        }
    }
    let history = events_of(&platform, "orders", &order_id).await;
    let sequences: Vec<i64> = history.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        sequences,
        (1..=history.len() as i64).collect::<Vec<_>>(),
        "gapless, no duplicates"
    );
    assert_eq!(
        history.len(),
        succeeded + 1,
        "every acknowledged command is one event"
    );
    let types: Vec<&str> = history.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        [
            vec!["OrderPlaced", "OrderPaid"],
            vec!["OrderPlaced", "OrderCancelled"],
            vec!["OrderPlaced", "OrderPaid", "OrderCancelled"],
        ]
        .contains(&types),
        "a legal history: {types:?}"
    );
    platform.stop().await;
}

#[tokio::test]
async fn orders_follow_the_state_machine() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("shopper").await;
    let admin = platform.admin_token().await;
    let mut orders = platform.orders().await;
    let order_id = platform.order_for(&user_id, &token).await;
    let pay = |amount_cents| order_pb::PayOrderRequest {
        order_id: order_id.clone(),
        payment_reference: "psp-1".into(),
        amount_cents,
        idempotency_key: String::new(),
    };
    let ship = order_pb::ShipOrderRequest {
        order_id: order_id.clone(),
        carrier: "DHL".into(),
        tracking_number: "JD0001".into(),
        idempotency_key: String::new(),
    };

    let wrong = orders
        .pay_order(authorized(pay(100), &token))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    let by_customer = orders
        .ship_order(authorized(ship.clone(), &token))
        .await
        .unwrap_err();
    assert_eq!(by_customer.code(), Code::PermissionDenied);
    let too_early = orders
        .ship_order(authorized(ship.clone(), &admin))
        .await
        .unwrap_err();
    assert_eq!(too_early.code(), Code::FailedPrecondition);
    assert!(
        too_early.message().contains("PLACED"),
        "{}",
        too_early.message()
    );

    assert_eq!(
        orders
            .pay_order(authorized(pay(2550), &token))
            .await
            .unwrap()
            .into_inner()
            .version,
        2
    );
    assert_eq!(
        orders
            .ship_order(authorized(ship, &admin))
            .await
            .unwrap()
            .into_inner()
            .version,
        3
    );
    let deliver = order_pb::DeliverOrderRequest {
        order_id: order_id.clone(),
        idempotency_key: String::new(),
    };
    assert_eq!(
        orders
            .deliver_order(authorized(deliver, &admin))
            .await
            .unwrap()
            .into_inner()
            .version,
        4
    );
    let cancel = |order_id: &str| order_pb::CancelOrderRequest {
        order_id: order_id.into(),
        reason: "too late".into(),
        idempotency_key: String::new(),
    };
    let late = orders
        .cancel_order(authorized(cancel(&order_id), &token))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("DELIVERED"), "{}", late.message());

    // A paid order's cancellation records the refund due.
    let second = platform.order_for(&user_id, &token).await;
    let pay_second = order_pb::PayOrderRequest {
        order_id: second.clone(),
        ..pay(2550)
    };
    orders
        .pay_order(authorized(pay_second, &token))
        .await
        .unwrap();
    orders
        .cancel_order(authorized(cancel(&second), &token))
        .await
        .unwrap();
    let get = order_pb::GetOrderRequest {
        order_id: second.clone(),
    };
    let cancelled = orders
        .get_order(authorized(get, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), order_pb::OrderStatus::Cancelled);
    assert_eq!(cancelled.refund_due_cents, 2550);

    // History: newest first, filtered by status, in pages.
    let third = platform.order_for(&user_id, &token).await;
    let list = |status: order_pb::OrderStatus, page_token: String| order_pb::ListOrdersRequest {
        user_id: user_id.clone(),
        status: status.into(),
        page_size: 2,
        page_token,
    };
    let page = eventually(DEADLINE, "three orders in the history", || {
        let mut orders = orders.clone();
        let request = authorized(
            list(order_pb::OrderStatus::Unspecified, String::new()),
            &token,
        );
        async move {
            let page = orders.list_orders(request).await.unwrap().into_inner();
            (!page.next_page_token.is_empty()).then_some(page)
        }
    })
    .await;
    let ids: Vec<&str> = page.orders.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, vec![third.as_str(), second.as_str()]);
    let rest = orders
        .list_orders(authorized(
            list(order_pb::OrderStatus::Unspecified, page.next_page_token),
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.orders
            .iter()
            .map(|o| o.id.as_str())
            .collect::<Vec<_>>(),
        vec![order_id.as_str()]
    );
    assert!(rest.next_page_token.is_empty());
    let delivered = eventually(DEADLINE, "the delivered order in the read model", || {
        let mut orders = orders.clone();
        let request = authorized(
            list(order_pb::OrderStatus::Delivered, String::new()),
            &token,
        );
        async move {
            let page = orders.list_orders(request).await.unwrap().into_inner();
            (!page.orders.is_empty()).then_some(page)
        }
    })
    .await;
    assert_eq!(delivered.orders.len(), 1);
    assert_eq!(delivered.orders[0].id, order_id);
    platform.stop().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn only_valid_tokens_of_the_right_person_are_accepted() {
    let platform = TestPlatform::start().await;
    let (alice, alice_token) = platform.customer("alice").await;
    let (bob, bob_token) = platform.customer("bob").await;
    let order_id = platform.order_for(&alice, &alice_token).await;
    let mut orders = platform.orders().await;
    let get = || order_pb::GetOrderRequest {
        order_id: order_id.clone(),
    };

    // Missing, malformed, expired, foreign-key and unsigned tokens.
    assert_eq!(
        orders.get_order(get()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let keys = KeyPaths::in_dir(&platform.env.data_dir);
    let own_key =
        jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(&keys.private).unwrap()).unwrap();
    let claims = |exp: u64, role: Role| Claims {
        sub: alice.clone(),
        role,
        iat: now() - 3600,
        exp,
        jti: "t".into(),
        iss: "tillstream".into(),
        aud: "tillstream".into(),
    };
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    let expired =
        jsonwebtoken::encode(&header, &claims(now() - 60, Role::Customer), &own_key).unwrap();
    let foreign_dir = platform.env.data_dir.join("foreign");
    let foreign = KeyPaths::in_dir(&foreign_dir);
    foreign.ensure_generated().unwrap();
    let forged = TokenIssuer::load(&foreign, Duration::from_secs(60))
        .unwrap()
        .issue(&alice, Role::Admin)
        .unwrap();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now() + 600, Role::Admin)).unwrap())
    );
    for bad in [
        "garbage",
        expired.as_str(),
        forged.as_str(),
        unsigned.as_str(),
    ] {
        let status = orders.get_order(authorized(get(), bad)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "token {bad:.20}… is refused"
        );
    }

    // Bob can neither see nor act on Alice's things.
    let status = orders
        .get_order(authorized(get(), &bob_token))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "another customer's order does not exist for bob"
    );
    let status = orders
        .place_order(authorized(place(&alice), &bob_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let history = order_pb::ListOrdersRequest {
        user_id: alice.clone(),
        ..Default::default()
    };
    let status = orders
        .list_orders(authorized(history, &bob_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let cancel = order_pb::CancelOrderRequest {
        order_id: order_id.clone(),
        reason: String::new(),
        idempotency_key: String::new(),
    };
    let status = orders
        .cancel_order(authorized(cancel, &bob_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let mut users = platform.users().await;
    let promote = user_pb::ChangeUserRoleRequest {
        user_id: bob.clone(),
        role: user_pb::Role::Admin.into(),
        idempotency_key: String::new(),
    };
    let status = users
        .change_user_role(authorized(promote.clone(), &bob_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "no self-promotion");
    let status = users
        .list_users(authorized(user_pb::ListUsersRequest::default(), &bob_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The admin may; the promotion shows in the read model.
    let admin = platform.admin_token().await;
    users
        .change_user_role(authorized(promote, &admin))
        .await
        .unwrap();
    let listed = eventually(DEADLINE, "bob listed as admin", || {
        let mut users = users.clone();
        let request = authorized(user_pb::ListUsersRequest::default(), &admin);
        async move {
            let page = users.list_users(request).await.unwrap().into_inner();
            let bob_row = page
                .users
                .iter()
                .find(|u| u.email == "bob@example.com")?
                .clone();
            (bob_row.role() == user_pb::Role::Admin).then_some(page)
        }
    })
    .await;
    let emails: Vec<&str> = listed.users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(
        emails,
        vec!["bob@example.com", "alice@example.com", ADMIN_EMAIL],
        "newest first"
    );
    platform.stop().await;
}

#[tokio::test]
async fn a_deactivated_user_is_locked_out() {
    let platform = TestPlatform::start().await;
    let (id, token) = platform.customer("leaving").await;
    let mut users = platform.users().await;
    let deactivate = user_pb::DeactivateUserRequest {
        user_id: id.clone(),
        reason: "closing my account".into(),
        idempotency_key: String::new(),
    };
    users
        .deactivate_user(authorized(deactivate, &token))
        .await
        .unwrap();
    let login = users
        .login(user_pb::LoginRequest {
            email: "leaving@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(login.code(), Code::Unauthenticated);
    eventually(DEADLINE, "the old token to stop working", || {
        let mut users = users.clone();
        let request = authorized(
            user_pb::GetUserRequest {
                user_id: id.clone(),
            },
            &token,
        );
        async move {
            (users.get_user(request).await.err()?.code() == Code::Unauthenticated).then_some(())
        }
    })
    .await;
    platform.stop().await;
}

#[tokio::test]
async fn bad_input_gets_field_violations_and_never_a_crash() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("careless").await;
    let mut orders = platform.orders().await;
    let bad = order_pb::PlaceOrderRequest {
        user_id: user_id.clone(),
        items: vec![
            item("A", "ok", 1, 100),
            item("", "x", 0, -5),
            item("C", "huge", 10_000, i64::MAX),
        ],
        currency: "euro".into(),
        ..Default::default()
    };
    let status = orders
        .place_order(authorized(bad, &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            "currency",
            "items[1].sku",
            "items[1].quantity",
            "items[1].unit_price_cents",
            "items[2].unit_price_cents"
        ]
    );

    let oversized = order_pb::PlaceOrderRequest {
        note: "x".repeat(512 * 1024),
        ..place(&user_id)
    };
    let status = orders
        .place_order(authorized(oversized, &token))
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "oversized message refused with a clear status, got {:?}",
        status.code()
    );
    // The service is still there.
    assert!(
        orders
            .place_order(authorized(place(&user_id), &token))
            .await
            .is_ok()
    );
    platform.stop().await;
}
