//! The table of every setting of every binary, generated from their command-line
//! definitions so it cannot go stale: `docs/configuration.md` is this module's output, and
//! a test fails when the file differs (`TILLSTREAM_UPDATE_DOCS=1 cargo test -p tillstream
//! --lib settings` rewrites it).

use std::collections::BTreeMap;

use clap::CommandFactory;

/// Every binary's command line, fully built (global flags propagated to subcommands).
fn binaries() -> Vec<clap::Command> {
    let mut commands = vec![
        tillstream_user::Cli::command(),
        tillstream_order::Cli::command(),
        tillstream_relay::Cli::command(),
        tillstream_projections::Cli::command(),
        tillstream_gateway::Cli::command(),
        tillstream_predictor::Cli::command(),
        crate::cli::Cli::command(),
    ];
    for command in &mut commands {
        command.build();
    }
    commands
}

/// One setting: its variable or flag, and where it applies with which default.
#[derive(Default)]
struct Setting {
    env: Option<String>,
    /// Flags by which commands take it (`tillstream up` says `--user-grpc-addr` for what
    /// `tillstream-user` calls `--grpc-addr`).
    flags: std::collections::BTreeSet<String>,
    help: String,
    /// Default → the commands that have it.
    defaults: BTreeMap<String, Vec<String>>,
    commands: Vec<String>,
}

/// Collects the options of `command` (named `path`) and of its subcommands.
fn collect(command: &clap::Command, path: &str, into: &mut BTreeMap<String, Setting>) {
    let runs = command.get_subcommands().next().is_none();
    if runs {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || arg.is_hide_set() {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let flag = arg.get_long().map(|l| format!("--{l}"));
            let key = env
                .clone()
                .or_else(|| flag.clone())
                .unwrap_or_else(|| id.to_owned());
            let setting = into.entry(key).or_insert_with(|| Setting {
                env,
                help: arg
                    .get_help()
                    .map(|h| h.to_string().replace('\n', " "))
                    .unwrap_or_default(),
                ..Default::default()
            });
            let defaults = arg.get_default_values();
            let default = defaults
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",");
            let takes_value = arg.get_action().takes_values();
            let default = match (takes_value, defaults.is_empty(), default.is_empty()) {
                (false, _, _) => "off".to_owned(),
                (true, true, _) => "unset".to_owned(),
                (true, false, true) => "empty".to_owned(),
                (true, false, false) => format!("`{default}`"),
            };
            setting
                .defaults
                .entry(default)
                .or_default()
                .push(path.to_owned());
            setting.commands.push(path.to_owned());
            setting.flags.extend(flag);
        }
    }
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        collect(sub, &format!("{path} {}", sub.get_name()), into);
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Commands as short as they can be said: `tillstream` for all `every` of its subcommands.
fn used_by(commands: &[String], every: usize) -> String {
    let (cli, binaries): (Vec<&String>, Vec<&String>) =
        commands.iter().partition(|c| c.starts_with("tillstream "));
    let mut names: Vec<String> = binaries.iter().map(|b| format!("`{b}`")).collect();
    if !cli.is_empty() && cli.len() == every {
        names.push("`tillstream` (every subcommand)".to_owned());
    } else {
        names.extend(cli.iter().map(|c| format!("`{c}`")));
    }
    names.join(", ")
}

fn count_leaves(command: &clap::Command) -> usize {
    let subs: Vec<&clap::Command> = command
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if subs.is_empty() {
        1
    } else {
        subs.into_iter().map(count_leaves).sum()
    }
}

const INTRO: &str = "# Configuration

Every setting of every tillstream binary, generated from their command-line definitions
(`services/tillstream/src/settings.rs`; a test fails when this file is out of date, and
`TILLSTREAM_UPDATE_DOCS=1 cargo test -p tillstream --lib settings` rewrites it). Each binary
also prints its own with `--help`.

A setting is given, in order of precedence, as a **flag**, as an **environment variable**,
or as a line `NAME=value` in a **settings file** named by `--config-file` or
`TILLSTREAM_CONFIG_FILE` (the file's keys are the environment variables below; the format of
Docker's `--env-file` and systemd's `EnvironmentFile`); otherwise the default applies.
Secrets (database URLs with passwords, `TILLSTREAM_NATS_PASSWORD`, `TILLSTREAM_NATS_TOKEN`,
`TILLSTREAM_ADMIN_PASSWORD`) are never printed by `--help`; pass them by environment or file,
for example from a Kubernetes Secret.

";

const OUTRO: &str = "
## Read from the environment only

| Environment variable | Default | Used by | What it sets |
|---|---|---|---|
| `RUST_LOG` | `info,sqlx::postgres::notice=warn` (servers), `warn` (one-off `tillstream` commands) | every binary | Log filter (`tracing-subscriber` `EnvFilter` syntax), also which spans are exported. |
| `OTEL_EXPORTER_OTLP_HEADERS` | unset | every binary, with `--otlp-endpoint` | Headers sent with every OTLP export (`key=value,key2=value2`), e.g. a collector's API key. |
| `OTEL_EXPORTER_OTLP_TIMEOUT` | `10000` | every binary, with `--otlp-endpoint` | Milliseconds before one OTLP export is abandoned. |
| `TILLSTREAM_NATS_<USER>_PASSWORD` | none: required | `nats-server` with `nats/accounts.conf` | The password of NATS user `<USER>` (`RELAY`, `PROJECTOR`, `GATEWAY`, `PREDICTOR`, `OPERATOR`); give each service the same value as its `TILLSTREAM_NATS_PASSWORD`. |
| `TILLSTREAM_PG_PORT`, `TILLSTREAM_NATS_PORT` | `5432`, `4222` | `scripts/services` (`scripts/up`, `scripts/test`) | Ports of the PostgreSQL and NATS servers it starts when none answers. |
| `TILLSTREAM_SERVICES_DIR`, `TILLSTREAM_PG_DIR` | `.data/services`, `/var/lib/tillstream/postgres` as root | `scripts/services` | Where those servers keep their data. |
| `TILLSTREAM_FAILPOINTS` | unset | the relay and the projector, in fault tests only | Kill the process at a named point (`relay.after_publish`, `projector.before_ack`, optionally `@N`); see docs/reliability.md. Never set in production. |
| `TILLSTREAM_BIN_DIR`, `TILLSTREAM_NATS_SERVER` | the test's own target folder; `nats-server` on the `PATH`, else `/usr/sbin/nats-server` | the test suite | Where tests find the service binaries and nats-server they start. |
| `TILLSTREAM_TEST_POSTGRES_URL` | `postgres://postgres@127.0.0.1:5432/postgres` | the test suite | The Postgres server tests create their databases on. |
| `TILLSTREAM_TEST_NATS_URL` | `nats://127.0.0.1:4222` | the test suite | The NATS server (with JetStream) tests use. |

A default marked *unset* means the setting is absent unless given; *empty* is the empty
string; *off* is a switch that takes no value.
";

/// `docs/configuration.md`.
pub fn document() -> String {
    let mut settings = BTreeMap::new();
    let mut every = 0;
    for binary in binaries() {
        let name = binary.get_name().to_owned();
        if name == "tillstream" {
            every = count_leaves(&binary);
        }
        collect(&binary, &name, &mut settings);
    }
    let (with_env, flag_only): (Vec<&Setting>, Vec<&Setting>) =
        settings.values().partition(|s| s.env.is_some());
    let mut out = String::from(INTRO);
    out.push_str("## Settings\n\n");
    out.push_str("| Environment variable | Flag | Default | Used by | What it sets |\n");
    out.push_str("|---|---|---|---|---|\n");
    for s in with_env {
        out.push_str(&row(s, true, every));
    }
    out.push_str("\n## Options of one command (flag only)\n\n");
    out.push_str("| Flag | Default | Used by | What it sets |\n");
    out.push_str("|---|---|---|---|\n");
    for s in flag_only {
        out.push_str(&row(s, false, every));
    }
    out.push_str(OUTRO);
    out
}

fn row(s: &Setting, with_env: bool, every: usize) -> String {
    let default = if s.defaults.len() == 1 {
        s.defaults.keys().next().cloned().unwrap_or_default()
    } else {
        s.defaults
            .iter()
            .map(|(default, commands)| format!("{default} ({})", used_by(commands, every)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let flag = if s.flags.is_empty() {
        "—".to_owned()
    } else {
        s.flags
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cells = Vec::new();
    if with_env {
        cells.push(format!("`{}`", s.env.as_deref().unwrap_or_default()));
    }
    cells.extend([flag, default, used_by(&s.commands, every), s.help.clone()]);
    format!(
        "| {} |\n",
        cells
            .iter()
            .map(|c| cell(c))
            .collect::<Vec<_>>()
            .join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn docs_configuration_matches_the_binaries() {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let generated = document();
        if std::env::var("TILLSTREAM_UPDATE_DOCS").is_ok_and(|v| v == "1") {
            std::fs::write(&file, &generated).unwrap();
        }
        assert!(
            std::fs::read_to_string(&file).ok().as_deref() == Some(generated.as_str()),
            "docs/configuration.md differs from the binaries' settings: run TILLSTREAM_UPDATE_DOCS=1 cargo test -p tillstream --lib settings and commit"
        );
    }

    #[test]
    fn every_binary_documents_its_settings_and_answers_help() {
        for mut binary in binaries() {
            let help = binary.render_long_help().to_string();
            assert!(
                help.contains("docs/configuration.md"),
                "{} --help points at the table",
                binary.get_name()
            );
            binary.debug_assert();
        }
        let table = document();
        for setting in [
            "TILLSTREAM_NATS_USER",
            "TILLSTREAM_NATS_CREDS",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "TILLSTREAM_LOG_FORMAT",
            "TILLSTREAM_CONFIG_FILE",
            "TILLSTREAM_USER_DATABASE_URL",
        ] {
            assert!(table.contains(&format!("`{setting}`")), "{setting}");
        }
    }
}
