//! The edge's fast envelope reader against serde_json's: every captured Bitbucket body takes the
//! fast path and reads the same; hostile and odd bodies either read the same or are left to
//! serde_json. (The fuzz target `envelope_skim` checks the same property on generated inputs.)

use std::path::PathBuf;

use inlet_bitbucket::{Envelope, PayloadError, envelope, envelope_by_serde, envelope_by_skim};

const KEYS: [Option<&str>; 4] = [
    None,
    Some("pr:opened"),
    Some("repo:refs_changed"),
    Some("repo:modified"),
];

/// Whether two readings agree: the same envelope, or both "no repository". (Only serde_json
/// words other errors; the skim declines instead.)
fn same(a: &Result<Envelope, PayloadError>, b: &Result<Envelope, PayloadError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(PayloadError::NoRepository), Err(PayloadError::NoRepository)) => true,
        _ => false,
    }
}

/// The fast reading of `body` under every key, checked against serde_json's; whether the fast
/// path read it.
fn check(body: &[u8]) -> bool {
    let mut skimmed = None;
    for key in KEYS {
        let reference = envelope_by_serde(key, body);
        let fast = envelope_by_skim(key, body);
        if let Some(fast) = &fast {
            assert!(
                same(fast, &reference),
                "{key:?} {:?}: skim {fast:?}, serde {reference:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(same(&envelope(key, body), &reference) || reference.is_err());
        assert_eq!(envelope(key, body).is_ok(), reference.is_ok());
        skimmed.get_or_insert(fast.is_some());
    }
    skimmed.unwrap_or(false)
}

fn bodies(dir: PathBuf) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into();
            (name, std::fs::read(&path).expect("body"))
        })
        .collect();
    found.sort();
    found
}

/// The corpus body that is not one Bitbucket could send (SOURCES.md: hand-made, a `repository`
/// without `slug` or `project`): serde_json refuses it (400), so the skim leaves it to serde_json.
const NOT_BITBUCKETS: &[&str] = &["tektoncd-triggers__repo_refs_changed__1.json"];

/// Every payload of the shared corpus (114 bodies captured by other projects or copied from
/// Atlassian's documentation) and of the fixtures: read by the fast path, the same as serde_json.
#[test]
fn every_captured_body_takes_the_fast_path_and_reads_the_same() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut all = bodies(root.join("../../shared/bitbucket-payloads"));
    assert!(all.len() >= 100, "only {} corpus payloads", all.len());
    all.extend(bodies(root.join("../tests/fixtures")));
    let declined: Vec<_> = all
        .iter()
        .filter(|(_, body)| !check(body))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(declined, NOT_BITBUCKETS, "left to serde_json");
}

const REPO: &str = r#"{"slug":"network","project":{"key":"INFRA"}}"#;

/// Bodies at the edges of the skim's model: each reads the same as serde_json, or (the ones
/// marked) is left to it.
#[test]
fn odd_and_hostile_bodies_read_the_same_or_are_left_to_serde() {
    let pr = format!(r#"{{"pullRequest":{{"toRef":{{"repository":{REPO}}}}}}}"#);
    let cases: Vec<(String, bool)> = vec![
        // Read by the skim.
        (format!(r#"{{"repository":{REPO}}}"#), true),
        (
            format!(" \n\t{{ \"repository\" : {REPO} , \"x\" : [ ] }}\r\n"),
            true,
        ),
        (pr.clone(), true),
        (format!(r#"{{"new":{REPO},"repository":null}}"#), true),
        (
            format!(r#"{{"repository":{REPO},"pullRequest":null}}"#),
            true,
        ),
        (r#"{"date":"2026-11-26T09:58:11+1000"}"#.into(), true),
        (
            format!(r#"{{"repository":{REPO},"date":1764150000000}}"#),
            true,
        ),
        (format!(r#"{{"repository":{REPO},"date":"€€"}}"#), true),
        (format!(r#"{{"repository":{REPO},"date":true}}"#), true),
        (format!(r#"{{"repository":{REPO},"date":null}}"#), true),
        (format!(r#"{{"repository":{REPO},"date":-0}}"#), true),
        (
            format!(r#"{{"repository":{REPO},"date":-9223372036854775808}}"#),
            true,
        ),
        (
            format!(
                r#"{{"a":"\u00e9\n\"\\\/\b\f\r\t","b":[1,-2.5e+3,0.0,true,false,null,{{}}],"repository":{REPO}}}"#
            ),
            true,
        ),
        (
            r#"{"repository":{"slug":"s","project":{"key":"K","x":{"y":[[]]}}},"z":{}}"#.into(),
            true,
        ),
        ("{}".into(), true),
        (r#"{"repository":{"slug":"s"}}"#.into(), false),
        // Left to serde_json: escapes where the skim reads, duplicates, wrong types, syntax.
        (
            r#"{"repository":{"slug":"n\u0065t","project":{"key":"K"}}}"#.into(),
            false,
        ),
        (format!(r#"{{"repo\u0073itory":{REPO}}}"#), false),
        (
            format!(r#"{{"repository":{REPO},"repository":{REPO}}}"#),
            false,
        ),
        (
            format!(r#"{{"date":1,"date":2,"repository":{REPO}}}"#),
            false,
        ),
        (format!(r#"{{"repository":{REPO},"date":1.5}}"#), false),
        (
            format!(r#"{{"repository":{REPO},"date":{{"a":1}}}}"#),
            false,
        ),
        (
            format!(r#"{{"repository":{REPO},"date":99999999999999999999}}"#),
            false,
        ),
        (
            format!(r#"{{"repository":{REPO},"date":"\u0032026"}}"#),
            false,
        ),
        (
            r#"{"repository":{"slug":1,"project":{"key":"K"}}}"#.into(),
            false,
        ),
        (
            r#"{"repository":{"slug":"s","project":null}}"#.into(),
            false,
        ),
        (r#"{"pullRequest":{"toRef":null}}"#.into(), false),
        (r#"{"pullRequest":{}}"#.into(), false),
        (format!(r#"[{REPO}]"#), false),
        (format!(r#"{{"repository":{REPO}}} x"#), false),
        (format!(r#"{{"repository":{REPO},}}"#), false),
        (format!(r#"{{"repository":{REPO},"a":01}}"#), false),
        (format!(r#"{{"repository":{REPO},"a":1.}}"#), false),
        (format!(r#"{{"repository":{REPO},"a":-}}"#), false),
        (format!(r#"{{"repository":{REPO},"a":"\x"}}"#), false),
        (format!(r#"{{"repository":{REPO},"a":"\u12"}}"#), false),
        (format!("{{\"repository\":{REPO},\"a\":\"\t\"}}"), false),
        (format!(r#"{{"repository":{REPO},"a":tru}}"#), false),
        (format!(r#"{{"repository":{REPO},"a":[1 2]}}"#), false),
        (
            format!(r#"{{"repository":{REPO},"a":"unterminated}}"#),
            false,
        ),
        (format!(r#"{{"repository":{REPO}"#), false),
        (
            format!(
                r#"{{"repository":{REPO},"a":{}{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ),
            false,
        ),
        (String::new(), false),
    ];
    for (body, skimmed) in &cases {
        assert_eq!(check(body.as_bytes()), *skimmed, "{body}");
    }
    // Not UTF-8 in a string serde_json only skips: serde_json reads it, the skim leaves it.
    let mut latin1 = format!(r#"{{"repository":{REPO},"a":"caf"#).into_bytes();
    latin1.extend_from_slice(b"\xe9\"}");
    assert!(!check(&latin1));
    assert!(envelope(None, &latin1).is_ok());
}
