//! Build statuses against the fake Bitbucket: the body posted, the legacy fallback of servers
//! before 7.14, retries after 500 and 429, and reading a status back by key.

use std::time::Duration;

use inlet_bitbucket::builds::{BuildState, BuildStatus, Posted};
use inlet_bitbucket::client::{CallError, Client, RepositoryRef};
use inlet_bitbucket::fake::FakeBitbucket;
use inlet_core::config::BitbucketConfig;
use inlet_core::metrics::Metrics;

const SHA: &str = "178864a7d521b6f5e720b386b2c2b0ef8563e0dc";

async fn setup() -> (FakeBitbucket, Client, RepositoryRef) {
    let fake = FakeBitbucket::start().await;
    let config = BitbucketConfig {
        allow_http: true,
        ..BitbucketConfig::default()
    };
    let client = Client::new(&config, Metrics::new().bitbucket.clone()).expect("client");
    let repository = RepositoryRef::new("INFRA", "network");
    (fake, client, repository)
}

fn status(state: BuildState) -> BuildStatus {
    BuildStatus {
        key: "inlet-prod-tracked".to_owned(),
        state,
        name: "prod (tracked)".to_owned(),
        url: "https://runs.example.com/r1".to_owned(),
        description: "x".repeat(300),
        build_number: "r1".to_owned(),
        git_ref: Some("refs/heads/main".to_owned()),
    }
}

/// The repository resource gets the documented body, cut to Bitbucket's limits, and the status
/// reads back by key with the run id as its build number.
#[tokio::test]
async fn posts_and_reads_back() {
    let (fake, client, repository) = setup().await;
    let server = fake.server("token");
    let posted = client
        .post_build_status(&server, &repository, SHA, &status(BuildState::InProgress))
        .await
        .expect("posted");
    assert_eq!(posted, Posted::Repository);
    let statuses = fake.build_statuses();
    assert_eq!(statuses.len(), 1);
    let body = &statuses[0].body;
    assert_eq!(statuses[0].repository.as_deref(), Some("INFRA/network"));
    assert_eq!(
        (body["key"].as_str(), body["state"].as_str()),
        (Some("inlet-prod-tracked"), Some("INPROGRESS"))
    );
    assert_eq!(body["description"].as_str().map(str::len), Some(255));
    assert_eq!(body["buildNumber"], "r1");
    assert_eq!(body["ref"], "refs/heads/main");
    let current = client
        .build_status(&server, &repository, SHA, "inlet-prod-tracked")
        .await
        .expect("read")
        .expect("a status");
    assert_eq!(current.state, "INPROGRESS");
    assert_eq!(current.build_number.as_deref(), Some("r1"));
    let none = client
        .build_status(&server, &repository, SHA, "inlet-other")
        .await
        .expect("read");
    assert!(none.is_none());
}

/// Before 7.14 the repository resource is a 404: the legacy one takes the status, CANCELLED as
/// FAILED with the description saying so.
#[tokio::test]
async fn falls_back_to_the_legacy_resource() {
    let (fake, client, repository) = setup().await;
    fake.legacy_build_status_only(true);
    let server = fake.server("token");
    let posted = client
        .post_build_status(&server, &repository, SHA, &status(BuildState::Cancelled))
        .await
        .expect("posted");
    assert_eq!(posted, Posted::Legacy);
    let statuses = fake.build_statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].repository, None);
    assert_eq!(statuses[0].state(), "FAILED");
    assert!(
        statuses[0].body["description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("canceled: ")
    );
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec![
            format!("/rest/api/latest/projects/INFRA/repos/network/commits/{SHA}/builds"),
            format!("/rest/build-status/1.0/commits/{SHA}"),
        ]
    );
}

/// A 500 and a 429 are retried (the 429 after its Retry-After); a 400 is not.
#[tokio::test]
async fn retries_server_errors_and_rate_limits() {
    let (fake, client, repository) = setup().await;
    let server = fake.server("token");
    fake.fail_next(1, 500, None);
    client
        .post_build_status(&server, &repository, SHA, &status(BuildState::Successful))
        .await
        .expect("posted after a 500");
    fake.fail_next(1, 429, Some(1));
    let started = std::time::Instant::now();
    client
        .post_build_status(&server, &repository, SHA, &status(BuildState::Failed))
        .await
        .expect("posted after a 429");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(fake.build_statuses().len(), 2);
    let mut bad = status(BuildState::Failed);
    bad.url = String::new();
    let refused = client
        .post_build_status(&server, &repository, SHA, &bad)
        .await
        .expect_err("refused");
    assert!(
        matches!(
            refused,
            CallError::Status {
                status: 400,
                attempts: 1,
                ..
            }
        ),
        "{refused:?}"
    );
}
