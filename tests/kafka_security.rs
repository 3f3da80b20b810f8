//! End to end: librdkafka is built with TLS, SASL (SCRAM, GSSAPI) and zstd, so `inlet` accepts a
//! `[kafka.librdkafka]` map that asks for them and goes on to connect to the broker with them.
//!
//! A build without them refuses such a map at client creation, before any connection, with
//! `Unsupported value "SASL_SSL" for configuration property "security.protocol": OpenSSL not
//! available at build time` (or `libzstd not available at build time`). These tests start the
//! real binary against a loopback port and look at what reaches that port: with TLS configured
//! the first bytes are a TLS ClientHello, with PLAINTEXT a Kafka ApiVersions request. There is no
//! broker, so no handshake completes; a closed port yields a transport error instead.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Secrets for the processes (the formats `inlet ingest` requires).
const ADMIN_KEY: &str = "kafka-security-admin-key-0123";
const SECRETS_KEY: &str = "5f3c1e0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";
const SASL_PASSWORD: &str = "scram-password-that-must-not-be-logged";

/// How long the process may take to connect or fail: generous, since a loaded machine is slow
/// and nothing here depends on it being fast.
const PATIENCE: Duration = Duration::from_secs(60);

/// What a build without TLS, SASL or zstd, or a rejected map, says at client creation.
const CONFIG_ERRORS: &[&str] = &[
    "not available at build time",
    "config error",
    "creation error",
];

/// An `inlet` process whose stderr goes to a file; killed when dropped. Unlike the shared test
/// helper it does not wait for the ready file: without a broker the stages never get ready.
struct Process {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// `inlet --config <file with config_toml> ARGS…`.
    fn start(config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("inlet.toml");
        std::fs::write(&config, config_toml).expect("config file");
        let log = dir.path().join("inlet.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_inlet"));
        command
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("INLET_CONFIG")
            .env_remove("INLET_ADMIN_KEY")
            .env_remove("INLET_SECRETS_KEY")
            .env_remove("INLET_KAFKA_BOOTSTRAP_SERVERS")
            .env(
                "INLET_LOG",
                "info,inlet_core=debug,librdkafka=info,rdkafka=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn inlet");
        Process {
            child,
            log,
            _dir: dir,
        }
    }

    /// Everything the process logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited.
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Panics if the log shows a configuration error or the SASL password.
    fn assert_config_accepted(&self) {
        let log = self.log();
        let lower = log.to_lowercase();
        for error in CONFIG_ERRORS {
            assert!(
                !lower.contains(error),
                "inlet refused the Kafka configuration ({error}):\n{log}"
            );
        }
        assert!(
            !log.contains(SASL_PASSWORD),
            "the password was logged:\n{log}"
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `inlet router` against `port` on loopback.
fn router(config_toml: &str, port: u16) -> Process {
    let bootstrap = format!("127.0.0.1:{port}");
    Process::start(
        config_toml,
        &[
            "router",
            "--kafka-bootstrap-servers",
            &bootstrap,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[],
    )
}

/// `inlet ingest` against `port` on loopback, with valid keys.
fn ingest(config_toml: &str, port: u16) -> Process {
    let bootstrap = format!("127.0.0.1:{port}");
    Process::start(
        config_toml,
        &[
            "ingest",
            "--kafka-bootstrap-servers",
            &bootstrap,
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &[
            ("INLET_ADMIN_KEY", ADMIN_KEY),
            ("INLET_SECRETS_KEY", SECRETS_KEY),
        ],
    )
}

/// Waits for `process` to connect to `listener` and returns the first `n` bytes it sends. Fails
/// as soon as the process exits, with its log.
fn first_bytes(listener: &TcpListener, process: &mut Process, n: usize) -> Vec<u8> {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + PATIENCE;
    let mut stream: TcpStream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("accept: {err}"),
        }
        if process.exited() {
            panic!("inlet exited before connecting:\n{}", process.log());
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not connect within {PATIENCE:?}:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut bytes = vec![0; n];
    stream
        .read_exact(&mut bytes)
        .unwrap_or_else(|err| panic!("reading what inlet sent: {err}\n{}", process.log()));
    bytes
}

/// A TLS record of type handshake (22), record version 3.x, carrying a ClientHello (type 1).
fn is_tls_client_hello(bytes: &[u8]) -> bool {
    bytes.len() >= 6 && bytes[0] == 0x16 && bytes[1] == 0x03 && bytes[5] == 0x01
}

fn sasl_ssl_scram() -> String {
    format!(
        "[kafka.librdkafka]\n\
         \"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"inlet-router\"\n\
         \"sasl.password\" = \"{SASL_PASSWORD}\"\n"
    )
}

/// SASL_SSL with SCRAM-SHA-512 (MSK, Aiven, self-managed): the router accepts the map and opens
/// the connection with a TLS ClientHello.
#[test]
fn sasl_ssl_scram_opens_a_tls_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut router = router(&sasl_ssl_scram(), port);
    let bytes = first_bytes(&listener, &mut router, 6);
    assert!(
        is_tls_client_hello(&bytes),
        "expected a TLS ClientHello, got {bytes:02x?}:\n{}",
        router.log()
    );
    router.assert_config_accepted();
}

/// SSL (server-verified TLS, as with Aiven or a private CA) and zstd: ingest accepts
/// `compression.type = "zstd"` in place of its producer default, lz4, and opens the connection
/// with a TLS ClientHello.
#[test]
fn ssl_with_zstd_opens_a_tls_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = "[kafka.librdkafka]\n\
                  \"security.protocol\" = \"SSL\"\n\
                  \"compression.type\" = \"zstd\"\n";
    let mut ingest = ingest(config, port);
    let bytes = first_bytes(&listener, &mut ingest, 6);
    assert!(
        is_tls_client_hello(&bytes),
        "expected a TLS ClientHello, got {bytes:02x?}:\n{}",
        ingest.log()
    );
    ingest.assert_config_accepted();
}

/// The control for the two tests above: with PLAINTEXT the first bytes are a Kafka request
/// (length, then API key 18, ApiVersions), not TLS, so the ClientHello check tells them apart.
#[test]
fn plaintext_opens_with_a_kafka_request() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = "[kafka.librdkafka]\n\"security.protocol\" = \"PLAINTEXT\"\n";
    let mut router = router(config, port);
    let bytes = first_bytes(&listener, &mut router, 6);
    assert!(
        !is_tls_client_hello(&bytes),
        "TLS on PLAINTEXT: {bytes:02x?}"
    );
    let api_key = i16::from_be_bytes([bytes[4], bytes[5]]);
    assert_eq!(api_key, 18, "expected ApiVersions, got {bytes:02x?}");
}

/// GSSAPI (Kerberos, through Cyrus SASL) is built in: the router accepts the mechanism, where a
/// build without it refuses with `No provider for SASL mechanism GSSAPI`, and connects. Nothing
/// here talks to a KDC: the ticket command is `true` and the connection is plaintext.
#[test]
fn gssapi_is_built_in() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = "[kafka.librdkafka]\n\
                  \"security.protocol\" = \"SASL_PLAINTEXT\"\n\
                  \"sasl.mechanism\" = \"GSSAPI\"\n\
                  \"sasl.kerberos.kinit.cmd\" = \"true\"\n\
                  \"sasl.kerberos.min.time.before.relogin\" = \"0\"\n";
    let mut router = router(config, port);
    let bytes = first_bytes(&listener, &mut router, 6);
    let api_key = i16::from_be_bytes([bytes[4], bytes[5]]);
    assert_eq!(api_key, 18, "expected ApiVersions, got {bytes:02x?}");
    router.assert_config_accepted();
}

/// Against a closed port, SASL_SSL gets as far as the transport: inlet reports that it cannot
/// reach the broker (or is still trying when the patience runs out), never a configuration error.
#[test]
fn sasl_ssl_against_a_closed_port_is_a_transport_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let mut router = router(&sasl_ssl_scram(), port);
    let deadline = Instant::now() + PATIENCE;
    let transport = |log: &str| {
        log.contains("BrokerTransportFailure")
            || log.contains(&format!("127.0.0.1:{port}"))
                && (log.contains("Connection refused") || log.contains("Connect to"))
    };
    loop {
        let log = router.log();
        if transport(&log) {
            break;
        }
        router.assert_config_accepted();
        if router.exited() {
            // Read once more: the last lines may have been written as it exited.
            let log = router.log();
            assert!(
                transport(&log),
                "inlet exited without a transport error:\n{log}"
            );
            break;
        }
        if Instant::now() > deadline {
            // Still retrying, which is what an unreachable broker should cause.
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    router.assert_config_accepted();
}
