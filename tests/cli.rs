//! The command line refuses bad configuration before starting anything, with a message that says
//! what to fix.

use std::process::Command;

fn inlet(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inlet"));
    command
        .args(args)
        .env_remove("INLET_ADMIN_KEY")
        .env_remove("INLET_KAFKA_BOOTSTRAP_SERVERS");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run inlet");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An unknown key in the config file is an error naming the key; nothing starts.
#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inlet.toml");
    std::fs::write(&path, "[ingest]\nmax_body_bytez = 10\n").expect("write");
    let (code, stderr) = inlet(&["--config", path.to_str().expect("path"), "dev"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("max_body_bytez"), "{stderr}");
}

/// Out-of-range values are refused with the dotted key.
#[test]
fn invalid_value_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inlet.toml");
    std::fs::write(&path, "[ingest]\nmax_body_bytes = 0\n").expect("write");
    let (code, stderr) = inlet(&["dev"], &[("INLET_CONFIG", path.to_str().expect("path"))]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ingest.max_body_bytes"), "{stderr}");
}

/// A single stage without a cluster says how to give it one.
#[test]
fn stage_needs_bootstrap_servers() {
    let (code, stderr) = inlet(&["router"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--kafka-bootstrap-servers"), "{stderr}");
}

/// Ingest without the bootstrap admin key says how to set it.
#[test]
fn ingest_needs_the_admin_key() {
    let (code, stderr) = inlet(&["ingest", "--kafka-bootstrap-servers", "127.0.0.1:1"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("INLET_ADMIN_KEY"), "{stderr}");
}

/// A short admin key is refused without echoing it.
#[test]
fn short_admin_key_is_refused_without_echo() {
    let (code, stderr) = inlet(&["dev"], &[("INLET_ADMIN_KEY", "tiny-key")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ingest.admin_key"), "{stderr}");
    assert!(!stderr.contains("tiny-key"), "{stderr}");
}
