//! The client over https against a loopback server whose certificate a private CA signed, as
//! on-premises Bitbucket servers often are: trusted with `bitbucket.ca_bundle_file`, refused
//! without it — once, since a certificate does not heal by retrying.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use inlet_bitbucket::client::{Client, RepositoryRef, Server};
use inlet_core::config::BitbucketConfig;
use inlet_core::metrics::Metrics;
use inlet_core::secret::Secret;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const PAGE: &str = r#"{"size":1,"limit":500,"isLastPage":true,"start":0,
  "values":[{"type":"MODIFY","nodeType":"FILE","path":{"components":["infra","main.tf"],
  "parent":"infra","name":"main.tf","extension":"tf","toString":"infra/main.tf"}}]}"#;

/// An https server on 127.0.0.1 answering [`PAGE`] to everything, with its CA's PEM, the
/// connections it accepted and the paths it was asked for.
struct TlsServer {
    base_url: String,
    ca_pem: String,
    connections: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

async fn tls_server() -> TlsServer {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (counted, recorded) = (connections.clone(), paths.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request: http::Request<_>| {
                    let recorded = recorded.clone();
                    async move {
                        recorded
                            .lock()
                            .expect("paths")
                            .push(request.uri().path().to_owned());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(PAGE))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer {
        base_url: format!("https://127.0.0.1:{port}/bitbucket"),
        ca_pem: ca.pem(),
        connections,
        paths,
    }
}

/// With the private CA in `ca_bundle_file` the call succeeds over https; without it the
/// certificate is refused, as a transport error, after one connection (no retries).
#[tokio::test]
async fn private_ca_is_trusted_only_from_the_bundle() {
    let server = tls_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &server.ca_pem).expect("write bundle");
    let bitbucket = Server {
        base_url: server.base_url.clone(),
        token: Secret::new("token"),
    };
    let repository = RepositoryRef::new("INFRA", "network");

    let trusting = BitbucketConfig {
        ca_bundle_file: Some(bundle),
        ..BitbucketConfig::default()
    };
    trusting.validate().expect("valid config");
    let client = Client::new(&trusting, Metrics::new().bitbucket.clone()).expect("client");
    let changes = client
        .compare_changes(&bitbucket, &repository, "a", Some("b"))
        .await
        .expect("changes over https");
    assert_eq!(changes.changes[0].path, "infra/main.tf");
    assert_eq!(
        server.paths.lock().expect("paths").as_slice(),
        ["/bitbucket/rest/api/latest/projects/INFRA/repos/network/compare/changes"]
    );

    let before = server.connections.load(Ordering::SeqCst);
    let metrics = Metrics::new();
    let untrusting = Client::new(&BitbucketConfig::default(), metrics.bitbucket.clone())
        .expect("client without the bundle");
    let err = untrusting
        .compare_changes(&bitbucket, &repository, "a", Some("b"))
        .await
        .expect_err("unknown issuer");
    assert_eq!(err.code(), "transport");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(server.connections.load(Ordering::SeqCst) - before, 1);
    assert!(
        metrics
            .render()
            .contains("inlet_bitbucket_retries_total{endpoint=\"compare_changes\"} 0"),
        "a refused certificate is not retried"
    );
}
