//! Serving an axum [`Router`] over HTTP/1.1 and HTTP/2, as `axum::serve` does, with what it
//! leaves out: connections that send no request are closed.
//!
//! `axum::serve` sets no timer on hyper's connections, so hyper's header-read timeout never
//! runs: a kept-alive connection after its last request, a connection that never sends a
//! byte, and one that sends half a request head are all held open until the peer goes.
//! Each costs the gateway 16–48 KiB (docs/performance.md, Fix 22), and nothing bounds how
//! many a client leaves behind. Here a connection must send a complete request head
//! within `idle_timeout` of opening and of each response; otherwise it is closed.
//!
//! Accepting, `TCP_NODELAY`, the peer address for [`ConnectInfo`], upgrades (GraphQL
//! subscriptions over WebSocket) and graceful shutdown are as with `axum::serve`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use crate::Shutdown;

/// How long a connection may go without sending a complete request head (after it opens,
/// and after each response) when nothing else is configured. Longer than the 60 s idle
/// timeout of common load balancers, which must close an idle connection before the server
/// behind them does; nginx's `keepalive_timeout` is 75 s too.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Serves `router` on `listener` until `shutdown` fires; then stops accepting, lets every
/// request in flight finish and closes each connection as it goes idle.
///
/// A connection that sends no complete request head within `idle_timeout` of opening or
/// of its last response is closed (`None`: never). HTTP/2 connections are kept while the
/// peer is there, as before: hyper has no idle timeout for them.
pub async fn serve(
    mut listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    idle_timeout: Option<Duration>,
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
        .enable_connect_protocol();
    let connections = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // axum's accept retries the errors of one connection and backs off on the rest
            // (out of file descriptors), as axum::serve does.
            accepted = Listener::accept(&mut listener) => accepted,
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            },
        ));
        let builder = builder.clone();
        let watcher = connections.watcher();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Some(stream) = opened(stream, peer, idle_timeout, &shutdown).await else {
                return;
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::debug!(
        open = connections.count(),
        "finishing open HTTP connections"
    );
    connections.shutdown().await;
    Ok(())
}

/// `stream` once it has something to read (a first byte, or its end), with `TCP_NODELAY`
/// set; `None` when `idle_timeout` passes or `shutdown` fires first. hyper reads the first
/// bytes to tell HTTP/1.1 from HTTP/2 with no timeout of its own; its header-read timeout
/// starts after.
async fn opened(
    mut stream: TcpStream,
    peer: SocketAddr,
    idle_timeout: Option<Duration>,
    shutdown: &Shutdown,
) -> Option<TcpStream> {
    crate::ops::set_nodelay(&mut stream);
    if let Some(limit) = idle_timeout {
        // `peek` waits for a byte (or the end) and leaves it for hyper; `readable` can
        // report a fresh socket ready with nothing in it.
        let mut byte = [0u8; 1];
        let first_byte = tokio::select! {
            waited = tokio::time::timeout(limit, stream.peek(&mut byte)) => waited,
            // Nothing asked yet: nothing to finish.
            () = shutdown.cancelled() => return None,
        };
        match first_byte {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "HTTP connection failed before its first request");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "HTTP connection closed: no request within the idle timeout");
                return None;
            }
        }
    }
    Some(stream)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::Notify;

    use super::*;

    const IDLE: Duration = Duration::from_millis(300);
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
        let served = tokio::spawn(serve(listener, router, shutdown.clone(), idle_timeout));
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
    async fn a_connection_that_sends_nothing_or_half_a_request_is_closed() {
        let server = server(Some(IDLE)).await;
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let mut half = TcpStream::connect(server.addr).await.unwrap();
        half.write_all(b"GET /peer HTTP/1.1\r\nhost: te")
            .await
            .unwrap();
        assert!(closed_by_server(&mut silent).await, "silent connection");
        assert!(closed_by_server(&mut half).await, "half a request head");
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
        // Ten idle timeouts of the other tests: still open, and still served.
        let waited = tokio::time::timeout(IDLE * 10, client.read(&mut chunk)).await;
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
}
