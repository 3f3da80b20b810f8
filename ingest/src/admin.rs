//! The admin API (`/api/v1`): reads come from this process's registry; writes append a command to
//! `inlet.control` and answer once this process's fold applied it, with the fold's verdict.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use inlet_core::clock::now_rfc3339;
use inlet_core::control::{ControlCommand, StackPatch, StackSpec};
use inlet_core::control_log::{ControlError, ControlLog};
use inlet_core::domain::{Integration, IntegrationStatus, PROVIDER, ROOT_SPACE, Space, Stack};
use inlet_core::secret::Secret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, empty, json};
use crate::listener::Service;
use crate::webhook::PATH_PREFIX;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Who is calling.
#[derive(Debug, Clone)]
enum Principal {
    /// The bootstrap root-admin key from configuration.
    Bootstrap,
}

impl Principal {
    fn actor(&self) -> &str {
        match self {
            Principal::Bootstrap => "bootstrap",
        }
    }
}

/// The admin listener's service.
pub struct Admin {
    control: ControlLog,
    admin_key: Secret,
    public_base_url: String,
}

impl Admin {
    /// The admin API over `control`, accepting `admin_key`, showing webhook URLs under
    /// `public_base_url`.
    pub fn new(control: ControlLog, admin_key: Secret, public_base_url: String) -> Self {
        Admin {
            control,
            admin_key,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Answers one request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        if path == "/healthz" {
            return json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
        }
        let method = request.method().clone();
        match self.route(request).await {
            Ok(response) => response,
            Err(err) => {
                if err.status.is_server_error() {
                    tracing::warn!(%method, %path, code = err.code, reason = %err.message, "admin request failed");
                } else {
                    tracing::debug!(%method, %path, code = err.code, "admin request refused");
                }
                err.into_response()
            }
        }
    }

    async fn route<B>(&self, request: Request<B>) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return Err(ApiError::not_found("not_found", "no such endpoint"));
        };
        let principal = self.authenticate(&request)?;
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let method = request.method().clone();
        match (method, segments.as_slice()) {
            (Method::GET, ["spaces"]) => Ok(self.list_spaces()),
            (Method::POST, ["spaces"]) => {
                let body = read_json(request).await?;
                self.create_space(&principal, body).await
            }
            (Method::GET, ["spaces", id]) => self.get_space(id),
            (Method::GET, ["integrations"]) => Ok(self.list_integrations()),
            (Method::POST, ["integrations"]) => {
                let body = read_json(request).await?;
                self.create_integration(&principal, body).await
            }
            (Method::GET, ["integrations", name]) => self.get_integration(name),
            (Method::GET, ["integrations", name, "details"]) => self.integration_details(name),
            (Method::DELETE, ["integrations", name]) => {
                self.delete_integration(&principal, name).await
            }
            (Method::GET, ["stacks"]) => Ok(self.list_stacks()),
            (Method::POST, ["stacks"]) => {
                let body = read_json(request).await?;
                self.create_stack(&principal, body).await
            }
            (Method::GET, ["stacks", id]) => self.get_stack(id),
            (Method::PATCH, ["stacks", id]) => {
                let id = id.to_string();
                let body = read_json(request).await?;
                self.update_stack(&principal, &id, body).await
            }
            (Method::DELETE, ["stacks", id]) => self.delete_stack(&principal, id).await,
            (
                _,
                ["spaces"]
                | ["spaces", _]
                | ["integrations"]
                | ["integrations", _]
                | ["integrations", _, "details"]
                | ["stacks"]
                | ["stacks", _],
            ) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this resource",
            )),
            _ => Err(ApiError::not_found("not_found", "no such endpoint")),
        }
    }

    fn authenticate<B>(&self, request: &Request<B>) -> Result<Principal, ApiError> {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send an API key as `Authorization: Bearer <key>`",
                )
            })?;
        if bool::from(
            presented
                .as_bytes()
                .ct_eq(self.admin_key.expose().as_bytes()),
        ) {
            return Ok(Principal::Bootstrap);
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is not valid",
        ))
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

    // ----- spaces -----

    fn list_spaces(&self) -> Response<Full<Bytes>> {
        let spaces: Vec<Space> = self.control.read().spaces().cloned().collect();
        json(StatusCode::OK, &serde_json::json!({ "spaces": spaces }))
    }

    fn get_space(&self, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let registry = self.control.read();
        let space = registry
            .space(id)
            .ok_or_else(|| ApiError::not_found("space_not_found", format!("no space `{id}`")))?;
        Ok(json(StatusCode::OK, space))
    }

    async fn create_space(
        &self,
        principal: &Principal,
        body: CreateSpace,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let space = Space {
            id: body.id.unwrap_or_else(|| generate_id(&body.name)),
            name: body.name,
            parent_id: Some(body.parent_id.unwrap_or_else(|| ROOT_SPACE.to_owned())),
            inherit_entities: body.inherit_entities.unwrap_or(false),
        };
        self.apply(
            principal,
            ControlCommand::CreateSpace {
                space: space.clone(),
            },
        )
        .await?;
        Ok(json(StatusCode::CREATED, &space))
    }

    // ----- integrations -----

    fn list_integrations(&self) -> Response<Full<Bytes>> {
        let registry = self.control.read();
        let integrations: Vec<IntegrationView> =
            registry.integrations().map(IntegrationView::from).collect();
        json(
            StatusCode::OK,
            &serde_json::json!({ "integrations": integrations }),
        )
    }

    fn get_integration(&self, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let registry = self.control.read();
        let integration = registry
            .integration(name)
            .ok_or_else(|| integration_not_found(name))?;
        Ok(json(StatusCode::OK, &IntegrationView::from(integration)))
    }

    fn integration_details(&self, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let registry = self.control.read();
        let integration = registry
            .integration(name)
            .ok_or_else(|| integration_not_found(name))?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "name": integration.name,
                "webhook_url": self.webhook_url(&integration.name),
                "webhook_secret": integration.webhook_secret.expose(),
            }),
        ))
    }

    fn webhook_url(&self, name: &str) -> String {
        format!("{}{PATH_PREFIX}{name}", self.public_base_url)
    }

    async fn create_integration(
        &self,
        principal: &Principal,
        body: CreateIntegration,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let is_default = body.is_default.unwrap_or(false);
        let space_id = match (is_default, body.space_id) {
            (true, Some(space)) if space != ROOT_SPACE => {
                return Err(ApiError::invalid(
                    "space_id",
                    "the default integration belongs to the root space; omit space_id",
                ));
            }
            (_, Some(space)) => space,
            (_, None) => ROOT_SPACE.to_owned(),
        };
        let integration = Integration {
            user_facing_host_url: body
                .user_facing_host_url
                .unwrap_or_else(|| body.api_host_url.clone()),
            name: body.name,
            id: Secret::generate(8).expose().to_owned(),
            is_default,
            space_id,
            api_host_url: body.api_host_url,
            username: body.username.unwrap_or_default(),
            access_token: Secret::new(body.access_token.unwrap_or_default()),
            labels: body.labels.unwrap_or_default(),
            description: body.description.unwrap_or_default(),
            webhook_secret: Secret::generate(32),
            created_at: now_rfc3339(),
        };
        let response = json(StatusCode::CREATED, &IntegrationView::from(&integration));
        self.apply(principal, ControlCommand::CreateIntegration { integration })
            .await?;
        Ok(response)
    }

    async fn delete_integration(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        self.apply(
            principal,
            ControlCommand::DeleteIntegration {
                name: name.to_owned(),
            },
        )
        .await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    // ----- stacks -----

    fn list_stacks(&self) -> Response<Full<Bytes>> {
        let registry = self.control.read();
        let stacks: Vec<StackView> = registry.stacks().map(StackView::from).collect();
        json(StatusCode::OK, &serde_json::json!({ "stacks": stacks }))
    }

    fn get_stack(&self, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let registry = self.control.read();
        let stack = registry.stack(id).ok_or_else(|| stack_not_found(id))?;
        Ok(json(StatusCode::OK, &StackView::from(stack)))
    }

    async fn create_stack(
        &self,
        principal: &Principal,
        body: CreateStack,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let integration = match body.integration {
            Some(name) => name,
            None => self
                .control
                .read()
                .default_integration()
                .map(|i| i.name.clone())
                .ok_or_else(|| {
                    ApiError::invalid("integration", "no default integration exists; name one")
                })?,
        };
        let spec = StackSpec {
            id: body.id.unwrap_or_else(|| generate_id(&body.name)),
            name: body.name,
            space_id: body.space_id.unwrap_or_else(|| ROOT_SPACE.to_owned()),
            integration,
            repository: body.repository,
            branch: short_branch(body.branch),
            project_root: body.project_root.unwrap_or_default(),
            labels: body.labels.unwrap_or_default(),
            disabled: body.disabled.unwrap_or(false),
        };
        let id = spec.id.clone();
        self.apply(principal, ControlCommand::CreateStack { stack: spec })
            .await?;
        self.get_stack(&id).map(|mut response| {
            *response.status_mut() = StatusCode::CREATED;
            response
        })
    }

    async fn update_stack(
        &self,
        principal: &Principal,
        id: &str,
        mut patch: StackPatch,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        patch.branch = patch.branch.map(short_branch);
        self.apply(
            principal,
            ControlCommand::UpdateStack {
                id: id.to_owned(),
                patch,
            },
        )
        .await?;
        self.get_stack(id)
    }

    async fn delete_stack(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        self.apply(principal, ControlCommand::DeleteStack { id: id.to_owned() })
            .await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }
}

impl Service for Admin {
    async fn call(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        self.handle(request).await
    }
}

fn integration_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "integration_not_found",
        format!("no integration named `{name}`"),
    )
}

fn stack_not_found(id: &str) -> ApiError {
    ApiError::not_found("stack_not_found", format!("no stack with id `{id}`"))
}

/// `refs/heads/main` → `main`; short names pass through.
fn short_branch(branch: String) -> String {
    match branch.strip_prefix("refs/heads/") {
        Some(short) => short.to_owned(),
        None => branch,
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

async fn read_json<B, T>(request: Request<B>) -> Result<T, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: DeserializeOwned,
{
    let body = Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("admin requests are limited to {MAX_ADMIN_BODY} bytes"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the request body is not valid: {err}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSpace {
    id: Option<String>,
    name: String,
    parent_id: Option<String>,
    inherit_entities: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIntegration {
    name: String,
    is_default: Option<bool>,
    space_id: Option<String>,
    api_host_url: String,
    user_facing_host_url: Option<String>,
    username: Option<String>,
    access_token: Option<String>,
    labels: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateStack {
    id: Option<String>,
    name: String,
    space_id: Option<String>,
    integration: Option<String>,
    repository: String,
    branch: String,
    project_root: Option<String>,
    labels: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// An integration as the API shows it: never a secret.
#[derive(Serialize)]
struct IntegrationView<'a> {
    name: &'a str,
    provider: &'static str,
    is_default: bool,
    space_id: &'a str,
    api_host_url: &'a str,
    user_facing_host_url: &'a str,
    username: &'a str,
    labels: &'a [String],
    description: &'a str,
    created_at: &'a str,
}

impl<'a> From<&'a Integration> for IntegrationView<'a> {
    fn from(i: &'a Integration) -> Self {
        IntegrationView {
            name: &i.name,
            provider: PROVIDER,
            is_default: i.is_default,
            space_id: &i.space_id,
            api_host_url: &i.api_host_url,
            user_facing_host_url: &i.user_facing_host_url,
            username: &i.username,
            labels: &i.labels,
            description: &i.description,
            created_at: &i.created_at,
        }
    }
}

#[derive(Serialize)]
struct StackView<'a> {
    id: &'a str,
    name: &'a str,
    space_id: &'a str,
    integration: &'a str,
    integration_status: IntegrationStatus,
    repository: &'a str,
    branch: &'a str,
    project_root: &'a str,
    labels: &'a [String],
    disabled: bool,
}

impl<'a> From<&'a Stack> for StackView<'a> {
    fn from(s: &'a Stack) -> Self {
        StackView {
            id: &s.id,
            name: &s.name,
            space_id: &s.space_id,
            integration: &s.integration,
            integration_status: s.integration_status,
            repository: &s.repository,
            branch: &s.branch,
            project_root: &s.project_root,
            labels: &s.labels,
            disabled: s.disabled,
        }
    }
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

    /// Full ref names are shortened to branch names.
    #[test]
    fn branches_are_short() {
        assert_eq!(short_branch("refs/heads/main".to_owned()), "main");
        assert_eq!(short_branch("dev".to_owned()), "dev");
    }
}
