//! `tillstream up`: the whole platform on local defaults.

use std::net::SocketAddr;

use crate::{Platform, PlatformConfig, demo};
use anyhow::Context;
use tillstream_runtime::nats::NatsConfig;
use tillstream_runtime::tls::DevCertificates;

use super::{DataDirArgs, DatabaseArgs};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    nats: NatsConfig,
    /// Folder for generated development keys and the demo credentials.
    #[command(flatten)]
    data: DataDirArgs,
    #[arg(
        long,
        env = "TILLSTREAM_USER_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    user_grpc_addr: SocketAddr,
    #[arg(
        long,
        env = "TILLSTREAM_ORDER_GRPC_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    order_grpc_addr: SocketAddr,
    /// GraphQL (and the gateway's /healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "TILLSTREAM_GATEWAY_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    gateway_http_addr: SocketAddr,
    /// First of six consecutive ports for the ops endpoints of user, order, the two relays,
    /// the projector and the predictor.
    #[arg(long, env = "TILLSTREAM_OPS_BASE_PORT", default_value_t = 9101)]
    ops_base_port: u16,
    /// The first admin, created on first start.
    #[arg(
        long,
        env = "TILLSTREAM_ADMIN_EMAIL",
        default_value = "admin@tillstream.local"
    )]
    admin_email: String,
    /// The first admin's password; generated into `<data-dir>/admin-password` when unset.
    #[arg(long, env = "TILLSTREAM_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Serve gRPC over TLS with a development CA generated into `<data-dir>/tls/`.
    #[arg(long, env = "TILLSTREAM_DEV_TLS")]
    tls: bool,
    /// The gateway's rate and request limits.
    #[command(flatten)]
    gateway_limits: tillstream_gateway::config::Limits,
    /// Do not seed the demo customer and order.
    #[arg(long)]
    no_demo: bool,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data.data_dir)
        .with_context(|| format!("cannot create data folder {}", args.data.data_dir.display()))?;
    let ops = |i: u16| SocketAddr::from(([127, 0, 0, 1], args.ops_base_port + i));
    let certificates = if args.tls {
        Some(
            DevCertificates::ensure(&args.data.data_dir)
                .context("generating development certificates")?,
        )
    } else {
        None
    };
    let config = PlatformConfig {
        postgres_url: args.db.postgres_url,
        database_prefix: args.db.database_prefix,
        nats_url: args.nats.nats_url,
        nats_credentials: args.nats.credentials,
        namespace: args.nats.namespace,
        stream_replicas: args.nats.stream_replicas,
        data_dir: args.data.data_dir.clone(),
        user_grpc_addr: args.user_grpc_addr,
        order_grpc_addr: args.order_grpc_addr,
        gateway_http_addr: args.gateway_http_addr,
        ops_addrs: [ops(0), ops(1), ops(2), ops(3), ops(4), ops(5)],
        db_pool_size: 10,
        admin_email: Some(args.admin_email.clone()),
        admin_password: args.admin_password,
        tls: certificates.as_ref().map(|c| c.server.clone()),
        tls_ca: certificates.as_ref().map(|c| c.ca.clone()),
        gateway_limits: args.gateway_limits,
    };
    let platform = Platform::build(config)
        .await
        .context("starting the platform")?;
    let addrs = platform.addresses();
    let shutdown = tillstream_runtime::shutdown::on_signal();
    let running = tokio::spawn(platform.run(shutdown.clone()));

    println!("tillstream is up");
    println!(
        "  GraphQL   http://{}/graphql   (GraphiQL in a browser)",
        addrs.gateway_http
    );
    println!(
        "  REST      http://{}/api/v1   (reference at /api/v1/docs, OpenAPI at /api/v1/openapi.json)",
        addrs.gateway_http
    );
    println!(
        "  gRPC      users {}   orders {}",
        addrs.user_grpc, addrs.order_grpc
    );
    println!(
        "  ops       /healthz /readyz /metrics on {} (gateway) and {}",
        addrs.gateway_http,
        addrs
            .ops
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !args.no_demo {
        let client_tls = match &certificates {
            Some(certs) => Some(
                certs
                    .client_config()
                    .context("reading the development CA")?,
            ),
            None => None,
        };
        match demo::seed(
            &args.data.data_dir,
            addrs.user_grpc,
            addrs.order_grpc,
            client_tls,
        )
        .await
        {
            Ok(d) => {
                println!(
                    "  demo      customer {} (password in {}/demo.json)",
                    d.email,
                    args.data.data_dir.display()
                );
                println!(
                    "            GraphiQL header:  {{\"Authorization\": \"Bearer {}\"}}",
                    d.token
                );
                println!(
                    "            query:  {{ order(id: \"{}\") {{ status totalCents currency items {{ sku quantity lineTotalCents }} }} }}",
                    d.order_id
                );
                println!(
                    "            or:     {{ orders {{ edges {{ node {{ id status totalCents }} }} }} }}"
                );
            }
            Err(error) => eprintln!("  demo data could not be seeded: {error}"),
        }
    }
    println!(
        "  admin     {} (password in {}/admin-password unless configured)",
        args.admin_email,
        args.data.data_dir.display()
    );
    println!("Ctrl-C stops everything.");
    running.await.context("platform task")??;
    Ok(())
}
