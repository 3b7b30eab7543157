//! The AWS clients, built once per process from the standard configuration chain
//! (environment, profile, SSO, web identity, container and instance credentials;
//! `AWS_REGION`; `AWS_ENDPOINT_URL_S3`; `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`, which
//! the SDK's default HTTP client honours).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
use aws_sdk_s3::config::ProvideCredentials;
use aws_sdk_s3::config::{ConfigBag, Intercept, RequestChecksumCalculation, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use tracing::info;

use crate::config::Config;
use crate::error::error_chain;

/// Attempts per S3 call, the first included. The SDK's standard retry mode retries
/// throttling (`503 SlowDown`), `500`s, timeouts and lost or refused connections with
/// exponential backoff and full jitter, from [`S3_INITIAL_BACKOFF`] up to
/// [`S3_MAX_BACKOFF`] between attempts. Chosen for S3 answering in bursts of faults — it
/// answers SlowDown while it scales a prefix up, past ~5,500 GET/s — and for the
/// reliability matrix (README, "Reliability"): with 30 % of requests answered SlowDown
/// and 10 % of connections dropped, an attempt fails ~37 % of the time, and the chance
/// that any of the ~100,000 requests of an organisation's day fails 20 times in a row is
/// ~2 × 10⁻⁴. The cost in time: a call that keeps failing gives up after ~40 s on
/// average (the jittered waits add up to at most ~76 s), and the day fails naming it;
/// a call that fails once waits ~0.1 s.
pub const S3_MAX_ATTEMPTS: u32 = 20;
/// The first backoff (then doubled per attempt, jittered).
pub const S3_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The longest backoff between two attempts.
pub const S3_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the SDK's default chain looks for credentials, in its order, one per line.
pub const CREDENTIAL_SOURCES: &str =
    "  1. environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)
  2. profile: AWS_PROFILE (else \"default\") in ~/.aws/config and ~/.aws/credentials, SSO included
  3. web identity: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN
  4. container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI
  5. EC2 instance metadata (IMDS): no instance role there";

/// Why the SDK configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region configured (set AWS_REGION, or a region in the AWS profile)")]
    NoRegion,
    /// No provider of the chain had credentials (the SDK's own error is logged at debug).
    #[error("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (`aws sso login` first for an SSO profile). Tried, in order:\n{CREDENTIAL_SOURCES}")]
    NoCredentials,
    /// A provider that applies failed (a profile that is wrong, an SSO session expired).
    #[error("the AWS credentials could not be loaded: {0}")]
    Credentials(String),
}

/// The endpoint override, if set: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`.
pub fn endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
}

/// The retry configuration of every client (see [`S3_MAX_ATTEMPTS`]).
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(S3_MAX_ATTEMPTS)
        .with_initial_backoff(S3_INITIAL_BACKOFF)
        .with_max_backoff(S3_MAX_BACKOFF)
}

/// Loads the shared SDK configuration (credentials, region, endpoints, retries). The
/// retries are [`retry_config`], unless `AWS_MAX_ATTEMPTS` or `AWS_RETRY_MODE` is set:
/// then the SDK's own reading of those variables (and of the profile) stands.
pub async fn sdk_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if !retries_asked(|name| std::env::var(name).ok()) {
        loader = loader.retry_config(retry_config());
    }
    loader.load().await
}

/// Whether the environment (read through `get`) chooses the retries itself.
pub fn retries_asked(get: impl Fn(&str) -> Option<String>) -> bool {
    ["AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"]
        .iter()
        .any(|name| get(name).is_some_and(|v| !v.trim().is_empty()))
}

/// Checks, once at start, that `sdk` has a region and that its credentials resolve,
/// so that neither shows up as the failure of every request.
pub async fn check(sdk: &SdkConfig) -> Result<(), SetupError> {
    if sdk.region().is_none() {
        return Err(SetupError::NoRegion);
    }
    let Some(provider) = sdk.credentials_provider() else {
        return Err(SetupError::NoCredentials);
    };
    let Err(e) = provider.provide_credentials().await else {
        return Ok(());
    };
    let detail = error_chain(&e);
    tracing::debug!(error = %detail, "no provider of the credentials chain gave credentials");
    // The instance metadata endpoint is tried last; on a machine that is not an EC2
    // instance, what it answers (403, a refused connection, a timeout) only means that
    // there are no credentials.
    let from_imds = detail.contains("IMDS") || detail.contains("169.254.169.254");
    if matches!(e, CredentialsError::CredentialsNotLoaded(_)) || from_imds {
        Err(SetupError::NoCredentials)
    } else {
        Err(SetupError::Credentials(detail))
    }
}

/// Says at info when an S3 request attempt got no answer (a refused or lost
/// connection, a timeout): the SDK retries it quietly, and a wrong endpoint would
/// otherwise wait its whole retry schedule with nothing printed.
#[derive(Debug)]
struct RetryNotice;

impl Intercept for RetryNotice {
    fn name(&self) -> &'static str {
        "RetryNotice"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Err(e)) = context.output_or_error() else {
            return Ok(());
        };
        if !(e.is_connector_error() || e.is_timeout_error()) {
            return Ok(());
        }
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        let max_attempts = cfg
            .load::<RetryConfig>()
            .map_or(S3_MAX_ATTEMPTS, |r| r.max_attempts());
        if attempt < max_attempts {
            let uri = cfg.load::<AttemptUri>().map_or("", |u| u.0.as_str());
            info!(attempt, max_attempts, uri = %uri, error = %error_chain(e), "S3 request got no answer; the SDK retries it");
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The request is handed to the HTTP client and gone by the time the attempt
        // fails: keep its address for the notice.
        let uri = context.request().uri().to_string();
        cfg.interceptor_state().store_put(AttemptUri(uri));
        Ok(())
    }
}

/// The address of the attempt under way, for [`RetryNotice`].
#[derive(Debug, Clone)]
struct AttemptUri(String);

impl Storable for AttemptUri {
    type Storer = StoreReplace<AttemptUri>;
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
    // No retry quota: the SDK's token bucket (500 tokens, 5 a retry) keeps a fleet of
    // clients from storming a service with retries, but a day is one client, and at 30 %
    // SlowDown it empties within seconds, after which every fault fails the day at once.
    // The backoff paces the retries.
    let partition = RetryPartition::custom("cloudtrail-aggregator-s3")
        .token_bucket(TokenBucket::unlimited())
        .build();
    let mut conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(compatible)
        .retry_partition(partition)
        .interceptor(RetryNotice);
    if compatible && !checksums_asked {
        conf = conf.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    }
    if let Some(owner) = &cfg.expected_bucket_owner {
        conf = conf.interceptor(ExpectedBucketOwner(owner.clone()));
    }
    Client::from_conf(conf.build())
}

/// An S3 client for `cfg` from the environment, its region and credentials checked.
pub async fn s3_client_from_env(cfg: &Config) -> Result<Client, SetupError> {
    let sdk = sdk_config().await;
    check(&sdk).await?;
    Ok(s3_client(&sdk, cfg))
}

/// The function's clients from the environment, its region and credentials checked:
/// S3 for `cfg`, and SQS when `cfg` has a shard queue to send to.
pub async fn clients_from_env(
    cfg: &Config,
) -> Result<(Client, Option<aws_sdk_sqs::Client>), SetupError> {
    let sdk = sdk_config().await;
    check(&sdk).await?;
    let sqs = cfg
        .shard_queue_url
        .as_ref()
        .map(|_| aws_sdk_sqs::Client::new(&sdk));
    Ok((s3_client(&sdk, cfg), sqs))
}

/// An SQS client from the environment, its region and credentials checked.
pub async fn sqs_client_from_env() -> Result<aws_sdk_sqs::Client, SetupError> {
    let sdk = sdk_config().await;
    check(&sdk).await?;
    Ok(aws_sdk_sqs::Client::new(&sdk))
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
