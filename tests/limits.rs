//! End to end: the edge's limits and lifecycle — in-flight bound, slow clients, graceful drain.

mod common;

use std::time::Duration;

use common::{Inlet, admin, webhook};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection and sends a webhook request head plus the first `sent` of `declared` body
/// bytes, leaving the request in flight.
async fn partial_request(url: &str, declared: usize, sent: usize) -> TcpStream {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nx-event-key: repo:refs_changed\r\n\
         x-hub-signature: sha256=00\r\ncontent-length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&vec![b' '; sent]).await.expect("body");
    stream
}

async fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let mut buffer = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buffer[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// With `max_in_flight = 1`, a second webhook while one is being received gets 503 + Retry-After;
/// a body slower than the request timeout gets 408; headers slower than the header timeout get
/// the connection closed; on SIGTERM an in-flight request is still answered and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_graceful_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("inlet.toml");
    std::fs::write(
        &config,
        "[ingest]\nmax_in_flight = 1\nrequest_timeout_ms = 1500\nheader_read_timeout_ms = 500\n",
    )
    .expect("config");
    let mut dev = Inlet::start(
        &[
            "dev",
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &[("INLET_CONFIG", config.to_str().expect("path"))],
    );
    let key = dev.ready.admin_key.clone().expect("key");
    let created = admin(
        &dev,
        &key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://x.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201);
    let details = admin(&dev, &key, "GET", "/integrations/bb/details", Value::Null).await;
    let secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let url = dev.webhook_url("bb");
    let push = common::push_body("main", "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");

    // One slow request holds the only slot: the next one is refused with Retry-After.
    let mut slow = partial_request(&url, 100, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = webhook(&url, "repo:refs_changed", "second", &secret, &push).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "saturated");
    assert!(refused.headers.contains_key("retry-after"));
    // The slow body runs out of time: 408, and the slot is free again.
    assert_eq!(read_status(&mut slow).await, Some(408));
    let accepted = webhook(&url, "repo:refs_changed", "third", &secret, &push).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");

    // Headers that never finish: the connection is closed without an answer.
    let rest = url.strip_prefix("http://").expect("http url");
    let host = &rest[..rest.find('/').expect("path")];
    let mut stalled = TcpStream::connect(host).await.expect("connect");
    stalled
        .write_all(b"POST /webhooks/bitbucket-datacenter/bb HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buffer)).await;
    match closed {
        Ok(Ok(n)) => assert!(
            n == 0 || String::from_utf8_lossy(&buffer[..n]).contains("408"),
            "stalled headers got {:?}",
            String::from_utf8_lossy(&buffer[..n])
        ),
        Ok(Err(_)) => {}
        Err(_) => panic!("a connection with stalled headers stayed open"),
    }

    // SIGTERM with a request in flight: it is answered, then the process exits cleanly.
    let body = [b' '; 40];
    let mut in_flight = partial_request(&url, body.len(), 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &dev.pid().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    in_flight
        .write_all(&body[10..])
        .await
        .expect("rest of body");
    // A signature of zeros: verified and refused, which proves the request was still handled.
    assert_eq!(read_status(&mut in_flight).await, Some(401));
    let status = dev.wait_exit();
    assert!(status.success(), "exit status {status}\n{}", dev.log());
}
