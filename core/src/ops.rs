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

/// `inner`'s readiness, and no consumed partition stalled: lagging without advancing for
/// [`crate::progress::STALL_AFTER`] (router and workers processes).
pub struct WithProgress<R> {
    /// The process's own readiness (for inlet: the control log).
    pub inner: R,
    /// Where the consume loops record their positions.
    pub metrics: Arc<Metrics>,
}

impl<R: Readiness> Readiness for WithProgress<R> {
    async fn check(&self) -> Result<serde_json::Value, String> {
        let fields = self.inner.check().await?;
        let stalls = self
            .metrics
            .progress
            .stalled(std::time::Instant::now(), crate::progress::STALL_AFTER);
        if stalls.is_empty() {
            return Ok(fields);
        }
        let described: Vec<String> = stalls
            .iter()
            .map(|s| {
                format!(
                    "{} partition {} has not advanced from offset {} for {} s while {} records behind",
                    s.stage,
                    s.partition,
                    s.position,
                    s.for_.as_secs(),
                    s.lag
                )
            })
            .collect();
        Err(described.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Ready;

    impl Readiness for Ready {
        async fn check(&self) -> Result<serde_json::Value, String> {
            Ok(serde_json::json!({}))
        }
    }

    /// A partition stalled beyond the threshold makes the process unready, naming it.
    #[tokio::test]
    async fn a_stalled_partition_is_not_ready() {
        let metrics = Metrics::new();
        let ops = Ops {
            metrics: metrics.clone(),
            readiness: WithProgress {
                inner: Ready,
                metrics: metrics.clone(),
            },
        };
        assert_eq!(ops.ready().await.status(), StatusCode::OK);
        let long_ago = Instant::now() - crate::progress::STALL_AFTER - Duration::from_secs(1);
        metrics.progress.observe("workers", 3, 40, 12, long_ago);
        metrics
            .progress
            .observe("workers", 3, 40, 12, Instant::now());
        let answer = ops.ready().await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = http_body_util::BodyExt::collect(answer.into_body())
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("workers partition 3"), "{text}");
        metrics
            .progress
            .observe("workers", 3, 41, 11, Instant::now());
        assert_eq!(ops.ready().await.status(), StatusCode::OK);
    }
}
