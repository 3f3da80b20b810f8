//! Branch heads and open pull requests: what reconciliation (DESIGN §5.2) compares with the last
//! commits the router saw, to find what Bitbucket never delivered.
//!
//! - [`Client::branch_head`]: `GET …/commits?until=refs/heads/{branch}&limit=1`, exact where
//!   `…/branches?filterText=` is a substring search; a branch that does not exist is `None`.
//! - [`Client::open_pull_requests`]: `GET …/pull-requests?state=OPEN&at=refs/heads/{branch}`
//!   (pull requests *into* the branch), every page within `bitbucket.max_pages`; a list cut by
//!   that bound is an error, not a shorter answer, so a pass never acts on half a list.

use http::Method;
use inlet_core::metrics::BitbucketEndpoint;
use serde::Deserialize;
use tracing::Instrument;

use crate::client::{CallError, Client, RepositoryRef, Server, call_span, decode, repository_path};

/// An open pull request into a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPullRequest {
    /// Its id in the target repository.
    pub id: u64,
    /// The head of its source branch.
    pub latest_commit: String,
    /// The source branch (short name).
    pub from_branch: String,
    /// The source repository (`PROJECT/repo`; another one for a fork).
    pub from_repository: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    values: Vec<T>,
    #[serde(default)]
    is_last_page: bool,
    #[serde(default)]
    next_page_start: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RestCommit {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestPullRequest {
    id: u64,
    from_ref: RestRef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestRef {
    #[serde(default)]
    display_id: String,
    #[serde(default)]
    latest_commit: Option<String>,
    #[serde(default)]
    repository: Option<RestRepository>,
}

#[derive(Debug, Deserialize)]
struct RestRepository {
    slug: String,
    project: RestProject,
}

#[derive(Debug, Deserialize)]
struct RestProject {
    key: String,
}

impl Client {
    /// The commit `branch` of `repository` points at, or `None` when there is no such branch.
    pub async fn branch_head(
        &self,
        server: &Server,
        repository: &RepositoryRef,
        branch: &str,
    ) -> Result<Option<String>, CallError> {
        let endpoint = BitbucketEndpoint::BranchHead;
        let span = call_span(endpoint, repository);
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let query = [
                ("until", format!("refs/heads/{branch}")),
                ("limit", "1".to_owned()),
            ];
            let path = repository_path(repository, &["commits"]);
            match call
                .request_if_present(Method::GET, &path, &query, None)
                .await?
            {
                Some(body) => {
                    let page: Page<RestCommit> = decode(&body)?;
                    match page.values.into_iter().next() {
                        Some(commit) if is_commit_id(&commit.id) => Ok(Some(commit.id)),
                        Some(_) => Err(CallError::InvalidResponse {
                            reason: "the branch head is not a commit id".to_owned(),
                        }),
                        None => Ok(None),
                    }
                }
                None => Ok(None),
            }
        })
        .instrument(span)
        .await
    }

    /// The open pull requests into `branch` of `repository`, every page.
    pub async fn open_pull_requests(
        &self,
        server: &Server,
        repository: &RepositoryRef,
        branch: &str,
        max_pages: u32,
    ) -> Result<Vec<OpenPullRequest>, CallError> {
        let endpoint = BitbucketEndpoint::OpenPullRequests;
        let span = call_span(endpoint, repository);
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let path = repository_path(repository, &["pull-requests"]);
            let mut open = Vec::new();
            let mut start = 0;
            for _ in 0..max_pages.max(1) {
                let query = [
                    ("state", "OPEN".to_owned()),
                    ("at", format!("refs/heads/{branch}")),
                    ("direction", "INCOMING".to_owned()),
                    ("start", start.to_string()),
                    ("limit", "100".to_owned()),
                ];
                let page: Page<RestPullRequest> = call.get_json(&path, &query).await?;
                for rest in page.values {
                    match pull_request(rest) {
                        Some(pr) if is_commit_id(&pr.latest_commit) && sane(&pr) => open.push(pr),
                        Some(_) => {
                            return Err(CallError::InvalidResponse {
                                reason: "an open pull request's commit id or branch is malformed"
                                    .to_owned(),
                            });
                        }
                        None => {}
                    }
                }
                match (page.is_last_page, page.next_page_start) {
                    (true, _) => return Ok(open),
                    (false, Some(next)) if next > start => start = next,
                    _ => {
                        return Err(CallError::InvalidResponse {
                            reason: "the pull-request list's nextPageStart is missing or does \
                                     not advance"
                                .to_owned(),
                        });
                    }
                }
            }
            Err(CallError::InvalidResponse {
                reason: format!("more open pull requests than {max_pages} pages"),
            })
        })
        .instrument(span)
        .await
    }
}

/// A commit id as Bitbucket writes them: 4 to 64 hex digits (SHA-1 or SHA-256, maybe
/// abbreviated). Anything else from a server is refused rather than stored and replayed.
fn is_commit_id(id: &str) -> bool {
    (4..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Names within the bounds inlet keeps (a branch name of at most 1,024 bytes, a repository of
/// at most 256), without control characters.
fn sane(pr: &OpenPullRequest) -> bool {
    let clean =
        |s: &str, max: usize| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control);
    clean(&pr.from_branch, 1_024) && clean(&pr.from_repository, 256)
}

fn pull_request(rest: RestPullRequest) -> Option<OpenPullRequest> {
    let repository = rest.from_ref.repository?;
    Some(OpenPullRequest {
        id: rest.id,
        latest_commit: rest.from_ref.latest_commit?,
        from_branch: rest.from_ref.display_id,
        from_repository: format!("{}/{}", repository.project.key, repository.slug),
    })
}
