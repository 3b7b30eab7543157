//! `ctagg`: the command line. `ctagg run DAY` aggregates one day through the same
//! library path as the Lambda, configured by the same environment variables (flags
//! override them).

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, Parser, Subcommand};
use cloudtrail_aggregator::config::{ConfigErrors, OutputFormat, Setting};
use cloudtrail_aggregator::select::{DayBy, Dedup};
use cloudtrail_aggregator::trigger::Day;
use cloudtrail_aggregator::validate::Validate;
use cloudtrail_aggregator::{aggregate_day, aws, backfill, telemetry, Config, RunOptions, Summary};

/// What `run` and `status` need besides their arguments, for their `--help`.
const NEEDS: &str = "\
Needs SRC_BUCKET and DST_BUCKET (or --src-bucket, --dst-bucket); every other setting has a
default (README, \"Configuration\"). Needs AWS credentials (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the buckets' region (AWS_REGION, or the profile's).";

#[derive(Debug, Parser)]
#[command(
    name = "ctagg",
    version,
    about = "Aggregate CloudTrail logs in S3 into daily gzip NDJSON or Parquet files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Aggregate one day (`ctagg run 2024-02-12`) or a range (`--from … --to …`), one day at a time.
    #[command(after_help = NEEDS)]
    Run(RunArgs),
    /// Enqueue one explicit-date message per day on the trigger queue, for the Lambda to aggregate.
    Backfill(BackfillArgs),
    /// Say where a day stands: complete, being aggregated (which shards are done, pending
    /// or failed, and why), or not aggregated.
    #[command(after_help = NEEDS)]
    Status(StatusArgs),
    /// Re-check an aggregated day from S3 alone: every chunk's size and SHA-256 against
    /// the manifest, and no chunk the manifest does not list. Exits non-zero naming each
    /// chunk that is changed, missing or extra.
    #[command(after_help = NEEDS)]
    Verify(VerifyArgs),
    /// Print the Athena table over the output (AWS's CloudTrail columns), or the DuckDB
    /// declaration that reads the NDJSON files with it.
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
struct SchemaArgs {
    /// The output's format.
    #[arg(long, value_name = "FORMAT", default_value = "ndjson", ignore_case = true,
          value_parser = PossibleValuesParser::new(OutputFormat::names()))]
    format: String,
    /// The table's name.
    #[arg(long, default_value = "cloudtrail_daily")]
    table: String,
    /// Where the day folders are: s3://DST_BUCKET/DST_PREFIX (default: from DST_BUCKET and
    /// DST_PREFIX when set).
    #[arg(long, value_name = "S3_URI")]
    location: Option<String>,
    /// Print DuckDB's `columns` argument for `read_json` over the NDJSON files instead:
    /// `SELECT … FROM read_json('…/*.ndjson.gz', columns = <this>)`.
    #[arg(long)]
    duckdb: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The UTC day, YYYY-MM-DD (or `yesterday`).
    #[arg(value_name = "DAY", value_parser = day_arg)]
    day: Day,
    /// The manifest's SHA-256 as recorded when the day was written (what an earlier
    /// verify printed): a manifest changed since, with or without its chunks, fails.
    #[arg(long, value_name = "HEX")]
    manifest_sha256: Option<String>,
    /// Also read every source file of the day's inventories again and check it against
    /// the inventory's SHA-256 and its CloudTrail digest (days aggregated with VALIDATE on).
    #[arg(long)]
    sources: bool,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The UTC day, YYYY-MM-DD (or `yesterday`).
    #[arg(value_name = "DAY", value_parser = day_arg)]
    day: Day,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Debug, Args)]
struct BackfillArgs {
    /// The trigger queue's URL (the stack output QueueUrl).
    #[arg(long, env = "QUEUE_URL")]
    queue_url: String,
    /// First day, YYYY-MM-DD.
    #[arg(long, value_parser = day_arg)]
    from: Day,
    /// Last day, inclusive, YYYY-MM-DD.
    #[arg(long, value_parser = day_arg)]
    to: Day,
    /// Print the messages that would be sent, and send nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("days").required(true).args(["day", "from"])))]
struct RunArgs {
    /// The UTC day to aggregate, YYYY-MM-DD (or `yesterday`).
    #[arg(value_name = "DAY", value_parser = day_arg, conflicts_with_all = ["from", "to"])]
    day: Option<Day>,
    /// First day of a range, YYYY-MM-DD (with --to).
    #[arg(long, requires = "to", value_parser = day_arg)]
    from: Option<Day>,
    /// Last day of a range, inclusive, YYYY-MM-DD (with --from).
    #[arg(long, requires = "from", value_parser = day_arg)]
    to: Option<Day>,
    /// Shards of a day larger than one shard run at once in this process (default: the
    /// machine's cores).
    #[arg(long, value_name = "K")]
    shard_concurrency: Option<usize>,
    #[command(flatten)]
    overrides: Overrides,
}

/// Flags that override the environment variables of the same name.
#[derive(Debug, Args)]
struct Overrides {
    /// Overrides SRC_BUCKET.
    #[arg(long)]
    src_bucket: Option<String>,
    /// Overrides SRC_PREFIX.
    #[arg(long)]
    src_prefix: Option<String>,
    /// Overrides DST_BUCKET.
    #[arg(long)]
    dst_bucket: Option<String>,
    /// Overrides DST_PREFIX.
    #[arg(long)]
    dst_prefix: Option<String>,
    /// Overrides OUTPUT_FORMAT: ndjson (gzip NDJSON, the default) or parquet.
    #[arg(long, value_name = "FORMAT", ignore_case = true,
          value_parser = PossibleValuesParser::new(OutputFormat::names()))]
    format: Option<String>,
    /// Overrides DAY_BY: delivery (CloudTrail's folder, the default) or event (the events
    /// whose eventTime is on the day; reads the day's and the next day's folders).
    #[arg(long, value_name = "DAY_BY", ignore_case = true,
          value_parser = PossibleValuesParser::new(DayBy::names()))]
    day_by: Option<String>,
    /// Overrides DEDUP: none (the default) or eventid (one record per eventID and day).
    #[arg(long, value_name = "DEDUP", ignore_case = true,
          value_parser = PossibleValuesParser::new(Dedup::names()))]
    dedup: Option<String>,
    /// Overrides VALIDATE: off (the default), report or strict (check CloudTrail's signed
    /// digests against every file read; strict fails the day on any problem).
    #[arg(long, value_name = "VALIDATE", ignore_case = true,
          value_parser = PossibleValuesParser::new(Validate::names()))]
    validate: Option<String>,
    /// Overrides CHUNK_SIZE_BYTES.
    #[arg(long)]
    chunk_size_bytes: Option<u64>,
    /// Overrides MAX_CONCURRENT_GETS.
    #[arg(long)]
    max_concurrent_gets: Option<usize>,
    /// Overrides SHARD_MAX_FILES: source files of one shard.
    #[arg(long, value_name = "N")]
    shard_max_files: Option<u64>,
    /// Overrides SHARD_MAX_BYTES: bytes (as stored) of one shard's source files.
    #[arg(long, value_name = "BYTES")]
    shard_max_bytes: Option<u64>,
}

impl Overrides {
    /// Each flag's variable and value, when given.
    fn given(&self) -> [(&'static str, &'static str, Option<String>); 12] {
        let n = |v: Option<u64>| v.map(|n| n.to_string());
        [
            ("SRC_BUCKET", "--src-bucket", self.src_bucket.clone()),
            ("SRC_PREFIX", "--src-prefix", self.src_prefix.clone()),
            ("DST_BUCKET", "--dst-bucket", self.dst_bucket.clone()),
            ("DST_PREFIX", "--dst-prefix", self.dst_prefix.clone()),
            ("OUTPUT_FORMAT", "--format", self.format.clone()),
            ("DAY_BY", "--day-by", self.day_by.clone()),
            ("DEDUP", "--dedup", self.dedup.clone()),
            ("VALIDATE", "--validate", self.validate.clone()),
            (
                "CHUNK_SIZE_BYTES",
                "--chunk-size-bytes",
                n(self.chunk_size_bytes),
            ),
            (
                "MAX_CONCURRENT_GETS",
                "--max-concurrent-gets",
                self.max_concurrent_gets.map(|n| n.to_string()),
            ),
            (
                "SHARD_MAX_FILES",
                "--shard-max-files",
                n(self.shard_max_files),
            ),
            (
                "SHARD_MAX_BYTES",
                "--shard-max-bytes",
                n(self.shard_max_bytes),
            ),
        ]
    }

    /// The configuration: the environment, these flags laid over it.
    fn config(&self) -> Result<Config> {
        let given = self.given();
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        for (name, _, value) in &given {
            if let Some(v) = value {
                vars.insert(name.to_string(), v.clone());
            }
        }
        let flag_of = |var: &str| given.iter().find(|g| g.0 == var).map(|g| g.1);
        Config::from_map(&vars).map_err(|e| anyhow::Error::msg(config_text(&e, flag_of)))
    }
}

/// Every bad variable on a line of its own, with its flag: one sentence to act on first.
fn config_text(e: &ConfigErrors, flag_of: impl Fn(&str) -> Option<&'static str>) -> String {
    let n = e.0.len();
    let mut text = if n == 1 {
        "a setting is missing or malformed; set the variable, or its flag:".to_string()
    } else {
        format!("{n} settings are missing or malformed; set each variable, or its flag:")
    };
    for err in &e.0 {
        let flag = flag_of(err.var).map_or(String::new(), |f| format!(" ({f})"));
        text.push_str(&format!("\n  {}{flag}: {}", err.var, err.reason));
    }
    text
}

/// A DAY argument: `YYYY-MM-DD`, a real day within CloudTrail's life, or `yesterday` (UTC).
fn day_arg(s: &str) -> Result<Day, String> {
    let today = chrono::Utc::now().date_naive();
    if s.trim().eq_ignore_ascii_case("yesterday") {
        return today
            .pred_opt()
            .map(Day)
            .ok_or_else(|| "no yesterday".into());
    }
    let day: Day = s.parse().map_err(|e| format!("{e}"))?;
    day.check_range(today).map_err(|e| e.to_string())
}

fn days(args: &RunArgs) -> Result<Vec<Day>> {
    if let Some(d) = args.day {
        return Ok(vec![d]);
    }
    let (Some(from), Some(to)) = (args.from, args.to) else {
        bail!("give a DAY, or --from and --to");
    };
    range(from, to)
}

/// The days from `from` to `to`, in order.
fn range(from: Day, to: Day) -> Result<Vec<Day>> {
    if from > to {
        bail!("--from {from} is after --to {to}: give the earlier day first");
    }
    Ok(backfill::days(from, to))
}

async fn run_backfill(args: BackfillArgs) -> Result<()> {
    let days = range(args.from, args.to)?;
    if args.dry_run {
        for day in &days {
            println!("{}", backfill::body(*day));
        }
        println!(
            "dry run: would send {} messages to {}",
            days.len(),
            args.queue_url
        );
        return Ok(());
    }
    let sqs = aws::sqs_client_from_env().await?;
    let total = days.len();
    let mut last_shown = 0;
    let sent = backfill::send(&sqs, &args.queue_url, &days, |sent, total| {
        // Progress on long ranges: about every 10 %, and at the end.
        if total > 50 && (sent - last_shown >= total / 10 || sent == total) {
            eprintln!("sent {sent}/{total}");
            last_shown = sent;
        }
    })
    .await
    .with_context(|| format!("backfill {} to {} failed", days[0], days[total - 1]))?;
    println!(
        "sent {sent} messages ({} to {}) to {}",
        days[0],
        days[total - 1],
        args.queue_url
    );
    Ok(())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn summary_line(cfg: &Config, s: &Summary) -> String {
    let m = &s.manifest;
    let selected = m.selection.as_ref().map_or(String::new(), |sel| {
        format!(
            " (by {}: {} read, {} of other days, {} duplicates dropped)",
            sel.day_by, sel.records_read, sel.other_days, sel.duplicates
        )
    });
    let shards = match m.shards.len() {
        0 | 1 => String::new(),
        n => format!(" in {n} shards"),
    };
    format!(
        "{}: {} files, {} records{selected}, {} chunks{shards}, {} read, {} written as {} ({} NDJSON) in {:.2}s -> s3://{}/{}",
        s.day,
        m.source_files,
        m.records,
        m.chunks.len(),
        mb(m.bytes_read),
        mb(m.bytes_written),
        m.format,
        mb(m.uncompressed_bytes_written),
        s.duration.as_secs_f64(),
        cfg.dst_bucket,
        s.manifest_key,
    )
}

async fn run(args: RunArgs) -> Result<()> {
    // The command line first, then the environment: a mistake in the one is not hidden
    // behind the other.
    let mut days = days(&args)?;
    let cfg = args.overrides.config()?;
    if cfg.day_by == DayBy::Event {
        // Newest first: each day's run then finds the next day's delivery index.
        days.reverse();
    }
    let s3 = aws::s3_client_from_env(&cfg).await?;
    let opts = RunOptions {
        deadline: None,
        shard_concurrency: args.shard_concurrency.unwrap_or(0),
    };
    for (i, day) in days.iter().enumerate() {
        let summary = aggregate_day(&s3, &cfg, *day, opts)
            .await
            .with_context(|| {
                format!(
                    "aggregating {day} failed ({i} of {} days done before it)",
                    days.len()
                )
            })?;
        println!("{}", summary_line(&cfg, &summary));
    }
    Ok(())
}

async fn status(args: StatusArgs) -> Result<()> {
    let day = args.day;
    let cfg = args.overrides.config()?;
    let s3 = aws::s3_client_from_env(&cfg).await?;
    let status = cloudtrail_aggregator::status::day_status(&s3, &cfg, day)
        .await
        .with_context(|| format!("reading the status of {day} failed"))?;
    println!("{day}: {status}");
    Ok(())
}

async fn verify(args: VerifyArgs) -> Result<()> {
    let day = args.day;
    let cfg = args.overrides.config()?;
    let s3 = aws::s3_client_from_env(&cfg).await?;
    let pinned = args.manifest_sha256.as_deref();
    let v = cloudtrail_aggregator::verify::verify_day(&s3, &cfg, day, pinned)
        .await
        .with_context(|| format!("verifying {day} failed"))?;
    if !v.holds() {
        bail!("{day} does not match its manifest: {v}");
    }
    println!("{day}: {v}");
    if args.sources {
        let s = cloudtrail_aggregator::provenance::verify_sources(&s3, &cfg, day)
            .await
            .with_context(|| format!("verifying the sources of {day} failed"))?;
        if !s.holds() {
            bail!("{day}'s sources do not match its inventory and digests: {s}");
        }
        println!("{day}: {s}");
    }
    Ok(())
}

fn schema(args: SchemaArgs) -> Result<()> {
    use cloudtrail_aggregator::table::{athena_ddl, duckdb_columns, TableFormat};
    if args.duckdb {
        println!("{}", duckdb_columns());
        return Ok(());
    }
    let format = match OutputFormat::parse_name(&args.format) {
        Ok(OutputFormat::Parquet) => TableFormat::Parquet,
        _ => TableFormat::Ndjson,
    };
    let location = args.location.unwrap_or_else(|| {
        let bucket = std::env::var("DST_BUCKET").unwrap_or_else(|_| "DST_BUCKET".into());
        let prefix = std::env::var("DST_PREFIX")
            .unwrap_or_else(|_| cloudtrail_aggregator::config::DEFAULT_DST_PREFIX.into());
        format!("s3://{bucket}/{prefix}")
    });
    print!("{}", athena_ddl(format, &args.table, &location));
    Ok(())
}

/// The runtime: one thread for the I/O of a day of one shard (the stages' CPU work has
/// threads of its own); with shards in process, a worker per two of them.
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = match command {
        Command::Run(args) => args.shard_concurrency.unwrap_or(cores),
        _ => 1,
    };
    if shards <= 2 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(shards.div_ceil(2))
            .enable_all()
            .build()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(telemetry::Output::Cli);
    let rt = match runtime(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Backfill(args) => run_backfill(args).await,
            Command::Status(args) => status(args).await,
            Command::Verify(args) => verify(args).await,
            Command::Schema(args) => schema(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error: …` and then one line per cause, each its `Display`.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = format!("error: {e}");
    let mut shown = e.to_string();
    for cause in e.chain().skip(1) {
        let line = cause.to_string();
        // The SDK's errors often repeat their source in their own text.
        if shown.contains(&line) {
            continue;
        }
        text.push_str("\n  caused by: ");
        text.push_str(&line);
        shown = line;
    }
    text
}
