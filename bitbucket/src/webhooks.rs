//! The webhooks of a Bitbucket project or repository: listing, creating, updating and deleting
//! them, and [`Client::sync_webhook`], which makes exactly one webhook with inlet's URL exist
//! there with the configuration asked for (DESIGN §4.2, "Webhooks in Bitbucket").
//!
//! What enters: a [`Server`], a [`WebhookScope`] (a project, or one repository in it) and a
//! [`WebhookSpec`] — name, URL, secret, events. What leaves: [`Webhook`]s as Bitbucket answered
//! them (never their secret), a [`Synced`] that says whether the webhook was created or updated
//! and which events the server refused; or a [`CallError`] carrying Bitbucket's message.
//!
//! The guarantee: every call has the bounds of [`Client`] (deadline, retries, per-host limit)
//! and its own `endpoint` label. Listing follows `nextPageStart` within 20 pages of 100 and says nothing it did not read: a list cut short is an error, since a sync that missed
//! inlet's webhook would create a second one. An update sets the same fields each time, so its
//! retries are harmless; a create retried after a lost answer can leave a second webhook with
//! the same URL, which the next sync does not add to (it updates the lowest id). A server older
//! than an event key (`400` naming it, as Bitbucket before 7.0 answers for
//! `pr:from_ref_updated`) gets the webhook without that key, and [`Synced::refused_events`] says
//! so. The secret travels only in the request body, never in a log line or an error.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::client::{CallError, Client, RepositoryRef, Server, decode, repository_path, segment};
use inlet_core::metrics::BitbucketEndpoint;
use inlet_core::secret::Secret;

/// Webhooks asked for per page, and pages read at most: a scope with more than 2,000 webhooks
/// is not one inlet should add to.
const PAGE_LIMIT: u32 = 100;
const MAX_PAGES: u32 = 20;

/// Where a webhook lives: a project (it then fires for every repository in it) or one repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WebhookScope {
    /// Project-level: `/projects/{key}/webhooks`.
    Project {
        /// The project key, e.g. `INFRA`.
        project_key: String,
    },
    /// Repository-level: `/projects/{key}/repos/{slug}/webhooks`.
    Repository(RepositoryRef),
}

impl WebhookScope {
    /// The project-level scope, or the repository-level one when `repository_slug` is given.
    pub fn new(project_key: &str, repository_slug: Option<&str>) -> WebhookScope {
        match repository_slug {
            Some(slug) => WebhookScope::Repository(RepositoryRef::new(project_key, slug)),
            None => WebhookScope::Project {
                project_key: project_key.to_owned(),
            },
        }
    }

    /// The project key.
    pub fn project_key(&self) -> &str {
        match self {
            WebhookScope::Project { project_key } => project_key,
            WebhookScope::Repository(repository) => &repository.project_key,
        }
    }

    /// The repository slug of a repository-level scope.
    pub fn repository_slug(&self) -> Option<&str> {
        match self {
            WebhookScope::Project { .. } => None,
            WebhookScope::Repository(repository) => Some(&repository.slug),
        }
    }

    /// `/projects/{key}[/repos/{slug}]/webhooks[/{id}]`, segments percent-encoded.
    fn path(&self, id: Option<u64>) -> String {
        let id = id.map(|id| id.to_string());
        let tail: Vec<&str> = std::iter::once("webhooks").chain(id.as_deref()).collect();
        match self {
            WebhookScope::Project { project_key } => {
                let mut path = format!("/projects/{}", segment(project_key));
                for part in tail {
                    path.push('/');
                    path.push_str(&segment(part));
                }
                path
            }
            WebhookScope::Repository(repository) => repository_path(repository, &tail),
        }
    }

    fn span(&self, endpoint: BitbucketEndpoint) -> tracing::Span {
        tracing::info_span!(
            "bitbucket",
            endpoint = endpoint.as_str(),
            project = self.project_key(),
            repository = self.repository_slug().unwrap_or_default(),
        )
    }
}

/// A webhook as Bitbucket reports it (`RestWebhook` with the `id` real servers send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Bitbucket's id of the webhook.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Where Bitbucket posts events.
    pub url: String,
    /// The event keys it fires on.
    pub events: Vec<String>,
    /// Whether Bitbucket sends anything.
    pub active: bool,
}

/// The webhook inlet wants in a scope.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    /// Its name in Bitbucket's settings page.
    pub name: String,
    /// inlet's webhook URL for the integration: what identifies inlet's webhook in a scope.
    pub url: String,
    /// The secret Bitbucket signs each delivery with (`X-Hub-Signature`).
    pub secret: Secret,
    /// The event keys to fire on.
    pub events: Vec<String>,
}

impl WebhookSpec {
    /// The `RestWebhook` body with `events` (the secret in `configuration.secret`).
    fn body(&self, events: &[String]) -> Value {
        json!({
            "name": self.name,
            "url": self.url,
            "events": events,
            "active": true,
            "sslVerificationRequired": true,
            "configuration": {"secret": self.secret.expose()},
        })
    }
}

/// What [`Client::sync_webhook`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The webhook as Bitbucket answered the write.
    pub webhook: Webhook,
    /// It did not exist (no webhook of the scope had inlet's URL) and was created.
    pub created: bool,
    /// Event keys of the spec the server refused (an older Bitbucket), left out of the webhook.
    pub refused_events: Vec<String>,
}

/// A page of webhooks (`start`, `size` and `limit` are not needed).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookPage {
    #[serde(default)]
    values: Vec<RestWebhook>,
    #[serde(default)]
    is_last_page: bool,
    next_page_start: Option<u64>,
}

/// `RestWebhook`: what inlet reads of it.
#[derive(Debug, Deserialize)]
struct RestWebhook {
    id: Option<u64>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: Vec<String>,
    /// Bitbucket's default for a webhook created without the field.
    #[serde(default = "active_default")]
    active: bool,
}

fn active_default() -> bool {
    true
}

impl TryFrom<RestWebhook> for Webhook {
    type Error = CallError;

    fn try_from(rest: RestWebhook) -> Result<Webhook, CallError> {
        let Some(id) = rest.id else {
            return Err(CallError::InvalidResponse {
                reason: "a webhook has no id".to_owned(),
            });
        };
        Ok(Webhook {
            id,
            name: rest.name,
            url: rest.url,
            events: rest.events,
            active: rest.active,
        })
    }
}

/// The write a sync makes.
#[derive(Debug, Clone, Copy)]
enum Write {
    Create,
    Update(u64),
}

impl Client {
    /// Every webhook of `scope`, following pages (`GET …/webhooks`). Bitbucket needs the
    /// token's user to be an admin of the project (or the repository).
    pub async fn list_webhooks(
        &self,
        server: &Server,
        scope: &WebhookScope,
    ) -> Result<Vec<Webhook>, CallError> {
        let endpoint = BitbucketEndpoint::WebhooksList;
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let path = scope.path(None);
            let mut webhooks = Vec::new();
            let mut start = 0;
            for _ in 0..MAX_PAGES {
                let query = [
                    ("start", start.to_string()),
                    ("limit", PAGE_LIMIT.to_string()),
                ];
                let page: WebhookPage = call.get_json(&path, &query).await?;
                for rest in page.values {
                    webhooks.push(Webhook::try_from(rest)?);
                }
                match page.next_page_start {
                    _ if page.is_last_page => return Ok(webhooks),
                    Some(next) if next > start => start = next,
                    _ => {
                        return Err(CallError::InvalidResponse {
                            reason: "the webhook list's nextPageStart is missing or does not \
                                     advance"
                                .to_owned(),
                        });
                    }
                }
            }
            Err(CallError::InvalidResponse {
                reason: format!("the webhook list goes on past {MAX_PAGES} pages"),
            })
        })
        .instrument(scope.span(endpoint))
        .await
    }

    /// Creates a webhook in `scope` with `spec` and all its events (`POST …/webhooks`).
    pub async fn create_webhook(
        &self,
        server: &Server,
        scope: &WebhookScope,
        spec: &WebhookSpec,
    ) -> Result<Webhook, CallError> {
        self.write_webhook(server, scope, Write::Create, spec, &spec.events)
            .await
    }

    /// Replaces the configuration of webhook `id` of `scope` with `spec` (`PUT
    /// …/webhooks/{id}`): URL, events, secret, and active again.
    pub async fn update_webhook(
        &self,
        server: &Server,
        scope: &WebhookScope,
        id: u64,
        spec: &WebhookSpec,
    ) -> Result<Webhook, CallError> {
        self.write_webhook(server, scope, Write::Update(id), spec, &spec.events)
            .await
    }

    /// Deletes webhook `id` of `scope` (`DELETE …/webhooks/{id}`): `true` if it was deleted,
    /// `false` if Bitbucket had no such webhook (already gone counts as done).
    pub async fn delete_webhook(
        &self,
        server: &Server,
        scope: &WebhookScope,
        id: u64,
    ) -> Result<bool, CallError> {
        let endpoint = BitbucketEndpoint::WebhookDelete;
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let deleted = call
                .request_if_present(Method::DELETE, &scope.path(Some(id)), &[], None)
                .await?;
            Ok(deleted.is_some())
        })
        .instrument(scope.span(endpoint))
        .await
    }

    /// Makes inlet's webhook of `scope` match `spec`: the webhook whose URL is `spec.url` (the
    /// lowest id if several) is updated, else one is created. Running it again changes nothing
    /// Bitbucket shows: it reads the list and writes the same configuration to the same id.
    /// Event keys the server refuses are left out, one at a time, and reported.
    pub async fn sync_webhook(
        &self,
        server: &Server,
        scope: &WebhookScope,
        spec: &WebhookSpec,
    ) -> Result<Synced, CallError> {
        let existing = self
            .list_webhooks(server, scope)
            .await?
            .into_iter()
            .filter(|webhook| same_url(&webhook.url, &spec.url))
            .map(|webhook| webhook.id)
            .min();
        let write = existing.map_or(Write::Create, Write::Update);
        let mut events = spec.events.clone();
        let mut refused_events = Vec::new();
        loop {
            match self
                .write_webhook(server, scope, write, spec, &events)
                .await
            {
                Ok(webhook) => {
                    return Ok(Synced {
                        webhook,
                        created: existing.is_none(),
                        refused_events,
                    });
                }
                Err(err) => {
                    let Some(refused) = refused_event(&err, &events) else {
                        return Err(err);
                    };
                    tracing::warn!(
                        event = %refused,
                        "Bitbucket refused an event key (an older server): creating the webhook without it"
                    );
                    events.retain(|event| *event != refused);
                    refused_events.push(refused);
                    if events.is_empty() {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// One create or update with `events`.
    async fn write_webhook(
        &self,
        server: &Server,
        scope: &WebhookScope,
        write: Write,
        spec: &WebhookSpec,
        events: &[String],
    ) -> Result<Webhook, CallError> {
        let (endpoint, method, id) = match write {
            Write::Create => (BitbucketEndpoint::WebhookCreate, Method::POST, None),
            Write::Update(id) => (BitbucketEndpoint::WebhookUpdate, Method::PUT, Some(id)),
        };
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            if id.is_none() {
                // A create retried after a 5xx or a lost answer could make a second webhook; the
                // next sync finds the first by its URL instead.
                call.without_failure_retries();
            }
            let body = spec.body(events);
            let answer = call
                .request(method, &scope.path(id), &[], Some(&body))
                .await?;
            let rest: RestWebhook = decode(&answer)?;
            Webhook::try_from(rest)
        })
        .instrument(scope.span(endpoint))
        .await
    }
}

/// URLs compared as Bitbucket users write them: a trailing `/` and the case of the scheme and
/// host do not make another webhook.
fn same_url(a: &str, b: &str) -> bool {
    let normal = |url: &str| {
        let url = url.trim().trim_end_matches('/');
        match url.find("://").map(|at| at + 3) {
            Some(scheme_end) => {
                let host_end = url[scheme_end..]
                    .find('/')
                    .map_or(url.len(), |at| scheme_end + at);
                format!(
                    "{}{}",
                    url[..host_end].to_ascii_lowercase(),
                    &url[host_end..]
                )
            }
            None => url.to_owned(),
        }
    };
    normal(a) == normal(b)
}

/// The event key of `events` that a `400` names, if it names one: how a server older than an
/// event refuses it. A key counts only as a whole word (`pr:reviewer:approved` is not in
/// `pr:reviewer:unapproved`).
fn refused_event(err: &CallError, events: &[String]) -> Option<String> {
    let CallError::Status {
        status: 400,
        messages,
        ..
    } = err
    else {
        return None;
    };
    events
        .iter()
        .find(|event| messages.iter().any(|message| names_word(message, event)))
        .cloned()
}

fn names_word(text: &str, word: &str) -> bool {
    let part_of_key = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-');
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(part_of_key) && !after.is_some_and(part_of_key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths: project- and repository-level, with and without an id, segments encoded.
    #[test]
    fn paths() {
        assert_eq!(
            WebhookScope::new("INFRA", None).path(None),
            "/projects/INFRA/webhooks"
        );
        assert_eq!(
            WebhookScope::new("~BOB", Some("net work")).path(Some(42)),
            "/projects/~BOB/repos/net%20work/webhooks/42"
        );
        assert_eq!(
            WebhookScope::new("A/B", None).path(Some(1)),
            "/projects/A%2FB/webhooks/1"
        );
    }

    /// A 400 naming one of the events refuses that event, as a whole word only.
    #[test]
    fn refused_events() {
        let events: Vec<String> = ["pr:reviewer:unapproved", "pr:reviewer:approved"]
            .map(str::to_owned)
            .to_vec();
        let status = |status, message: &str| CallError::Status {
            status,
            messages: vec![message.to_owned()],
            attempts: 1,
        };
        assert_eq!(
            refused_event(
                &status(400, "Invalid event: 'pr:reviewer:approved'."),
                &events
            ),
            Some("pr:reviewer:approved".to_owned())
        );
        assert_eq!(
            refused_event(&status(400, "pr:reviewer:unapproved is unknown"), &events),
            Some("pr:reviewer:unapproved".to_owned())
        );
        assert_eq!(
            refused_event(&status(400, "pr:reviewer:approved_x is unknown"), &events),
            None
        );
        assert_eq!(
            refused_event(&status(403, "pr:reviewer:approved"), &events),
            None
        );
        assert_eq!(
            refused_event(&status(400, "The URL is not valid"), &events),
            None
        );
    }

    /// Trailing slashes and the case of scheme and host do not tell URLs apart; paths do.
    #[test]
    fn urls() {
        assert!(same_url(
            "HTTPS://Inlet.Example.com/webhooks/bitbucket-datacenter/bb/",
            "https://inlet.example.com/webhooks/bitbucket-datacenter/bb"
        ));
        assert!(!same_url(
            "https://inlet.example.com/webhooks/bitbucket-datacenter/BB",
            "https://inlet.example.com/webhooks/bitbucket-datacenter/bb"
        ));
    }

    /// The body carries the secret in `configuration`, the events given, and is active.
    #[test]
    fn bodies() {
        let spec = WebhookSpec {
            name: "inlet".to_owned(),
            url: "https://x/y".to_owned(),
            secret: Secret::new("s3cret"),
            events: vec!["repo:refs_changed".to_owned(), "pr:opened".to_owned()],
        };
        let body = spec.body(&spec.events[..1]);
        assert_eq!(body["configuration"]["secret"], "s3cret");
        assert_eq!(body["events"], json!(["repo:refs_changed"]));
        assert_eq!(body["active"], true);
        assert!(!format!("{spec:?}").contains("s3cret"));
    }
}
