//! The AWS clients, built once per process from the standard configuration chain.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RequestChecksumCalculation, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::Client;

use crate::config::Config;

/// Attempts per S3 call (the SDK's standard retry mode, with backoff); a little more
/// patient than the default 3, since one failed call fails a whole day.
pub const S3_MAX_ATTEMPTS: u32 = 5;

/// The endpoint override, if set: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`.
pub fn endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
}

/// Loads the shared SDK configuration (credentials, region, endpoints, retries).
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(S3_MAX_ATTEMPTS))
        .load()
        .await
}

/// Sends `x-amz-expected-bucket-owner` on every S3 request, so that a bucket owned by
/// another account is refused by S3 instead of read or written.
#[derive(Debug)]
struct ExpectedBucketOwner(String);

impl Intercept for ExpectedBucketOwner {
    fn name(&self) -> &'static str {
        "ExpectedBucketOwner"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-amz-expected-bucket-owner", self.0.clone());
        Ok(())
    }
}

/// An S3 client for `cfg`.
///
/// When an endpoint override is set (an S3-compatible server), S3 is addressed
/// path-style, so that any server on loopback works without wildcard DNS, and
/// uploads carry a checksum only where the operation requires one, unless
/// `AWS_REQUEST_CHECKSUM_CALCULATION` is set: the SDK's default since 2025, a CRC32 on
/// every PutObject and UploadPart (sent as an `aws-chunked` trailer when the body is a
/// file), is refused by several S3-compatible stores. Against AWS the SDK's default
/// stands.
pub fn s3_client(sdk: &SdkConfig, cfg: &Config) -> Client {
    s3_client_for(sdk, cfg, checksums_asked(|name| std::env::var(name).ok()))
}

/// Whether the environment (read through `get`) chooses the upload checksums itself.
/// (The loaded `SdkConfig` cannot say: the loader fills in the SDK's default when
/// nothing is set.)
pub fn checksums_asked(get: impl Fn(&str) -> Option<String>) -> bool {
    get("AWS_REQUEST_CHECKSUM_CALCULATION").is_some_and(|v| !v.trim().is_empty())
}

/// [`s3_client`], with `checksums_asked` given rather than read from the environment.
pub fn s3_client_for(sdk: &SdkConfig, cfg: &Config, checksums_asked: bool) -> Client {
    let compatible = endpoint_override().is_some() || sdk.endpoint_url().is_some();
    let mut conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(compatible);
    if compatible && !checksums_asked {
        conf = conf.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    }
    if let Some(owner) = &cfg.expected_bucket_owner {
        conf = conf.interceptor(ExpectedBucketOwner(owner.clone()));
    }
    Client::from_conf(conf.build())
}

/// An S3 client for `cfg` from the environment.
pub async fn s3_client_from_env(cfg: &Config) -> Client {
    s3_client(&sdk_config().await, cfg)
}

/// An SQS client from the environment.
pub async fn sqs_client_from_env() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a non-empty `AWS_REQUEST_CHECKSUM_CALCULATION` chooses the checksums.
    #[test]
    fn checksums_asked_only_by_the_variable() {
        let with = |v: Option<&str>| checksums_asked(|_| v.map(str::to_string));
        assert!(!with(None));
        assert!(!with(Some(" ")));
        assert!(with(Some("when_supported")));
        assert!(with(Some("WHEN_REQUIRED")));
    }
}
