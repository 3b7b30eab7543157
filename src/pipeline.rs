//! Pipeline: one day, end to end. Only wiring: each stage's loop is in its module.
//!
//! ```text
//! listing ─▶ source: GETs in key order (≤ MAX_CONCURRENT_GETS running, a byte budget)
//!         ─▶ [thread 1] records: gunzip + JSON → (select: DAY_BY=event, DEDUP)
//!                        → blocks of NDJSON lines
//!         ─▶ [thread 2] chunks: gzip NDJSON or Parquet files, handed out in pieces
//!         ─▶ writer: PutObject or multipart upload per chunk
//!         ─▶ stale-chunk cleanup ─▶ _manifest.json
//! ```
//!
//! Every queue between the stages is bounded, so memory does not grow with the day.
//! The order of records is the order of the sorted source keys and, within a file,
//! the order of its `Records` array, whatever the concurrency. Any failed read or write
//! fails the day; the manifest, which marks a day complete, is then absent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::chunks::{self, ChunkBuilder, Piece};
use crate::config::{Config, OutputFormat};
use crate::error::Error;
use crate::lease::{self, Lease, LEASE_WITHOUT_DEADLINE};
use crate::listing;
use crate::parquet_chunks::ParquetBuilder;
use crate::records::{self, FileError, ReadStats, RecordSink};
use crate::select::{self, SelectError, Selection, Selector};
use crate::source::{Fetched, Source};
use crate::trigger::Day;
use crate::writer::{self, Manifest};

/// Size of the multipart upload parts of a chunk: S3's minimum, 5 MiB. At most two
/// are held: one uploading while the next fills.
pub const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;
/// Batches of fetched files waiting for the records stage.
const FILE_QUEUE: usize = 4;
/// Blocks of lines waiting for the chunks stage.
const LINES_QUEUE: usize = 4;

/// Options of one run that are not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop with [`Error::Deadline`] instead of going on past this instant (the
    /// Lambda's deadline less a safety margin).
    pub deadline: Option<Instant>,
}

/// The outcome of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub day: Day,
    pub manifest_key: String,
    pub manifest: Manifest,
    pub stale_chunks_deleted: Vec<String>,
    pub duration: Duration,
}

/// How far a run got, shared by its stages (for a deadline error).
#[derive(Debug, Default)]
struct Progress {
    listed: AtomicU64,
    listing_complete: AtomicBool,
    done: AtomicU64,
}

impl Progress {
    fn check(&self, day: Day, deadline: Option<Instant>) -> Result<(), Error> {
        match deadline {
            Some(d) if Instant::now() >= d => Err(Error::Deadline {
                day: day.to_string(),
                files_done: self.done.load(Ordering::Relaxed),
                files_listed: self.listed.load(Ordering::Relaxed),
                listing_complete: self.listing_complete.load(Ordering::Relaxed),
            }),
            _ => Ok(()),
        }
    }
}

/// The records stage's sink: the records the selector keeps (all, by default) as
/// blocks of lines for the chunks stage, and the count of files done for a deadline
/// error.
struct Sink<'a> {
    blocks: chunks::LineBlocks,
    done: &'a AtomicU64,
    select: Option<Selector>,
    /// The file being read, and why selection stopped the stage in it.
    key: String,
    refused: Option<SelectError>,
}

impl RecordSink for Sink<'_> {
    fn file_start(&mut self, key: &str) {
        if let Some(s) = &mut self.select {
            self.key.clear();
            self.key.push_str(key);
            s.file_start(key);
        }
    }

    fn record(&mut self, record: &[u8]) -> bool {
        if let Some(s) = &mut self.select {
            match s.keep(record) {
                Ok(true) => {}
                Ok(false) => return true,
                Err(e) => {
                    self.refused = Some(e);
                    return false;
                }
            }
        }
        self.blocks.record(record)
    }

    fn file_done(&mut self, key: &str, records: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key, records, "file aggregated");
    }
}

/// What selection did, at info; a warning when the next day's folders held nothing
/// yet (its late events are then missing until the day is aggregated again).
fn log_selection(day: Day, sel: &Selection) {
    for f in &sel.folders {
        info!(day = %day, folder = %f.day, files = f.files, records = f.records, "delivery folder read");
    }
    info!(
        day = %day,
        day_by = %sel.day_by,
        dedup = %sel.dedup,
        records_read = sel.records_read,
        records_written = sel.records_written,
        other_days = sel.other_days,
        in_no_day = sel.in_no_day,
        duplicates = sel.duplicates,
        "records selected"
    );
    if let [_, next] = sel.folders.as_slice() {
        if next.files == 0 {
            warn!(day = %day, folder = %next.day, "the next day's delivery folders hold no files yet: events of this day delivered after midnight are missing until it is aggregated again");
        }
    }
}

fn file_error(bucket: &str, e: FileError) -> Error {
    match e {
        FileError::Records { key, source } => Error::Records {
            bucket: bucket.to_string(),
            key,
            source,
        },
        FileError::Read { key, source } => {
            Error::s3_read("GetObject (reading the body)", bucket, &key, &source)
        }
        FileError::Size { key, read, listed } => {
            let detail = format!("read {read} bytes, but the listing said {listed}");
            Error::s3_detail("GetObject (reading the body)", bucket, &key, detail)
        }
    }
}

fn joined<T>(
    stage: &'static str,
    r: Result<Result<T, Error>, tokio::task::JoinError>,
) -> Result<T, Error> {
    r.map_err(|e| Error::Internal {
        stage,
        detail: e.to_string(),
    })?
}

/// Aggregates one day: lists, takes the day's lease, reads, writes the chunks, removes
/// stale ones, writes the manifest and releases the lease. Fails on the first failed
/// read or write, and when another run holds the day.
pub async fn aggregate_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    opts: RunOptions,
) -> Result<Summary, Error> {
    let started = Instant::now();
    let (src_bucket, dst_bucket) = (cfg.src_bucket.as_str(), cfg.dst_bucket.as_str());
    let lists = cfg.max_concurrent_lists;
    let days = select::folders_read(day, cfg.day_by);
    let folders = listing::day_folders(s3, src_bucket, &cfg.src_prefix, &days, lists).await?;
    if folders.accounts == 0 {
        return Err(Error::NoAccounts {
            bucket: cfg.src_bucket.clone(),
            prefix: cfg.src_prefix.clone(),
        });
    }
    info!(day = %day, accounts = folders.accounts, regions = folders.prefixes.len(), source = %format!("s3://{src_bucket}/{}", cfg.src_prefix), "day folders found");
    Progress::default().check(day, opts.deadline)?;
    let held_for = match opts.deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => LEASE_WITHOUT_DEADLINE,
    };
    let expires = chrono::Utc::now() + held_for;
    let run = lease::run_id();
    let lease = Lease::acquire(s3, dst_bucket, &cfg.dst_prefix, day, &run, expires).await?;
    let result = run_day(s3, cfg, day, opts, folders, &lease, started).await;
    lease.release(s3).await;
    result
}

/// [`aggregate_day`] once the lease is held.
async fn run_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    opts: RunOptions,
    folders: listing::DayFolders,
    lease: &Lease,
    started: Instant,
) -> Result<Summary, Error> {
    let (src_bucket, dst_bucket) = (cfg.src_bucket.as_str(), cfg.dst_bucket.as_str());
    let lists = cfg.max_concurrent_lists;
    let (accounts, regions) = (folders.accounts, folders.prefixes.len());
    let source = format!("s3://{src_bucket}/{}", cfg.src_prefix);

    let progress = Arc::new(Progress::default());
    let check_deadline = || progress.check(day, opts.deadline);

    // The day is incomplete from now until the new manifest is written.
    let manifest_key = writer::manifest_key(&cfg.dst_prefix, day);
    writer::delete(s3, dst_bucket, &manifest_key).await?;

    let (file_tx, mut file_rx) = mpsc::channel::<Vec<Fetched>>(FILE_QUEUE);
    let (blocks, blocks_rx) = chunks::line_blocks(LINES_QUEUE);
    let (piece_tx, piece_rx) = mpsc::channel::<Piece>(1);

    let src = Source::new(s3, src_bucket);
    let fetcher = async {
        let objects = listing::day_objects(s3, src_bucket, folders.prefixes, lists)
            .map_ok(|objects| {
                let n = objects.len() as u64;
                progress.listed.fetch_add(n, Ordering::Relaxed);
                futures::stream::iter(objects).map(Ok)
            })
            .try_flatten()
            .map(Some)
            .chain(futures::stream::once(async {
                progress.listing_complete.store(true, Ordering::Relaxed);
                let files = progress.listed.load(Ordering::Relaxed);
                info!(day = %day, files, "files found");
                None
            }))
            .filter_map(futures::future::ready);
        // The files ready at once go to the records stage together: one wake-up of
        // its thread instead of one per file.
        let fetched = src
            .fetch_in_order(objects, cfg.max_concurrent_gets)
            .ready_chunks(cfg.max_concurrent_gets);
        let mut fetched = std::pin::pin!(fetched);
        while let Some(batch) = fetched.next().await {
            let batch = batch.into_iter().collect::<Result<Vec<_>, _>>()?;
            check_deadline()?;
            if file_tx.send(batch).await.is_err() {
                break; // the records stage stopped and reports why
            }
        }
        drop(file_tx);
        Ok::<(), Error>(())
    };

    let records_stage = {
        let (progress, bucket, limits) = (progress.clone(), cfg.src_bucket.clone(), cfg.limits);
        let select = Selector::needed(cfg.day_by, cfg.dedup)
            .then(|| Selector::new(day, cfg.day_by, cfg.dedup, cfg.dedup_max_events));
        tokio::task::spawn_blocking(move || {
            let files = std::iter::from_fn(|| file_rx.blocking_recv())
                .flatten()
                .map(Fetched::into_file);
            let mut sink = Sink {
                blocks,
                done: &progress.done,
                select,
                key: String::new(),
                refused: None,
            };
            let stats = records::read_files(files, limits, &mut sink)
                .map_err(|e| file_error(&bucket, e))?;
            if let Some(source) = sink.refused {
                return Err(Error::Select {
                    bucket,
                    key: sink.key,
                    source,
                });
            }
            sink.blocks.finish();
            let selection = sink.select.map(Selector::finish);
            Ok((stats.unwrap_or_default(), selection))
        })
    };
    let format = cfg.output_format;
    let chunks_stage = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut builder: Box<dyn chunks::Build> = match format {
                OutputFormat::Ndjson => Box::new(ChunkBuilder::new(
                    cfg.chunk_size_bytes,
                    cfg.gzip_level,
                    UPLOAD_PART_BYTES,
                )),
                OutputFormat::Parquet => Box::new(ParquetBuilder::new(
                    cfg.parquet_file_bytes,
                    cfg.parquet_row_group_bytes,
                    UPLOAD_PART_BYTES,
                )),
            };
            let hand_out = |p| piece_tx.blocking_send(p).is_ok();
            let compressed = chunks::compress(blocks_rx, builder.as_mut(), hand_out);
            compressed.map_err(|source| Error::Compress {
                bucket: cfg.dst_bucket.clone(),
                key: writer::chunk_key(&cfg.dst_prefix, day, builder.chunks_closed(), format),
                source,
            })
        })
    };
    let records_stage = async { joined("records stage", records_stage.await) };
    let chunks_stage = async { joined("chunks stage", chunks_stage.await) };
    // The chunk's open multipart upload is kept out here: when a stage fails,
    // `try_join!` drops the others, and the upload is aborted below.
    let mut open_upload = None;
    let output = writer::DayOutput {
        bucket: dst_bucket,
        dst_prefix: &cfg.dst_prefix,
        day,
        format,
    };
    let writer_stage =
        writer::upload_chunks(s3, output, piece_rx, check_deadline, &mut open_upload);
    // On the first error the other stages are dropped, closing their channels: each
    // thread stops at its next hand-over.
    let joined = tokio::try_join!(fetcher, records_stage, chunks_stage, writer_stage);
    let ((), (stats, selection), (), entries): ((), (ReadStats, Option<Selection>), (), _) =
        match joined {
            Ok(done) => done,
            Err(e) => {
                if let Some(mp) = open_upload.take() {
                    mp.abort(s3).await;
                }
                return Err(e);
            }
        };
    if let Some(sel) = &selection {
        log_selection(day, sel);
    }

    let total = progress.listed.load(Ordering::Relaxed);
    if total == 0 {
        warn!(day = %day, accounts, regions, source = %source, "no CloudTrail files for this day");
    }
    if stats.files != total {
        // Only reachable if a stage stopped early without an error of its own.
        return Err(Error::Internal {
            stage: "pipeline",
            detail: format!("{} of {total} files were aggregated", stats.files),
        });
    }
    check_deadline()?;
    // The writes that finish the day, only while the day is still this run's.
    lease.check(s3).await?;

    let keep = entries.len() as u32;
    let stale =
        writer::delete_stale_chunks(s3, dst_bucket, &cfg.dst_prefix, day, keep, format).await?;
    for key in &stale {
        info!(key = %format!("s3://{dst_bucket}/{key}"), "stale chunk from an earlier run deleted");
    }
    let manifest = Manifest {
        date: day.to_string(),
        format,
        source,
        source_files: stats.files,
        records: selection
            .as_ref()
            .map_or(stats.records, |s| s.records_written),
        bytes_read: stats.bytes_read,
        bytes_written: entries.iter().map(|e| e.bytes).sum(),
        uncompressed_bytes_written: entries.iter().map(|e| e.uncompressed_bytes).sum(),
        chunks: entries,
        selection,
        generator: concat!("cloudtrail-aggregator ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    writer::put_manifest(s3, dst_bucket, &manifest_key, &manifest).await?;
    let duration = started.elapsed();
    info!(
        day = %day,
        files = manifest.source_files,
        records = manifest.records,
        chunks = manifest.chunks.len(),
        bytes_read = manifest.bytes_read,
        bytes_written = manifest.bytes_written,
        duration_ms = duration.as_millis() as u64,
        manifest = %format!("s3://{dst_bucket}/{manifest_key}"),
        "day aggregated"
    );
    Ok(Summary {
        day,
        manifest_key,
        manifest,
        stale_chunks_deleted: stale,
        duration,
    })
}
