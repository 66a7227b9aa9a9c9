//! A store that goes away: commands answer UNAVAILABLE, nothing is half-written, and
//! service resumes when the store is back.

mod support;

use support::{TestPlatform, authorized, place};
use tillstream_testkit::{CuttableProxy, postgres_url};
use tonic::Code;

#[tokio::test]
async fn commands_answer_unavailable_while_postgres_is_unreachable_and_recover() {
    // Every service reaches Postgres through a link the test can cut.
    let target = url::Url::parse(&postgres_url()).unwrap();
    let server = format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port().unwrap_or(5432)
    );
    let proxy = CuttableProxy::start(server.parse().unwrap()).await.unwrap();
    let mut through_proxy = target.clone();
    through_proxy.set_port(Some(proxy.addr().port())).unwrap();
    let platform =
        TestPlatform::start_with(|config| config.postgres_url = through_proxy.to_string()).await;

    let (user_id, token) = platform.customer("patient").await;
    let mut orders = platform.orders().await;
    orders
        .place_order(authorized(place(&user_id), &token))
        .await
        .expect("placed before the outage");

    proxy.cut();
    let status = orders
        .place_order(authorized(place(&user_id), &token))
        .await
        .expect_err("no store, no order");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());

    proxy.restore();
    let mut placed_after = None;
    for _ in 0..20 {
        // The pool replaces its broken connections on the next calls.
        match orders
            .place_order(authorized(place(&user_id), &token))
            .await
        {
            Ok(reply) => {
                placed_after = Some(reply.into_inner().id);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{}", status.message()),
        }
    }
    assert!(
        placed_after.is_some(),
        "orders are taken again once the store is back"
    );

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&platform.env.connect("orders"))
        .await
        .unwrap();
    assert_eq!(events, 2, "the refused order left nothing behind");
    platform.stop().await;
}
