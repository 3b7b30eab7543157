//! The S3 client, built once per process from the standard AWS configuration chain.

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;

/// Attempts per S3 call (the SDK's standard retry mode, with backoff); a little more
/// patient than the default 3, since one failed call fails a whole day.
pub const S3_MAX_ATTEMPTS: u32 = 5;

/// True when an endpoint override is set: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`.
pub fn endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
}

/// An S3 client from the environment (credentials, region, endpoint). When an
/// endpoint override is set, S3 is addressed path-style, so that any S3-compatible
/// server on loopback works without wildcard DNS.
pub async fn s3_client_from_env() -> Client {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(S3_MAX_ATTEMPTS))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(endpoint_override().is_some())
        .build();
    Client::from_conf(conf)
}
