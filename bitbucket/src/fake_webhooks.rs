//! The fake's webhook endpoints (a child module of `fake`, so it shares its state), in the shapes
//! of the 9.2 OpenAPI document (`RestWebhook`, plus the `id` real servers send):
//!
//! - `GET /rest/api/latest/projects/{key}[/repos/{slug}]/webhooks` → a page of the scope's
//!   webhooks (`start`, `limit`, capped by [`FakeBitbucket::set_page_size`]);
//! - `POST` of the same path: `RestWebhook` → 200 with the created one (new id); 400 without
//!   `name` or `url`, or with an event key the fake was told to refuse;
//! - `GET`, `PUT` (the same validation) and `DELETE` (204) of `…/webhooks/{id}`; an id of
//!   another scope is a 404, as on Bitbucket.
//!
//! The fake keeps each webhook's secret (`configuration.secret`) for tests to read, and never
//! answers with it. [`FakeBitbucket::refuse_webhook_event`] makes it a server older than an event
//! key; [`FakeBitbucket::fail_webhooks`] makes every webhook request answer one status.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::{FakeBitbucket, RecordedRequest, State, errors, lock, ok};

/// A webhook the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeWebhook {
    /// Its id.
    pub id: u64,
    /// The project key of its scope.
    pub project_key: String,
    /// The repository slug of a repository-level webhook.
    pub repository_slug: Option<String>,
    /// Its name.
    pub name: String,
    /// Where it posts.
    pub url: String,
    /// Its event keys, in the order sent.
    pub events: Vec<String>,
    /// Whether it is active.
    pub active: bool,
    /// `configuration.secret`, as last written.
    pub secret: Option<String>,
    /// How many times it was updated (a `PUT` that changed nothing counts too).
    pub updates: u32,
}

/// A write (`POST`, `PUT`, `DELETE`) the fake answered 2xx, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookWrite {
    /// `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// The webhook written.
    pub id: u64,
    /// Whether it changed anything the webhook's settings page shows (or its secret).
    pub changed: bool,
}

/// What the fake keeps of webhooks.
#[derive(Debug, Default)]
pub(super) struct Webhooks {
    next_id: u64,
    hooks: BTreeMap<u64, FakeWebhook>,
    writes: Vec<WebhookWrite>,
    refused_events: BTreeSet<String>,
    failure: Option<u16>,
}

impl FakeBitbucket {
    /// Every webhook the fake holds, by id.
    pub fn webhooks(&self) -> Vec<FakeWebhook> {
        lock(&self.state).webhooks.hooks.values().cloned().collect()
    }

    /// Every webhook write answered 2xx so far, oldest first.
    pub fn webhook_writes(&self) -> Vec<WebhookWrite> {
        lock(&self.state).webhooks.writes.clone()
    }

    /// Creates a webhook as a person would in Bitbucket's settings page; returns its id.
    pub fn add_webhook(
        &self,
        project_key: &str,
        repository_slug: Option<&str>,
        url: &str,
        events: &[&str],
    ) -> u64 {
        let mut state = lock(&self.state);
        let hooks = &mut state.webhooks;
        hooks.next_id += 1;
        let id = hooks.next_id;
        hooks.hooks.insert(
            id,
            FakeWebhook {
                id,
                project_key: project_key.to_owned(),
                repository_slug: repository_slug.map(str::to_owned),
                name: "added by hand".to_owned(),
                url: url.to_owned(),
                events: events.iter().map(|e| (*e).to_owned()).collect(),
                active: true,
                secret: None,
                updates: 0,
            },
        );
        id
    }

    /// Creating or updating a webhook with `event` answers 400 naming it, as a server that
    /// predates the event key does.
    pub fn refuse_webhook_event(&self, event: &str) {
        lock(&self.state)
            .webhooks
            .refused_events
            .insert(event.to_owned());
    }

    /// Every webhook request answers `status` (e.g. 403 for a token without admin rights, 500)
    /// with an errors body; `None` serves them again.
    pub fn fail_webhooks(&self, status: Option<u16>) {
        lock(&self.state).webhooks.failure = status;
    }
}

/// A webhook endpoint: its scope, and the id for `…/webhooks/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WebhookRoute {
    project_key: String,
    repository_slug: Option<String>,
    id: Option<String>,
}

fn parse(path: &str) -> Option<WebhookRoute> {
    let segments = super::decoded_segments(path)?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let ["rest", "api", "latest", "projects", key, rest @ ..] = &segments[..] else {
        return None;
    };
    let (repository_slug, tail) = match rest {
        ["repos", slug, tail @ ..] => (Some((*slug).to_owned()), tail),
        tail => (None, tail),
    };
    let id = match tail {
        ["webhooks"] => None,
        ["webhooks", id] => Some((*id).to_owned()),
        _ => return None,
    };
    Some(WebhookRoute {
        project_key: (*key).to_owned(),
        repository_slug,
        id,
    })
}

/// The answer when `request` names a webhook endpoint; `None` otherwise.
pub(super) fn answer(
    state: &mut State,
    method: &Method,
    request: &RecordedRequest,
) -> Option<Response<Full<Bytes>>> {
    let route = parse(&request.path)?;
    let page_size = state.page_size;
    let webhooks = &mut state.webhooks;
    if let Some(status) = webhooks.failure {
        return Some(failure(status));
    }
    Some(match (method, route.id.as_deref()) {
        (&Method::GET, None) => webhooks.list(&route, request, page_size),
        (&Method::POST, None) => webhooks.create(&route, &request.json()),
        (method, Some(id)) => match webhooks.find(&route, id) {
            None => errors(
                StatusCode::NOT_FOUND,
                &format!("No webhook with id {id} exists."),
                Some("com.atlassian.webhooks.NoSuchWebhookException"),
            ),
            Some(id) if method == Method::GET => ok(webhooks.hooks[&id].json()),
            Some(id) if method == Method::PUT => webhooks.update(id, &request.json()),
            Some(id) if method == Method::DELETE => webhooks.delete(id),
            Some(_) => not_supported(method),
        },
        (method, None) => not_supported(method),
    })
}

impl Webhooks {
    fn in_scope<'a>(&'a self, route: &'a WebhookRoute) -> impl Iterator<Item = &'a FakeWebhook> {
        self.hooks.values().filter(move |hook| {
            hook.project_key.eq_ignore_ascii_case(&route.project_key)
                && match (&hook.repository_slug, &route.repository_slug) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    (None, None) => true,
                    _ => false,
                }
        })
    }

    /// The id of the scope's webhook named in the path, if there is one.
    fn find(&self, route: &WebhookRoute, id: &str) -> Option<u64> {
        id.parse::<u64>()
            .ok()
            .filter(|id| self.in_scope(route).any(|hook| hook.id == *id))
    }

    fn list(
        &self,
        route: &WebhookRoute,
        request: &RecordedRequest,
        page_size: Option<usize>,
    ) -> Response<Full<Bytes>> {
        let number = |name| request.query_param(name).and_then(|v| v.parse().ok());
        let start: usize = number("start").unwrap_or(0);
        let asked: usize = number("limit").unwrap_or(25).max(1);
        let limit = page_size.map_or(asked, |cap| asked.min(cap));
        let all: Vec<&FakeWebhook> = self.in_scope(route).collect();
        let values: Vec<Value> = all
            .iter()
            .skip(start)
            .take(limit)
            .map(|hook| hook.json())
            .collect();
        let is_last_page = start.saturating_add(values.len()) >= all.len();
        ok(super::paged(values, start, limit, is_last_page))
    }

    fn create(&mut self, route: &WebhookRoute, body: &Value) -> Response<Full<Bytes>> {
        if let Some(refusal) = self.validate(body, true) {
            return refusal;
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut hook = FakeWebhook {
            id,
            project_key: route.project_key.clone(),
            repository_slug: route.repository_slug.clone(),
            name: String::new(),
            url: String::new(),
            events: Vec::new(),
            active: true,
            secret: None,
            updates: 0,
        };
        hook.apply(body);
        let answer = hook.json();
        self.hooks.insert(id, hook);
        self.written("POST", id, true);
        ok(answer)
    }

    fn update(&mut self, id: u64, body: &Value) -> Response<Full<Bytes>> {
        if let Some(refusal) = self.validate(body, false) {
            return refusal;
        }
        let Some(hook) = self.hooks.get_mut(&id) else {
            return errors(StatusCode::NOT_FOUND, "No such webhook.", None);
        };
        let before = hook.clone();
        hook.apply(body);
        hook.updates += 1;
        let changed = FakeWebhook {
            updates: before.updates,
            ..hook.clone()
        } != before;
        let answer = hook.json();
        self.written("PUT", id, changed);
        ok(answer)
    }

    fn delete(&mut self, id: u64) -> Response<Full<Bytes>> {
        self.hooks.remove(&id);
        self.written("DELETE", id, true);
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }

    fn written(&mut self, method: &str, id: u64, changed: bool) {
        self.writes.push(WebhookWrite {
            method: method.to_owned(),
            id,
            changed,
        });
    }

    /// Bitbucket's 400 for a body it does not take: no name or URL on create, or an event key
    /// this (pretend) version does not know.
    fn validate(&self, body: &Value, create: bool) -> Option<Response<Full<Bytes>>> {
        let invalid = |message: &str| {
            Some(errors(
                StatusCode::BAD_REQUEST,
                message,
                Some("com.atlassian.bitbucket.validation.ArgumentValidationException"),
            ))
        };
        if !body.is_object() {
            return invalid("The request body is not a webhook.");
        }
        for field in ["name", "url"] {
            let text = body[field].as_str();
            if (create && text.is_none()) || text.is_some_and(|t| t.trim().is_empty()) {
                return invalid(&format!("The webhook's {field} is required."));
            }
        }
        let events = body["events"].as_array().into_iter().flatten();
        for event in events.filter_map(Value::as_str) {
            if self.refused_events.contains(event) {
                return invalid(&format!("'{event}' is not a valid webhook event."));
            }
        }
        None
    }
}

impl FakeWebhook {
    /// The fields of a `RestWebhook` body that are present.
    fn apply(&mut self, body: &Value) {
        if let Some(name) = body["name"].as_str() {
            self.name = name.to_owned();
        }
        if let Some(url) = body["url"].as_str() {
            self.url = url.to_owned();
        }
        if let Some(events) = body["events"].as_array() {
            self.events = events
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        if let Some(active) = body["active"].as_bool() {
            self.active = active;
        }
        if let Some(secret) = body["configuration"]["secret"].as_str() {
            self.secret = Some(secret.to_owned());
        }
    }

    /// As Bitbucket answers: the scope and settings, never the secret.
    fn json(&self) -> Value {
        let scope = match &self.repository_slug {
            Some(slug) => {
                json!({"type": "REPOSITORY", "id": format!("{}/{slug}", self.project_key)})
            }
            None => json!({"type": "PROJECT", "id": self.project_key}),
        };
        json!({
            "id": self.id,
            "name": self.name,
            "createdDate": 1_700_000_000_000u64,
            "updatedDate": 1_700_000_000_000u64 + u64::from(self.updates),
            "events": self.events,
            "configuration": {},
            "url": self.url,
            "active": self.active,
            "scopeType": scope["type"].as_str().map(str::to_lowercase),
            "scope": scope,
            "sslVerificationRequired": true,
        })
    }
}

fn failure(status: u16) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::FORBIDDEN {
        return errors(
            status,
            "You are not permitted to access this resource",
            Some("com.atlassian.bitbucket.AuthorisationException"),
        );
    }
    errors(
        status,
        &format!("Injected failure: the fake Bitbucket answers {status}."),
        Some("com.atlassian.bitbucket.ServiceException"),
    )
}

fn not_supported(method: &Method) -> Response<Full<Bytes>> {
    errors(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not supported here."),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Project- and repository-level paths, with and without an id; others are not webhooks.
    #[test]
    fn routes() {
        assert_eq!(
            parse("/rest/api/latest/projects/INFRA/webhooks"),
            Some(WebhookRoute {
                project_key: "INFRA".to_owned(),
                repository_slug: None,
                id: None
            })
        );
        assert_eq!(
            parse("/rest/api/latest/projects/INFRA/repos/net%2Dwork/webhooks/7"),
            Some(WebhookRoute {
                project_key: "INFRA".to_owned(),
                repository_slug: Some("net-work".to_owned()),
                id: Some("7".to_owned())
            })
        );
        for path in [
            "/rest/api/latest/projects/INFRA",
            "/rest/api/latest/projects/INFRA/repos/network/compare/changes",
            "/rest/api/latest/projects/INFRA/webhooks/7/statistics",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
