//! `inlet webhooks`: provision an integration's webhooks in Bitbucket through the admin API
//! (`PUT/GET/DELETE /api/v1/integrations/{name}/bitbucket-webhooks`), so a script can set up a
//! project or repository without clicking through Bitbucket's settings.
//!
//! The API key comes from `INLET_API_KEY` only, never a flag, so it stays out of `ps`. The admin
//! API is spoken over plain `http://` (it is internal: reach it on its listener or through a port
//! forward).

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// `inlet webhooks` flags.
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    /// Admin API base URL of the inlet to talk to (`http://host:port`).
    #[arg(
        long,
        global = true,
        env = "INLET_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin_url: String,
    /// What to do.
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

/// `inlet webhooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Create or update, idempotently, the integration's webhook of a project or repository.
    Sync {
        /// The integration.
        #[arg(long, value_name = "NAME")]
        integration: String,
        /// The project key.
        #[arg(long, value_name = "KEY")]
        project: String,
        /// A repository slug, for a repository-level webhook (default: the project's).
        #[arg(long, value_name = "SLUG")]
        repository: Option<String>,
    },
    /// List the webhooks inlet manages for the integration.
    List {
        /// The integration.
        #[arg(long, value_name = "NAME")]
        integration: String,
    },
    /// Delete a managed webhook in Bitbucket.
    Delete {
        /// The integration.
        #[arg(long, value_name = "NAME")]
        integration: String,
        /// Bitbucket's id of the webhook (from `list`).
        #[arg(long)]
        id: u64,
    },
}

/// Runs the subcommand and prints what Bitbucket now has; fails unless the admin API said 2xx.
pub async fn run(args: WebhooksArgs) -> anyhow::Result<()> {
    let key = std::env::var("INLET_API_KEY")
        .ok()
        .filter(|key| !key.is_empty())
        .context("set INLET_API_KEY to an admin API key of the integration's space")?;
    let base = args.admin_url.trim_end_matches('/');
    let (method, path, body) = match &args.command {
        WebhooksCommand::Sync {
            integration,
            project,
            repository,
        } => (
            "PUT",
            format!("/integrations/{integration}/bitbucket-webhooks"),
            Some(json!({"project_key": project, "repository_slug": repository})),
        ),
        WebhooksCommand::List { integration } => (
            "GET",
            format!("/integrations/{integration}/bitbucket-webhooks"),
            None,
        ),
        WebhooksCommand::Delete { integration, id } => (
            "DELETE",
            format!("/integrations/{integration}/bitbucket-webhooks/{id}"),
            None,
        ),
    };
    let (status, answer) = call(method, &format!("{base}/api/v1{path}"), &key, body).await?;
    if !(200..300).contains(&status) {
        let message = answer["error"]["message"].as_str().unwrap_or("no message");
        let code = answer["error"]["code"].as_str().unwrap_or("error");
        bail!("the admin API answered {status} {code}: {message}");
    }
    match &args.command {
        WebhooksCommand::Sync { .. } => println!("{}", summary(&answer)),
        WebhooksCommand::List { .. } => {
            for webhook in answer["bitbucket_webhooks"]
                .as_array()
                .into_iter()
                .flatten()
            {
                println!("{}", summary(webhook));
            }
        }
        WebhooksCommand::Delete { id, .. } => println!("webhook {id} deleted"),
    }
    Ok(())
}

/// `webhook 7 in INFRA/network: created, active, events …; refused by Bitbucket: …`.
fn summary(webhook: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let list = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    let scope = match webhook["repository_slug"].as_str() {
        Some(slug) => format!("{}/{slug}", text(&webhook["project_key"])),
        None => format!("project {}", text(&webhook["project_key"])),
    };
    let mut line = format!("webhook {} in {scope}", webhook["id"]);
    match webhook["created"].as_bool() {
        Some(true) => line.push_str(": created"),
        Some(false) => line.push_str(": updated"),
        None => line.push(':'),
    }
    let active = if webhook["active"].as_bool() == Some(true) {
        "active"
    } else {
        "inactive"
    };
    line.push_str(&format!(", {active}, events {}", list(&webhook["events"])));
    let refused = list(&webhook["refused_events"]);
    if !refused.is_empty() {
        line.push_str(&format!("; refused by Bitbucket: {refused}"));
    }
    line
}

async fn call(
    method: &str,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("`{url}` is not a URL"))?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("calling the admin API at {url}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).context("the admin API's answer is not JSON")?
    };
    Ok((status, value))
}
