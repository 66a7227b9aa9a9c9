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

/// A private three-node JetStream cluster on loopback (what `nats/cluster/` configures on
/// fixed ports, here on free ones): each node its own client, route and monitoring port
/// and store folder, so a test can stop one node, start it again on its store, and ask
/// each node what its own copy of a stream holds (`/jsz` on its monitoring port).
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    name: String,
    process: ChildProcess,
    port: u16,
    monitor: u16,
}

/// One node's own copy of a stream, from its monitoring endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStreamState {
    pub messages: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
}

impl NatsCluster {
    /// Starts three nodes (`n1`…`n3`, logs and stores under `dir`) and waits until they
    /// are routed to each other and JetStream has elected its meta leader.
    pub async fn start(dir: &Path) -> Self {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let node_dir = dir.join(&name);
            let store = node_dir.join("store");
            std::fs::create_dir_all(&store).expect("NATS store folder");
            let file = node_dir.join("nats-server.conf");
            std::fs::write(
                &file,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: tillstream-test\n listen: 127.0.0.1:{route}\n routes: [{}] }}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )
            .expect("NATS config file");
            let process = ChildProcess::new(&name, nats_server_binary(), &node_dir)
                .arg("-c")
                .arg(file.display().to_string());
            nodes.push(ClusterNode {
                name,
                process,
                port,
                monitor,
            });
        }
        for node in &mut nodes {
            node.process.start();
        }
        let mut cluster = NatsCluster { nodes };
        for i in 0..3 {
            cluster.wait_node_ready(i, Duration::from_secs(30)).await;
        }
        cluster
    }

    /// The client URL of node `i` (0-based); clients learn the other nodes from it.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// `kill -9` node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].process.kill();
    }

    /// Starts node `i` again on its ports and store, and waits until it is routed to the
    /// others and sees the meta leader.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].process.kill();
        self.nodes[i].process.start();
        self.wait_node_ready(i, Duration::from_secs(30)).await;
    }

    /// Node `i`'s own copy of `stream` (None when the node holds no copy of it).
    pub async fn node_stream_state(&self, i: usize, stream: &str) -> Option<NodeStreamState> {
        let url = format!(
            "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
            self.nodes[i].monitor
        );
        let jsz: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        let accounts = jsz["account_details"].as_array()?;
        let detail = accounts
            .iter()
            .filter_map(|a| a["stream_detail"].as_array())
            .flatten()
            .find(|s| s["name"] == stream)?;
        let state = &detail["state"];
        Some(NodeStreamState {
            messages: state["messages"].as_u64()?,
            first_sequence: state["first_seq"].as_u64()?,
            last_sequence: state["last_seq"].as_u64()?,
        })
    }

    async fn wait_node_ready(&mut self, i: usize, deadline: Duration) {
        let start = Instant::now();
        let monitor = self.nodes[i].monitor;
        loop {
            let node = &mut self.nodes[i];
            assert!(
                node.process.is_running(),
                "{} exited; its log ends:\n{}",
                node.name,
                node.process.log_tail(30)
            );
            let routes = async {
                let routez: serde_json::Value =
                    reqwest::get(format!("http://127.0.0.1:{monitor}/routez"))
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                routez["num_routes"].as_u64()
            };
            let leader = async {
                let jsz: serde_json::Value =
                    reqwest::get(format!("http://127.0.0.1:{monitor}/jsz"))
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                jsz["meta_cluster"]["leader"]
                    .as_str()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
            };
            let (routes, leader) = tokio::join!(routes, leader);
            // Routes are counted per connection, at least one to each other node.
            if routes.is_some_and(|r| r >= 2) && leader.is_some() {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "{} not routed to the others or without a meta leader after {deadline:?} \
                 (routes {routes:?}, leader {leader:?}); its log ends:\n{}",
                node.name,
                node.process.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
