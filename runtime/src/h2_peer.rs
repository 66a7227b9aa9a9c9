//! A bare HTTP/2 peer for tests. It speaks frames, not HTTP, so it can do what no real
//! client or server does: stay silent, or leave pings unanswered, as a peer whose host
//! vanished would.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::keepalive::Http2Keepalive;

/// Pings that the tests see within a second, and an answer time that a busy test machine
/// does not miss.
pub(crate) const KEEPALIVE: Http2Keepalive = Http2Keepalive {
    interval: Duration::from_millis(300),
    timeout: Duration::from_secs(3),
};

/// What a client sends first on every HTTP/2 connection (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
/// HEADERS flags: the request has no body, and its head is in this one frame.
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;

pub(crate) struct Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

pub(crate) struct Peer {
    stream: TcpStream,
}

impl Peer {
    /// Connects to a server as a client: the preface and an empty SETTINGS frame.
    pub(crate) async fn client(addr: std::net::SocketAddr) -> Peer {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(PREFACE).await.unwrap();
        let mut peer = Peer { stream };
        peer.send(SETTINGS, 0, &[]).await;
        peer
    }

    /// Accepts one connection on `listener` as a server: reads the client's preface and
    /// sends an empty SETTINGS frame.
    pub(crate) async fn server(listener: &TcpListener, deadline: Duration) -> Peer {
        let (mut stream, _) = tokio::time::timeout(deadline, listener.accept())
            .await
            .expect("a connection before the deadline")
            .unwrap();
        let mut preface = [0u8; PREFACE.len()];
        stream.read_exact(&mut preface).await.unwrap();
        assert_eq!(preface, PREFACE, "not an HTTP/2 client");
        let mut peer = Peer { stream };
        peer.send(SETTINGS, 0, &[]).await;
        peer
    }

    async fn send(&mut self, kind: u8, flags: u8, payload: &[u8]) {
        self.send_on(0, kind, flags, payload).await;
    }

    async fn send_on(&mut self, stream: u32, kind: u8, flags: u8, payload: &[u8]) {
        let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
        // Length (24 bits), type, flags, stream id.
        let mut frame = vec![length[1], length[2], length[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Sends `GET path` on `stream` (odd, and higher than the last one used), without a
    /// body. The head is HPACK-coded with the static table's names and literal values, so
    /// no decoder state is needed.
    pub(crate) async fn get(&mut self, stream: u32, path: &str) {
        // :method GET, :scheme http (both static entries), :path and :authority as
        // literals with an indexed name (RFC 7541, appendix A).
        let mut head = vec![0x82, 0x86, 0x44, u8::try_from(path.len()).unwrap()];
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(&[0x41, 4]);
        head.extend_from_slice(b"test");
        self.send_on(stream, HEADERS, END_STREAM_AND_HEADERS, &head)
            .await;
    }

    /// Answers SETTINGS and pings as a live peer does (and reads past responses) until the
    /// other side sends a GOAWAY: true. False if none came within `wait`. Panics if the
    /// connection closes without one.
    pub(crate) async fn goaway_within(&mut self, wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let Ok(frame) = self.frame(left).await else {
                return false;
            };
            let frame = frame.unwrap_or_else(|| panic!("closed without a GOAWAY"));
            match (frame.kind, frame.flags & ACK != 0) {
                (GOAWAY, _) => return true,
                (SETTINGS, false) => self.send(SETTINGS, ACK, &[]).await,
                (PING, false) => self.send(PING, ACK, &frame.payload).await,
                _ => {}
            }
        }
    }

    /// Reads (and answers nothing) until the other side closes the connection. Panics if it
    /// is still open after `deadline`.
    pub(crate) async fn closed_within(&mut self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.frame(left).await {
                Err(_) => panic!("still open after {deadline:?}"),
                Ok(None) => return,
                Ok(Some(_)) => {}
            }
        }
    }

    /// The next frame; `None` once the other side has closed the connection, `Err` when
    /// nothing came within `wait`.
    async fn frame(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Frame>, tokio::time::error::Elapsed> {
        tokio::time::timeout(wait, async {
            let mut head = [0u8; 9];
            if self.stream.read_exact(&mut head).await.is_err() {
                return None;
            }
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]);
            let mut payload = vec![0u8; usize::try_from(length).unwrap()];
            if self.stream.read_exact(&mut payload).await.is_err() {
                return None;
            }
            Some(Frame {
                kind: head[3],
                flags: head[4],
                payload,
            })
        })
        .await
    }

    /// Reads frames and answers none of them, until the other side closes the connection.
    /// Panics if it stays open for `deadline`, or closes it before sending a ping.
    pub(crate) async fn ignore_pings_until_closed(&mut self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        let mut pings = 0;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.frame(left).await {
                Err(_) => panic!("open after {pings} unanswered pings and {deadline:?}"),
                Ok(None) => break,
                Ok(Some(frame)) => {
                    pings += usize::from(frame.kind == PING && frame.flags & ACK == 0)
                }
            }
        }
        assert!(pings >= 1, "closed before any ping");
    }

    /// Acknowledges SETTINGS and answers pings, as any live peer does, until it has answered
    /// `pings` of them. Panics if the connection closes first or `deadline` passes.
    pub(crate) async fn answer_pings(&mut self, pings: usize, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        let mut answered = 0;
        while answered < pings {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let frame = self
                .frame(left)
                .await
                .unwrap_or_else(|_| panic!("{answered} of {pings} pings before the deadline"))
                .unwrap_or_else(|| panic!("closed after {answered} answered pings"));
            if frame.flags & ACK != 0 {
                continue;
            }
            match frame.kind {
                SETTINGS => self.send(SETTINGS, ACK, &[]).await,
                PING => {
                    self.send(PING, ACK, &frame.payload).await;
                    answered += 1;
                }
                _ => {}
            }
        }
    }
}
