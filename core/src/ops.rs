//! The operations endpoints every process serves: `GET /healthz` (alive), `GET /readyz` (ready to
//! do its job, as the process's [`Readiness`] says) and `GET /metrics` (Prometheus text). Router
//! and workers processes serve them on their own listener; ingest on its admin listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::http::{Answer, ErrorAnswer, json};
use crate::listener::Service;
use crate::metrics::Metrics;

/// How long a readiness probe may take before it answers 503.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What makes a process ready (for inlet: the broker answers and the control log is folded to
/// its end).
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` with extra fields for the answer, or why the process is not ready.
    fn check(&self) -> impl Future<Output = Result<serde_json::Value, String>> + Send;
}

/// Health and metrics for one process.
pub struct Ops<R> {
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// What readiness means for it.
    pub readiness: R,
}

impl<R: Readiness> Ops<R> {
    /// The answer for `path`, or `None` when it is not an operations endpoint.
    pub async fn answer(&self, path: &str) -> Option<Answer> {
        Some(match path {
            "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            "/readyz" => self.ready().await,
            "/metrics" => {
                let mut response = Response::new(Full::new(self.metrics.render().into()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            _ => return None,
        })
    }

    async fn ready(&self) -> Answer {
        match tokio::time::timeout(PROBE_TIMEOUT, self.readiness.check()).await {
            Ok(Ok(mut fields)) => {
                if let Some(map) = fields.as_object_mut() {
                    map.insert("status".to_owned(), "ready".into());
                }
                json(StatusCode::OK, &fields)
            }
            Ok(Err(reason)) => ErrorAnswer::unavailable("not_ready", reason, 5).into_response(),
            Err(_) => ErrorAnswer::unavailable(
                "not_ready",
                format!("the readiness check did not finish within {PROBE_TIMEOUT:?}"),
                5,
            )
            .into_response(),
        }
    }
}

impl<R: Readiness> Service for Ops<R> {
    async fn call(&self, request: Request<Incoming>) -> Answer {
        match self.answer(request.uri().path()).await {
            Some(answer) => answer,
            None => ErrorAnswer::no_route().into_response(),
        }
    }
}
