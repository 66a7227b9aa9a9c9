//! The `tillstream` command line against a running platform.

mod support;

use std::process::Command;

use support::TestPlatform;
use tillstream_testkit::{nats_url, postgres_url};

/// Runs `command`: whether it succeeded, and what it printed (stdout, then stderr).
fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tillstream"))
}

/// `tillstream <args>` on the databases `<prefix>_*` and the stream namespace `namespace`.
fn in_namespace(namespace: &str, args: &[&str], prefix: &str) -> (bool, String) {
    run(binary()
        .args(args)
        .args([
            "--postgres-url",
            &postgres_url(),
            "--database-prefix",
            prefix,
        ])
        .env("TILLSTREAM_NATS_URL", nats_url())
        .env("TILLSTREAM_NAMESPACE", namespace))
}

fn tillstream(platform: &TestPlatform, args: &[&str], prefix: &str) -> (bool, String) {
    in_namespace(platform.env.namespace.prefix(), args, prefix)
}

#[tokio::test]
async fn doctor_and_replay_answer_about_a_running_platform() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("cli").await;
    let order_id = platform.order_for(&user_id, &token).await;
    let id = platform.env.id.clone();

    let (healthy, text) = tillstream(&platform, &["doctor"], &id);
    assert!(healthy, "doctor finds nothing wrong:\n{text}");
    assert!(
        text.contains("stream") && text.contains("schema up to date"),
        "{text}"
    );

    let (healthy, text) = tillstream(&platform, &["doctor"], "ts_missing");
    assert!(
        !healthy,
        "doctor fails when the databases are missing:\n{text}"
    );
    assert!(text.contains("FAIL   database ts_missing_users"), "{text}");

    let (found, text) = tillstream(
        &platform,
        &["replay", "--aggregate", &format!("order:{order_id}")],
        &id,
    );
    assert!(found, "{text}");
    assert!(
        text.contains("#1") && text.contains("OrderPlaced") && text.contains("(customer)"),
        "{text}"
    );
    let (found, text) = tillstream(
        &platform,
        &["replay", "--aggregate", "order:nothing-here"],
        &id,
    );
    assert!(!found && text.contains("no events"), "{text}");
    platform.stop().await;
}

#[tokio::test]
async fn projections_rebuild_swaps_in_a_fresh_copy_under_a_running_platform() {
    let platform = TestPlatform::start().await;
    let (user_id, token) = platform.customer("rebuilt").await;
    let order_id = platform.order_for(&user_id, &token).await;
    let reads = platform.env.connect("reads");
    let order = uuid::Uuid::parse_str(&order_id).unwrap();
    tillstream_testkit::eventually(support::DEADLINE, "the order projected", || async {
        sqlx::query_scalar::<_, i64>("SELECT version FROM orders WHERE id = $1")
            .bind(order)
            .fetch_optional(&reads)
            .await
            .unwrap()
    })
    .await;
    sqlx::query("DELETE FROM orders WHERE id = $1")
        .bind(order)
        .execute(&reads)
        .await
        .unwrap();

    let (rebuilt, text) = tillstream(
        &platform,
        &["projections", "rebuild", "main"],
        &platform.env.id,
    );
    assert!(rebuilt, "{text}");
    assert!(text.contains("rebuilt `main`"), "{text}");
    let restored: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order)
        .fetch_optional(&reads)
        .await
        .unwrap();
    assert_eq!(restored.as_deref(), Some("PLACED"), "the lost row is back");

    // The platform goes on writing into the swapped-in tables.
    let second = platform.order_for(&user_id, &token).await;
    let second = uuid::Uuid::parse_str(&second).unwrap();
    tillstream_testkit::eventually(support::DEADLINE, "a new order after the swap", || async {
        sqlx::query_scalar::<_, i64>("SELECT version FROM orders WHERE id = $1")
            .bind(second)
            .fetch_optional(&reads)
            .await
            .unwrap()
    })
    .await;

    let (refused, text) = tillstream(
        &platform,
        &["projections", "rebuild", "nope"],
        &platform.env.id,
    );
    assert!(
        !refused && text.contains("unknown projection `nope`"),
        "{text}"
    );
    platform.stop().await;
}

#[test]
fn help_names_every_setting_and_a_settings_file_is_read() {
    let run = |args: &[&str]| run(binary().args(args).env_remove("TILLSTREAM_NATS_URL"));
    let (ok, help) = run(&["--help"]);
    assert!(ok && help.contains("docs/configuration.md"), "{help}");
    let (ok, help) = run(&["up", "--help"]);
    assert!(
        ok && help.contains("TILLSTREAM_NATS_USER") && help.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{help}"
    );

    // A settings file supplies what neither a flag nor the environment sets.
    let file = std::env::temp_dir().join(format!("tillstream-{}.env", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        "# a settings file\nTILLSTREAM_NATS_URL=nats://127.0.0.1:9\n",
    )
    .expect("settings file");
    let (ok, text) = run(&[
        "doctor",
        "--config-file",
        file.to_str().expect("UTF-8 path"),
    ]);
    let _ = std::fs::remove_file(&file);
    assert!(!ok && text.contains("nats://127.0.0.1:9"), "{text}");
    let (ok, text) = run(&["doctor", "--config-file", "/nonexistent/settings.env"]);
    assert!(
        !ok && text.contains("cannot read the settings file"),
        "{text}"
    );
}

#[tokio::test]
async fn setup_prepares_everything_doctor_checks_and_can_run_again() {
    let env = tillstream_testkit::TestEnv::new();
    for db in ["users", "orders", "reads"] {
        env.database_url(db); // dropped by cleanup
    }
    let run = |command: &str| in_namespace(env.namespace.prefix(), &[command], &env.id);
    let (healthy, text) = run("doctor");
    assert!(!healthy && text.contains("tillstream setup"), "{text}");
    for _ in 0..2 {
        let (done, text) = run("setup");
        assert!(done && text.contains("consumer"), "{text}");
    }
    let (healthy, text) = run("doctor");
    assert!(healthy, "{text}");
    env.cleanup().await;
}

/// `tillstream predictor trace` writes a file that `predictor backtest --trace` reads back;
/// a broken file is a clear error, not a panic.
#[test]
fn predictor_trace_and_backtest() {
    let dir = std::env::temp_dir().join(format!("tillstream-cli-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("ramp.csv");
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_tillstream"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("the binary runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let path = file.to_str().expect("utf-8 path");
    let (ok, text) = run(&["predictor", "trace", "--kind", "ramp", "--out", path]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["predictor", "backtest", "--trace", path]);
    assert!(ok, "{text}");
    assert!(
        text.contains("MAPE model") && text.contains("s before"),
        "{text}"
    );

    // Scored windows: all but the warmup and one horizon (30 windows of 10 s).
    let scored = |text: &str| -> Vec<usize> {
        text.lines()
            .filter_map(|l| {
                l.split(", ")
                    .nth(1)?
                    .strip_suffix(" windows scored)")?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let by_default = scored(&text);
    let (ok, text) = run(&[
        "predictor",
        "backtest",
        "--trace",
        path,
        "--warmup-secs",
        "3600",
    ]);
    assert!(ok && text.contains("the first 360 not scored"), "{text}");
    let shorter = scored(&text);
    assert_eq!(by_default.len(), 2, "{text}");
    assert_eq!(
        shorter,
        by_default
            .iter()
            .map(|n| n + 2160 - 360)
            .collect::<Vec<_>>(),
        "{text}"
    );
    let (ok, text) = run(&[
        "predictor",
        "backtest",
        "--trace",
        path,
        "--warmup-secs",
        "999999",
    ]);
    assert!(
        !ok && text.contains("nothing to score") && !text.contains("panicked"),
        "{text}"
    );

    std::fs::write(&file, "at,rate,cpu_percent\nyesterday,1,2\n").expect("write");
    let (ok, text) = run(&["predictor", "backtest", "--trace", path]);
    assert!(
        !ok && text.contains("line 2") && !text.contains("panicked"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn predictor_record_turns_the_metrics_stream_into_a_trace_for_the_backtest() {
    let env = tillstream_testkit::TestEnv::new();
    let (_, js) = env.jetstream().await;
    // Two and a half minutes of traffic at 3 requests/s, as the gateway reports it, ending
    // a minute ago: 15 windows of 10 s, of which the first (partial) is left out and the
    // last may still be open at the end (it closes only a grace period after its end), so
    // at least 12 whole ones whatever the alignment.
    let start = chrono::Utc::now() - chrono::Duration::seconds(210);
    let mut acks = Vec::new();
    for i in 0..450 {
        let metric = tillstream_events::RequestMetric {
            service: "gateway".to_owned(),
            instance: "gw-1".to_owned(),
            operation: "order".to_owned(),
            status: 200,
            latency_us: 900,
            bytes: 120,
            at: start + chrono::Duration::milliseconds(i * 333),
        };
        acks.push(
            js.publish(
                env.namespace.request_metrics_subject("gateway"),
                serde_json::to_vec(&metric).expect("JSON").into(),
            )
            .await
            .expect("published"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    let file = env.data_dir.join("recorded.csv");
    std::fs::create_dir_all(&env.data_dir).expect("data dir");
    let path = file.to_str().expect("utf-8 path");
    let (ok, text) = run(binary()
        .args(["predictor", "record", "--out", path])
        .env("TILLSTREAM_NATS_URL", nats_url())
        .env("TILLSTREAM_NAMESPACE", env.namespace.prefix()));
    assert!(ok, "{text}");
    assert!(text.contains("from 450 messages (0 skipped)"), "{text}");
    let trace = tillstream_predictor::trace::read(&file).expect("a trace the backtest reads");
    let full: Vec<f64> = trace[1..trace.len() - 1].iter().map(|p| p.rate).collect();
    assert!(
        full.len() >= 10 && full.iter().all(|r| (r - 3.0).abs() < 0.15),
        "whole windows hold 3 requests/s: {full:?}"
    );
    // Two and a half minutes is less than the forecast horizon: read, but nothing to score.
    let (ok, text) = run(binary().args([
        "predictor",
        "backtest",
        "--trace",
        path,
        "--warmup-secs",
        "0",
    ]));
    assert!(!ok && text.contains("nothing to score"), "{text}");

    let (ok, text) = run(binary()
        .args(["predictor", "record", "--service", "nobody", "--out", path])
        .env("TILLSTREAM_NATS_URL", nats_url())
        .env("TILLSTREAM_NAMESPACE", env.namespace.prefix()));
    assert!(!ok && text.contains("fewer than two windows"), "{text}");
    env.cleanup().await;
}
