//! A private `nats-server` for one test: its own port and store folder, JetStream on, so
//! the test can `kill -9` it and start it again on the same store without disturbing
//! anyone else (the machine's shared server on 4222 stays untouched).
//!
//! The binary is `TILLSTREAM_NATS_SERVER`, else `nats-server` on the `PATH`, else Debian's
//! `/usr/sbin/nats-server` (what `scripts/services` installs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::GetStreamErrorKind;

use crate::process::{ChildProcess, free_port};

pub struct PrivateNats {
    process: ChildProcess,
    port: u16,
    /// The user and password the readiness probe logs in with (servers with accounts).
    login: Option<(String, String)>,
}

fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TILLSTREAM_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

impl PrivateNats {
    /// Starts a server with its store under `dir` (and its log at `dir/nats-server.log`)
    /// and waits until JetStream answers.
    pub async fn start(dir: &Path) -> Self {
        let port = free_port();
        let store = dir.join("nats-store");
        std::fs::create_dir_all(&store).expect("NATS store folder");
        let process = ChildProcess::new("nats-server", nats_server_binary(), dir)
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(store.display().to_string());
        let mut nats = PrivateNats {
            process,
            port,
            login: None,
        };
        nats.process.start();
        nats.wait_ready(Duration::from_secs(20)).await;
        nats
    }

    /// Starts a server like [`Self::start`] with `config` added to its configuration file
    /// (`dir/nats-server.conf`; files it includes must be in `dir`) and `env` in its
    /// environment (an accounts file's `$PASSWORD` variables, say); the readiness probe logs
    /// in as `login`.
    pub async fn start_configured(
        dir: &Path,
        config: &str,
        env: &[(String, String)],
        login: Option<(String, String)>,
    ) -> Self {
        let port = free_port();
        let store = dir.join("nats-store");
        std::fs::create_dir_all(&store).expect("NATS store folder");
        let file = dir.join("nats-server.conf");
        std::fs::write(
            &file,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{config}\n",
                store.display()
            ),
        )
        .expect("NATS config file");
        let mut process = ChildProcess::new("nats-server", nats_server_binary(), dir)
            .arg("-c")
            .arg(file.display().to_string());
        for (key, value) in env {
            process = process.env(key, value.clone());
        }
        let mut nats = PrivateNats {
            process,
            port,
            login,
        };
        nats.process.start();
        nats.wait_ready(Duration::from_secs(20)).await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `kill -9` the server.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and store, and waits until JetStream answers.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.process.start();
        self.wait_ready(Duration::from_secs(20)).await;
    }

    /// How many times the server has been started.
    pub fn starts(&self) -> u32 {
        self.process.starts()
    }

    /// Waits until a client connects and JetStream (with its recovered streams) answers.
    async fn wait_ready(&mut self, deadline: Duration) {
        let start = Instant::now();
        loop {
            assert!(
                self.process.is_running(),
                "nats-server exited; its log ends:\n{}",
                self.process.log_tail(30)
            );
            let mut options =
                async_nats::ConnectOptions::new().connection_timeout(Duration::from_millis(500));
            if let Some((user, password)) = &self.login {
                options = options.user_and_password(user.clone(), password.clone());
            }
            let connected = options.connect(self.url()).await;
            let last_error = match connected {
                // JetStream answers (here: that no such stream exists) once it has
                // recovered its store. (async-nats 0.51 cannot parse 2.9's account info.)
                Ok(client) => match async_nats::jetstream::new(client)
                    .get_stream("TILLSTREAM_READINESS_PROBE")
                    .await
                {
                    Ok(_) => return,
                    Err(error) if matches!(error.kind(), GetStreamErrorKind::JetStream(_)) => {
                        return;
                    }
                    Err(error) => format!("JetStream: {error}"),
                },
                Err(error) => format!("connect: {error}"),
            };
            assert!(
                start.elapsed() < deadline,
                "nats-server not ready on {} after {deadline:?} ({last_error}); its log ends:\n{}",
                self.url(),
                self.process.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
