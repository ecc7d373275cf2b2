//! One client must not stop the server (issue 17): sockets that send nothing, stop halfway
//! through their headers, idle on keep-alive or never read their answers are closed on
//! time, the connection limit refuses the excess with a metric, and everyone else is
//! answered throughout.

use std::time::{Duration, Instant};

use keyward_server::{ConnectionSettings, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::testkit::{metric, TestServer};

async fn server_with(connections: ConnectionSettings) -> TestServer {
    TestServer::start_with(ServerConfig {
        connections,
        ..ServerConfig::default()
    })
    .await
}

fn address(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Whether the server closes `socket` within `patience`: it reads until EOF or a reset,
/// discarding what arrives.
async fn closed_within(socket: &mut TcpStream, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn answered(server: &TestServer) {
    let answer = reqwest::Client::new()
        .get(format!("{}/healthz", server.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("answered while misbehaving sockets are open");
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn silent_slow_idle_and_non_reading_sockets_are_closed_on_time() {
    let server = server_with(ConnectionSettings {
        max_connections: 100,
        header_read_timeout: Duration::from_secs(1),
        send_timeout: Duration::from_secs(1),
    })
    .await;
    let address = address(&server);
    let mut silent = TcpStream::connect(&address).await.unwrap();
    let mut partial = TcpStream::connect(&address).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0_u8; 512];
    assert!(idle.read(&mut first).await.unwrap() > 0, "a first answer");
    // Asks again and again for a large answer and never reads: the server's writes stall.
    let mut deaf = TcpStream::connect(&address).await.unwrap();
    let pipelined = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    let _ = tokio::time::timeout(Duration::from_secs(2), deaf.write_all(&pipelined)).await;

    answered(&server).await;
    let started = Instant::now();
    for (name, socket) in [
        ("silent", &mut silent),
        ("partial headers", &mut partial),
        ("idle keep-alive", &mut idle),
    ] {
        assert!(
            closed_within(socket, Duration::from_secs(5)).await,
            "{name} still open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The deaf client has a great deal buffered; reading it drains to the close.
    assert!(closed_within(&mut deaf, Duration::from_secs(10)).await);
    answered(&server).await;
    let timed_out = metric(&server.base, "keyward_connections_timed_out_total")
        .await
        .unwrap_or(0.0);
    assert!(timed_out >= 3.0, "timed out: {timed_out}");
    server.stop().await;
}

#[tokio::test]
async fn the_connection_limit_refuses_the_excess_and_recovers() {
    let server = server_with(ConnectionSettings {
        max_connections: 6,
        header_read_timeout: Duration::from_secs(2),
        send_timeout: Duration::from_secs(2),
    })
    .await;
    let address = address(&server);
    // A WebSocket session holds its connection's slot for as long as it lives.
    let url = format!("ws://{address}/ws?api-key={}", server.live_key);
    let (session, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // Accepted in order: give the server a moment to take every held one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut excess = TcpStream::connect(&address).await.unwrap();
    assert!(
        closed_within(&mut excess, Duration::from_secs(1)).await,
        "the seventh connection is closed on arrival"
    );
    // The held ones end by their header timeout; then everyone is answered again.
    for socket in &mut held {
        assert!(closed_within(socket, Duration::from_secs(5)).await);
    }
    answered(&server).await;
    assert!(
        metric(&server.base, "keyward_connections_refused_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    // The WebSocket session and the metrics request's own connection, perhaps one a
    // finished client has not closed yet; none of the held ones.
    let open = metric(&server.base, "keyward_connections_open")
        .await
        .unwrap();
    assert!((2.0..=3.0).contains(&open), "open: {open}");
    drop(session);
    server.stop().await;
}

/// A request the server is still working on past `request_timeout` gets a 503 in SPEC §3's
/// envelope, and the connection serves the next request. The slow part here is a signed
/// request's body, which arrives only halfway: the server reads it before any handler runs.
#[tokio::test]
async fn a_request_past_its_timeout_gets_a_503_envelope() {
    let server = TestServer::start_with(ServerConfig {
        request_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let mut socket = TcpStream::connect(address(&server)).await.unwrap();
    socket
        .write_all(
            format!(
                "POST /api/v1/keys/verify HTTP/1.1\r\nHost: x\r\n\
                 Authorization: {} kw_ws_x:0:0:x\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\nX-Request-ID: req_0123456789ab\r\n\r\n{{\"key\":",
                keyward_core::signature::SCHEME
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"request_id\"") {
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
            .await
            .expect("answered within the timeout's bound")
            .unwrap();
        assert!(read > 0, "closed without an answer");
        answer.extend_from_slice(&buffer[..read]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(started.elapsed() >= Duration::from_millis(400), "{answer}");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"code\":\"service_unavailable\""),
        "{answer}"
    );
    assert!(
        answer.contains("\"request_id\":\"req_0123456789ab\""),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("api-version: 1.0"),
        "{answer}"
    );
    answered(&server).await;
}
