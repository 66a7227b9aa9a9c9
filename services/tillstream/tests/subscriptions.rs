//! End to end through HTTP and WebSocket: an order placed by GraphQL mutation, read back
//! with read-your-writes, and its status change received over `graphql-transport-ws`;
//! who may subscribe to what.

mod support;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::{DEADLINE, TestPlatform};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn graphql(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    vars: Value,
) -> Value {
    http.post(url)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": vars }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Opens `graphql-transport-ws`, sends `connection_init` with `token`, awaits the ack.
async fn connect(url: &str, token: Option<&str>) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let payload = token.map_or(
        json!({}),
        |t| json!({ "authorization": format!("Bearer {t}") }),
    );
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    let ack = receive(&mut socket).await;
    assert_eq!(ack["type"], json!("connection_ack"), "{ack}");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next protocol message (pings are answered and skipped), within the deadline.
async fn receive(socket: &mut Socket) -> Value {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match socket.next().await.expect("socket open").unwrap() {
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message["type"] == json!("ping") {
                        send(socket, json!({ "type": "pong" })).await;
                        continue;
                    }
                    return message;
                }
                Message::Ping(data) => socket.send(Message::Pong(data)).await.unwrap(),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    })
    .await
    .expect("a message before the deadline")
}

async fn subscribe(socket: &mut Socket, order: &str) {
    send(
        socket,
        json!({ "id": "1", "type": "subscribe", "payload": {
            "query": "subscription($id: ID) { orderUpdated(id: $id) { id status version } }",
            "variables": { "id": order } } }),
    )
    .await;
}

/// The `extensions.code` of the first error a subscription answered with.
fn error_code(message: &Value) -> Value {
    let errors = if message["type"] == json!("error") {
        &message["payload"]
    } else {
        &message["payload"]["errors"]
    };
    errors[0]["extensions"]["code"].clone()
}

#[tokio::test]
async fn a_placed_order_is_read_back_and_its_payment_arrives_by_subscription() {
    let platform = TestPlatform::start().await;
    let (alice, alice_token) = platform.customer("alice").await;
    let (_, bob_token) = platform.customer("bob").await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", platform.addrs.gateway_http);
    let ws = format!("ws://{}/graphql/ws", platform.addrs.gateway_http);

    let placed = graphql(
        &http,
        &url,
        &alice_token,
        "mutation { placeOrder(input: { currency: \"EUR\", items: [{ sku: \"TEA\", name: \"Tea\", quantity: 2, unitPriceCents: 450 }] }) { id version } }",
        json!({}),
    )
    .await;
    let order = placed["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let version = placed["data"]["placeOrder"]["version"].clone();
    // Read your write: the gateway waits up to 2 s, then says UNAVAILABLE ("retry
    // shortly"); a loaded machine's projector may need longer, so retry as a client would.
    let read = tillstream_testkit::eventually(DEADLINE, "the placed order", || async {
        let read = graphql(
            &http,
            &url,
            &alice_token,
            "query($id: ID!, $v: Int!) { order(id: $id, minVersion: $v) { status totalCents user { id } } }",
            json!({ "id": order, "v": version }),
        )
        .await;
        (read["errors"][0]["extensions"]["code"] != json!("UNAVAILABLE")).then_some(read)
    })
    .await;
    assert_eq!(read["data"]["order"]["status"], json!("PLACED"), "{read}");
    assert_eq!(read["data"]["order"]["totalCents"], json!(900));
    assert_eq!(read["data"]["order"]["user"]["id"], json!(alice));

    // Alice subscribes: the order as it is, then its payment.
    let mut socket = connect(&ws, Some(&alice_token)).await;
    subscribe(&mut socket, &order).await;
    let now = receive(&mut socket).await;
    assert_eq!(now["type"], json!("next"), "{now}");
    assert_eq!(
        now["payload"]["data"]["orderUpdated"]["status"],
        json!("PLACED")
    );
    let paid = graphql(
        &http,
        &url,
        &alice_token,
        "mutation($id: ID!) { payOrder(id: $id, paymentReference: \"psp-9\", amountCents: 900) { version } }",
        json!({ "id": order }),
    )
    .await;
    assert!(paid["errors"].is_null(), "{paid}");
    let change = receive(&mut socket).await;
    assert_eq!(
        change["payload"]["data"]["orderUpdated"],
        json!({ "id": order, "status": "PAID", "version": 2 }),
        "{change}"
    );

    // Bob may not watch alice's order; nobody may watch without signing in.
    let mut bob = connect(&ws, Some(&bob_token)).await;
    subscribe(&mut bob, &order).await;
    let refused = receive(&mut bob).await;
    assert_eq!(error_code(&refused), json!("NOT_FOUND"), "{refused}");
    let mut anonymous = connect(&ws, None).await;
    subscribe(&mut anonymous, &order).await;
    let refused = receive(&mut anonymous).await;
    assert_eq!(error_code(&refused), json!("UNAUTHENTICATED"), "{refused}");
    let mut forged = connect(&ws, Some("not-a-token")).await;
    subscribe(&mut forged, &order).await;
    let refused = receive(&mut forged).await;
    assert_eq!(error_code(&refused), json!("UNAUTHENTICATED"), "{refused}");
    platform.stop().await;
}
