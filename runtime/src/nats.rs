//! NATS connections and the JetStream streams of `nats/streams.json`.
//!
//! Every process logs in as its own NATS user (`nats/accounts.conf`: the relay may publish
//! events, the gateway only metrics, and so on) with one of the credentials of
//! [`NatsCredentials`], and may be given several seed servers of a cluster.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::future::BoxFuture;
use serde::Deserialize;
use tillstream_events::Namespace;

use crate::ops::ReadinessCheck;

/// The stream definitions shipped in `nats/streams.json`, compiled in so every binary
/// agrees on them.
const STREAMS_JSON: &str = include_str!("../../nats/streams.json");

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("nats/streams.json defines no consumer `{0}`")]
    UnknownConsumer(String),
    #[error("NATS credentials: {0}")]
    Credentials(String),
    #[error("cannot read the NATS credentials file {path}: {source}")]
    CredentialsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nats/streams.json is invalid: {0}")]
    Definitions(#[from] serde_json::Error),
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
}

/// Where the streams are: shared by every process that talks to JetStream.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL; several seeds of a cluster comma-separated (the client tries them in
    /// turn and learns the other nodes from the server).
    #[arg(
        long = "nats-url",
        env = "TILLSTREAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,
    #[command(flatten)]
    pub credentials: NatsCredentials,
    /// Prefix of every stream and subject (empty: the public names).
    #[arg(long = "namespace", env = "TILLSTREAM_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Replicas of each stream (1 on one machine, 3 in a cluster).
    #[arg(
        long = "stream-replicas",
        env = "TILLSTREAM_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub stream_replicas: usize,
}

impl NatsConfig {
    /// Connects to these servers with these credentials; see [`connect`].
    pub async fn connect(&self, name: &str, wait: bool) -> Result<async_nats::Client, NatsError> {
        connect(&self.nats_url, &self.credentials, name, wait).await
    }
}

/// How a process logs in to NATS: at most one of a user and password, a token, a `.creds`
/// file (JWT and NKey seed, from `nsc`) or an NKey seed file. None: anonymous (a server
/// without authorization, or with `no_auth_user`). Secrets are read from the environment or
/// from files, never printed.
#[derive(Clone, Default, clap::Args)]
pub struct NatsCredentials {
    /// NATS user name (with --nats-password); a URL's `user:password@` is used when unset.
    #[arg(
        long = "nats-user",
        env = "TILLSTREAM_NATS_USER",
        requires = "nats_password"
    )]
    pub nats_user: Option<String>,
    /// Password of --nats-user.
    #[arg(
        long = "nats-password",
        env = "TILLSTREAM_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// NATS authentication token.
    #[arg(
        long = "nats-token",
        env = "TILLSTREAM_NATS_TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
    /// NATS credentials file (`.creds`: user JWT and NKey seed).
    #[arg(long = "nats-creds", env = "TILLSTREAM_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// File holding an NKey user seed (`SU…`).
    #[arg(long = "nats-nkey-seed-file", env = "TILLSTREAM_NATS_NKEY_SEED_FILE")]
    pub nats_nkey_seed_file: Option<PathBuf>,
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCredentials")
            .field("nats_user", &self.nats_user)
            .field("nats_password", &self.nats_password.as_ref().map(|_| "***"))
            .field("nats_token", &self.nats_token.as_ref().map(|_| "***"))
            .field("nats_creds", &self.nats_creds)
            .field("nats_nkey_seed_file", &self.nats_nkey_seed_file)
            .finish()
    }
}

impl NatsCredentials {
    /// A user and password.
    pub fn user(user: impl Into<String>, password: impl Into<String>) -> Self {
        NatsCredentials {
            nats_user: Some(user.into()),
            nats_password: Some(password.into()),
            ..Default::default()
        }
    }

    /// `options` logging in with these credentials (or with the user and password of the
    /// first URL that has them, when none are configured).
    async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
        servers: &[async_nats::ServerAddr],
    ) -> Result<async_nats::ConnectOptions, NatsError> {
        let chosen = [
            self.nats_user.is_some(),
            self.nats_token.is_some(),
            self.nats_creds.is_some(),
            self.nats_nkey_seed_file.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count();
        if chosen > 1 {
            return Err(NatsError::Credentials(
                "choose one of --nats-user/--nats-password, --nats-token, --nats-creds and --nats-nkey-seed-file".to_owned(),
            ));
        }
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        } else if let Some(token) = &self.nats_token {
            options = options.token(token.clone());
        } else if let Some(path) = &self.nats_creds {
            options = options.credentials_file(path).await.map_err(|source| {
                NatsError::CredentialsFile {
                    path: path.clone(),
                    source,
                }
            })?;
        } else if let Some(path) = &self.nats_nkey_seed_file {
            let seed =
                std::fs::read_to_string(path).map_err(|source| NatsError::CredentialsFile {
                    path: path.clone(),
                    source,
                })?;
            options = options.nkey(seed.trim().to_owned());
        } else if let Some(server) = servers.iter().find(|s| s.has_user_pass()) {
            // async-nats does not log in with a URL's user and password by itself.
            if let (Some(user), Some(password)) = (server.username(), server.password()) {
                options = options.user_and_password(user.to_owned(), password.to_owned());
            }
        }
        Ok(options)
    }
}

/// The servers of a comma-separated URL list.
fn servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, NatsError> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                NatsError::Credentials(format!("`{}` is not a NATS URL: {e}", redact(u)))
            })
        })
        .collect()
}

/// NATS URLs (comma-separated) without their passwords, for messages.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| match url::Url::parse(url.trim()) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            _ => url.trim().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects to NATS at `urls` (one URL or comma-separated seeds) with `credentials`. When
/// `wait` is false the client returns at once and keeps trying in the background, so a
/// process can start (and commit to Postgres) while NATS is down.
pub async fn connect(
    urls: &str,
    credentials: &NatsCredentials,
    name: &str,
    wait: bool,
) -> Result<async_nats::Client, NatsError> {
    let servers = servers(urls)?;
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    let mut options = credentials.apply(options, &servers).await?;
    if !wait {
        options = options.retry_on_initial_connect();
    }
    options
        .connect(servers)
        .await
        .map_err(|source| NatsError::Connect {
            url: redact(urls),
            source,
        })
}

#[derive(Debug, Deserialize)]
struct Definitions {
    streams: Vec<StreamDefinition>,
    #[serde(default)]
    consumers: Vec<ConsumerDefinition>,
}

#[derive(Debug, Deserialize)]
struct ConsumerDefinition {
    name: String,
    stream: String,
    filter_subject: String,
    ack_wait_secs: u64,
    max_ack_pending: i64,
}

/// The durable pull consumer `name` of `nats/streams.json`, in `namespace`: the name of
/// its stream and its configuration (explicit acks).
pub fn consumer_config(
    namespace: &Namespace,
    name: &str,
) -> Result<(String, jetstream::consumer::pull::Config), NatsError> {
    let definitions: Definitions = serde_json::from_str(STREAMS_JSON)?;
    let def = definitions
        .consumers
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| NatsError::UnknownConsumer(name.to_owned()))?;
    let durable = namespace.consumer(&def.name);
    Ok((
        namespace.stream(&def.stream),
        jetstream::consumer::pull::Config {
            durable_name: Some(durable),
            filter_subject: prefixed(namespace, &def.filter_subject),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(def.ack_wait_secs),
            max_ack_pending: def.max_ack_pending,
            ..Default::default()
        },
    ))
}

/// `subject` in `namespace`.
fn prefixed(namespace: &Namespace, subject: &str) -> String {
    match namespace.prefix() {
        "" => subject.to_owned(),
        prefix => format!("{prefix}.{subject}"),
    }
}

#[derive(Debug, Deserialize)]
struct StreamDefinition {
    name: String,
    subjects: Vec<String>,
    retention: String,
    storage: String,
    max_age_secs: u64,
    duplicate_window_secs: u64,
}

/// The JetStream configuration of every stream in `nats/streams.json`, in `namespace`,
/// with `replicas` copies each.
pub fn stream_configs(
    namespace: &Namespace,
    replicas: usize,
) -> Result<Vec<stream::Config>, NatsError> {
    let definitions: Definitions = serde_json::from_str(STREAMS_JSON)?;
    Ok(definitions
        .streams
        .into_iter()
        .map(|def| {
            let subjects = def
                .subjects
                .iter()
                .map(|s| prefixed(namespace, s))
                .collect();
            let name = namespace.stream(&def.name);
            stream::Config {
                name,
                subjects,
                retention: match def.retention.as_str() {
                    "interest" => stream::RetentionPolicy::Interest,
                    "workqueue" => stream::RetentionPolicy::WorkQueue,
                    _ => stream::RetentionPolicy::Limits,
                },
                storage: match def.storage.as_str() {
                    "memory" => stream::StorageType::Memory,
                    _ => stream::StorageType::File,
                },
                max_age: Duration::from_secs(def.max_age_secs),
                duplicate_window: Duration::from_secs(def.duplicate_window_secs),
                num_replicas: replicas.max(1),
                ..Default::default()
            }
        })
        .collect())
}

/// Creates the streams, or updates them to the shipped definitions. Idempotent.
pub async fn ensure_streams(
    js: &jetstream::Context,
    namespace: &Namespace,
    replicas: usize,
) -> Result<(), NatsError> {
    for config in stream_configs(namespace, replicas)? {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|source| NatsError::Stream {
                name: name.clone(),
                source,
            })?;
        tracing::debug!(stream = %name, "stream ready");
    }
    Ok(())
}

/// Deletes the namespace's streams (used by tests to leave nothing behind).
pub async fn delete_streams(
    js: &jetstream::Context,
    namespace: &Namespace,
) -> Result<(), NatsError> {
    for config in stream_configs(namespace, 1)? {
        let _ = js.delete_stream(&config.name).await;
    }
    Ok(())
}

/// Readiness: the client is connected.
pub struct NatsReady(pub async_nats::Client);

impl ReadinessCheck for NatsReady {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.0.connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                state => Err(format!("NATS {state}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_parse_and_passwords_never_print() {
        let seeds = servers("nats://a:4222, nats://b:4223,nats://u:secret@c:4224").unwrap();
        assert_eq!(seeds.len(), 3);
        assert!(seeds[2].has_user_pass());
        let shown = redact("nats://a:4222,nats://u:secret@c:4224");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(servers("nats://a:4222,http://[nonsense").is_err());
        let creds = NatsCredentials::user("relay", "secret");
        assert!(!format!("{creds:?}").contains("secret"));
    }

    #[test]
    fn shipped_definitions_parse_and_follow_the_namespace() {
        let configs = stream_configs(&Namespace::new("t1").unwrap(), 3).unwrap();
        let events = configs.iter().find(|c| c.name == "T1_EVENTS").unwrap();
        assert_eq!(
            events.subjects,
            vec!["t1.events.user.*", "t1.events.order.*"]
        );
        assert_eq!(events.num_replicas, 3);
        assert!(events.duplicate_window >= Duration::from_secs(600));

        let (stream, consumer) =
            consumer_config(&Namespace::new("t1").unwrap(), "projector-main").unwrap();
        assert_eq!(stream, "T1_EVENTS");
        assert_eq!(consumer.filter_subject, "t1.events.>");
        assert_eq!(
            consumer.durable_name.as_deref(),
            Some(
                Namespace::new("t1")
                    .unwrap()
                    .consumer("projector-main")
                    .as_str()
            )
        );
        assert!(consumer_config(&Namespace::new("t1").unwrap(), "nobody").is_err());
    }
}
