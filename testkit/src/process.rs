//! Real processes in tests: the service binaries (and `nats-server`) as children of the
//! test, started with flags and environment, awaited until ready, killed with SIGKILL and
//! restarted on the same state.
//!
//! Each child writes stdout and stderr to a log file of its own, kept across restarts
//! (a line `--- start #n ---` marks each). A child is killed when its handle is dropped,
//! and if the test is failing at that moment the end of its log is printed, so a failure
//! comes with what the processes said.
//!
//! # Where the binaries come from
//!
//! A test can name only its own package's binaries (`CARGO_BIN_EXE_*`), and the services
//! live in five packages. [`service_binary`] therefore has Cargo build them, once per test
//! process, into the target directory the test itself runs from, with
//! `cargo build --workspace --bins --tests`: the same packages, targets and features as
//! `cargo test --workspace` (what `scripts/test` runs), so after that nothing is compiled
//! again and the call only checks that every binary is up to date. A narrower
//! `cargo test -p tillstream --test faults` pays for the workspace's test targets once.
//! `TILLSTREAM_BIN_DIR` names a folder of ready binaries instead (release builds, CI
//! caches); nothing is built then.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 for a child process to listen on.
///
/// The port is picked below the kernel's ephemeral range (`ip_local_port_range`), never in
/// it: a port the kernel hands out for `bind(0)` is also one it may hand to an outgoing
/// connection (a nats-server route, a client) between this call and the child's bind, which
/// once failed a cluster test with "Address already in use". Ports are taken in turn from a
/// start that differs per process, and each is checked free by binding it, so neither the
/// tests of one binary nor two binaries running at once are handed the same port.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (low, high) = port_range();
    let span = u32::from(high - low);
    let next = NEXT.get_or_init(|| {
        let seed = RandomState::new().hash_one((std::process::id(), Instant::now()));
        AtomicU32::new((seed % u64::from(span)) as u32)
    });
    for _ in 0..span {
        let offset = next.fetch_add(1, Ordering::Relaxed) % span;
        let port = low + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in {low}..{high}")
}

/// The ports `free_port` picks from: from 20000 up to the start of the ephemeral range
/// (32768 on a default Linux), or 20000..30000 when that range cannot be read or starts
/// too low to leave room.
fn port_range() -> (u16, u16) {
    const LOW: u16 = 20_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok());
    match ephemeral_low {
        Some(start) if start > LOW + 1000 => (LOW, start),
        _ => (LOW, 30_000),
    }
}

/// A loopback address on a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The path of the workspace binary `name` (`tillstream-user`, `tillstream-relay`, …),
/// built first if needed; see the module documentation. Panics, with Cargo's output, when
/// the build fails.
pub fn service_binary(name: &str) -> PathBuf {
    match BIN_DIR.get_or_init(bin_dir) {
        Ok(dir) => dir.join(name),
        Err(error) => panic!("service binaries unavailable: {error}"),
    }
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("TILLSTREAM_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    // The test runs from <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().map_err(|e| format!("no current executable: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in a target folder", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => return Err(format!("{} has no name", profile_dir.display())),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let started = Instant::now();
    let mut command = Command::new(&cargo);
    // Cargo gives the test the variables of its package (CARGO_PKG_*, CARGO_MANIFEST_DIR,
    // …). Build scripts watch some of them (ring's does), so passing them on would make
    // this build, and the next `cargo test` after it, recompile half the tree.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            command.env_remove(key);
        }
    }
    let output = command
        .args([
            "build",
            "--workspace",
            "--bins",
            "--tests",
            "--locked",
            "--profile",
        ])
        .arg(&profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --workspace --bins --tests` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let took = started.elapsed();
    if took > Duration::from_secs(5) {
        eprintln!("testkit: built the service binaries in {took:.1?}");
    }
    Ok(profile_dir.to_path_buf())
}

/// One child process of a test: its command line, environment and log, and the running
/// process if any. Restarting runs the same command again (with the log appended).
pub struct ChildProcess {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    ready_url: Option<String>,
    child: Option<Child>,
    starts: u32,
}

impl ChildProcess {
    /// A process called `name` (in messages and as its log file `<log_dir>/<name>.log`)
    /// running `program`. It starts with a clean environment: only what [`Self::env`]
    /// sets (plus `NO_COLOR`, and `RUST_LOG` when the test has it) reaches it.
    pub fn new(name: &str, program: impl Into<PathBuf>, log_dir: &Path) -> Self {
        ChildProcess {
            name: name.to_owned(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log: log_dir.join(format!("{name}.log")),
            ready_url: None,
            child: None,
            starts: 0,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Arguments after those already given, each as [`Self::arg`] adds one.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Environment variables for the process, each as [`Self::env`] sets one.
    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// The URL that answers 200 once the process is ready (a service's `/readyz`).
    pub fn ready_url(mut self, url: impl Into<String>) -> Self {
        self.ready_url = Some(url.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's id of the running child (to read its `/proc` entry).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times the process has been started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Starts the process (it must not be running) with `extra_env` on top of its own
    /// environment for this run only (a failpoint, say).
    pub fn start_with(&mut self, extra_env: &[(&str, &str)]) {
        assert!(
            !self.is_running(),
            "{} is already running; kill it first",
            self.name
        );
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).expect("log folder");
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file opens");
        self.starts += 1;
        let _ = writeln!(
            log,
            "--- start #{} of {}{}",
            self.starts,
            self.name,
            extra_env
                .iter()
                .map(|(k, v)| format!(" {k}={v}"))
                .collect::<String>()
        );
        let stderr: File = log.try_clone().expect("log file handle");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        if let Ok(filter) = std::env::var("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(extra_env.iter().copied());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({}): {e}",
                self.name,
                self.program.display()
            )
        });
        self.child = Some(child);
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Whether the process is running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Awaits the ready URL's 200 (or, without one, only that the process stays up),
    /// failing with the log's end when the process exits or `deadline` passes.
    pub async fn wait_ready(&mut self, deadline: Duration) {
        let Some(url) = self.ready_url.clone() else {
            return;
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited ({status}) before it was ready; its log ends:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "{} not ready at {url} after {deadline:?}; its log ends:\n{}",
                self.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`, and reaps the process. Returns how it ended (a process that had already
    /// exited reports its own status).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Asks the process to stop (SIGTERM), as an orchestrator does before a restart or a
    /// scale-in; [`ChildProcess::wait_exit`] then says how it ended.
    pub fn terminate(&mut self) {
        if let Some(child) = &self.child {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Awaits the process's own exit (a failpoint killing it, say).
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return status;
            }
            assert!(
                self.child.is_some(),
                "{} is not running; nothing to wait for",
                self.name
            );
            assert!(
                start.elapsed() < deadline,
                "{} still running after {deadline:?}; its log ends:\n{}",
                self.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process and starts it again with its own environment.
    pub async fn restart(&mut self, deadline: Duration) {
        self.kill();
        self.start();
        self.wait_ready(deadline).await;
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && self.starts > 0 {
            eprintln!(
                "--- {} log ({}), last lines:\n{}\n---",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
    }
}

/// `true` when `status` is a death by SIGKILL (what a failpoint does, or `kill -9`).
pub fn killed_by_sigkill(status: &ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(9)
    }
    #[cfg(not(unix))]
    {
        !status.success()
    }
}
