//! Branch heads and open pull requests against the fake Bitbucket (reconciliation's reads): the
//! request sent, an unknown branch, paging, and a list that would be cut.

use inlet_bitbucket::client::{CallError, Client, RepositoryRef};
use inlet_bitbucket::fake::{FakeBitbucket, FakePullRequest};
use inlet_bitbucket::refs::OpenPullRequest;
use inlet_core::config::BitbucketConfig;
use inlet_core::metrics::Metrics;

const HEAD: &str = "3333333333333333333333333333333333333333";

async fn setup() -> (FakeBitbucket, Client, RepositoryRef) {
    let fake = FakeBitbucket::start().await;
    fake.require_token("token");
    let config = BitbucketConfig {
        allow_http: true,
        ..BitbucketConfig::default()
    };
    let client = Client::new(&config, Metrics::new().bitbucket.clone()).expect("client");
    (fake, client, RepositoryRef::new("INFRA", "network"))
}

fn pull_request(id: u64, to: &str) -> FakePullRequest {
    FakePullRequest {
        repository: "INFRA/network".to_owned(),
        id,
        from_branch: format!("feature-{id}"),
        to_branch: to.to_owned(),
        latest_commit: format!("{id:040x}"),
        open: true,
    }
}

/// The head is read exactly (`until=refs/heads/{branch}&limit=1`); an unknown branch is `None`.
#[tokio::test]
async fn branch_heads() {
    let (fake, client, repository) = setup().await;
    let server = fake.server("token");
    fake.set_branch("INFRA/network", "main", Some(HEAD));
    let head = client
        .branch_head(&server, &repository, "main")
        .await
        .expect("read");
    assert_eq!(head.as_deref(), Some(HEAD));
    let request = fake.requests().pop().expect("request");
    assert_eq!(
        request.path,
        "/rest/api/latest/projects/INFRA/repos/network/commits"
    );
    assert_eq!(
        request.query_param("until").as_deref(),
        Some("refs/heads/main")
    );
    assert_eq!(request.query_param("limit").as_deref(), Some("1"));
    fake.set_branch("INFRA/network", "main", None);
    let gone = client
        .branch_head(&server, &repository, "main")
        .await
        .expect("read");
    assert_eq!(gone, None);
}

/// Open pull requests into the branch, across pages; others (other target, closed) are not
/// listed; a list longer than the page bound is an error, never a shorter list.
#[tokio::test]
async fn open_pull_requests_page() {
    let (fake, client, repository) = setup().await;
    let server = fake.server("token");
    for id in 1..=5 {
        fake.set_pull_request(pull_request(id, "main"));
    }
    fake.set_pull_request(pull_request(6, "develop"));
    fake.set_pull_request(FakePullRequest {
        open: false,
        ..pull_request(7, "main")
    });
    fake.set_page_size(2);
    let open = client
        .open_pull_requests(&server, &repository, "main", 10)
        .await
        .expect("listed");
    let ids: Vec<u64> = open.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        open[0],
        OpenPullRequest {
            id: 1,
            latest_commit: format!("{:040x}", 1),
            from_branch: "feature-1".to_owned(),
            from_repository: "INFRA/network".to_owned(),
        }
    );
    let first = fake.requests().into_iter().next().expect("a request");
    assert_eq!(first.query_param("state").as_deref(), Some("OPEN"));
    assert_eq!(first.query_param("at").as_deref(), Some("refs/heads/main"));
    let cut = client
        .open_pull_requests(&server, &repository, "main", 2)
        .await
        .expect_err("more than two pages");
    assert!(matches!(cut, CallError::InvalidResponse { .. }), "{cut:?}");
}

/// A server's malformed answers are refused, not stored and replayed: a head that is not a
/// commit id (here 1 MB of text), a pull request whose commit or branch is not sane.
#[tokio::test]
async fn malformed_heads_are_refused() {
    let (fake, client, repository) = setup().await;
    let server = fake.server("token");
    fake.set_branch("INFRA/network", "main", Some(&"x".repeat(1 << 20)));
    let err = client
        .branch_head(&server, &repository, "main")
        .await
        .expect_err("not a commit id");
    assert!(matches!(err, CallError::InvalidResponse { .. }), "{err:?}");
    for bad in [
        FakePullRequest {
            latest_commit: "not-hex".to_owned(),
            ..pull_request(1, "main")
        },
        FakePullRequest {
            from_branch: "a\nb".to_owned(),
            ..pull_request(1, "main")
        },
        FakePullRequest {
            from_branch: "b".repeat(2_000),
            ..pull_request(1, "main")
        },
    ] {
        fake.set_pull_request(bad.clone());
        let err = client
            .open_pull_requests(&server, &repository, "main", 10)
            .await
            .expect_err("malformed");
        assert!(
            matches!(err, CallError::InvalidResponse { .. }),
            "{bad:?}: {err:?}"
        );
    }
}
