//! The operations listener of the router and workers processes: `GET /healthz` (alive),
//! `GET /readyz` (broker reachable, control log folded to its end) and `GET /metrics`. Ingest
//! serves the same on its admin listener.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use inlet_core::control_log::ControlLog;
use inlet_core::metrics::Metrics;
use inlet_ingest::error::{ApiError, json};
use inlet_ingest::listener::Service;

/// Health and metrics for one process.
pub struct Ops {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Its fold of the control log.
    pub control: ControlLog,
}

impl Service for Ops {
    async fn call(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match request.uri().path() {
            "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            "/readyz" => {
                match tokio::time::timeout(Duration::from_secs(2), self.control.sync()).await {
                    Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
                    Ok(Err(err)) => {
                        ApiError::unavailable("not_ready", err.to_string(), 5).into_response()
                    }
                    Err(_) => ApiError::unavailable("not_ready", "the broker did not answer", 5)
                        .into_response(),
                }
            }
            "/metrics" => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            _ => ApiError::not_found("not_found", "no such endpoint").into_response(),
        }
    }
}
