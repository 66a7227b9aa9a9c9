//! `tillstream doctor`: checks what the platform needs and says what is wrong in plain words.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use tillstream_events::Namespace;
use tillstream_runtime::event_store::{self, missing_migrations};
use tillstream_runtime::nats::{self, stream_configs};
use tillstream_runtime::postgres;

use super::DatabaseArgs;

/// Clock difference with Postgres above which tokens and audit times become unreliable.
const MAX_SKEW: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    nats: nats::NatsConfig,
}

/// A database suffix, the schemas it must hold, and what to do when it does not.
pub(super) type DatabaseCheck = (&'static str, Vec<(&'static str, Migrator)>, &'static str);

/// Every database of an installation and the schemas (migrations) it holds: what doctor
/// checks and setup applies.
pub(super) fn schemas() -> [DatabaseCheck; 3] {
    [
        (
            "users",
            vec![
                ("event store", event_store::migrator()),
                ("user service", tillstream_user::app::migrator()),
            ],
            "start the user service once, or run `tillstream setup`",
        ),
        (
            "orders",
            vec![("event store", event_store::migrator())],
            "start the order service once, or run `tillstream setup`",
        ),
        (
            "reads",
            vec![("read models", tillstream_projections::migrator())],
            "start the projector or the gateway once, or run `tillstream setup`",
        ),
    ]
}

#[derive(Default)]
struct Report {
    failures: usize,
}

impl Report {
    fn ok(&self, what: impl AsRef<str>) {
        println!("ok     {}", what.as_ref());
    }
    fn warn(&self, what: impl AsRef<str>) {
        println!("warn   {}", what.as_ref());
    }
    fn fail(&mut self, what: impl AsRef<str>) {
        self.failures += 1;
        println!("FAIL   {}", what.as_ref());
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    check_postgres(&args, &mut report).await;
    check_nats(&args, &mut report).await;
    if report.failures > 0 {
        anyhow::bail!("{} problem(s) found", report.failures);
    }
    println!("everything tillstream needs is in place");
    Ok(())
}

async fn check_postgres(args: &DoctorArgs, report: &mut Report) {
    let server = postgres::redact(&args.db.postgres_url);
    let Ok(pool) = postgres::pool(&args.db.postgres_url, 1) else {
        return report.fail(format!("the Postgres URL {server} is not valid"));
    };
    let row: Result<(String, DateTime<Utc>), _> =
        sqlx::query_as("SELECT current_setting('server_version'), now()")
            .fetch_one(&pool)
            .await;
    let (version, db_now) = match row {
        Ok(row) => row,
        Err(error) => return report.fail(format!("Postgres at {server} does not answer: {error}")),
    };
    report.ok(format!("Postgres {version} answers at {server}"));
    let skew = (Utc::now() - db_now).num_milliseconds();
    let skew_text = format!("{:.1} s", skew.abs() as f64 / 1000.0);
    if skew.unsigned_abs() > MAX_SKEW.as_millis() as u64 {
        report.warn(format!(
            "this machine's clock and Postgres's differ by {skew_text}: token expiry and audit times will be off; sync the clocks (NTP)"
        ));
    } else {
        report.ok(format!("clocks agree with Postgres (within {skew_text})"));
    }

    let databases = schemas();
    for (suffix, migrators, remedy) in databases {
        let name = format!("{}_{suffix}", args.db.database_prefix);
        let Ok(url) = postgres::with_database(&args.db.postgres_url, &name) else {
            report.fail(format!("cannot form the URL of database {name}"));
            continue;
        };
        let Ok(db) = postgres::pool(&url, 1) else {
            continue;
        };
        if sqlx::query("SELECT 1").execute(&db).await.is_err() {
            report.fail(format!(
                "database {name} does not exist or refuses connections: {remedy}"
            ));
            continue;
        }
        for (what, migrator) in migrators {
            match missing_migrations(&db, &migrator).await {
                Ok(missing) if missing.is_empty() => report.ok(format!("database {name}: {what} schema up to date")),
                Ok(missing) => report.fail(format!(
                    "database {name}: {what} migrations {missing:?} not applied: {remedy} (a newer version applies them at start)"
                )),
                Err(error) => report.fail(format!("database {name}: cannot read its migrations: {error}")),
            }
        }
    }
}

async fn check_nats(args: &DoctorArgs, report: &mut Report) {
    let shown = nats::redact(&args.nats.nats_url);
    let connecting = args.nats.connect("tillstream-doctor", true);
    let client = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        Ok(Ok(client)) => client,
        Ok(Err(nats::NatsError::Connect { source, .. }))
            if matches!(
                source.kind(),
                async_nats::ConnectErrorKind::AuthorizationViolation
                    | async_nats::ConnectErrorKind::Authentication
            ) =>
        {
            return report.fail(format!(
                "NATS at {shown} refused the login: check TILLSTREAM_NATS_USER and TILLSTREAM_NATS_PASSWORD (or the token, .creds or NKey seed file) against the server's users (nats/accounts.conf)"
            ));
        }
        Ok(Err(error)) => {
            return report.fail(format!("NATS does not answer at {shown}: {error}"));
        }
        Err(_) => {
            return report.fail(format!("NATS at {shown} did not answer within 5 s"));
        }
    };
    let info = client.server_info();
    report.ok(format!("NATS {} answers at {shown}", info.version));
    // The account-info request answers only where JetStream is enabled.
    let account = client.request("$JS.API.INFO", "".into()).await;
    let enabled = account
        .ok()
        .and_then(|reply| serde_json::from_slice::<serde_json::Value>(&reply.payload).ok())
        .is_some_and(|info| info.get("error").is_none());
    if !enabled {
        return report.fail(
            "NATS answers but JetStream is not enabled for this account: start nats-server with -js",
        );
    }
    report.ok("JetStream is enabled");
    let js = async_nats::jetstream::new(client);
    let Ok(namespace) = Namespace::new(args.nats.namespace.clone()) else {
        return report.fail(format!("namespace `{}` is not valid", args.nats.namespace));
    };
    let Ok(configs) = stream_configs(&namespace, 1) else {
        return report.fail("nats/streams.json does not parse");
    };
    for config in configs {
        match js.get_stream(&config.name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => report.ok(format!(
                    "stream {}: {} messages, {} replica(s)",
                    config.name, info.state.messages, info.config.num_replicas
                )),
                Err(error) => report.fail(format!(
                    "stream {}: cannot read its state: {error}",
                    config.name
                )),
            },
            Err(_) => report.fail(format!(
                "stream {} does not exist: start a relay or the projector once (they create it), or run `tillstream setup`",
                config.name
            )),
        }
    }
}
