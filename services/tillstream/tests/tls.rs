//! gRPC over TLS with the development CA `tillstream up --tls` generates.

mod support;

use std::time::Duration;

use support::{TestPlatform, register};
use tillstream::demo;
use tillstream_proto::user::v1::user_service_client::UserServiceClient;
use tillstream_runtime::tls::DevCertificates;

#[tokio::test]
async fn clients_trusting_the_dev_ca_connect_and_plaintext_clients_fail_cleanly() {
    let mut certificates = None;
    let platform = TestPlatform::start_with(|config| {
        let certs = DevCertificates::ensure(&config.data_dir).expect("development certificates");
        config.tls = Some(certs.server.clone());
        config.tls_ca = Some(certs.ca.clone());
        certificates = Some(certs);
    })
    .await;
    let certs = certificates.expect("generated");

    let channel = demo::channel(
        platform.addrs.user_grpc,
        Some(certs.client_config().unwrap()),
    )
    .await
    .expect("TLS connection with the dev CA");
    let reply = UserServiceClient::new(channel)
        .register_user(register("tls@example.com", "tls"))
        .await
        .expect("a call over TLS succeeds");
    assert_eq!(reply.into_inner().version, 1);

    // A plaintext client gets an error promptly instead of hanging or crashing the server.
    let plaintext = tokio::time::timeout(Duration::from_secs(10), async {
        let channel = demo::channel(platform.addrs.user_grpc, None).await?;
        UserServiceClient::new(channel)
            .register_user(register("plain@example.com", "plain"))
            .await
            .map_err(demo::DemoError::from)
    })
    .await
    .expect("the plaintext attempt ends within 10 s");
    assert!(plaintext.is_err(), "plaintext is refused by a TLS port");

    // A client that does not trust the CA is refused too.
    let foreign = DevCertificates::ensure(&platform.env.data_dir.join("other")).unwrap();
    let untrusted = demo::channel(
        platform.addrs.user_grpc,
        Some(foreign.client_config().unwrap()),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a server certificate from another CA is not trusted"
    );

    // The server is unharmed.
    let channel = demo::channel(
        platform.addrs.user_grpc,
        Some(certs.client_config().unwrap()),
    )
    .await
    .unwrap();
    assert!(
        UserServiceClient::new(channel)
            .register_user(register("after@example.com", "after"))
            .await
            .is_ok()
    );
    platform.stop().await;
}

/// Every connection to a Postgres on this host goes without TLS unless the URL asks for it
/// (`runtime::postgres::connect_options`); one the URL asks TLS of uses it.
#[tokio::test]
async fn postgres_on_this_host_is_reached_without_tls_unless_the_url_asks() {
    let env = tillstream_testkit::TestEnv::new();
    let (url, pool) = env.database("tls").await;
    let encrypted = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("pg_stat_ssl answers")
    };
    let server_offers_tls = sqlx::query_scalar::<_, String>("SHOW ssl")
        .fetch_one(&pool)
        .await
        .expect("SHOW ssl")
        == "on";
    // The default test server (127.0.0.1), with nothing asking for TLS.
    let parsed = url::Url::parse(&url).expect("valid URL");
    let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
        && !parsed.query_pairs().any(|(key, _)| key == "sslmode")
        && std::env::var_os("PGSSLMODE").is_none();
    if local {
        assert!(
            !encrypted(pool).await,
            "a server on this host, no TLS asked for"
        );
    }
    if !server_offers_tls {
        eprintln!("this Postgres has TLS off: only the plaintext connection was checked");
    }
    if server_offers_tls {
        let separator = if url.contains('?') { '&' } else { '?' };
        let asked =
            tillstream_runtime::postgres::pool(&format!("{url}{separator}sslmode=require"), 1)
                .expect("pool");
        assert!(encrypted(asked).await, "sslmode=require in the URL");
    }
    env.cleanup().await;
}
