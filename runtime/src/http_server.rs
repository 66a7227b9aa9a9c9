//! Serving an axum [`Router`] over HTTP/1.1 and HTTP/2, as `axum::serve` does, with what it
//! leaves out: connections that send no request are closed.
//!
//! `axum::serve` sets no timer on hyper's connections, so hyper's header-read timeout never
//! runs: a kept-alive connection after its last request, a connection that never sends a
//! byte, and one that sends half a request head are all held open until the peer goes.
//! Each costs the gateway 16–48 KiB (docs/performance.md, Fix 22), and nothing bounds how
//! many a client leaves behind. Here an HTTP/1.1 connection must send a complete request
//! head within `idle_timeout` of opening and of each response; otherwise it is closed. An
//! HTTP/2 connection must send its first request within `idle_timeout` of opening, and is
//! sent away (GOAWAY: the requests in flight finish, no new one is taken) once no new
//! request has come for `idle_timeout`; hyper has no idle timeout for HTTP/2.
//!
//! Accepting, the peer address for [`ConnectInfo`], upgrades (GraphQL subscriptions over
//! WebSocket) and graceful shutdown are as with `axum::serve`, and every connection sends
//! without delay (`TCP_NODELAY`, docs/performance.md Fix 16), which `axum::serve` leaves.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::Shutdown;
use crate::keepalive::Http2Keepalive;

/// How long a connection may go without sending a complete request head (after it opens,
/// and after each response) when nothing else is configured. Longer than the 60 s idle
/// timeout of common load balancers, which must close an idle connection before the server
/// behind them does; nginx's `keepalive_timeout` is 75 s too.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// How long a shutdown waits for requests in flight (and for connections still sending a
/// request head, or not reading their answer) before it stops waiting for them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` fires; then stops accepting, lets every
/// request in flight finish (for [`SHUTDOWN_GRACE`] at most) and closes each connection as
/// it goes idle.
///
/// A connection that sends no complete request head within `idle_timeout` of opening is
/// closed, and so is an HTTP/1.1 connection within `idle_timeout` of its last response
/// (`None`: never). An HTTP/2 connection that starts no new request for `idle_timeout` is
/// sent a GOAWAY: what it has in flight is answered, then it closes. Meanwhile it is kept
/// while the peer answers the `keepalive` pings.
pub async fn serve(
    mut listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    idle_timeout: Option<Duration>,
    keepalive: Http2Keepalive,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    // The CONNECT protocol carries WebSockets over HTTP/2, as axum::serve enables it.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        .enable_connect_protocol();
    let connections = TaskTracker::new();
    loop {
        let (mut stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // axum's accept retries the errors of one connection and backs off on the rest
            // (out of file descriptors), as axum::serve does.
            accepted = Listener::accept(&mut listener) => accepted,
        };
        crate::ops::set_nodelay(&mut stream);
        let requests = Arc::new(Requests::default());
        let service = TowerToHyperService::new(router.clone().map_request({
            let requests = requests.clone();
            move |mut request: Request<Incoming>| {
                requests.started(&request);
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            }
        }));
        let builder = builder.clone();
        // A token of its own: every connection's task polls it at each of its requests,
        // and all of them waiting on the server's one token would share its lock.
        let shutdown = shutdown.child_token();
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watch(connection, peer, &requests, idle_timeout, &shutdown).await;
        });
    }
    drop(listener);
    connections.close();
    tracing::debug!(open = connections.len(), "finishing open HTTP connections");
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "stopped waiting for the HTTP connections still open after the shutdown grace period"
        );
    }
    Ok(())
}

/// What a connection's requests tell the task watching it, without waking it for each.
#[derive(Default)]
struct Requests {
    /// Notified at the first request only.
    first: Notify,
    seen: AtomicBool,
    /// When the last HTTP/2 request started, in milliseconds after `opened` plus 1 (0: none).
    last_http2: AtomicU64,
    opened: OnceLock<Instant>,
}

impl Requests {
    fn started(&self, request: &Request<Incoming>) {
        if request.version() == axum::http::Version::HTTP_2 {
            let opened = *self.opened.get_or_init(Instant::now);
            let at = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            self.last_http2.store(at + 1, Ordering::Relaxed);
        }
        if !self.seen.swap(true, Ordering::Relaxed) {
            self.first.notify_one();
        }
    }

    /// When the last HTTP/2 request started, if there was one.
    fn last_http2(&self) -> Option<Instant> {
        let at = self.last_http2.load(Ordering::Relaxed).checked_sub(1)?;
        Some(*self.opened.get()? + Duration::from_millis(at))
    }
}

/// Drives one connection to its end: closes it when it sends no request within
/// `idle_timeout` of opening, sends an HTTP/2 connection away once it has started no
/// request for `idle_timeout`, and shuts it down gracefully with the server. HTTP/1.1's
/// wait between requests is hyper's header-read timeout.
async fn watch<C>(
    connection: C,
    peer: SocketAddr,
    requests: &Requests,
    idle_timeout: Option<Duration>,
    shutdown: &Shutdown,
) where
    C: GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = pin!(connection);
    if let Some(limit) = idle_timeout {
        // Until the first request: hyper's timer starts only once it has told HTTP/1.1
        // from HTTP/2 by the first bytes, which it waits for untimed.
        tokio::select! {
            ended = &mut connection => return ended_with(ended, peer),
            () = requests.first.notified() => {}
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(limit) => {
                tracing::debug!(%peer, "HTTP connection closed: no request within the idle timeout");
                return;
            }
        }
    }
    let mut closing = false;
    loop {
        // When an HTTP/2 connection could first have been idle for `idle_timeout`: checked
        // then, not at each request, which would wake this task for every one.
        let idle_at = match (idle_timeout, requests.last_http2()) {
            (Some(limit), Some(last)) if !closing => Some(last + limit),
            _ => None,
        };
        tokio::select! {
            // The connection first: it is what wakes this task at every request.
            biased;
            ended = &mut connection => return ended_with(ended, peer),
            () = shutdown.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = sleep_until(idle_at) => {
                if requests.last_http2().zip(idle_timeout).is_some_and(|(last, limit)| last.elapsed() >= limit) {
                    tracing::debug!(%peer, "HTTP/2 connection sent away: no request within the idle timeout");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn ended_with(ended: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(error) = ended {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;
    use crate::h2_peer::{self, Peer};

    const IDLE: Duration = Duration::from_secs(1);
    /// Far longer than `IDLE`: what a test waits for at most before it fails.
    const DEADLINE: Duration = Duration::from_secs(10);
    const REQUEST: &[u8] = b"GET /peer HTTP/1.1\r\nhost: test\r\n\r\n";

    struct Server {
        addr: SocketAddr,
        shutdown: Shutdown,
        served: tokio::task::JoinHandle<std::io::Result<()>>,
        /// Lets the request in flight on `/slow` answer.
        release: Arc<Notify>,
    }

    /// `/peer` answers with the peer address the router was given; `/slow` answers once
    /// `release` is notified.
    async fn server(idle_timeout: Option<Duration>) -> Server {
        let release = Arc::new(Notify::new());
        let gate = release.clone();
        let router = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/slow",
                get(move || {
                    let gate = gate.clone();
                    async move {
                        gate.notified().await;
                        "done"
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let served = tokio::spawn(serve(
            listener,
            router,
            shutdown.clone(),
            idle_timeout,
            h2_peer::KEEPALIVE,
        ));
        Server {
            addr,
            shutdown,
            served,
            release,
        }
    }

    /// Reads one response (head and `content-length` body) off `stream`.
    async fn response(stream: &mut TcpStream) -> String {
        let mut read = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&read).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                if read.len() >= end + 4 + length {
                    return text;
                }
            }
            let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
                .await
                .expect("a response before the deadline")
                .unwrap();
            assert!(n > 0, "connection closed mid-response after {text:?}");
            read.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the server closes `stream` before the deadline (a read of 0 bytes or a reset).
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut chunk = [0u8; 64];
        match tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &chunk[..n]),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_answered_then_closed_when_it_stays_idle() {
        let server = server(Some(IDLE)).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        for _ in 0..2 {
            client.write_all(REQUEST).await.unwrap();
            let answer = response(&mut client).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            // The handler saw this connection's address.
            let local = client.local_addr().unwrap().to_string();
            assert!(answer.ends_with(&local), "{answer} names {local}");
        }
        assert!(closed_by_server(&mut client).await);
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_or_half_a_request_or_preface_is_closed() {
        let server = server(Some(IDLE)).await;
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let mut half = TcpStream::connect(server.addr).await.unwrap();
        half.write_all(b"GET /peer HTTP/1.1\r\nhost: te")
            .await
            .unwrap();
        // The start of HTTP/2's preface, which hyper reads untimed to pick the protocol.
        let mut preface = TcpStream::connect(server.addr).await.unwrap();
        preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(closed_by_server(&mut silent).await, "silent connection");
        assert!(closed_by_server(&mut half).await, "half a request head");
        assert!(
            closed_by_server(&mut preface).await,
            "half the HTTP/2 preface"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_does_not_hold_up_a_shutdown() {
        // An idle timeout far past the test's deadline.
        let server = server(Some(DEADLINE * 6)).await;
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        // Served: the connection has been accepted and is waiting for its first byte.
        let mut asking = TcpStream::connect(server.addr).await.unwrap();
        asking.write_all(REQUEST).await.unwrap();
        response(&mut asking).await;
        server.shutdown.cancel();
        tokio::time::timeout(DEADLINE, server.served)
            .await
            .expect("serve returns without waiting for the silent connection")
            .unwrap()
            .unwrap();
        assert!(closed_by_server(&mut silent).await);
    }

    #[tokio::test]
    async fn without_an_idle_timeout_an_idle_connection_stays_open() {
        let server = server(None).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client.write_all(REQUEST).await.unwrap();
        response(&mut client).await;
        let mut chunk = [0u8; 1];
        // Three idle timeouts of the other tests: still open, and still served.
        let waited = tokio::time::timeout(IDLE * 3, client.read(&mut chunk)).await;
        assert!(waited.is_err(), "closed: {waited:?}");
        client.write_all(REQUEST).await.unwrap();
        assert!(response(&mut client).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_request_slower_than_the_idle_timeout_is_answered_and_shutdown_waits_for_it() {
        let server = server(Some(IDLE)).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        // Past the idle timeout with the request in the handler, then a shutdown.
        tokio::time::sleep(IDLE * 3).await;
        server.shutdown.cancel();
        let served = server.served;
        tokio::pin!(served);
        // The server waits for the request in flight ...
        assert!(
            tokio::time::timeout(IDLE, &mut served).await.is_err(),
            "serve returned with a request in flight"
        );
        assert!(
            TcpStream::connect(server.addr).await.is_err(),
            "still accepting"
        );
        // ... which is answered, and then the connection is closed.
        server.release.notify_one();
        let answer = response(&mut client).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        assert!(closed_by_server(&mut client).await);
        tokio::time::timeout(DEADLINE, served)
            .await
            .expect("serve returns once the connection is done")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_http2_peer_that_stops_answering_pings_is_closed() {
        // No idle timeout: only the pings can close it.
        let server = server(None).await;
        let mut peer = Peer::client(server.addr).await;
        peer.ignore_pings_until_closed(DEADLINE).await;
    }

    #[tokio::test]
    async fn an_http2_connection_is_sent_away_once_it_starts_no_request_for_the_idle_timeout() {
        let server = server(Some(IDLE)).await;
        let mut peer = Peer::client(server.addr).await;
        peer.get(1, "/peer").await;
        let asked = tokio::time::Instant::now();
        assert!(
            peer.goaway_within(DEADLINE).await,
            "still open {DEADLINE:?} after its only request"
        );
        assert!(
            asked.elapsed() >= IDLE - Duration::from_millis(50),
            "sent away {:?} after its request, before the idle timeout",
            asked.elapsed()
        );
        peer.closed_within(DEADLINE).await;
    }

    #[tokio::test]
    async fn an_http2_connection_that_keeps_starting_requests_is_kept() {
        let server = server(Some(IDLE)).await;
        let mut peer = Peer::client(server.addr).await;
        // A request every quarter of the idle timeout, for three idle timeouts.
        for stream in (1..24).step_by(2) {
            peer.get(stream, "/peer").await;
            assert!(
                !peer.goaway_within(IDLE / 4).await,
                "sent away while starting a request every {:?}",
                IDLE / 4
            );
        }
        assert!(peer.goaway_within(DEADLINE).await);
    }

    #[tokio::test]
    async fn an_http2_peer_that_answers_pings_is_kept() {
        let server = server(None).await;
        let mut peer = Peer::client(server.addr).await;
        // Open far past interval + timeout.
        peer.answer_pings(5, DEADLINE).await;
    }
}
