//! Shard: one shard of a day's plan, end to end but for the commit. Only wiring: each
//! stage's loop is in its module.
//!
//! ```text
//! source objects (the live listing, or the shard's keys file)
//!         ─▶ source: GETs in key order (≤ MAX_CONCURRENT_GETS running, a byte budget)
//!         ─▶ [thread 1] records: gunzip + JSON → (select: DAY_BY=event, DEDUP)
//!                        → blocks of NDJSON lines
//!         ─▶ [thread 2] chunks: gzip NDJSON or Parquet files, handed out in pieces
//!         ─▶ writer: PutObject or multipart upload per chunk
//! ```
//!
//! Every queue between the stages is bounded, so memory does not grow with the shard.
//! The order of records is the order of the source objects given and, within a file,
//! the order of its `Records` array, whatever the concurrency. Any failed read or write
//! fails the shard, and an upload under way is aborted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use futures::future::Either;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::chunks::{self, ChunkBuilder, Piece};
use crate::config::{Config, OutputFormat};
use crate::delivery_index::FolderEntry;
use crate::error::{Error, ShardLabel};
use crate::inventory::InventoryFile;
use crate::layout::{DayOutput, Naming};
use crate::listing::SourceObject;
use crate::manifest::ChunkEntry;
use crate::parquet_chunks::ParquetBuilder;
use crate::records::{self, FileDone, FileError, ReadStats, Record, RecordSink};
use crate::select::{SelectError, Selection, Selector};
use crate::source::{Fetched, Source};
use crate::trigger::Day;
use crate::validate::stage::{self, FileRow};
use crate::validate::{FilesRead, PublicKeys, Validation};
use crate::writer;

/// Size of the multipart upload parts of a chunk: S3's minimum, 5 MiB. At most two
/// are held: one uploading while the next fills.
pub const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;
/// Batches of fetched files waiting for the records stage.
const FILE_QUEUE: usize = 4;
/// Blocks of lines waiting for the chunks stage.
const LINES_QUEUE: usize = 4;

/// How far a shard got, shared by its stages and whoever feeds it its source objects
/// (for a deadline error).
#[derive(Debug, Default)]
pub struct Progress {
    /// Source objects handed to the shard so far.
    pub listed: AtomicU64,
    /// Whether `listed` is the shard's total.
    pub listing_complete: AtomicBool,
    /// Source files read to their end.
    pub done: AtomicU64,
}

/// Which shard of which day, and until when it may run.
#[derive(Debug, Clone)]
pub struct ShardRun<'a> {
    pub day: Day,
    pub naming: &'a Naming,
    pub label: ShardLabel,
    /// Stop with [`Error::Deadline`] instead of going on past this instant.
    pub deadline: Option<Instant>,
    /// Log folders (`…/CloudTrail/REGION/YYYY/MM/DD/`) whose digests `VALIDATE` checks
    /// even if no file of them is read: a day of one shard answers for every folder
    /// of the day, so that a folder emptied by deletion shows its files missing.
    pub folders: &'a [String],
}

impl ShardRun<'_> {
    /// Fails with [`Error::Deadline`] once the deadline has passed.
    pub fn check(&self, progress: &Progress) -> Result<(), Error> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(Error::Deadline {
                day: self.day.to_string(),
                shard: self.label.clone(),
                files_done: progress.done.load(Ordering::Relaxed),
                files_listed: progress.listed.load(Ordering::Relaxed),
                listing_complete: progress.listing_complete.load(Ordering::Relaxed),
            }),
            _ => Ok(()),
        }
    }
}

/// What one shard wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOutput {
    pub stats: ReadStats,
    /// What `DAY_BY=event` or `DEDUP` selected (`None` with the defaults).
    pub selection: Option<Selection>,
    /// The chunks written, in order.
    pub chunks: Vec<ChunkEntry>,
    /// What `VALIDATE` found (`None` when off).
    pub validation: Option<Validation>,
    /// The inventory written (with `VALIDATE`).
    pub inventory: Option<InventoryFile>,
    /// With `DAY_BY=event`: the shard's part of the day's delivery index.
    pub delivery_index: Option<Vec<FolderEntry>>,
    pub duration: Duration,
}

impl ShardOutput {
    /// Records written.
    pub fn records(&self) -> u64 {
        self.selection
            .as_ref()
            .map_or(self.stats.records, |s| s.records_written)
    }
}

/// The records stage's sink: the records the selector keeps (all, by default) as
/// blocks of lines for the chunks stage, and the count of files done for a deadline
/// error.
struct Sink<'a> {
    blocks: chunks::LineBlocks,
    /// Whether records come with their fields (for selection, or Parquet).
    fields: bool,
    done: &'a AtomicU64,
    select: Option<Selector>,
    /// The file being read, and why selection stopped the stage in it.
    key: String,
    refused: Option<SelectError>,
    /// Where each file read goes with its SHA-256, when validating.
    rows: Option<mpsc::UnboundedSender<FileRow>>,
    /// Records of the file being read that were kept.
    kept: u64,
}

impl RecordSink for Sink<'_> {
    fn wants_fields(&self) -> bool {
        self.fields
    }

    fn file_start(&mut self, key: &str) {
        self.kept = 0;
        if let Some(s) = &mut self.select {
            self.key.clear();
            self.key.push_str(key);
            s.file_start(key);
        }
    }

    fn record(&mut self, record: Record<'_>) -> bool {
        if let Some(s) = &mut self.select {
            match s.keep(&record) {
                Ok(true) => {}
                Ok(false) => return true,
                Err(e) => {
                    self.refused = Some(e);
                    return false;
                }
            }
        }
        self.kept += 1;
        self.blocks.record(record)
    }

    fn wants_sha256(&self) -> bool {
        self.rows.is_some()
    }

    fn file_done(&mut self, file: &FileDone<'_>) {
        if let Some(s) = &mut self.select {
            s.file_done(file.key, file.size, file.etag);
        }
        if let Some(rows) = &self.rows {
            // A closed receiver: the check stopped, and reports why.
            let _ = rows.send(FileRow::new(file, self.kept));
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = file.key, records = file.records, "file aggregated");
    }
}

/// What selection did, at info; a warning when the next day's folders held nothing
/// yet (its late events are then missing until the day is aggregated again).
pub fn log_selection(day: Day, sel: &Selection) {
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
    let skipped = sel.next_index.as_ref().map_or(0, |u| u.files_skipped);
    if let [_, next] = sel.folders.as_slice() {
        // Files spared by the next day's index were there, and held no event of the day.
        if next.files == 0 && skipped == 0 {
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

/// The chunks stage's builder for `cfg`'s format.
fn builder(cfg: &Config) -> Box<dyn chunks::Build> {
    match cfg.output_format {
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
    }
}

/// What the records stage read and selected, and its part of the delivery index.
type Selected = (ReadStats, Option<Selection>, Option<Vec<FolderEntry>>);

/// The records stage, on a thread of its own: the files from `file_rx` read into
/// `blocks`, each file's row sent on `rows` when validating.
fn records_stage(
    cfg: &Config,
    day: Day,
    progress: &Arc<Progress>,
    mut file_rx: mpsc::Receiver<Vec<Fetched>>,
    blocks: chunks::LineBlocks,
    rows: Option<mpsc::UnboundedSender<FileRow>>,
) -> tokio::task::JoinHandle<Result<Selected, Error>> {
    let (progress, bucket, limits) = (progress.clone(), cfg.src_bucket.clone(), cfg.limits);
    let format = cfg.output_format;
    let select = Selector::needed(cfg.day_by, cfg.dedup)
        .then(|| Selector::new(day, cfg.day_by, cfg.dedup, cfg.dedup_max_events));
    tokio::task::spawn_blocking(move || {
        let files = std::iter::from_fn(|| file_rx.blocking_recv())
            .flatten()
            .map(Fetched::into_file);
        let mut sink = Sink {
            fields: select.is_some() || format == OutputFormat::Parquet,
            blocks,
            done: &progress.done,
            select,
            key: String::new(),
            refused: None,
            rows,
            kept: 0,
        };
        let stats =
            records::read_files(files, limits, &mut sink).map_err(|e| file_error(&bucket, e))?;
        if let Some(source) = sink.refused {
            return Err(Error::Select {
                bucket,
                key: sink.key,
                source,
            });
        }
        sink.blocks.finish();
        let (selection, index) = sink.select.map(Selector::finish).unzip();
        Ok((stats.unwrap_or_default(), selection, index.flatten()))
    })
}

/// Runs one shard over `objects` (in the order given), writing its chunks. Whoever
/// feeds `objects` counts them in `progress.listed` and sets `listing_complete` at
/// their end; an error among them stops the shard with that error.
pub async fn run(
    s3: &Client,
    cfg: &Config,
    shard: ShardRun<'_>,
    objects: impl Stream<Item = Result<SourceObject, Error>>,
    progress: Arc<Progress>,
) -> Result<ShardOutput, Error> {
    let started = Instant::now();
    let (src_bucket, dst_bucket) = (cfg.src_bucket.as_str(), cfg.dst_bucket.as_str());
    let day = shard.day;
    let check_deadline = || shard.check(&progress);
    check_deadline()?;

    let (file_tx, file_rx) = mpsc::channel::<Vec<Fetched>>(FILE_QUEUE);
    let (blocks, blocks_rx) = chunks::line_blocks(LINES_QUEUE);
    let (piece_tx, piece_rx) = mpsc::channel::<Piece>(1);

    let validating = !cfg.validate.is_off();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let (rows_tx, rows_rx) = mpsc::unbounded_channel();
    // Only when validating: otherwise the objects pass as they are.
    let objects = match validating {
        true => Either::Left(stage::tee_folders(objects, seen_tx)),
        false => Either::Right(objects),
    };
    let rows = validating.then(|| rows_tx.clone());
    let src = Source::new(s3, src_bucket);
    let fetcher = async {
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

    let records_stage = records_stage(cfg, day, &progress, file_rx, blocks, rows);
    let output = DayOutput {
        bucket: dst_bucket,
        dst_prefix: &cfg.dst_prefix,
        day,
        naming: shard.naming,
        format: cfg.output_format,
    };
    let chunks_stage = {
        let mut builder = builder(cfg);
        let (bucket, naming, dst_prefix) = (
            cfg.dst_bucket.clone(),
            shard.naming.clone(),
            cfg.dst_prefix.clone(),
        );
        let format = cfg.output_format;
        tokio::task::spawn_blocking(move || {
            let hand_out = |p| piece_tx.blocking_send(p).is_ok();
            let compressed = chunks::compress(blocks_rx, builder.as_mut(), hand_out);
            compressed.map_err(|source| Error::Compress {
                bucket,
                key: crate::layout::chunk_key(
                    &dst_prefix,
                    day,
                    &naming,
                    builder.chunks_closed(),
                    format,
                ),
                source,
            })
        })
    };
    let records_stage = async {
        let read = joined("records stage", records_stage.await);
        // Only a records stage that succeeded tells the check every file is in.
        drop(rows_tx);
        read
    };
    let chunks_stage = async { joined("chunks stage", chunks_stage.await) };
    // The chunk's open multipart upload is kept out here: when a stage fails,
    // `try_join!` drops the others, and the upload is aborted below.
    let mut open_upload = None;
    let writer_stage =
        writer::upload_chunks(s3, output, piece_rx, check_deadline, &mut open_upload);
    // On the first error the other stages are dropped, closing their channels: each
    // thread stops at its next hand-over.
    let validation = async {
        match validating {
            true => validation_stage(s3, cfg, &shard, seen_rx, rows_rx, check_deadline).await,
            false => Ok(None),
        }
    };
    // The check goes last: when the records stage fails, `try_join!` returns its
    // error before the check sees the files end.
    let joined = tokio::try_join!(
        fetcher,
        records_stage,
        chunks_stage,
        writer_stage,
        validation
    );
    let ((), (stats, selection, delivery_index), (), chunks, checked) = match joined {
        Ok(done) => done,
        Err(e) => {
            if let Some(mp) = open_upload.take() {
                mp.abort(s3).await;
            }
            return Err(e);
        }
    };
    let total = progress.listed.load(Ordering::Relaxed);
    if stats.files != total {
        // Only reachable if a stage stopped early without an error of its own.
        return Err(Error::Internal {
            stage: "shard",
            detail: format!("{} of {total} files were aggregated", stats.files),
        });
    }
    let (validation, inventory) = match checked {
        Some((v, read)) => {
            let key = crate::layout::inventory_key(&cfg.dst_prefix, day, shard.naming);
            let i = write_inventory(s3, dst_bucket, key, &read, &chunks).await?;
            (Some(v), Some(i))
        }
        None => (None, None),
    };
    check_deadline()?;
    Ok(ShardOutput {
        stats,
        selection,
        chunks,
        validation,
        inventory,
        delivery_index,
        duration: started.elapsed(),
    })
}

/// `VALIDATE`'s stage ([`stage`]), beside the others: the digests of the files
/// `seen` fetched, and checked against the `rows` read.
async fn validation_stage(
    s3: &Client,
    cfg: &Config,
    shard: &ShardRun<'_>,
    seen: mpsc::UnboundedReceiver<String>,
    rows: mpsc::UnboundedReceiver<FileRow>,
    deadline: impl Fn() -> Result<(), Error>,
) -> Result<Option<(Validation, FilesRead)>, Error> {
    let mut keys = PublicKeys::new(&cfg.cloudtrail, shard.day).await;
    let input = stage::Inputs {
        s3,
        bucket: &cfg.src_bucket,
        folders: shard.folders,
        seen,
        rows,
        concurrency: (cfg.max_concurrent_lists, cfg.max_concurrent_gets),
    };
    stage::run(input, &mut keys, deadline).await.map(Some)
}

/// Writes the shard's inventory ([`crate::inventory`]) at `key`.
async fn write_inventory(
    s3: &Client,
    bucket: &str,
    key: String,
    read: &FilesRead,
    chunks: &[ChunkEntry],
) -> Result<InventoryFile, Error> {
    let bytes = crate::inventory::render(read, chunks);
    let entry = InventoryFile {
        files: read.len() as u64,
        bytes: bytes.len() as u64,
        sha256: crate::digest::sha256_hex(&bytes),
        key,
    };
    let body = aws_sdk_s3::primitives::ByteStream::from(bytes);
    writer::put(s3, bucket, &entry.key, body, "application/gzip").await?;
    info!(key = %format!("s3://{bucket}/{}", entry.key), files = entry.files, "inventory written");
    Ok(entry)
}

/// `objects` counted into `progress` as they pass, and `listing_complete` set at
/// their end.
pub fn counted<'a>(
    objects: impl Stream<Item = Result<SourceObject, Error>> + 'a,
    progress: Arc<Progress>,
) -> impl Stream<Item = Result<SourceObject, Error>> + 'a {
    let end = progress.clone();
    objects
        .inspect(move |o| {
            if o.is_ok() {
                progress.listed.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map(Some)
        .chain(futures::stream::once(async move {
            end.listing_complete.store(true, Ordering::Relaxed);
            None
        }))
        .filter_map(futures::future::ready)
}
