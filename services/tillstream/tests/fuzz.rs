//! Fuzzing of the gateway's two public schemas with schemathesis: GraphQL at `/graphql`
//! (the schema read by introspection) and REST at `/api/v1` (its OpenAPI document), each
//! as an admin and as a customer, so that generated cases get past authentication and
//! reach the resolvers and handlers. The check is `not_a_server_error`: bad input must
//! come back as a GraphQL error or a 4xx with a JSON body, never a 5xx, a dropped
//! connection or a panic.
//!
//! The platform runs in this test process (rate limit off: the fuzzer is one client
//! sending as fast as the gateway answers). schemathesis comes from PyPI into a virtual
//! environment; `scripts/fuzz` installs it and runs the long form, `scripts/test` installs
//! it and runs the short form. Knobs (docs/reliability.md):
//!
//! - `TILLSTREAM_SCHEMATHESIS`: the `st` program (default: `bin/st` in the virtual
//!   environment that `scripts/fuzz --install` makes, `$TILLSTREAM_SCHEMATHESIS_VENV`,
//!   default `~/.cache/tillstream/schemathesis`);
//! - `TILLSTREAM_FUZZ_EXAMPLES`: generated cases per operation (default 6, the short form);
//! - `TILLSTREAM_FUZZ_MIN_CASES`: fail unless each schema got at least this many cases
//!   in all (default 0; the long form asks for 1000);
//! - `TILLSTREAM_FUZZ_SEED`: schemathesis' seed (default: a new one each run, printed).
//!
//! The check (`tests/support/fuzz_checks.py`) fails every 5xx but one: a read asking for
//! a version the read model does not have (`min_version`) answers, after its 2 s wait,
//! 503 UNAVAILABLE, the documented "retry" answer; those are counted apart. Every run
//! prints one line per schema and caller: `fuzz: <api> as <role>: cases=… server_errors=…
//! unreached_version_503=… seed=…`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::TestPlatform;

fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("TILLSTREAM_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let venv = std::env::var("TILLSTREAM_SCHEMATHESIS_VENV").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
        format!("{home}/.cache/tillstream/schemathesis")
    });
    PathBuf::from(venv).join("bin/st")
}

fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a whole number")),
        Err(_) => default,
    }
}

/// What one schemathesis run did.
#[derive(Debug)]
struct Run {
    cases: u64,
    /// Answers 503 UNAVAILABLE to a read that asked for a version not in the read model
    /// (the documented "retry" answer; `tests/support/fuzz_checks.py`).
    unreached_version: u64,
    /// Every other 5xx.
    server_errors: u64,
    passed: bool,
    output: String,
}

/// Runs schemathesis against `location` (a schema URL or file; `url`, when given, is the
/// API it describes) with `token`; its report counts the cases.
fn fuzz(
    location: &str,
    url: Option<&str>,
    token: &str,
    report_dir: &std::path::Path,
    seed: u64,
) -> Run {
    let st = schemathesis();
    assert!(
        st.is_file(),
        "schemathesis is not installed at {} (run `scripts/fuzz --install`, or set \
         TILLSTREAM_SCHEMATHESIS)",
        st.display()
    );
    std::fs::create_dir_all(report_dir).expect("report folder");
    let report = report_dir.join("report.ndjson");
    let checks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fuzz_checks.py");
    let mut command = Command::new(&st);
    command.arg("run").arg(location);
    if let Some(url) = url {
        command.arg(format!("--url={url}"));
    }
    let output = command
        .arg("--checks=tillstream_no_server_error")
        .arg(format!(
            "--max-examples={}",
            setting("TILLSTREAM_FUZZ_EXAMPLES", 6)
        ))
        .arg(format!("--seed={seed}"))
        // One worker: with several threads, CPython 3.11's `ast.parse` (which hypothesis
        // calls while describing strategies) can fail with "AST constructor recursion depth
        // mismatch" and end the run with an internal error.
        .arg("--workers=1")
        .arg("--request-timeout=20")
        .arg("--suppress-health-check=all")
        .arg("--no-color")
        .arg("--report=ndjson")
        .arg(format!("--report-ndjson-path={}", report.display()))
        .arg(format!("--header=Authorization: Bearer {token}"))
        .env("SCHEMATHESIS_HOOKS", &checks)
        .current_dir(report_dir)
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let events = std::fs::read_to_string(&report).unwrap_or_default();
    let (cases, unreached_version, server_errors) = count(&events);
    Run {
        cases,
        unreached_version,
        server_errors,
        passed: output.status.success(),
        output: text,
    }
}

/// Counts, in schemathesis' event stream, the test cases (one per response), the 503s to
/// reads of a version not reached (which the check lets pass only with the UNAVAILABLE
/// body and a version asked for) and every other 5xx.
fn count(ndjson: &str) -> (u64, u64, u64) {
    let (mut cases, mut unreached, mut server_errors) = (0, 0, 0);
    for line in ndjson.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        visit(&event, &mut |value| {
            if let Some(status) = value.get("status_code").and_then(|s| s.as_u64()) {
                cases += 1;
                if status == 503 {
                    unreached += 1;
                } else if status >= 500 {
                    server_errors += 1;
                }
            }
        });
    }
    (cases, unreached, server_errors)
}

fn visit(value: &serde_json::Value, f: &mut impl FnMut(&serde_json::Value)) {
    match value {
        serde_json::Value::Object(map) => {
            f(value);
            map.values().for_each(|v| visit(v, f));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| visit(v, f)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_requests_never_get_a_server_error() {
    let platform = TestPlatform::start_with(|config| {
        config.gateway_limits.rate_limit_per_second = 0;
    })
    .await;
    let admin = platform.admin_token().await;
    let (customer_id, customer) = platform.customer("fuzzed").await;
    platform.order_for(&customer_id, &customer).await;

    let gateway = platform.addrs.gateway_http;
    let seed = setting("TILLSTREAM_FUZZ_SEED", rand_seed());
    let min_cases = setting("TILLSTREAM_FUZZ_MIN_CASES", 0);
    // The standard introspection query is deeper than the gateway's depth limit, so the
    // GraphQL schema comes as SDL from the gateway (what introspection would say).
    let sdl = reqwest::Client::new()
        .get(format!("http://{gateway}/graphql/schema.graphql"))
        .bearer_auth(&admin)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("the gateway serves its SDL")
        .text()
        .await
        .expect("SDL text");
    assert!(
        sdl.contains("type QueryRoot"),
        "the SDL names the query root: {sdl}"
    );
    let sdl_file = platform.env.data_dir.join("schema.graphql");
    std::fs::write(&sdl_file, sdl).expect("SDL file");
    let graphql_url = format!("http://{gateway}/graphql");
    let mut failures = Vec::new();
    for (api, location, url) in [
        (
            "graphql",
            sdl_file.display().to_string(),
            Some(graphql_url.as_str()),
        ),
        (
            "rest",
            format!("http://{gateway}/api/v1/openapi.json"),
            None,
        ),
    ] {
        let mut cases = 0;
        for (role, token) in [("admin", &admin), ("customer", &customer)] {
            let dir = platform.env.data_dir.join(format!("fuzz-{api}-{role}"));
            let (location, url, token) = (location.clone(), url.map(str::to_owned), token.clone());
            let run = tokio::task::spawn_blocking(move || {
                fuzz(&location, url.as_deref(), &token, &dir, seed)
            })
            .await
            .expect("schemathesis task");
            let _ = writeln!(
                std::io::stderr(),
                "fuzz: {api} as {role}: cases={} server_errors={} \
                 unreached_version_503={} seed={seed} passed={}",
                run.cases,
                run.server_errors,
                run.unreached_version,
                run.passed
            );
            cases += run.cases;
            if !run.passed || run.server_errors > 0 {
                failures.push(format!("{api} as {role}:\n{}", run.output));
            }
        }
        if cases < min_cases {
            failures.push(format!(
                "{api}: {cases} cases, fewer than TILLSTREAM_FUZZ_MIN_CASES={min_cases}"
            ));
        }
    }
    // The gateway still answers after everything it was sent.
    let health = reqwest::get(format!("http://{gateway}/healthz"))
        .await
        .expect("gateway answers after fuzzing");
    assert!(
        health.status().is_success(),
        "gateway healthy after fuzzing"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    platform.stop().await;
}

/// A seed that differs from run to run (printed, so a failure can be replayed).
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000_000)
        .unwrap_or(0)
}
