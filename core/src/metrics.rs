//! Prometheus metrics, one registry per process.
//!
//! Names are `inlet_<stage>_<thing>_<unit>`. Label values come from enums or from names the
//! registry knows (integrations), never from request input, so cardinality stays bounded.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::bitbucket::events;

/// What became of one webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// 202: published.
    Accepted,
    /// 200: a ping.
    Ping,
    /// 202: a verified event inlet does not handle.
    Ignored,
    /// 401.
    Unauthorized,
    /// 404.
    NotFound,
    /// 400 (and other client errors).
    BadRequest,
    /// 413.
    TooLarge,
    /// 408: the body was too slow.
    Timeout,
    /// 503.
    Unavailable,
}

impl WebhookOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Ping => "ping",
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::NotFound => "not_found",
            WebhookOutcome::BadRequest => "bad_request",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Timeout => "timeout",
            WebhookOutcome::Unavailable => "unavailable",
        }
    }
}

/// The `event` label for an event key: known keys as they are, anything else `other`.
pub fn event_label(event_key: Option<&str>) -> &'static str {
    match event_key {
        Some(events::PING) => events::PING,
        Some(key) => events::HANDLED
            .iter()
            .find(|known| **known == key)
            .copied()
            .unwrap_or("other"),
        None => "none",
    }
}

/// The ingest stage's metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    /// `inlet_ingest_requests_total{integration, event, outcome}`.
    pub requests: IntCounterVec,
    /// `inlet_ingest_signature_failures_total{reason}`.
    pub signature_failures: IntCounterVec,
    /// `inlet_ingest_publish_duration_seconds`: from produce to the broker's acknowledgement.
    pub publish_seconds: Histogram,
    /// `inlet_ingest_in_flight_requests`: webhook requests being handled.
    pub in_flight: IntGauge,
    /// `inlet_ingest_request_body_bytes`.
    pub body_bytes: Histogram,
}

/// Every metric of a process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Ingest.
    pub ingest: IngestMetrics,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let ingest = IngestMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "inlet_ingest_requests_total",
                    "Webhook requests by integration, event key and outcome.",
                ),
                &["integration", "event", "outcome"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            signature_failures: IntCounterVec::new(
                Opts::new(
                    "inlet_ingest_signature_failures_total",
                    "Webhooks refused for their signature, by reason.",
                ),
                &["reason"],
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            publish_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "inlet_ingest_publish_duration_seconds",
                    "Time from producing a webhook to the broker's acknowledgement.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            in_flight: IntGauge::new(
                "inlet_ingest_in_flight_requests",
                "Webhook requests being handled.",
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
            body_bytes: Histogram::with_opts(
                HistogramOpts::new("inlet_ingest_request_body_bytes", "Webhook body sizes.")
                    .buckets(prometheus::exponential_buckets(256.0, 4.0, 8).unwrap_or_default()),
            )
            .unwrap_or_else(|err| unreachable!("static metric definition: {err}")),
        };
        for collector in [
            Box::new(ingest.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ingest.signature_failures.clone()),
            Box::new(ingest.publish_seconds.clone()),
            Box::new(ingest.in_flight.clone()),
            Box::new(ingest.body_bytes.clone()),
        ] {
            registry
                .register(collector)
                .unwrap_or_else(|err| unreachable!("each metric is registered once: {err}"));
        }
        Arc::new(Metrics { registry, ingest })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event labels are bounded: unknown keys collapse to `other`.
    #[test]
    fn event_labels_are_bounded() {
        assert_eq!(event_label(Some("repo:refs_changed")), "repo:refs_changed");
        assert_eq!(event_label(Some("diagnostics:ping")), "diagnostics:ping");
        assert_eq!(event_label(Some("repo:forked")), "other");
        assert_eq!(event_label(Some("x\ny")), "other");
        assert_eq!(event_label(None), "none");
    }

    /// Rendering shows registered metrics with their labels.
    #[test]
    fn render() {
        let metrics = Metrics::new();
        metrics
            .ingest
            .requests
            .with_label_values(&["bb", "repo:refs_changed", "accepted"])
            .inc();
        let text = metrics.render();
        assert!(text.contains(
            "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"bb\",outcome=\"accepted\"} 1"
        ), "{text}");
        assert!(text.contains("inlet_ingest_in_flight_requests 0"));
    }
}
