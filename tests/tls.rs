//! The day over HTTPS, as against S3: the SDK's default HTTP client and the lean path's
//! own connections both trust the platform's roots, here the test authority given by
//! `SSL_CERT_FILE` (read by rustls-native-certs for both). A test binary of its own:
//! the variable is read once per process.

mod common;

use std::collections::HashMap;

use cloudtrail_aggregator::{aggregate_day, http1, Config, RunOptions};
use common::*;
use rustls::pki_types::pem::PemObject;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";

/// Over TLS the lean GETs and LISTs go over connections of their own, verified
/// against the trusted roots, and the day comes out whole; a server whose certificate
/// the roots do not vouch for is refused by that client.
#[tokio::test]
async fn a_day_over_https() {
    // Before any TLS configuration is made in this process (the only test here).
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    std::env::set_var("SSL_CERT_FILE", &ca);

    let server = S3::new();
    let plain = server.client();
    create_bucket(&plain, SRC).await;
    create_bucket(&plain, DST).await;
    let mut want = Vec::new();
    for n in 0..60 {
        let recs: Vec<String> = (0..1 + n % 3)
            .map(|i| record("111111111111", "eu-west-1", n * 10 + i))
            .collect();
        let key = log_key("AWSLogs/", "111111111111", "eu-west-1", "2024/02/12", n);
        let file = gzip(&delivery(&recs));
        want.extend(expected_lines(&file));
        put(&plain, SRC, &key, file).await;
    }
    let endpoint = server.serve_tls().await;
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");

    let cfg: HashMap<String, String> = [("SRC_BUCKET", SRC), ("DST_BUCKET", DST)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut cfg = Config::from_map(&cfg).unwrap();
    cfg.max_concurrent_gets = 4;
    let s3 = cloudtrail_aggregator::aws::s3_client(&S3::sdk_config_at(&endpoint), &cfg);
    let day = "2024-02-12".parse().unwrap();
    let summary = aggregate_day(&s3, &cfg, day, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.manifest.source_files, 60);
    assert!(summary.lean.own_connections, "{:?}", summary.lean);
    assert!(summary.lean.gets >= 60 - 4, "{:?}", summary.lean);
    assert!(summary.lean.lists >= 2, "{:?}", summary.lean);
    assert!(server.accepted() <= 15, "{} connections", server.accepted());
    let chunk = get(&plain, DST, "cloudtrail-daily/2024/02/12/000000.ndjson.gz")
        .await
        .unwrap();
    assert_lines(&gunzip(&chunk), &want);

    // The lean path's client verifies the server: trusting the test authority it is
    // answered (403: the request is not signed), trusting another it is refused.
    let authority = endpoint.trim_start_matches("https://");
    let trusting = |pem: &[u8]| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = http1::tls_config(roots).unwrap();
        http1::Client::with_tls(authority, Some(tls), None).unwrap()
    };
    let host = vec![("host", authority.to_string())];
    let answer = trusting(&fixture("tls/ca.pem"))
        .get("/", &host, 1 << 20)
        .await
        .unwrap();
    assert_eq!(answer.status, 403);
    let refused = trusting(&fixture("tls/other-ca.pem"))
        .get("/", &host, 1 << 20)
        .await
        .unwrap_err();
    assert!(refused.0.contains("TLS with 127.0.0.1:"), "{refused}");
    assert!(refused.0.contains("UnknownIssuer"), "{refused}");
}
