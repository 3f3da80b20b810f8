//! End to end: `inlet send` signs and sends a webhook; `inlet tail` shows what came of it.

mod common;

use std::process::Command;

use common::{Inlet, admin};
use serde_json::json;

fn inlet(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(args)
        .env_remove("INLET_WEBHOOK_SECRET")
        .output()
        .expect("run inlet");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// `inlet send` with the right secret is accepted and becomes a decision that `inlet tail runs`
/// prints; with a wrong secret it reports the 401 and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_tail() {
    let dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("key");
    let secret = common::integration_secret(&dev, &key, "bb", true).await;
    let stack = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        json!({"id": "network-prod", "name": "n", "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201);
    let url = dev.ready.webhook_base_url.clone().expect("url");
    let bootstrap = dev.ready.kafka_bootstrap_servers.clone();

    let (ok, out) = inlet(&[
        "send",
        "--url",
        &url,
        "--integration",
        "bb",
        "--secret",
        &secret,
        "--delivery-id",
        "cli-1",
    ]);
    assert!(ok, "{out}");
    assert!(out.starts_with("202 Accepted (delivery cli-1)"), "{out}");
    let (ok, out) = inlet(&[
        "send",
        "--url",
        &url,
        "--integration",
        "bb",
        "--event",
        "diagnostics:ping",
    ]);
    assert!(ok && out.starts_with("200"), "{out}");
    let (ok, out) = inlet(&[
        "send",
        "--url",
        &url,
        "--integration",
        "bb",
        "--secret",
        "wrong-secret",
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("401") && out.contains("invalid_signature"),
        "{out}"
    );

    let (ok, out) = tokio::task::spawn_blocking(move || {
        inlet(&[
            "tail",
            "runs",
            "--kafka-bootstrap-servers",
            &bootstrap,
            "--from-beginning",
            "--max",
            "1",
        ])
    })
    .await
    .expect("tail");
    assert!(ok, "{out}");
    assert!(
        out.contains("requested") && out.contains("network-prod") && out.contains("cli-1"),
        "{out}"
    );
}
