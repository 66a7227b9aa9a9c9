//! HTTP/2 pings that find a peer gone without a word.
//!
//! A peer whose host vanished (power lost, a network partition, a NAT or load balancer that
//! dropped the flow) sends no FIN and no reset: its connection looks open until someone
//! writes to it and the write times out, which a quiet connection never does. Every HTTP/2
//! connection here is pinged when it has been silent for `interval` and closed when the
//! answer takes longer than `timeout`:
//!
//! - servers ([`Http2Keepalive::SERVER`]): the command services' gRPC listeners, the
//!   gateway's HTTP/2 and every ops listener; a vanished client's connection is freed;
//! - the gateway's channels to the command services ([`Http2Keepalive::CLIENT`]), pinged
//!   while idle too: a service that vanished is found before the next command is sent into
//!   its dead connection to wait out the call timeout, and the channel reconnects.
//!
//! A live peer answers pings by itself (any HTTP/2 implementation does), so nothing changes
//! for it, however long it stays idle.

use std::time::Duration;

use tonic::transport::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Keepalive {
    /// Silence from the peer after which it is pinged.
    pub interval: Duration,
    /// How long its answer may take before the connection is closed.
    pub timeout: Duration,
}

impl Http2Keepalive {
    /// Servers: a dead client's connection is given up within 80 s of its last frame (the
    /// socket itself may stay until TCP gives up on data still unsent to it). The
    /// 20 s answer time is gRPC's own default (grpc-go's `keepalive.ServerParameters`).
    pub const SERVER: Self = Self {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(20),
    };

    /// Clients: a dead server is found within 40 s of its last frame, so before the
    /// connection's NAT mapping or a load balancer's idle timer (commonly 60 s) expires.
    /// Our servers accept pings this often; grpc-go's default policy would not (it allows
    /// one every 5 minutes), so a channel to such a server must not use this.
    pub const CLIENT: Self = Self {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
    };

    /// `endpoint` with these pings, sent while the channel is idle too.
    pub fn client(self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .http2_keep_alive_interval(self.interval)
            .keep_alive_timeout(self.timeout)
            .keep_alive_while_idle(true)
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::h2_peer::{KEEPALIVE as SHORT, Peer};

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A channel with the tests' short pings, connected to a bare server peer.
    async fn connected() -> (Peer, tonic::transport::Channel) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let endpoint = SHORT.client(Endpoint::from_shared(url).unwrap());
        let connecting = tokio::spawn(async move { endpoint.connect().await });
        let server = Peer::server(&listener, DEADLINE).await;
        (server, connecting.await.unwrap().unwrap())
    }

    #[tokio::test]
    async fn a_channel_closes_its_connection_to_a_server_that_stops_answering() {
        // The channel is kept: dropping it would close the connection whatever the pings do.
        let (mut server, _channel) = connected().await;
        server.ignore_pings_until_closed(DEADLINE).await;
    }

    #[tokio::test]
    async fn a_channel_keeps_its_connection_to_a_server_that_answers() {
        let (mut server, _channel) = connected().await;
        // Five pings answered: open far past interval + timeout, and pinged while idle.
        server.answer_pings(5, DEADLINE).await;
    }
}
