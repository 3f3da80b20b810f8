//! `inlet send`: sign and send a realistic Bitbucket Data Center webhook to any inlet, to test a
//! setup end to end without clicking through Bitbucket.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use inlet_bitbucket::signature::sign;
use inlet_core::secret::Secret;
use tokio::net::TcpStream;

/// `inlet send` flags.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Webhook base URL of the inlet to send to (`http://host:port`).
    #[arg(
        long,
        env = "INLET_WEBHOOK_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Integration name (the last segment of the webhook URL).
    #[arg(long)]
    pub integration: String,
    /// Bitbucket event key.
    #[arg(long, default_value = "repo:refs_changed")]
    pub event: String,
    /// Body to send; without it, a realistic built-in payload for the event.
    #[arg(long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// The integration's webhook secret; without it the request is unsigned (fine for pings).
    #[arg(long, env = "INLET_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// `X-Request-Id` to send (default: a random one).
    #[arg(long)]
    pub delivery_id: Option<String>,
}

/// Built-in payloads, the same the tests use.
fn builtin(event: &str) -> Option<&'static str> {
    Some(match event {
        "repo:refs_changed" => include_str!("../tests/fixtures/repo_refs_changed.json"),
        "pr:opened" => include_str!("../tests/fixtures/pr_opened.json"),
        "pr:from_ref_updated" => include_str!("../tests/fixtures/pr_from_ref_updated.json"),
        "pr:modified" => include_str!("../tests/fixtures/pr_modified.json"),
        "pr:reviewer:approved" => include_str!("../tests/fixtures/pr_reviewer_approved.json"),
        "pr:reviewer:unapproved" => include_str!("../tests/fixtures/pr_reviewer_unapproved.json"),
        "pr:reviewer:needs_work" | "pr:reviewer:changes_requested" => {
            include_str!("../tests/fixtures/pr_reviewer_changes_requested.json")
        }
        "pr:merged" => include_str!("../tests/fixtures/pr_merged.json"),
        "pr:comment:added" => include_str!("../tests/fixtures/pr_comment_added.json"),
        "diagnostics:ping" => include_str!("../tests/fixtures/diagnostics_ping.json"),
        _ => return None,
    })
}

/// Sends the webhook and prints the answer; fails unless it is 2xx.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let body = match &args.file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => builtin(&args.event)
            .with_context(|| format!("no built-in payload for `{}`; pass --file", args.event))?
            .as_bytes()
            .to_vec(),
    };
    let url: hyper::Uri = format!(
        "{}/webhooks/bitbucket-datacenter/{}",
        args.url.trim_end_matches('/'),
        args.integration
    )
    .parse()
    .context("invalid --url")?;
    let authority = url.authority().context("--url has no host")?.to_string();
    let delivery = args
        .delivery_id
        .clone()
        .unwrap_or_else(|| format!("inlet-send-{}", Secret::generate(8).expose()));
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(url.path())
        .header("host", authority.as_str())
        .header("content-type", "application/json; charset=UTF-8")
        .header("x-event-key", args.event.as_str())
        .header("x-request-id", delivery.as_str());
    if let Some(secret) = &args.secret {
        request = request.header(
            "x-hub-signature",
            sign(&Secret::new(secret.as_str()), &body),
        );
    }
    let stream = TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    println!(
        "{} {} (delivery {delivery})\n{}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        String::from_utf8_lossy(&answer)
    );
    if !status.is_success() {
        bail!("the webhook was not accepted");
    }
    Ok(())
}
