//! Regression tests for hostile webhook bodies, from the fuzz target `bitbucket_payload`
//! (fuzz/fuzz_targets/bitbucket_payload.rs, issue 11 item 9). A body reaches the payload reader
//! only after its signature verified, but a signature proves who sent it, not that it is sane:
//! whatever it holds, `parse` and `ordering_repository` answer, never panic.
//!
//! Found: a `date` of `"€€"` panicked in the timestamp parser, which sliced the text five bytes
//! from its end, inside the first `€`. No decision of inlet depends on a timestamp, so an
//! unreadable one is now read as absent and the event still routes.

use inlet_bitbucket::{Event, PayloadError, ordering_repository, parse};

/// Every event key `parse` reads a timestamp under.
const KEYS: &[&str] = &[
    "repo:refs_changed",
    "pr:opened",
    "pr:from_ref_updated",
    "pr:modified",
    "pr:reviewer:approved",
    "pr:merged",
    "pr:comment:added",
];

/// Texts where the `+HHMM` offset would be is not on a character boundary, or is not there.
const HOSTILE_DATES: &[&str] = &[
    "€€",
    "€",
    "ééé",
    "𝄞𝄞",
    "2026-11-26T09:58:11€",
    "2026-11-26T09:58:11+10€",
    "2026-11-26T09:58+€1000",
    "+1000",
    "-",
];

/// The crashing input, as the fuzzer reduced it: nothing but the date.
#[test]
fn a_multi_byte_date_alone_is_an_error() {
    let body = r#"{"date":"€€"}"#.as_bytes();
    assert!(matches!(
        parse("repo:refs_changed", body),
        Err(PayloadError::NoRepository)
    ));
    assert!(matches!(
        ordering_repository(body),
        Err(PayloadError::NoRepository)
    ));
}

/// A hostile date in any timestamp field of an otherwise valid event leaves the event readable,
/// with the date absent, and its ordering repository unchanged.
#[test]
fn hostile_dates_in_every_timestamp_field_are_read_as_absent() {
    for key in KEYS {
        for date in HOSTILE_DATES {
            let body = body(key, date);
            let event = parse(key, body.as_bytes())
                .unwrap_or_else(|err| panic!("{key} with date {date:?}: {err}"))
                .unwrap_or_else(|| panic!("{key} is handled"));
            match event {
                Event::Push(push) => assert_eq!(push.date, None, "{date:?}"),
                Event::PullRequest(_, event) => {
                    assert_eq!(event.date, None, "{key} {date:?}");
                    assert_eq!(event.pull_request.created_date, None, "{key} {date:?}");
                    assert_eq!(event.pull_request.updated_date, None, "{key} {date:?}");
                    if let Some(comment) = &event.comment {
                        assert_eq!(comment.created_date, None, "{key} {date:?}");
                    }
                }
            }
            let repository = ordering_repository(body.as_bytes())
                .unwrap_or_else(|err| panic!("{key} with date {date:?}: {err}"));
            assert_eq!(repository.full_name(), "INFRA/network");
        }
    }
}

/// A valid body for `key` with every timestamp set to `date`.
fn body(key: &str, date: &str) -> String {
    let date = serde_json::Value::from(date);
    let repository = r#"{"slug": "network", "project": {"key": "INFRA"}}"#;
    if key == "repo:refs_changed" {
        return format!(
            r#"{{"date": {date}, "repository": {repository},
                "changes": [{{"ref": {{"id": "refs/heads/main"}}, "type": "UPDATE"}}]}}"#
        );
    }
    let side = |branch: &str| {
        format!(
            r#"{{"id": "refs/heads/{branch}", "latestCommit": "abc", "repository": {repository}}}"#
        )
    };
    format!(
        r#"{{"date": {date},
            "pullRequest": {{"id": 1, "createdDate": {date}, "updatedDate": {date},
                             "fromRef": {from}, "toRef": {to}}},
            "comment": {{"text": "hi", "createdDate": {date}}}}}"#,
        from = side("feature"),
        to = side("main"),
    )
}
