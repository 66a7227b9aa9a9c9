//! Hostile gRPC input: bytes that are not protobuf, unknown enum values, extreme numbers and
//! unicode edge cases. Each gets a clear status (never INTERNAL or UNKNOWN), nothing is
//! written, and the service keeps answering.

mod support;

use bytes::{Buf, BufMut};
use prost::Message;
use support::{TestPlatform, authorized, item, place, register};
use tillstream_proto::order::v1 as order_pb;
use tillstream_proto::user::v1 as user_pb;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends and receives raw bytes, so a test can put anything on the wire.
#[derive(Default, Clone)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

async fn raw_call(
    platform: &TestPlatform,
    path: &'static str,
    body: Vec<u8>,
    token: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let addr = if path.contains("UserService") {
        platform.addrs.user_grpc
    } else {
        platform.addrs.order_grpc
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = if token.is_empty() {
        tonic::Request::new(body)
    } else {
        authorized(body, token)
    };
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// A clear answer to the caller: anything but a server fault.
fn assert_clear(status: &tonic::Status, what: &str) {
    assert!(
        !matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::Unavailable
        ),
        "{what}: answered {:?} {:?}",
        status.code(),
        status.message()
    );
}

#[tokio::test]
async fn hostile_grpc_input_gets_clear_statuses_and_changes_nothing() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("hostile").await;
    let admin = platform.admin_token().await;
    const PLACE: &str = "/tillstream.order.v1.OrderService/PlaceOrder";
    const REGISTER: &str = "/tillstream.user.v1.UserService/RegisterUser";
    const ROLE: &str = "/tillstream.user.v1.UserService/ChangeUserRole";
    const LIST: &str = "/tillstream.order.v1.OrderService/ListOrders";

    // Bytes that are not a protobuf message at all, or a truncated one.
    let valid = place(&user_id).encode_to_vec();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("0xff bytes", vec![0xff; 64]),
        ("a wire type 7", vec![0x0f, 0x01]),
        (
            "a length past the end",
            vec![0x0a, 0xff, 0xff, 0xff, 0x0f, b'a'],
        ),
        ("a truncated message", valid[..valid.len() / 2].to_vec()),
        (
            "a varint of eleven bytes",
            vec![0x18; 1].into_iter().chain([0xff; 11]).collect(),
        ),
    ];
    for (what, bytes) in garbage {
        let status = raw_call(&platform, PLACE, bytes, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("not a valid"),
            "{what}: {status:?}"
        );
    }

    // Fields this version does not know are ignored (forward compatibility), as protobuf says.
    let mut extended = valid.clone();
    extended.extend([0xa0, 0x1f, 0x01]); // field 500, varint 1
    let placed = raw_call(&platform, PLACE, extended, &token).await;
    assert!(placed.is_ok(), "unknown fields are skipped: {placed:?}");

    // Enum values from a newer (or hostile) client.
    let mut role = user_pb::ChangeUserRoleRequest {
        user_id: user_id.clone(),
        ..Default::default()
    };
    role.role = 99;
    let status = raw_call(&platform, ROLE, role.encode_to_vec(), &admin)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut list = order_pb::ListOrdersRequest {
        user_id: user_id.clone(),
        ..Default::default()
    };
    list.status = -7;
    let status = raw_call(&platform, LIST, list.encode_to_vec(), &token)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Extreme numbers.
    let mut orders = platform.orders().await;
    for (what, items) in [
        ("u32::MAX quantity", vec![item("A", "a", u32::MAX, 1)]),
        ("i64::MAX price", vec![item("A", "a", 1, i64::MAX)]),
        ("i64::MIN price", vec![item("A", "a", 1, i64::MIN)]),
        (
            "a total past i64",
            vec![
                item("A", "a", 2, i64::MAX / 2),
                item("B", "b", 2, i64::MAX / 2),
            ],
        ),
        (
            "a thousand lines",
            (0..1000)
                .map(|i| item(&format!("S{i}"), "x", 1, 1))
                .collect(),
        ),
    ] {
        let request = order_pb::PlaceOrderRequest {
            items,
            ..place(&user_id)
        };
        let status = match orders.place_order(authorized(request, &token)).await {
            Ok(reply) => panic!("{what} was accepted: {reply:?}"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }

    // Unicode edge cases in names and emails: refused with a field, or stored exactly.
    let mut users = platform.users().await;
    let strange = [
        "nul\u{0}inside@example.com",
        "rtl\u{202e}moc.elpmaxe@x.com",
        "zero\u{200b}width@example.com",
        "ünïcödé@exämple.com",
        "emoji😀@example.com",
        "@example.com",
        "a@",
        "lone\u{fffd}replacement@example.com",
    ];
    for email in strange {
        match users.register_user(register(email, "strange")).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{email:?}: {status:?}"
                );
            }
        }
    }
    for name in [
        "nul\u{0}name",
        "bell\u{7}",
        "x".repeat(10_000).as_str(),
        "👩‍👩‍👧‍👦",
        "\u{202e}evil",
    ] {
        let mut request = register(&format!("name{}@example.com", name.len()), "named");
        request.full_name = name.to_owned();
        if let Err(status) = users.register_user(request).await {
            assert_clear(&status, &format!("full name {name:?}"));
            assert_eq!(status.code(), Code::InvalidArgument);
        }
    }
    let mut raw_register = register("raw@example.com", "raw").encode_to_vec();
    // A string field that is not UTF-8.
    raw_register.extend([0x1a, 0x02, 0xc3, 0x28]);
    let status = raw_call(&platform, REGISTER, raw_register, "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Still answering, and nothing half-written: the customer has exactly the one order
    // that was valid.
    let mine = orders
        .list_orders(authorized(
            order_pb::ListOrdersRequest {
                user_id: user_id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await;
    assert!(mine.is_ok(), "{mine:?}");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'order' AND event_type = 'OrderPlaced'",
    )
    .fetch_one(&platform.env.connect("orders"))
    .await
    .unwrap();
    assert_eq!(events, 1, "only the valid order was stored");

    // Found by fuzzing: a NUL in the login email made the user store's query fail, and the
    // answer was UNAVAILABLE ("retry") instead of a refused login.
    let login = platform
        .users()
        .await
        .login(user_pb::LoginRequest {
            email: "hostile\0@example.com".into(),
            password: "a long enough password".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(login.code(), Code::Unauthenticated, "{login:?}");
    platform.stop().await;
}
