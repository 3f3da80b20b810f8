//! Accepting HTTP/1.1 connections and handing requests to a service, with graceful shutdown.
//!
//! On shutdown the listener stops accepting, lets every open connection finish the request it is
//! serving (keep-alive connections are closed after it), and returns once all are done or the
//! drain timeout passed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::CancellationToken;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Something that answers requests.
pub trait Service: Send + Sync + 'static {
    /// Answers one request.
    fn call(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Bounds on what one connection, and all of them, may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send its request head.
    pub header_read_timeout: Duration,
    /// Open connections at most; beyond it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request head in bytes (at least 8192); beyond it hyper answers 431.
    pub max_head_bytes: usize,
    /// Most headers in one request; beyond it 431.
    pub max_headers: usize,
}

impl ConnectionLimits {
    /// Limits with `header_read_timeout` and the defaults for the rest: 10,000 connections,
    /// 64 KiB heads, 100 headers.
    pub fn new(header_read_timeout: Duration) -> Self {
        ConnectionLimits {
            header_read_timeout,
            max_connections: 10_000,
            max_head_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// Serves `listener` until `shutdown`, then drains for at most `drain`.
pub async fn serve<S: Service>(
    name: &'static str,
    listener: TcpListener,
    service: Arc<S>,
    limits: ConnectionLimits,
    drain: Duration,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses buffers under 8 KiB.
        .max_buf_size(limits.max_head_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |request| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(service.call(request).await) }
            }),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(listener = name, %peer, error = %err, "connection ended with an error");
            }
            // The connection's slot frees only once it is closed.
            drop(permit);
        });
    }
    drop(listener);
    drain_connections(name, graceful, drain).await;
}

/// Lets every open connection finish the request it is serving, for at most `drain`.
async fn drain_connections(name: &'static str, graceful: GracefulShutdown, drain: Duration) {
    tracing::info!(
        listener = name,
        open = graceful.count(),
        "stopped accepting; draining connections"
    );
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after the drain timeout"
        );
    }
}
