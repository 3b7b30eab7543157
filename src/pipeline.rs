//! Pipeline: one day, end to end. Wires the stages with bounded queues:
//!
//! ```text
//! listing ─▶ GETs: ≤ max_concurrent_gets running, ≤ FETCH_BUDGET bytes held, key order
//!                  (≤ GET_WINDOW × max_concurrent_gets started past the oldest one
//!                  not yet handed on)
//!         ─▶ [thread 1] gunzip + record scan → blocks of NDJSON lines
//!         ─▶ [thread 2] gzip into chunks, handed out in UPLOAD_PART_BYTES pieces,
//!                       each written to a spool file ([`crate::spool`])
//!         ─▶ uploads: PutObject, or a multipart upload started with a chunk's first full
//!            part; one piece uploading while the next fills
//!         ─▶ stale-chunk cleanup ─▶ _manifest.json
//! ```
//!
//! Memory does not grow with the day: objects up to `STREAM_THRESHOLD` (512 KiB) are
//! fetched whole within a byte budget, larger ones are streamed through the record
//! scanner as they arrive, and a chunk is uploaded in parts as it is compressed, each
//! part spooled to a file rather than held in memory.
//!
//! The order of records is the order of the sorted source keys and, within a file,
//! the order of its `Records` array, whatever the concurrency: GETs complete out of
//! order but are consumed in order ([`crate::ordered`]). Any failed read or write fails the
//! day; the manifest, which marks a day complete, is then absent.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::future::FusedFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::chunks::{ChunkBuilder, ChunkInfo, Lines, Piece};
use crate::config::Config;
use crate::error::Error;
use crate::fetch::{LeanUse, Source, Streamed};
use crate::listing::{self, SourceObject};
use crate::records;
use crate::spool::{Spool, Spooled};
use crate::trigger::Day;
use crate::writer::{self, ChunkEntry, Manifest};

/// Objects larger than this are streamed through the record scanner as they arrive
/// rather than fetched whole. A streamed object waiting for its turn holds its
/// connection and what the connection has buffered (TCP's receive window, not the
/// object), where a fetched one holds all its bytes: on a day of a busy account's ~1 MB
/// files, 4 MiB here let them fill the fetch budget, 28–29 MiB of peak RSS, and 512 KiB
/// 20 MiB, the small day's, at the same CPU and wall time (BENCHMARKS.md). Smaller
/// objects go whole, by the lean GET path ([`crate::fetch`]), as a stream costs an SDK
/// call. A stream whose connection is lost mid-body reads on from where it broke off
/// ([`crate::fetch::Streamed`]).
pub const STREAM_THRESHOLD: u64 = 512 * 1024;
/// Bytes of source objects fetched ahead of the scanner (a GET's permit is taken before
/// it starts and released when the scanner is done with the object): a fetched object
/// counts its size — it is held in an allocation of its own, see
/// [`crate::fetch::Source::get`] — and a streamed one `STREAM_THRESHOLD`, so at most 16
/// streams wait at once. 8 MiB at ~25 ms per GET is ~300 MB/s of fetching, and covers a
/// GET ~0.5 s late at the ~15 MB/s of gzip the scanner reads; it binds on days of
/// objects of hundreds of KB, which it can add to the peak RSS (with objects fetched
/// whole up to 4 MiB, the busy day's ~1 MB files peaked at 50 MiB with 16 MiB here,
/// 33–34 MiB with 8, and 4 MiB was 6 % slower at 25 ms).
pub const FETCH_BUDGET: u64 = 8 * 1024 * 1024;
/// Size of the multipart upload parts of a chunk: S3's minimum, 5 MiB (a part is
/// spooled to a file while it fills and while it is uploaded: it costs disk, not memory,
/// but fewer, larger parts would make a failed part's retry longer).
pub const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;
/// Size of the blocks of NDJSON lines passed from the scanner to the compressor (and
/// handed back empty for reuse).
const LINES_BLOCK: usize = 256 * 1024;
/// How many GETs, in multiples of `max_concurrent_gets`, may be started past the
/// oldest file not yet handed to the scanner. At 25 ms per GET, 16 × 128 covers a GET ~400 ms late.
const GET_WINDOW: usize = 16;
/// Batches of fetched files waiting for the scanner, beyond those in flight.
const FILE_QUEUE: usize = 4;
/// Blocks of lines waiting for the compressor.
const LINES_QUEUE: usize = 4;
/// Compressed pieces waiting for the uploader.
const PIECE_QUEUE: usize = 1;

/// How far a run got, shared by its stages (for a deadline error).
#[derive(Debug, Default)]
struct Progress {
    /// Source objects listed so far.
    listed: AtomicU64,
    /// Whether every folder of the day has been listed.
    listing_complete: AtomicBool,
    /// Source files read to the end.
    done: AtomicU64,
}

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
    /// The requests the lean path sent (see [`crate::fetch`]).
    pub lean: LeanUse,
}

/// A source object's body: whole, or a stream still being received.
enum Body {
    Whole(Bytes),
    Stream(Streamed),
}

/// One fetched source object; its budget permit is released when it is dropped.
struct Fetched {
    key: String,
    size: u64,
    body: Body,
    _permit: OwnedSemaphorePermit,
}

async fn fetch(
    source: &Source,
    object: SourceObject,
    permit: OwnedSemaphorePermit,
) -> Result<Fetched, Error> {
    let key = object.key;
    let body = if object.size > STREAM_THRESHOLD {
        debug!(key = %key, bytes = object.size, "object streaming");
        Body::Stream(source.stream_resuming(&key, object.size).await?)
    } else {
        let bytes = source.get(&key).await?;
        debug!(key = %key, bytes = bytes.len(), "object read");
        Body::Whole(bytes)
    };
    Ok(Fetched {
        key,
        size: object.size,
        body,
        _permit: permit,
    })
}

/// Counts the bytes read through it, and keeps the first error of the source itself,
/// so that a lost connection is reported as a failed read, not as whatever the gzip
/// decoder made of it.
struct Counting<R> {
    inner: R,
    count: u64,
    failure: Option<String>,
}

impl<R: Read> Counting<R> {
    fn new(inner: R) -> Self {
        Counting {
            inner,
            count: 0,
            failure: None,
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.failure.get_or_insert_with(|| {
                        aws_sdk_s3::error::DisplayErrorContext(&e).to_string()
                    });
                }
                Err(e)
            }
        }
    }
}

/// Totals of the records stage.
#[derive(Debug, Default)]
struct ReadStats {
    files: u64,
    records: u64,
    bytes_read: u64,
}

/// Thread 1: reads every fetched file in order and packs its records into blocks of
/// lines. Stops quietly when the next stage has gone (it reports its own error).
fn scan_files(
    cfg: &Config,
    mut files: mpsc::Receiver<Vec<Fetched>>,
    lines_tx: mpsc::Sender<Lines>,
    spare: std::sync::mpsc::Receiver<Lines>,
    files_done: &AtomicU64,
) -> Result<ReadStats, Error> {
    let blocks = Blocks {
        tx: lines_tx,
        spare,
    };
    let mut stats = ReadStats::default();
    let mut lines = blocks.next();
    let records_err = |key: &str, source| Error::Records {
        bucket: cfg.src_bucket.clone(),
        key: key.to_string(),
        source,
    };
    // Read buffers passed from one file's reader to the next.
    let mut bufs = records::Buffers::default();
    for file in std::iter::from_fn(|| files.blocking_recv()).flatten() {
        let records_before = stats.records;
        let (more, read) = match file.body {
            Body::Whole(ref bytes) => {
                let mut reader = records::open_slice_with(bytes, std::mem::take(&mut bufs));
                let more = pump(&mut reader, &mut lines, &blocks, &mut stats.records)
                    .map_err(|e| records_err(&file.key, e))?;
                bufs = reader.into_buffers();
                (more, bytes.len() as u64)
            }
            Body::Stream(stream) => {
                let mut counted = Counting::new(tokio_util::io::SyncIoBridge::new(stream));
                let read_err = |detail: String| Error::S3 {
                    operation: "GetObject (reading the body)",
                    bucket: cfg.src_bucket.clone(),
                    key: file.key.clone(),
                    detail,
                };
                let mut reader = records::open_with(&mut counted, std::mem::take(&mut bufs))
                    .map_err(|e| read_err(e.to_string()))?;
                let pumped = pump(&mut reader, &mut lines, &blocks, &mut stats.records);
                bufs = reader.into_buffers();
                let more = match (pumped, counted.failure.take()) {
                    (Ok(more), _) => more,
                    // The body's own read failed (connection lost, timeout).
                    (Err(_), Some(failure)) => return Err(read_err(failure)),
                    (Err(e), None) => return Err(records_err(&file.key, e)),
                };
                if more && counted.count != file.size {
                    return Err(read_err(format!(
                        "read {} bytes, but the listing said {}",
                        counted.count, file.size
                    )));
                }
                (more, counted.count)
            }
        };
        if !more {
            return Ok(stats);
        }
        stats.files += 1;
        stats.bytes_read += read;
        files_done.fetch_add(1, Ordering::Relaxed);
        debug!(key = %file.key, records = stats.records - records_before, "file aggregated");
    }
    if !lines.is_empty() {
        let _ = blocks.tx.blocking_send(lines);
    }
    Ok(stats)
}

/// The scanner's side of the blocks of lines: full ones go to the compressor, which
/// hands them back empty, so a run allocates a handful of blocks, not one per 256 KiB.
struct Blocks {
    tx: mpsc::Sender<Lines>,
    spare: std::sync::mpsc::Receiver<Lines>,
}

impl Blocks {
    /// An empty block with room for a full block and the record that ends it.
    fn next(&self) -> Lines {
        match self.spare.try_recv() {
            Ok(mut lines) => {
                lines.clear();
                lines
            }
            Err(_) => Lines::with_capacity(LINES_BLOCK + 64 * 1024),
        }
    }
}

/// Moves a file's records into blocks of lines, sending each full block on;
/// `Ok(false)` when the next stage has gone.
fn pump<R: Read>(
    reader: &mut records::RecordReader<R>,
    lines: &mut Lines,
    blocks: &Blocks,
    records: &mut u64,
) -> Result<bool, records::RecordsError> {
    while let Some(record) = reader.next_record()? {
        lines.push(record);
        *records += 1;
        if lines.data.len() >= LINES_BLOCK {
            let full = std::mem::replace(lines, blocks.next());
            if blocks.tx.blocking_send(full).is_err() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A piece on its way to the uploader, with the upload slot it holds (data pieces).
type Handed = (Piece<Spooled>, Option<OwnedSemaphorePermit>);

/// Thread 2: compresses the lines into chunks, handing out pieces as they fill.
///
/// Spool space: a data piece waits for the upload slot (`slots`, one permit) before it
/// is handed out, and the uploader frees the slot once the piece is stored: at most one
/// piece is uploading while the next fills (two spool files), and if uploads are slower
/// than compression the compressor waits instead of queueing more. (Waiting for every
/// full part's upload before filling the next saved no measurable memory in the
/// benchmark — the next part is barely written while one uploads — and cost ~6 % wall
/// time at 25 ms per request.)
fn compress_chunks(
    cfg: &Config,
    day: Day,
    mut lines_rx: mpsc::Receiver<Lines>,
    spare: std::sync::mpsc::SyncSender<Lines>,
    pieces_tx: mpsc::Sender<Handed>,
    slots: Arc<Semaphore>,
) -> Result<(), Error> {
    let mut builder = ChunkBuilder::with_parts(
        cfg.chunk_size_bytes,
        cfg.gzip_level,
        UPLOAD_PART_BYTES,
        Spool::new(&cfg.spool_dir),
    );
    let compress_err = |builder: &ChunkBuilder<Spool>, source| Error::Compress {
        bucket: cfg.dst_bucket.clone(),
        key: writer::chunk_key(&cfg.dst_prefix, day, builder.chunks_closed()),
        source,
    };
    // `false` when the uploader has gone (it reports its own error).
    let hand_out = |builder: &mut ChunkBuilder<Spool>| {
        for piece in builder.pieces() {
            let held = match piece {
                Piece::Data { .. } => Some(
                    futures::executor::block_on(slots.clone().acquire_owned())
                        .expect("the upload slot is never closed"),
                ),
                Piece::End(_) => None,
            };
            if pieces_tx.blocking_send((piece, held)).is_err() {
                return false;
            }
        }
        true
    };
    while let Some(lines) = lines_rx.blocking_recv() {
        builder
            .push_lines(&lines)
            .map_err(|e| compress_err(&builder, e))?;
        // Back to the scanner for reuse, unless a huge record made it grow.
        if lines.data.capacity() <= 2 * LINES_BLOCK {
            let _ = spare.try_send(lines);
        }
        if !hand_out(&mut builder) {
            return Ok(());
        }
    }
    builder.finish().map_err(|e| compress_err(&builder, e))?;
    hand_out(&mut builder);
    Ok(())
}

/// Receives pieces and uploads each chunk: PutObject when it came in one piece, a
/// multipart upload otherwise, started with the first full part. Returns the manifest
/// entries in chunk order.
async fn upload_chunks(
    s3: &Client,
    cfg: &Config,
    day: Day,
    mut pieces: mpsc::Receiver<Handed>,
    check_deadline: impl Fn() -> Result<(), Error>,
    multipart: &mut Option<writer::Multipart>,
) -> Result<Vec<ChunkEntry>, Error> {
    let mut entries = Vec::new();
    // A chunk's only piece, put whole at its end.
    let mut whole: Option<Spooled> = None;
    // The upload slot is freed when `_slot` drops, after the piece is stored; the piece's
    // file is deleted when `bytes` (or `whole`) drops.
    while let Some((piece, _slot)) = pieces.recv().await {
        check_deadline()?;
        match piece {
            Piece::Data { bytes, last, .. } if last && multipart.is_none() => whole = Some(bytes),
            Piece::Data { index, bytes, .. } => {
                let part = spooled_body(&bytes, cfg, day, index).await?;
                let mp = match multipart {
                    Some(mp) => mp,
                    None => {
                        let key = writer::chunk_key(&cfg.dst_prefix, day, index);
                        multipart.insert(writer::Multipart::start(s3, &cfg.dst_bucket, &key).await?)
                    }
                };
                mp.upload_part(s3, part).await?;
            }
            Piece::End(info) => {
                let key = writer::chunk_key(&cfg.dst_prefix, day, info.index);
                match multipart.take() {
                    Some(mp) => mp.complete(s3).await?,
                    None => {
                        // `piece` (its file) lives until the object is stored.
                        let piece = whole.take();
                        let object = match &piece {
                            Some(piece) => spooled_body(piece, cfg, day, info.index).await?,
                            None => ByteStream::from_static(b""),
                        };
                        writer::put(
                            s3,
                            &cfg.dst_bucket,
                            &key,
                            object,
                            writer::CHUNK_CONTENT_TYPE,
                        )
                        .await?
                    }
                }
                entries.push(entry(&cfg.dst_bucket, key, info));
            }
        }
    }
    if let Some(mp) = multipart.take() {
        // The builder stopped mid-chunk (its error is reported): leave no parts behind.
        mp.abort(s3).await;
    }
    Ok(entries)
}

/// A spooled piece of chunk `index` as a request body.
async fn spooled_body(
    piece: &Spooled,
    cfg: &Config,
    day: Day,
    index: u32,
) -> Result<ByteStream, Error> {
    piece.body().await.map_err(|source| Error::Spool {
        bucket: cfg.dst_bucket.clone(),
        key: writer::chunk_key(&cfg.dst_prefix, day, index),
        source,
    })
}

fn entry(bucket: &str, key: String, info: ChunkInfo) -> ChunkEntry {
    info!(
        key = %format!("s3://{bucket}/{key}"),
        records = info.records,
        bytes = info.compressed_bytes,
        "chunk written"
    );
    ChunkEntry {
        key,
        records: info.records,
        bytes: info.compressed_bytes,
        uncompressed_bytes: info.uncompressed_bytes,
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

/// Aggregates one day: lists, reads, writes the chunks, removes stale ones and writes
/// the manifest. Fails on the first failed read or write.
pub async fn aggregate_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    opts: RunOptions,
) -> Result<Summary, Error> {
    let started = Instant::now();
    let src = Source::new(s3, &cfg.src_bucket);
    let folders =
        listing::day_folders(&src, &cfg.src_prefix, day, cfg.max_concurrent_lists).await?;
    let (accounts, regions) = (folders.accounts, folders.prefixes.len());
    let source = format!("s3://{}/{}", cfg.src_bucket, cfg.src_prefix);
    info!(day = %day, accounts, regions, source = %source, "day folders found");

    let progress = Arc::new(Progress::default());
    let check_deadline = {
        let progress = progress.clone();
        move || match opts.deadline {
            Some(d) if Instant::now() >= d => Err(Error::Deadline {
                day: day.to_string(),
                files_done: progress.done.load(Ordering::Relaxed),
                files_listed: progress.listed.load(Ordering::Relaxed),
                listing_complete: progress.listing_complete.load(Ordering::Relaxed),
            }),
            _ => Ok(()),
        }
    };
    check_deadline()?;

    // The day is incomplete from now until the new manifest is written.
    let manifest_key = writer::manifest_key(&cfg.dst_prefix, day);
    writer::delete(s3, &cfg.dst_bucket, &manifest_key).await?;

    let (file_tx, file_rx) = mpsc::channel::<Vec<Fetched>>(FILE_QUEUE);
    let (lines_tx, lines_rx) = mpsc::channel::<Lines>(LINES_QUEUE);
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Lines>(LINES_QUEUE + 2);
    let (piece_tx, piece_rx) = mpsc::channel::<Handed>(PIECE_QUEUE);
    let upload_slots = Arc::new(Semaphore::new(1));
    let budget = Arc::new(Semaphore::new((FETCH_BUDGET / 1024) as usize));

    let fetcher = async {
        // The day's objects in key order, listed a window of folders ahead; the end of
        // the listing is noted for the log and for a deadline error.
        let listing_end = futures::stream::once(async {
            progress.listing_complete.store(true, Ordering::Relaxed);
            info!(day = %day, files = progress.listed.load(Ordering::Relaxed), "files found");
        })
        .filter_map(|()| futures::future::ready(None));
        let objects = listing::day_objects(&src, folders.prefixes, cfg.max_concurrent_lists)
            .map_ok(|objects| {
                progress
                    .listed
                    .fetch_add(objects.len() as u64, Ordering::Relaxed);
                futures::stream::iter(objects).map(Ok)
            })
            .try_flatten()
            .chain(listing_end);
        // Budget permits are taken in key order (`then`) before a GET starts, so the
        // file the scanner waits for never waits behind later ones.
        let stream = objects
            .then(|o: Result<SourceObject, Error>| {
                let budget = budget.clone();
                async move {
                    let o = o?;
                    let kib = (o.size.min(STREAM_THRESHOLD) / 1024).max(1) as u32;
                    let permit = budget
                        .acquire_many_owned(kib)
                        .await
                        .expect("semaphore never closed");
                    Ok::<_, Error>((o, permit))
                }
            })
            .map(|r| async {
                let (o, permit) = r?;
                fetch(&src, o, permit).await
            });
        // Up to `max_concurrent_gets` running: a slow GET holds back its own file,
        // not the GETs after it (see `ordered`). The budget bounds the bytes waiting;
        // the window bounds the GETs started past a stuck one even when they fail
        // (a failed GET holds no budget).
        let stream = crate::ordered::in_order(stream, cfg.max_concurrent_gets)
            .window(GET_WINDOW * cfg.max_concurrent_gets)
            // The files ready at once go to the scanner together: one wake-up of its
            // thread instead of one per file.
            .ready_chunks(cfg.max_concurrent_gets);
        let mut stream = std::pin::pin!(stream);
        while let Some(batch) = stream.next().await {
            let batch = batch.into_iter().collect::<Result<Vec<_>, _>>()?;
            check_deadline()?;
            if file_tx.send(batch).await.is_err() {
                break; // the scanner stopped and reports why
            }
        }
        drop(file_tx);
        let lean = src.lean_use();
        debug!(
            lean_gets = lean.gets,
            lean_lists = lean.lists,
            own_connections = lean.own_connections,
            "all source objects fetched"
        );
        Ok::<(), Error>(())
    };

    // The stages' threads and the chunk's open multipart upload are kept out here: when
    // a stage fails, `try_join!` drops the others, and the cleanup below needs them.
    let mut scan_thread = {
        let cfg = cfg.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            scan_files(&cfg, file_rx, lines_tx, spare_rx, &progress.done)
        })
        .fuse()
    };
    let mut compress_thread = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            compress_chunks(&cfg, day, lines_rx, spare_tx, piece_tx, upload_slots)
        })
        .fuse()
    };
    let mut open_upload: Option<writer::Multipart> = None;
    let scanner = async { joined("record scanner", (&mut scan_thread).await) };
    let compressor = async { joined("chunk compressor", (&mut compress_thread).await) };
    let uploader = upload_chunks(s3, cfg, day, piece_rx, &check_deadline, &mut open_upload);

    let ((), stats, (), entries) = match tokio::try_join!(fetcher, scanner, compressor, uploader) {
        Ok(done) => done,
        Err(e) => {
            // The other stages were dropped, closing their channels: each thread stops
            // at its next hand-over (within a block of lines). Wait for them, so that
            // nothing works on or holds a spool file once the day has failed, and abort
            // the chunk's multipart upload if one is open.
            if !scan_thread.is_terminated() {
                let _ = scan_thread.await;
            }
            if !compress_thread.is_terminated() {
                let _ = compress_thread.await;
            }
            if let Some(mp) = open_upload.take() {
                mp.abort(s3).await;
            }
            return Err(e);
        }
    };
    let total = progress.listed.load(Ordering::Relaxed);
    if total == 0 {
        let hint = if accounts == 0 {
            ": no account or organisation folders under the source prefix (is SRC_PREFIX the AWSLogs/ folder?)"
        } else {
            ""
        };
        warn!(day = %day, accounts, regions, source = %source, "no CloudTrail files for this day{hint}");
    }
    if stats.files != total {
        // Only reachable if a stage stopped early without an error of its own.
        return Err(Error::Internal {
            stage: "pipeline",
            detail: format!("{} of {total} files were aggregated", stats.files),
        });
    }
    check_deadline()?;

    let stale = writer::delete_stale_chunks(
        s3,
        &cfg.dst_bucket,
        &cfg.dst_prefix,
        day,
        entries.len() as u32,
    )
    .await?;
    for key in &stale {
        info!(key = %format!("s3://{}/{}", cfg.dst_bucket, key), "stale chunk from an earlier run deleted");
    }

    let manifest = Manifest {
        date: day.to_string(),
        source,
        source_files: stats.files,
        records: stats.records,
        bytes_read: stats.bytes_read,
        bytes_written: entries.iter().map(|e| e.bytes).sum(),
        uncompressed_bytes_written: entries.iter().map(|e| e.uncompressed_bytes).sum(),
        chunks: entries,
        generator: concat!("cloudtrail-aggregator ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    writer::put_manifest(s3, &cfg.dst_bucket, &manifest_key, &manifest).await?;
    let duration = started.elapsed();
    info!(
        day = %day,
        files = manifest.source_files,
        records = manifest.records,
        chunks = manifest.chunks.len(),
        bytes_read = manifest.bytes_read,
        bytes_written = manifest.bytes_written,
        duration_ms = duration.as_millis() as u64,
        manifest = %format!("s3://{}/{}", cfg.dst_bucket, manifest_key),
        "day aggregated"
    );
    Ok(Summary {
        day,
        manifest_key,
        manifest,
        stale_chunks_deleted: stale,
        duration,
        lean: src.lean_use(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A response body that sends `data`, then fails as a lost connection does.
    struct Broken {
        data: Option<Bytes>,
    }

    impl http_body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(match self.data.take() {
                Some(data) => Ok(http_body::Frame::data(data)),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset by peer",
                )),
            }))
        }
    }

    /// A streamed object whose connection drops halfway is a failed GetObject read of
    /// that object, not a "corrupt gzip stream".
    #[tokio::test]
    async fn a_connection_lost_mid_stream_is_a_read_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..20_000 {
            write!(gz, "{{\"Records\":[{{\"eventID\":\"{i}\"}}]}}").unwrap();
        }
        let whole = gz.finish().unwrap();
        let half = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
        let cfg = Config::from_map(&HashMap::from([
            ("SRC_BUCKET".to_string(), "src".to_string()),
            ("DST_BUCKET".to_string(), "dst".to_string()),
        ]))
        .unwrap();
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let file = Fetched {
            key: "AWSLogs/111111111111/CloudTrail/us-east-1/2024/02/12/f.json.gz".into(),
            size: whole.len() as u64,
            body: Body::Stream(Streamed::once(ByteStream::from_body_1_x(Broken {
                data: Some(half),
            }))),
            _permit: permit,
        };
        let (file_tx, file_rx) = mpsc::channel(1);
        let (lines_tx, mut lines_rx) = mpsc::channel(64);
        let (_spare_tx, spare_rx) = std::sync::mpsc::sync_channel(1);
        file_tx.send(vec![file]).await.unwrap();
        drop(file_tx);
        let done = AtomicU64::new(0);
        let err = tokio::task::spawn_blocking(move || {
            scan_files(&cfg, file_rx, lines_tx, spare_rx, &done)
        })
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
        while lines_rx.recv().await.is_some() {}
        assert!(
            err.starts_with("GetObject (reading the body) s3://src/AWSLogs/111111111111/"),
            "{err}"
        );
        assert!(err.contains("connection reset by peer"), "{err}");
        assert!(!err.contains("gzip"), "{err}");
    }
}
