//! The admin API (`/api/v1`).
//!
//! Reads come from this process's registry; writes append a command to `inlet.control` and answer
//! once this process's fold applied it, with the fold's verdict. Every request is authenticated
//! (the bootstrap key or an API key) and authorised against the space tree (`crate::access`):
//! a resource the caller may not read answers 404, one it may read but not change answers 403.
//!
//! One file per resource: `spaces`, `integrations`, `bitbucket_webhooks` (the webhooks inlet
//! provisions in Bitbucket for an integration), `reconcile` (a reconciliation pass on demand),
//! `stacks` (with manual runs), `keys`;
//! `views` holds request and response bodies, `openapi` the route table and the document
//! generated from it.

mod bitbucket_webhooks;
mod deliveries;
pub mod error;
mod integrations;
mod keys;
mod limit;
pub mod openapi;
mod reconcile;
mod spaces;
mod stacks;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use crate::access::Principal;
use crate::commands::ControlCommand;
use crate::control_log::{ControlError, ControlLog};
use crate::crypto::SecretsKey;
use crate::domain::{ROOT_SPACE, Role};
use crate::registry::Registry;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use inlet_core::metrics::Metrics;
use inlet_core::secret::Secret;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admin::error::{ApiError, json};
use crate::deliveries::DeliveryLog;
use inlet_core::kafka::Kafka;
use inlet_core::listener::Service;
use inlet_core::ops::Ops;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Prefix of issued API keys: `ik_<id>.<secret>`.
pub const KEY_PREFIX: &str = "ik_";

/// What the admin API needs besides the control log.
pub struct AdminDeps {
    /// The bootstrap root-admin key.
    pub admin_key: Secret,
    /// Seals webhook secrets and access tokens.
    pub secrets_key: SecretsKey,
    /// Base URL Bitbucket reaches the webhook listener at.
    pub public_base_url: String,
    /// Where manual-run triggers, redeliveries and delivery events are produced.
    pub outputs: inlet_core::output::Outputs,
    /// Where manual-run triggers go.
    pub triggers_topic: String,
    /// The process's metrics, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// This process's view of `inlet.deliveries`.
    pub deliveries: DeliveryLog,
    /// Builds the reader that fetches a stored webhook for redelivery.
    pub kafka: Kafka,
    /// Where webhooks are (re-)published.
    pub webhooks_topic: String,
    /// Where delivery events go.
    pub deliveries_topic: String,
    /// Whether integrations may point at an `http://` Bitbucket.
    pub allow_http: bool,
    /// Calls Bitbucket to provision integrations' webhooks (and push rotated secrets).
    pub bitbucket: inlet_bitbucket::client::Client,
}

/// Serves the admin API on `listener` until `shutdown`, then drains it for at most `drain`.
pub async fn run(
    listener: tokio::net::TcpListener,
    control: ControlLog,
    deps: AdminDeps,
    limits: inlet_core::listener::ConnectionLimits,
    drain: Duration,
    shutdown: inlet_core::CancellationToken,
) {
    let admin = Arc::new(Admin::new(control, deps));
    inlet_core::listener::serve("admin", listener, admin, limits, drain, shutdown).await;
}

/// Whether the request presents something shaped like an issued key (`Bearer ik_<id>.<secret>`):
/// only such a key may be one this process has not folded yet; anything else is refused without
/// touching the broker.
fn names_an_issued_key<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ik_"))
        .is_some_and(|rest| rest.contains('.') && rest.len() <= 200)
}

/// How long a request waits for the broker to acknowledge what it produces.
const SEND_DEADLINE: Duration = Duration::from_secs(5);

/// The admin listener's service.
pub struct Admin {
    control: ControlLog,
    deps: AdminDeps,
    ops: Ops<ControlLog>,
    writes: limit::WriteLimit,
}

/// A handler's result.
type Answer = Result<Response<Full<Bytes>>, ApiError>;

impl Admin {
    /// The admin API over `control`.
    pub fn new(control: ControlLog, mut deps: AdminDeps) -> Self {
        deps.public_base_url = deps.public_base_url.trim_end_matches('/').to_owned();
        let ops = Ops {
            metrics: deps.metrics.clone(),
            readiness: control.clone(),
        };
        Admin {
            control,
            deps,
            ops,
            writes: limit::WriteLimit::default(),
        }
    }

    /// Answers one request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        if let Some(answer) = self.ops.answer(&path).await {
            return answer;
        }
        if path == "/api/v1/openapi.json" && request.method() == Method::GET {
            return json(StatusCode::OK, &openapi::document(self.deps.allow_http));
        }
        let method = request.method().clone();
        match self.route(request).await {
            Ok(response) => response,
            Err(err) => {
                if err.status().is_server_error() {
                    tracing::warn!(%method, %path, code = err.code(), reason = %err.message(), "admin request failed");
                } else {
                    tracing::debug!(%method, %path, code = err.code(), "admin request refused");
                }
                err.into_response()
            }
        }
    }

    async fn route<B>(&self, request: Request<B>) -> Answer
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return Err(no_such_endpoint());
        };
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let method = request.method().clone();
        if !openapi::is_resource(&segments) {
            return Err(no_such_endpoint());
        }
        // Authenticate before any broker I/O, against what this process has folded; only a key
        // it does not know yet (created through another replica a moment ago) makes it catch up
        // first. Then catch up with changes other replicas acknowledged before answering; when
        // the broker is unreachable, reads are still served from what this process has.
        // Concurrent requests share one catch-up.
        let principal = match self.authenticate(&request) {
            Ok(principal) => principal,
            Err(err) if !names_an_issued_key(&request) => return Err(err),
            Err(_) => {
                self.catch_up().await;
                self.authenticate(&request)?
            }
        };
        self.catch_up().await;
        // The bootstrap key is the operator's own (provisioning scripts create thousands of
        // stacks with it); issued keys are limited.
        if method != Method::GET
            && !matches!(principal, Principal::Bootstrap)
            && let Err(wait) = self
                .writes
                .take(principal.actor(), std::time::Instant::now())
        {
            return Err(ApiError::RateLimited {
                retry_after: wait.as_secs().max(1) as u32,
            });
        }
        let p = &principal;
        match (method, segments.as_slice()) {
            (Method::GET, ["spaces"]) => self.list_spaces(p),
            (Method::POST, ["spaces"]) => self.create_space(p, read_json(request).await?).await,
            (Method::GET, ["spaces", id]) => self.get_space(p, id),
            (Method::PATCH, ["spaces", id]) => {
                let id = id.to_string();
                self.update_space(p, &id, read_json(request).await?).await
            }
            (Method::DELETE, ["spaces", id]) => self.delete_space(p, id).await,

            (Method::GET, ["api-keys"]) => self.list_keys(p),
            (Method::POST, ["api-keys"]) => self.create_key(p, read_json(request).await?).await,
            (Method::DELETE, ["api-keys", id]) => self.delete_key(p, id).await,

            (Method::GET, ["integrations"]) => self.list_integrations(p),
            (Method::POST, ["integrations"]) => {
                self.create_integration(p, read_json(request).await?).await
            }
            (Method::GET, ["integrations", name]) => self.get_integration(p, name),
            (Method::PATCH, ["integrations", name]) => {
                let name = name.to_string();
                self.update_integration(p, &name, read_json(request).await?)
                    .await
            }
            (Method::DELETE, ["integrations", name]) => self.delete_integration(p, name).await,
            (Method::GET, ["integrations", name, "details"]) => self.integration_details(p, name),
            (Method::POST, ["integrations", name, "rotate-secret"]) => {
                let name = name.to_string();
                self.rotate_secret(p, &name, read_optional_json(request).await?)
                    .await
            }

            (Method::GET, ["integrations", name, "bitbucket-webhooks"]) => {
                self.list_bitbucket_webhooks(p, name)
            }
            (Method::PUT, ["integrations", name, "bitbucket-webhooks"]) => {
                let name = name.to_string();
                self.sync_bitbucket_webhook(p, &name, read_json(request).await?)
                    .await
            }
            (Method::DELETE, ["integrations", name, "bitbucket-webhooks", id]) => {
                self.delete_bitbucket_webhook(p, name, id).await
            }

            (Method::POST, ["integrations", name, "reconcile"]) => {
                let name = name.to_string();
                self.request_reconcile(p, &name, read_optional_json(request).await?)
                    .await
            }

            (Method::GET, ["integrations", name, "deliveries"]) => {
                self.list_deliveries(p, name, page(request.uri().query())?)
            }
            (Method::GET, ["deliveries", id]) => self.get_delivery(p, id),
            (Method::POST, ["deliveries", id, "redeliver"]) => self.redeliver(p, id).await,
            (Method::GET, ["stacks", id, "runs"]) => self.stack_runs(p, id),

            (Method::GET, ["stacks"]) => self.list_stacks(p),
            (Method::POST, ["stacks"]) => self.create_stack(p, read_json(request).await?).await,
            (Method::GET, ["stacks", id]) => self.get_stack(p, id),
            (Method::PATCH, ["stacks", id]) => {
                let id = id.to_string();
                self.update_stack(p, &id, read_json(request).await?).await
            }
            (Method::DELETE, ["stacks", id]) => self.delete_stack(p, id).await,
            (Method::POST, ["stacks", id, "runs"]) => {
                let id = id.to_string();
                self.trigger_run(p, &id, read_optional_json(request).await?)
                    .await
            }
            _ => Err(ApiError::MethodNotAllowed {
                allow: openapi::allowed_methods(&segments),
            }),
        }
    }

    /// Folds everything appended so far (shared with concurrent requests), or logs why not.
    async fn catch_up(&self) {
        if let Err(err) = self.control.sync_shared().await {
            tracing::warn!(error = %err, "serving the admin API without catching up");
        }
    }

    /// The bootstrap key, or an issued key `ik_<id>.<secret>` whose hash matches. Unknown, revoked
    /// and malformed keys are all the same 401.
    fn authenticate<B>(&self, request: &Request<B>) -> Result<Principal, ApiError> {
        let unauthorized = |message: &'static str| ApiError::Unauthorized(message);
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("send an API key as `Authorization: Bearer <key>`"))?;
        if bool::from(
            presented
                .as_bytes()
                .ct_eq(self.deps.admin_key.expose().as_bytes()),
        ) {
            return Ok(Principal::Bootstrap);
        }
        let invalid = || unauthorized("the API key is not valid");
        let (id, secret) = presented
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or_else(invalid)?;
        let registry = self.control.read();
        let key = registry.api_key(id).ok_or_else(invalid)?;
        let presented_hash = hex::encode(Sha256::digest(secret.as_bytes()));
        if bool::from(
            presented_hash
                .as_bytes()
                .ct_eq(key.secret_sha256.as_bytes()),
        ) {
            Ok(Principal::of_key(key))
        } else {
            Err(invalid())
        }
    }

    /// Appends `command` and maps the fold's verdict.
    async fn apply(&self, principal: &Principal, command: ControlCommand) -> Result<(), ApiError> {
        match self.control.append(principal.actor(), command).await {
            Ok((_, Ok(_))) => Ok(()),
            Ok((_, Err(rejection))) => Err(rejection.into()),
            Err(err @ ControlError::Unavailable(_)) => {
                tracing::warn!(error = %err, "control append failed");
                Err(ApiError::unavailable(
                    "control_log_unavailable",
                    "the change could not be recorded; retry shortly",
                    5,
                ))
            }
            Err(err) => Err(ApiError::unavailable(
                "control_log_unavailable",
                err.to_string(),
                5,
            )),
        }
    }
}

impl Service for Admin {
    async fn call(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        self.handle(request).await
    }
}

fn no_such_endpoint() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::Forbidden(message.into())
}

/// Where the space a permission check is about was named.
#[derive(Clone, Copy)]
enum Named {
    /// In the path: a space the caller cannot read is 404.
    InPath,
    /// In a body field: a space the caller cannot read is 404 `space_not_found` with a message
    /// that starts with the field, the same answer as for one that does not exist, so existence
    /// does not leak. (A 400 would call a well-formed request malformed: the id is valid, the
    /// space is just not there for this caller.)
    InField(&'static str),
}

/// Requires `role` on `space_id`; 403 when the caller can read the space but lacks the role.
/// The root space is known to exist, so lacking a role there is always 403.
fn require(
    principal: &Principal,
    registry: &Registry,
    space_id: &str,
    role: Role,
    action: &str,
    named: Named,
) -> Result<(), ApiError> {
    if principal.has(registry, space_id, role) {
        return Ok(());
    }
    let hidden = registry.space(space_id).is_none()
        || (space_id != ROOT_SPACE && !principal.can_read(registry, space_id));
    if hidden {
        return Err(match named {
            Named::InPath => {
                ApiError::not_found("space_not_found", format!("no space `{space_id}`"))
            }
            Named::InField(field) => {
                ApiError::not_found("space_not_found", format!("{field}: no space `{space_id}`"))
            }
        });
    }
    Err(forbidden(format!(
        "{action} needs the {} role on space `{space_id}`",
        role_name(role)
    )))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Reader => "reader",
        Role::Writer => "writer",
        Role::Admin => "admin",
    }
}

/// An id from a name: a slug plus a random suffix, e.g. `network-prod-3f9a1c`.
fn generate_id(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let suffix = Secret::generate(3);
    if slug.is_empty() {
        suffix.expose().to_owned()
    } else {
        format!("{slug}-{}", suffix.expose())
    }
}

/// `?offset=N&limit=M`.
fn page(query: Option<&str>) -> Result<views::Page, ApiError> {
    let mut page = views::Page::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // The document's range: 0 ..= u32::MAX, written in decimal digits only.
        let number = || {
            value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<u32>().ok())
                .flatten()
                .map(|n| n as usize)
                .ok_or_else(|| ApiError::invalid(key, "must be an integer from 0 to 4294967295"))
        };
        match key {
            "offset" => page.offset = Some(number()?),
            "limit" => page.limit = Some(number()?),
            _ => return Err(ApiError::invalid(key, "unknown query parameter")),
        }
    }
    Ok(page)
}

async fn read_body<B>(request: Request<B>) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Ok(Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::TooLarge(MAX_ADMIN_BODY))?
        .to_bytes())
}

/// Every request body is a JSON object. serde would also read a struct from an array of its
/// fields in order (`[null, null]` as `{"name": null, "inherit_entities": null}`), which the
/// document does not allow, so anything that does not start with `{` is refused first.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidBody(
            "the request body must be a JSON object".to_owned(),
        ));
    }
    serde_json::from_slice(body).map_err(|err| ApiError::InvalidBody(err.to_string()))
}

async fn read_json<B, T>(request: Request<B>) -> Result<T, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: DeserializeOwned,
{
    parse_json(&read_body(request).await?)
}

/// Like [`read_json`], but an empty body means the defaults.
async fn read_optional_json<B, T>(request: Request<B>) -> Result<T, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: DeserializeOwned + Default,
{
    let body = read_body(request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated ids are valid ids derived from the name.
    #[test]
    fn generated_ids() {
        let id = generate_id("Network (prod)");
        assert!(id.starts_with("network-prod-"), "{id}");
        assert_eq!(id.len(), "network-prod-".len() + 6);
        assert_eq!(generate_id("???").len(), 6);
    }
}
