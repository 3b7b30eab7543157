//! Tracing set-up shared by both binaries.
//!
//! The level comes from `LOG_LEVEL` (the seed's switch: `debug`, `INFO`, `warning`…)
//! and applies to this crate, with dependencies kept at `info` or quieter; otherwise
//! from `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced logging controls), otherwise from
//! `RUST_LOG` as a full filter directive; the default is `info`. With
//! `AWS_LAMBDA_LOG_FORMAT=JSON` every line is a JSON object.
//!
//! The SDK's search for a region and credentials is quiet below `debug`: on a machine
//! that is not an EC2 instance the instance metadata endpoint answers 403, refuses or
//! times out, and the SDK warns about it at length before our own error says what is
//! missing ([`crate::aws::check`]). `RUST_LOG` is taken as written.

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::level_name;

/// The filter the environment asks for.
pub fn filter_from_env() -> EnvFilter {
    let crate_level = std::env::var("LOG_LEVEL")
        .ok()
        .and_then(|v| level_name(&v))
        .or_else(|| {
            std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .and_then(|v| level_name(&v))
        });
    if let Some(level) = crate_level {
        let deps = if level == "warn" || level == "error" {
            level.as_str()
        } else {
            "info"
        };
        let quiet = if level == "debug" || level == "trace" {
            String::new()
        } else {
            format!(",{QUIET_UNLESS_DEBUG}")
        };
        return EnvFilter::new(format!(
            "{deps},cloudtrail_aggregator={level},ctagg={level},cloudtrail_aggregator_bin={level}{quiet}"
        ));
    }
    match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.trim().is_empty() => EnvFilter::new(directive),
        _ => EnvFilter::new(format!("info,{QUIET_UNLESS_DEBUG}")),
    }
}

/// The SDK's region and credential providers: the instance metadata client and the
/// credentials chain, whose failures [`crate::aws::check`] reports in a sentence.
const QUIET_UNLESS_DEBUG: &str = "aws_config::imds=off,aws_config::meta::credentials=off";

/// True when Lambda asks for JSON log lines.
pub fn json_format() -> bool {
    std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .map(|v| v.eq_ignore_ascii_case("json"))
        .unwrap_or(false)
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Lambda: stdout, no timestamps (CloudWatch adds them), no colours.
    Lambda,
    /// A terminal program: stderr, timestamps, colours when stderr is a terminal.
    Cli,
}

/// Installs the global subscriber (once; a subscriber already installed is kept).
pub fn init(output: Output) {
    match output {
        Output::Lambda => install(std::io::stdout, false, false),
        Output::Cli => install(std::io::stderr, true, std::io::stderr().is_terminal()),
    }
}

fn install<W>(writer: W, with_time: bool, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter_from_env())
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let res = match (json_format(), with_time) {
        (true, _) => builder.json().with_current_span(true).try_init(),
        (false, true) => builder.try_init(),
        (false, false) => builder.without_time().try_init(),
    };
    // A subscriber already installed (tests, embedding) is kept.
    let _ = res;
}
