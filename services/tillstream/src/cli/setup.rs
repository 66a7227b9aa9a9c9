//! `tillstream setup`: the one-shot set-up step of a deployment.

use anyhow::Context;
use tillstream_events::Namespace;
use tillstream_runtime::{nats, postgres};

use super::DatabaseArgs;

#[derive(clap::Args)]
pub struct SetupArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    nats: nats::NatsConfig,
}

/// Creates the databases and applies every migration, creates (or updates) the streams of
/// nats/streams.json and the projector's consumer, then exits. Idempotent. The services do
/// the same at start; running it first, once, as an operator lets them start with
/// least-privilege logins and in any order.
pub async fn run(args: SetupArgs) -> anyhow::Result<()> {
    for (suffix, migrators, _) in super::doctor::schemas() {
        let name = format!("{}_{suffix}", args.db.database_prefix);
        let url = postgres::with_database(&args.db.postgres_url, &name)?;
        postgres::ensure_database(&url).await?;
        let pool = postgres::pool(&url, 2)?;
        for (what, migrator) in migrators {
            migrator
                .run(&pool)
                .await
                .with_context(|| format!("applying the {what} migrations to {name}"))?;
            println!("database {name}: {what} schema up to date");
        }
        pool.close().await;
    }
    let client = args.nats.connect("tillstream-setup", true).await?;
    let js = async_nats::jetstream::new(client);
    let namespace = Namespace::new(args.nats.namespace.clone())?;
    nats::ensure_streams(&js, &namespace, args.nats.stream_replicas).await?;
    println!(
        "streams of nats/streams.json ready ({} replica(s))",
        args.nats.stream_replicas
    );
    let (stream, consumer) = nats::consumer_config(&namespace, "projector-main")?;
    let durable = consumer.durable_name.clone().unwrap_or_default();
    js.get_stream(&stream)
        .await
        .with_context(|| format!("stream {stream}"))?
        .get_or_create_consumer(&durable, consumer)
        .await
        .with_context(|| format!("consumer {durable} on {stream}"))?;
    println!("consumer {durable} on {stream} ready");
    Ok(())
}
