//! The fake's branches and pull requests (a child module of `fake`, sharing its state), for
//! reconciliation: a test moves a branch or a pull request the way a push no webhook reported
//! would, and the client reads it back.
//!
//! - `GET /rest/api/latest/projects/{key}/repos/{slug}/commits?until=refs/heads/{b}&limit=1` →
//!   a page with the branch's head commit, 404 for an unknown branch;
//! - `GET …/pull-requests?state=OPEN&at=refs/heads/{b}` → the open pull requests into `b`,
//!   paged by `start`/`limit` (and [`FakeBitbucket::set_page_size`]).

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::{DEFAULT_LIMIT, FakeBitbucket, RecordedRequest, State, errors, lock, number_param, ok};

/// A pull request the fake knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePullRequest {
    /// `PROJ/slug` of the target (and source) repository.
    pub repository: String,
    /// Its id.
    pub id: u64,
    /// Source branch.
    pub from_branch: String,
    /// Target branch.
    pub to_branch: String,
    /// Head of the source branch.
    pub latest_commit: String,
    /// Open (else merged or declined).
    pub open: bool,
}

#[derive(Debug, Default)]
pub(super) struct Refs {
    /// (`PROJ/slug`, branch) → head commit.
    branches: HashMap<(String, String), String>,
    pull_requests: Vec<FakePullRequest>,
}

impl FakeBitbucket {
    /// Points `branch` of `repository` (`PROJ/slug`) at `sha` (`None`: the branch is deleted).
    pub fn set_branch(&self, repository: &str, branch: &str, sha: Option<&str>) {
        let mut state = lock(&self.state);
        let key = (repository.to_owned(), branch.to_owned());
        match sha {
            Some(sha) => state.refs.branches.insert(key, sha.to_owned()),
            None => state.refs.branches.remove(&key),
        };
    }

    /// Adds or replaces pull request `pull_request.id` of its repository.
    pub fn set_pull_request(&self, pull_request: FakePullRequest) {
        let mut state = lock(&self.state);
        let prs = &mut state.refs.pull_requests;
        prs.retain(|p| !(p.repository == pull_request.repository && p.id == pull_request.id));
        prs.push(pull_request);
    }
}

fn repository_of(path: &str) -> Option<(String, String)> {
    let segments = super::decoded_segments(path)?;
    match &segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [
            "rest",
            "api",
            "latest",
            "projects",
            key,
            "repos",
            slug,
            tail,
        ] => Some((format!("{key}/{slug}"), (*tail).to_owned())),
        _ => None,
    }
}

/// The answer when `request` names a branch or pull-request listing; `None` otherwise.
pub(super) fn answer(
    state: &State,
    method: &Method,
    request: &RecordedRequest,
) -> Option<Response<Full<Bytes>>> {
    let (repository, tail) = repository_of(&request.path)?;
    if method != Method::GET || !matches!(tail.as_str(), "commits" | "pull-requests") {
        return None;
    }
    let refs = &state.refs;
    let branch = |param: &str| {
        request
            .query_param(param)
            .and_then(|r| r.strip_prefix("refs/heads/").map(str::to_owned))
    };
    Some(if tail == "commits" {
        let Some(branch) = branch("until") else {
            return Some(errors(
                StatusCode::BAD_REQUEST,
                "until is required here",
                None,
            ));
        };
        match refs.branches.get(&(repository, branch.clone())) {
            Some(sha) => ok(
                json!({"size": 1, "limit": 1, "isLastPage": false, "start": 0,
                "nextPageStart": 1, "values": [{"id": sha, "displayId": &sha[..sha.len().min(11)],
                "message": "a commit", "parents": []}]}),
            ),
            None => errors(
                StatusCode::NOT_FOUND,
                &format!("Commit 'refs/heads/{branch}' does not exist in this repository."),
                Some("com.atlassian.bitbucket.commit.NoSuchCommitException"),
            ),
        }
    } else {
        let target = branch("at").unwrap_or_default();
        let open: Vec<&FakePullRequest> = refs
            .pull_requests
            .iter()
            .filter(|p| p.repository == repository && p.open && p.to_branch == target)
            .collect();
        let start = number_param(request, "start").unwrap_or(0);
        let limit = state
            .page_size
            .or_else(|| number_param(request, "limit"))
            .unwrap_or(DEFAULT_LIMIT)
            .max(1);
        let page: Vec<Value> = open
            .iter()
            .skip(start)
            .take(limit)
            .map(|p| rest(p))
            .collect();
        let last = start + page.len() >= open.len();
        ok(super::paged(page, start, limit, last))
    })
}

/// A `RestPullRequest` with what a client reads (and what real servers send beside it).
fn rest(p: &FakePullRequest) -> Value {
    let (key, slug) = p.repository.split_once('/').unwrap_or((&p.repository, ""));
    let repository = json!({"slug": slug, "name": slug, "project": {"key": key}});
    let reference = |branch: &str, commit: &str| {
        json!({"id": format!("refs/heads/{branch}"), "displayId": branch,
               "latestCommit": commit, "repository": repository.clone()})
    };
    json!({"id": p.id, "version": 1, "title": format!("PR {}", p.id), "state": "OPEN",
           "open": true, "closed": false, "fromRef": reference(&p.from_branch, &p.latest_commit),
           "toRef": reference(&p.to_branch, "0000000000000000000000000000000000000000")})
}
