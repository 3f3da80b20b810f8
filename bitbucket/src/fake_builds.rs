//! The fake's build-status endpoints (a child module of `fake`, so it shares its state):
//!
//! - `POST /rest/api/latest/projects/{key}/repos/{slug}/commits/{sha}/builds` (Bitbucket ≥ 7.14):
//!   `RestBuildStatusSetRequest` → 204; required `key`, `state`, `url`, the documented lengths;
//! - `GET` of the same path with `?key=` → the `RestBuildStatus`, or 404 when there is none;
//! - `POST /rest/build-status/1.0/commits/{sha}` (the legacy resource): `state` only
//!   `SUCCESSFUL`, `FAILED` or `INPROGRESS` → 204.
//!
//! [`FakeBitbucket::legacy_build_status_only`] makes the fake a server older than 7.14: the
//! repository-based resource answers 404 as an unknown REST path does.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::{FakeBitbucket, RecordedRequest, State, errors, lock, ok};

/// A build status the fake was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedBuildStatus {
    /// `PROJ/slug`, or `None` through the legacy resource.
    pub repository: Option<String>,
    /// The commit.
    pub sha: String,
    /// The request body as sent.
    pub body: Value,
}

impl PostedBuildStatus {
    /// `key` of the body.
    pub fn key(&self) -> &str {
        self.body["key"].as_str().unwrap_or_default()
    }

    /// `state` of the body.
    pub fn state(&self) -> &str {
        self.body["state"].as_str().unwrap_or_default()
    }
}

/// What the fake keeps of build statuses.
#[derive(Debug, Default)]
pub(super) struct Builds {
    /// Every accepted post, in order.
    posted: Vec<PostedBuildStatus>,
    /// (sha, key) → the current status (Bitbucket keys statuses by commit and key).
    current: HashMap<(String, String), Value>,
    legacy_only: bool,
}

impl FakeBitbucket {
    /// Every build status accepted so far, oldest first.
    pub fn build_statuses(&self) -> Vec<PostedBuildStatus> {
        lock(&self.state).builds.posted.clone()
    }

    /// Serve only the legacy build-status resource, as Bitbucket before 7.14.
    pub fn legacy_build_status_only(&self, on: bool) {
        lock(&self.state).builds.legacy_only = on;
    }
}

enum BuildRoute {
    Repository { repository: String, sha: String },
    Legacy { sha: String },
}

fn parse(path: &str) -> Option<BuildRoute> {
    let segments = super::decoded_segments(path)?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match &segments[..] {
        [
            "rest",
            "api",
            "latest",
            "projects",
            key,
            "repos",
            slug,
            "commits",
            sha,
            "builds",
        ] => Some(BuildRoute::Repository {
            repository: format!("{key}/{slug}"),
            sha: (*sha).to_owned(),
        }),
        ["rest", "build-status", "1.0", "commits", sha] => Some(BuildRoute::Legacy {
            sha: (*sha).to_owned(),
        }),
        _ => None,
    }
}

/// The answer when `request` names a build-status endpoint; `None` otherwise.
pub(super) fn answer(
    state: &mut State,
    method: &Method,
    request: &RecordedRequest,
) -> Option<Response<Full<Bytes>>> {
    let route = parse(&request.path)?;
    let builds = &mut state.builds;
    Some(match (route, method) {
        (BuildRoute::Repository { .. }, _) if builds.legacy_only => errors(
            StatusCode::NOT_FOUND,
            &format!("No REST resource at {}.", request.full_path),
            None,
        ),
        (BuildRoute::Repository { repository, sha }, &Method::POST) => {
            post(builds, Some(repository), sha, request, false)
        }
        (BuildRoute::Repository { sha, .. }, &Method::GET) => {
            let key = request.query_param("key").unwrap_or_default();
            match builds.current.get(&(sha, key.clone())) {
                Some(status) => ok(status.clone()),
                None => errors(
                    StatusCode::NOT_FOUND,
                    &format!("No build status with key {key} exists for this commit."),
                    Some("com.atlassian.bitbucket.build.status.NoSuchBuildStatusException"),
                ),
            }
        }
        (BuildRoute::Legacy { sha }, &Method::POST) => post(builds, None, sha, request, true),
        _ => errors(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not supported here."),
            None,
        ),
    })
}

/// Validates and stores one status: 400 with Bitbucket's kind of message when a required field
/// is missing, too long, or a state the resource does not take.
fn post(
    builds: &mut Builds,
    repository: Option<String>,
    sha: String,
    request: &RecordedRequest,
    legacy: bool,
) -> Response<Full<Bytes>> {
    let body = request.json();
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    let (key, state, url) = (text("key"), text("state"), text("url"));
    let states: &[&str] = if legacy {
        &["SUCCESSFUL", "FAILED", "INPROGRESS"]
    } else {
        &["SUCCESSFUL", "FAILED", "INPROGRESS", "CANCELLED", "UNKNOWN"]
    };
    let problem = if key.is_empty() || key.chars().count() > 255 {
        Some("key must be 1 to 255 characters")
    } else if url.is_empty() || url.chars().count() > 450 {
        Some("url must be 1 to 450 characters")
    } else if !states.contains(&state.as_str()) {
        Some("state is not a valid build state")
    } else if ["name", "description"]
        .iter()
        .any(|f| text(f).chars().count() > 255)
    {
        Some("name and description are at most 255 characters")
    } else {
        None
    };
    if let Some(problem) = problem {
        return errors(
            StatusCode::BAD_REQUEST,
            problem,
            Some("com.atlassian.bitbucket.validation.ArgumentValidationException"),
        );
    }
    let mut current = body.clone();
    current["createdDate"] = json!(0);
    builds.current.insert((sha.clone(), key), current);
    builds.posted.push(PostedBuildStatus {
        repository,
        sha,
        body,
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
