//! Build statuses on commits: how the reporter shows a stack's run on the pull request.
//!
//! What enters: a [`Server`], the repository, the commit and a [`BuildStatus`]. What leaves: which
//! resource took it ([`Posted`]), or a [`CallError`]. Bitbucket keeps one status per (commit,
//! key), so posting the same status again replaces it with itself: the call is safe to repeat.
//!
//! Bitbucket 7.14 and later take statuses per repository (`POST /rest/api/latest/projects/{key}/
//! repos/{slug}/commits/{sha}/builds`); older servers answer that path with 404 and take them on
//! the legacy `POST /rest/build-status/1.0/commits/{sha}`, which knows only `SUCCESSFUL`, `FAILED`
//! and `INPROGRESS` (a cancelled run is posted there as `FAILED`, its description saying so).
//! Fields are cut to Bitbucket's limits (255 characters, the URL 450) instead of being refused.

use http::Method;
use inlet_core::metrics::BitbucketEndpoint;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::client::{
    CallError, Client, RepositoryRef, Server, call_span, decode, repository_path, segment,
};

/// Bitbucket's build states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    /// `INPROGRESS`.
    InProgress,
    /// `SUCCESSFUL`.
    Successful,
    /// `FAILED`.
    Failed,
    /// `CANCELLED` (7.14+; `FAILED` on the legacy resource).
    Cancelled,
}

impl BuildState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::InProgress => "INPROGRESS",
            BuildState::Successful => "SUCCESSFUL",
            BuildState::Failed => "FAILED",
            BuildState::Cancelled => "CANCELLED",
        }
    }
}

/// One build status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStatus {
    /// Identifies the status on its commit (`inlet-{stack}-{run type}`).
    pub key: String,
    /// The state.
    pub state: BuildState,
    /// Shown as the build's name.
    pub name: String,
    /// Where the build's details are.
    pub url: String,
    /// One line shown under the name.
    pub description: String,
    /// Bitbucket's `buildNumber`: inlet puts the run id here, so a status read back says which
    /// run it belongs to.
    pub build_number: String,
    /// The ref built (`refs/heads/main`), when known.
    pub git_ref: Option<String>,
}

/// Which resource accepted a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// The repository-based resource (Bitbucket 7.14+).
    Repository,
    /// The legacy resource, after the repository-based one answered 404.
    Legacy,
}

/// A status as Bitbucket has it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentBuildStatus {
    /// The key.
    #[serde(default)]
    pub key: String,
    /// `INPROGRESS`, `SUCCESSFUL`, ….
    #[serde(default)]
    pub state: String,
    /// The build number (the run id, for inlet's statuses).
    #[serde(default)]
    pub build_number: Option<String>,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl BuildStatus {
    fn body(&self, legacy: bool) -> Value {
        let (state, description) = match (self.state, legacy) {
            (BuildState::Cancelled, true) => (
                BuildState::Failed,
                format!("canceled: {}", self.description),
            ),
            (state, _) => (state, self.description.clone()),
        };
        let mut body = json!({
            "key": cut(&self.key, 255),
            "state": state.as_str(),
            "name": cut(&self.name, 255),
            "url": cut(&self.url, 450),
            "description": cut(&description, 255),
        });
        if !legacy {
            body["buildNumber"] = Value::from(cut(&self.build_number, 255));
            if let Some(git_ref) = &self.git_ref {
                body["ref"] = Value::from(cut(git_ref, 1024));
            }
        }
        body
    }
}

impl Client {
    /// Posts `status` on `sha` of `repository`, falling back to the legacy resource when the
    /// repository-based one is not there (404).
    pub async fn post_build_status(
        &self,
        server: &Server,
        repository: &RepositoryRef,
        sha: &str,
        status: &BuildStatus,
    ) -> Result<Posted, CallError> {
        let endpoint = BitbucketEndpoint::PostBuildStatus;
        let span = call_span(endpoint, repository);
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let path = repository_path(repository, &["commits", sha, "builds"]);
            let posted = call
                .request_if_present(Method::POST, &path, &[], Some(&status.body(false)))
                .await?;
            match posted {
                Some(_) => Ok(Posted::Repository),
                None => {
                    tracing::info!(
                        "Bitbucket has no repository build-status resource (before 7.14); \
                         posting on the legacy one"
                    );
                    let legacy = format!("/rest/build-status/1.0/commits/{}", segment(sha));
                    call.request(Method::POST, &legacy, &[], Some(&status.body(true)))
                        .await
                        .map(|_| Posted::Legacy)
                }
            }
        })
        .instrument(span)
        .await
    }

    /// The status with `key` on `sha`, or `None` when the commit has none with that key (or the
    /// server predates the repository-based resource).
    pub async fn build_status(
        &self,
        server: &Server,
        repository: &RepositoryRef,
        sha: &str,
        key: &str,
    ) -> Result<Option<CurrentBuildStatus>, CallError> {
        let endpoint = BitbucketEndpoint::GetBuildStatus;
        let span = call_span(endpoint, repository);
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let path = repository_path(repository, &["commits", sha, "builds"]);
            call.request_if_present(Method::GET, &path, &[("key", key.to_owned())], None)
                .await?
                .map(|body| decode(&body))
                .transpose()
        })
        .instrument(span)
        .await
    }
}
