//! A private PostgreSQL server for one test: its own data folder (made by `initdb`) and
//! port, so the test can `kill -9` it and start it again (crash recovery from the WAL)
//! without disturbing the machine's shared server on 5432.
//!
//! The binaries come from `TILLSTREAM_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
//! (Debian's layout, what `scripts/services` installs). Postgres refuses to run as root;
//! under root the server runs as the `postgres` user (through `setpriv`, which execs, so
//! the test's SIGKILL reaches the postmaster itself).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, free_port};

pub struct PrivatePostgres {
    process: ChildProcess,
    port: u16,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TILLSTREAM_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|bin| bin.join("postgres").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program` as the `postgres` user when the test runs as root.
fn as_postgres(program: PathBuf) -> (PathBuf, Vec<String>) {
    if is_root() {
        (
            PathBuf::from("setpriv"),
            vec![
                "--reuid=postgres".to_owned(),
                "--regid=postgres".to_owned(),
                "--init-groups".to_owned(),
                program.display().to_string(),
            ],
        )
    } else {
        (program, Vec::new())
    }
}

impl PrivatePostgres {
    /// Makes a cluster under `dir` (user `postgres`, trust on loopback; log at
    /// `dir/postgres.log`), starts it on a free port and waits until it answers.
    pub async fn start(dir: &Path) -> Self {
        let bin = bin_dir();
        let data = dir.join("pgdata");
        std::fs::create_dir_all(dir).expect("Postgres folder");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown of {} to postgres", dir.display());
        }
        let (program, mut args) = as_postgres(bin.join("initdb"));
        args.extend(
            [
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
            ]
            .map(str::to_owned),
        );
        let output = Command::new(&program)
            .args(&args)
            .output()
            .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let (program, args) = as_postgres(bin.join("postgres"));
        let mut process = ChildProcess::new("postgres", program, dir);
        for arg in args {
            process = process.arg(arg);
        }
        let process = process
            .arg("-D")
            .arg(data.display().to_string())
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.display().to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg("max_connections=200");
        let mut postgres = PrivatePostgres { process, port };
        postgres.start_and_wait(Duration::from_secs(30)).await;
        postgres
    }

    /// The server's URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `kill -9` the postmaster (its backends notice and exit).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and data (crash recovery), and waits until it
    /// answers. A start right after a kill can find the old backends still attached to
    /// the shared memory; then it is tried again.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.start_and_wait(Duration::from_secs(30)).await;
    }

    async fn start_and_wait(&mut self, deadline: Duration) {
        let start = Instant::now();
        self.process.start();
        loop {
            if !self.process.is_running() {
                assert!(
                    start.elapsed() < deadline,
                    "postgres did not start in {deadline:?}; its log ends:\n{}",
                    self.process.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.process.start();
                continue;
            }
            if tillstream_runtime::postgres::ensure_database(&self.url())
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "postgres not answering on {} after {deadline:?}; its log ends:\n{}",
                self.url(),
                self.process.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
