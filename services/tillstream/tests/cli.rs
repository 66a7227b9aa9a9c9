//! The `tillstream` command line against a running platform.

mod support;

use std::process::Command;

use support::TestPlatform;
use tillstream_testkit::{nats_url, postgres_url};

fn tillstream(platform: &TestPlatform, args: &[&str], prefix: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args(args)
        .args([
            "--postgres-url",
            &postgres_url(),
            "--database-prefix",
            prefix,
        ])
        .env("TILLSTREAM_NATS_URL", nats_url())
        .env("TILLSTREAM_NAMESPACE", platform.env.namespace.prefix())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
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
