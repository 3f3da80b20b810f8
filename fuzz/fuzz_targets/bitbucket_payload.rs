//! Fuzzes the webhook payload reader (`inlet_bitbucket::payload`), which both ingest (the
//! ordering repository) and the router (the typed event) run on every authenticated body.
//!
//! What enters: arbitrary bytes as the body, read under each event key of [`EVENT_KEYS`]. What
//! must hold: `parse` and `ordering_repository` never panic, nor do the accessors the router
//! calls on a parsed event; keys inlet does not handle are never parsed (`Ok(None)`).

#![no_main]

use inlet_bitbucket::{Event, event_label, ordering_repository, parse};
use libfuzzer_sys::fuzz_target;

/// One key per distinct path through `parse`: the push, pull-request events (the reviewer and
/// comment ones included), and keys inlet does not handle. The pull-request keys not listed
/// (`pr:reviewer:unapproved`, `…:needs_work`, `…:changes_requested`) share the `pr:opened` path.
const EVENT_KEYS: &[&str] = &[
    "repo:refs_changed",
    "pr:opened",
    "pr:from_ref_updated",
    "pr:modified",
    "pr:reviewer:approved",
    "pr:merged",
    "pr:comment:added",
    "pr:declined",
    "repo:modified",
    "diagnostics:ping",
];

/// Keys `parse` must leave alone.
const UNHANDLED: &[&str] = &["pr:declined", "repo:modified", "diagnostics:ping"];

fuzz_target!(|data: &[u8]| {
    if let Ok(repository) = ordering_repository(data) {
        let _ = repository.full_name();
    }
    for key in EVENT_KEYS {
        let _ = event_label(Some(key));
        match parse(key, data) {
            Ok(Some(event)) => {
                assert!(!UNHANDLED.contains(key), "{key} was parsed");
                touch(&event);
            }
            Ok(None) => assert!(UNHANDLED.contains(key), "{key} was not parsed"),
            Err(err) => {
                let _ = err.to_string();
            }
        }
    }
});

/// Everything the router reads of an event.
fn touch(event: &Event) {
    let _ = event.repository().full_name();
    match event {
        Event::Push(push) => {
            let _ = push.actor.as_ref().map(|actor| actor.login());
            for change in &push.changes {
                let _ = change.change_kind();
                let _ = change.reference.is_branch();
                let _ = change.reference.short_name();
            }
        }
        Event::PullRequest(_, event) => {
            let pr = &event.pull_request;
            let _ = pr.from_ref.branch();
            let _ = pr.to_ref.branch();
            let _ = pr.from_ref.repository.full_name();
            let _ = event.previous_target.as_ref().map(|target| target.branch());
            let _ = event.actor.as_ref().map(|actor| actor.login());
            let _ = event.comment.as_ref().map(|comment| comment.text.len());
        }
    }
}
