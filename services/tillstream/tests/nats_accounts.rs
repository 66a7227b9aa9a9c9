//! The NATS users of `nats/accounts.conf`, on a private nats-server this test starts: the
//! real user service, relay and projector run with least-privilege logins (`relay`,
//! `projector`) and a registration still reaches the read model; the gateway's login may
//! publish request metrics but not events nor call JetStream; the relay's may not publish
//! dead letters; wrong credentials are refused. Every login goes through the services'
//! own connect code (`runtime::nats::connect`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{DEADLINE, register};
use tillstream_events::Namespace;
use tillstream_gateway::autoscale::Autoscale;
use tillstream_proto::user::v1::user_service_client::UserServiceClient;
use tillstream_runtime::Shutdown;
use tillstream_runtime::nats::{self, NatsConfig, NatsCredentials};
use tillstream_testkit::nats_server::PrivateNats;
use tillstream_testkit::{TestEnv, eventually};

const USERS: [&str; 6] = [
    "command",
    "relay",
    "projector",
    "gateway",
    "predictor",
    "operator",
];

/// A private nats-server with JetStream and the shipped `nats/accounts.conf`, each user's
/// password `<user>-<secret>`.
struct AccountsServer {
    nats: PrivateNats,
    url: String,
    secret: String,
}

impl AccountsServer {
    async fn start(dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).expect("server folder");
        let accounts = concat!(env!("CARGO_MANIFEST_DIR"), "/../../nats/accounts.conf");
        std::fs::copy(accounts, dir.join("accounts.conf")).expect("accounts.conf");
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let passwords: Vec<(String, String)> = USERS
            .iter()
            .map(|user| {
                (
                    format!("TILLSTREAM_NATS_{}_PASSWORD", user.to_uppercase()),
                    password(&secret, user),
                )
            })
            .collect();
        let login = Some(("operator".to_owned(), password(&secret, "operator")));
        let nats =
            PrivateNats::start_configured(dir, "include \"accounts.conf\"", &passwords, login)
                .await;
        AccountsServer {
            url: nats.url(),
            nats,
            secret,
        }
    }

    fn login(&self, user: &str) -> NatsCredentials {
        NatsCredentials::user(user, password(&self.secret, user))
    }

    async fn connect(&self, user: &str) -> async_nats::Client {
        nats::connect(&self.url, &self.login(user), user, true)
            .await
            .unwrap_or_else(|e| panic!("{user} logs in: {e}"))
    }

    fn config(&self, user: &str) -> NatsConfig {
        NatsConfig {
            nats_url: self.url.clone(),
            credentials: self.login(user),
            namespace: String::new(), // accounts.conf names the public subjects
            stream_replicas: 1,
        }
    }
}

fn password(secret: &str, user: &str) -> String {
    format!("{user}-{secret}")
}

/// Messages in `stream` as the operator sees them (0 when it does not exist).
async fn messages(operator: &async_nats::Client, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(operator.clone());
    match js.get_stream(stream).await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn each_service_logs_in_as_its_own_nats_user_with_only_what_it_needs() {
    let env = TestEnv::new();
    let server = AccountsServer::start(&env.data_dir.join("nats")).await;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (users_db, reads_db) = (env.database_url("users"), env.database_url("reads"));

    let user = tillstream_user::App::build(tillstream_user::Config {
        database_url: users_db.clone(),
        db_pool_size: 5,
        grpc_addr: any,
        ops_addr: any,
        data_dir: env.data_dir.clone(),
        reads_database_url: reads_db.clone(),
        admin_email: None,
        admin_password: None,
        tls_cert: None,
        tls_key: None,
        token_lifetime_secs: 600,
        nats: server.config("command"),
    })
    .await
    .expect("user service builds");
    let relay = tillstream_relay::App::build(tillstream_relay::Config {
        database_url: users_db,
        name: "jetstream".into(),
        nats: server.config("relay"),
        batch_size: 100,
        ops_addr: any,
    })
    .await
    .expect("relay builds");
    let projector = tillstream_projections::App::build(tillstream_projections::Config {
        database_url: reads_db,
        nats: server.config("projector"),
        ops_addr: any,
    })
    .await
    .expect("projector builds");
    let grpc = user.grpc_addr();
    let shutdown = Shutdown::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::join!(
                user.run(shutdown.clone()),
                relay.run(shutdown.clone()),
                projector.run(shutdown.clone()),
            )
        }
    });

    // A registration goes through the relay's and the projector's own logins.
    let id = UserServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("user service answers")
        .register_user(register("least@example.com", "least"))
        .await
        .expect("registered")
        .into_inner()
        .id;
    let reads = env.connect("reads");
    let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
    eventually(DEADLINE, "the user in the read model", || async {
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM users WHERE id = $1")
            .bind(uuid)
            .fetch_optional(&reads)
            .await
            .ok()
            .flatten()
    })
    .await;

    let operator = server.connect("operator").await;
    assert_eq!(messages(&operator, "EVENTS").await, 1);

    // The gateway may publish request metrics, but no event and no JetStream call.
    let gateway = server.connect("gateway").await;
    gateway
        .publish("events.user.forged", "{}".into())
        .await
        .expect("sent (the server drops it)");
    gateway
        .publish("metrics.requests.gateway", "{}".into())
        .await
        .expect("sent");
    gateway.flush().await.expect("flushed");
    eventually(DEADLINE, "the gateway's metric in METRICS", || async {
        (messages(&operator, "METRICS").await == 1).then_some(())
    })
    .await;
    assert_eq!(
        messages(&operator, "EVENTS").await,
        1,
        "the gateway's forged event was refused"
    );
    let mut as_gateway = async_nats::jetstream::new(gateway);
    as_gateway.set_timeout(Duration::from_secs(2));
    assert!(
        as_gateway.query_account().await.is_err(),
        "the gateway may not call the JetStream API"
    );

    // The predictor publishes forecasts; the gateway reads them for loadForecast.
    let predictor = async_nats::jetstream::new(server.connect("predictor").await);
    let forecast = support::forecast("order", 1, 3.0);
    predictor
        .publish(
            Namespace::default().autoscale_forecast_subject("order"),
            serde_json::to_vec(&forecast).expect("JSON").into(),
        )
        .await
        .expect("sent")
        .await
        .expect("the predictor may publish forecasts");
    let view = Autoscale::new(server.connect("gateway").await, Namespace::default())
        .latest(5)
        .await
        .expect("the gateway may read AUTOSCALE");
    assert_eq!(view.map(|v| v.forecasts), Some(vec![forecast]));

    // The relay may not publish dead letters.
    let relay_login = server.connect("relay").await;
    relay_login
        .publish("events.dlq.user.forged", "{}".into())
        .await
        .expect("sent (the server drops it)");
    relay_login.flush().await.expect("flushed");
    assert_eq!(messages(&operator, "DLQ").await, 0);

    // Wrong or missing credentials are refused; a URL's user and password are used; a dead
    // seed ahead of a live one is skipped.
    let wrong = NatsCredentials::user("relay", "not the password");
    assert!(
        nats::connect(&server.url, &wrong, "wrong", true)
            .await
            .is_err()
    );
    assert!(
        nats::connect(&server.url, &NatsCredentials::default(), "anonymous", true)
            .await
            .is_err()
    );
    let in_url = server.url.replace(
        "nats://",
        &format!("nats://gateway:{}@", password(&server.secret, "gateway")),
    );
    assert!(
        nats::connect(&in_url, &NatsCredentials::default(), "url", true)
            .await
            .is_ok()
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let seeds = format!("nats://{dead},{}", server.url);
    assert!(
        nats::connect(&seeds, &server.login("operator"), "seeds", true)
            .await
            .is_ok()
    );
    let two = NatsCredentials {
        nats_token: Some("t".into()),
        ..server.login("operator")
    };
    assert!(matches!(
        nats::connect(&server.url, &two, "two", true).await,
        Err(nats::NatsError::Credentials(_))
    ));

    shutdown.cancel();
    let _ = running.await;
    drop(server.nats);
    env.cleanup().await;
}
