//! Plan: a day's listing → shards of at most `SHARD_MAX_FILES` files and
//! `SHARD_MAX_BYTES` bytes.
//!
//! The day is listed as ever (the delimited walk of [`crate::listing`]), one object at
//! a time, in key order. While the day still fits one shard, the objects also go
//! straight to that shard, which runs in place as they are listed: a day of one shard
//! is read exactly as it was before shards existed, with no pause to plan and nothing
//! written but its chunks. The moment the listing passes a limit, that run is stopped
//! (its upload aborted; what it wrote is cleaned up by the commit) and the day becomes
//! a plan of many shards:
//!
//! - each shard's source objects (key, size, ETag) go to its keys file,
//!   `_plan-RUN-SSSSS.keys.json.gz` (gzip NDJSON), written as soon as the shard is
//!   closed, so planning holds one shard's keys at a time, never the day's;
//! - `_plan-RUN.json` records the shards (files, bytes, first and last key) and the
//!   settings that shape the output, which every shard applies;
//! - the plan's content id, a hash of every keys file, the shard boundaries and those
//!   settings, names the chunks (see [`crate::layout`]): the same sources planned
//!   again give the same names and bytes.
//!
//! **Where shards are cut.** Without `DEDUP`, anywhere: shards are consecutive runs of
//! the sorted keys, so their chunks, in order, hold the records of a single run in the
//! same order. With `DEDUP=eventid`, never inside one account and region (the folders
//! in which duplicates occur: two trails' folders of it, or one folder delivered
//! twice): the folders are read grouped by account and region (each group's folders in
//! key order, groups in the order of their first folder — the key order itself unless
//! an account is under both an organisation's folder and its own), and a shard is only
//! cut between groups. A group larger than the limits is a shard of its own, larger
//! than they say (logged as a warning).
//!
//! **The defaults**, from the measured cost of a shard (BENCHMARKS.md, blocks 2 and 7): on 2
//! cores at 25 ms per request a shard costs ~0.25 ms of wall time per source file (its GET
//! and parsing; the organisation day: 98,600 files in ~30 s) and ~0.065 s per MB stored
//! (gunzip, JSON, gzip of ~10 MB of NDJSON per MB of gzip; the 306 MB file: 19.5 s). A
//! shard at both limits would take 200,000 × 0.25 ms + 2,048 MB × 0.065 s ≈ 50 s + 133 s
//! ≈ 3 min, within 5 minutes with room for a slow S3 or a slower function; measured, a
//! shard of 200,000 files of ~2.5 KB (500 MB) took 60 s and 39 MiB.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{Config, OutputFormat};
use crate::delivery_index::{self, IndexUse};
use crate::error::{Error, ShardLabel};
use crate::layout::{self, Naming, PlanFiles};
use crate::listing::{self, DayFolders, SourceObject};
use crate::manifest::GENERATOR;
use crate::select::{DayBy, Dedup};
use crate::shard::{self, Progress, ShardOutput, ShardRun};
use crate::trigger::Day;
use crate::validate::Validate;
use crate::writer;

/// `SHARD_MAX_FILES` default: source files of one shard (see the module doc).
pub const DEFAULT_SHARD_MAX_FILES: u64 = 200_000;
/// `SHARD_MAX_BYTES` default: bytes of source objects as stored, of one shard.
pub const DEFAULT_SHARD_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Objects listed ahead of the shard running in place.
const SPECULATIVE_QUEUE: usize = 1024;
/// Keys files being written at once while the listing goes on.
const KEYS_PUTS: usize = 4;

/// The limits a shard is cut by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLimits {
    pub max_files: u64,
    pub max_bytes: u64,
}

impl Default for ShardLimits {
    fn default() -> Self {
        ShardLimits {
            max_files: DEFAULT_SHARD_MAX_FILES,
            max_bytes: DEFAULT_SHARD_MAX_BYTES,
        }
    }
}

/// The settings that shape a day's output. The plan records them and every shard of it
/// applies them, whatever its own configuration (a redeploy mid-plan changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSettings {
    pub format: OutputFormat,
    pub day_by: DayBy,
    pub dedup: Dedup,
    pub dedup_max_events: u64,
    pub chunk_size_bytes: u64,
    pub gzip_level: u32,
    pub parquet_file_bytes: u64,
    pub parquet_row_group_bytes: u64,
    pub max_record_bytes: u64,
    pub max_file_bytes: u64,
    pub shard_max_files: u64,
    pub shard_max_bytes: u64,
    /// `VALIDATE` (absent when `off`, so that plans without it keep their ids).
    #[serde(default, skip_serializing_if = "Validate::is_off")]
    pub validate: Validate,
    pub generator: String,
}

impl PlanSettings {
    pub fn of(cfg: &Config) -> PlanSettings {
        PlanSettings {
            format: cfg.output_format,
            day_by: cfg.day_by,
            dedup: cfg.dedup,
            dedup_max_events: cfg.dedup_max_events,
            chunk_size_bytes: cfg.chunk_size_bytes,
            gzip_level: cfg.gzip_level,
            parquet_file_bytes: cfg.parquet_file_bytes,
            parquet_row_group_bytes: cfg.parquet_row_group_bytes,
            max_record_bytes: cfg.limits.record_bytes,
            max_file_bytes: cfg.limits.file_bytes,
            shard_max_files: cfg.shard_limits.max_files,
            shard_max_bytes: cfg.shard_limits.max_bytes,
            validate: cfg.validate,
            generator: GENERATOR.to_string(),
        }
    }

    /// `cfg` with these settings in place of its own.
    pub fn apply(&self, cfg: &Config) -> Config {
        let mut c = cfg.clone();
        c.output_format = self.format;
        c.day_by = self.day_by;
        c.dedup = self.dedup;
        c.dedup_max_events = self.dedup_max_events;
        c.validate = self.validate;
        c.chunk_size_bytes = self.chunk_size_bytes;
        c.gzip_level = self.gzip_level;
        c.parquet_file_bytes = self.parquet_file_bytes;
        c.parquet_row_group_bytes = self.parquet_row_group_bytes;
        c.limits.record_bytes = self.max_record_bytes;
        c.limits.file_bytes = self.max_file_bytes;
        c.shard_limits = ShardLimits {
            max_files: self.shard_max_files,
            max_bytes: self.shard_max_bytes,
        };
        c
    }
}

/// One shard of a plan, as `_plan-RUN.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub index: u32,
    pub files: u64,
    pub bytes: u64,
    pub first_key: String,
    pub last_key: String,
    /// With `VALIDATE`: folders of the day's walk that got no file, which this shard
    /// answers for (the shard of their account and region, or the first): their files
    /// that a digest lists are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub empty_folders: Vec<String>,
    /// Shard 0 only: how the next day's delivery index spared files of its folders
    /// (for the manifest's `selection`; not part of the content id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_index: Option<IndexUse>,
}

/// What `_plan-RUN.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    /// The planning run's id (its tag names the plan's files).
    pub run: String,
    /// The plan's content id (its chunks' names start with it).
    pub plan: String,
    pub day: String,
    /// When the plan was made (RFC 3339, UTC).
    pub created: String,
    pub source: String,
    pub files: u64,
    pub bytes: u64,
    pub settings: PlanSettings,
    pub shards: Vec<ShardSpec>,
}

impl PlanFile {
    /// The label of shard `index` (for errors).
    pub fn label(&self, index: u32) -> ShardLabel {
        ShardLabel {
            index,
            shards: self.shards.len() as u32,
            max_files: self.settings.shard_max_files,
            max_bytes: self.settings.shard_max_bytes,
        }
    }
}

/// Objects of one account and region (with `DEDUP`) or one object (without), added to
/// a shard whole.
#[derive(Debug, Default)]
struct Unit {
    group: String,
    lines: Vec<u8>,
    files: u64,
    bytes: u64,
    first_key: String,
    last_key: String,
}

/// The shard being filled.
struct Filling {
    encoder: GzEncoder<Vec<u8>>,
    spec: ShardSpec,
}

/// The synchronous core of planning: objects in, in their order; shard boundaries,
/// keys files and the content id out. No I/O.
pub struct Planner {
    limits: ShardLimits,
    by_trail: bool,
    files: u64,
    bytes: u64,
    unit: Unit,
    filling: Option<Filling>,
    shards: Vec<ShardSpec>,
    ready: VecDeque<(u32, Vec<u8>)>,
    hasher: twox_hash::xxhash3_128::Hasher,
    oversized: Vec<(String, u64, u64)>,
    walk: Option<Walk>,
}

/// With `VALIDATE`: the day's folders, and the shard each account and region's files
/// went to, so that each folder that got no file is answered for by one shard.
#[derive(Debug, Default)]
struct Walk {
    folders: Vec<String>,
    seen: HashSet<String>,
    /// The folder of the last object.
    last: String,
    /// The digest groups of the unit being gathered, and the shard of each group added.
    unit_groups: Vec<String>,
    group_shard: HashMap<String, u32>,
}

impl Walk {
    fn push(&mut self, key: &str) {
        let folder = crate::validate::folder_of(key);
        if folder != self.last {
            self.last = folder.to_string();
            self.seen.insert(self.last.clone());
            self.unit_groups.extend(crate::validate::log_group(folder));
        }
    }

    /// Each folder that got no file, to the shard of its account and region, or the
    /// first.
    fn give(&self, shards: &mut [ShardSpec]) {
        for f in self.folders.iter().filter(|f| !self.seen.contains(*f)) {
            let group = crate::validate::log_group(f);
            let shard = group.and_then(|g| self.group_shard.get(&g).copied());
            if let Some(s) = shards.get_mut(shard.unwrap_or(0) as usize) {
                s.empty_folders.push(f.clone());
            }
        }
    }
}

/// The account and region of a key `…/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/name` (the
/// whole key for anything else).
pub fn trail_of(key: &str) -> &str {
    match key.find("/CloudTrail/") {
        Some(i) => {
            let account_start = key[..i].rfind('/').map_or(0, |j| j + 1);
            let after = i + "/CloudTrail/".len();
            let region_end = key[after..].find('/').map_or(key.len(), |j| after + j);
            &key[account_start..region_end]
        }
        None => key,
    }
}

/// Whether shards keep each account and region whole: with `DEDUP` (duplicates occur
/// within one) and with `VALIDATE` (a digest chain is one account and region's).
pub fn by_trail(cfg: &Config) -> bool {
    cfg.dedup != Dedup::None || !cfg.validate.is_off()
}

/// The day's folders in the order a plan reads them: key order, or `by_trail` the
/// folders of one account and region together (see the module doc).
pub fn folders_in_order(mut prefixes: Vec<String>, by_trail: bool) -> Vec<String> {
    prefixes.sort();
    if !by_trail {
        return prefixes;
    }
    // A stable sort by the position of each trail's first folder.
    let mut first: std::collections::HashMap<String, usize> = Default::default();
    for (i, p) in prefixes.iter().enumerate() {
        let account_region = trail_group(p);
        first.entry(account_region).or_insert(i);
    }
    prefixes.sort_by_key(|p| first[&trail_group(p)]);
    prefixes
}

/// `ACCOUNT/CloudTrail/REGION` without the organisation's folder, so that one account's
/// folders under an organisation and under its own folder are one group.
fn trail_group(key: &str) -> String {
    trail_of(key).to_string()
}

impl Planner {
    pub fn new(limits: ShardLimits, by_trail: bool, settings: &PlanSettings) -> Planner {
        let mut hasher = twox_hash::xxhash3_128::Hasher::new();
        hasher.write(
            serde_json::to_string(settings)
                .expect("settings serialise")
                .as_bytes(),
        );
        Planner {
            limits: ShardLimits {
                max_files: limits.max_files.max(1),
                max_bytes: limits.max_bytes.max(1),
            },
            by_trail,
            files: 0,
            bytes: 0,
            unit: Unit::default(),
            filling: None,
            shards: Vec::new(),
            ready: VecDeque::new(),
            hasher,
            oversized: Vec::new(),
            walk: None,
        }
    }

    /// With `VALIDATE`: `folders`, the day's walk, are to be answered for, each by one
    /// shard ([`ShardSpec::empty_folders`]).
    pub fn answer_for(&mut self, folders: &[String]) {
        self.walk = Some(Walk {
            folders: folders.to_vec(),
            ..Walk::default()
        });
    }

    /// Whether everything pushed so far fits one shard.
    pub fn single(&self) -> bool {
        self.files <= self.limits.max_files && self.bytes <= self.limits.max_bytes
    }

    /// Adds the next object of the day.
    pub fn push(&mut self, object: &SourceObject) {
        self.files += 1;
        self.bytes += object.size;
        let group = if self.by_trail {
            trail_group(&object.key)
        } else {
            String::new()
        };
        if self.unit.files > 0 && (!self.by_trail || group != self.unit.group) {
            self.add_unit();
        }
        if let Some(w) = &mut self.walk {
            w.push(&object.key);
        }
        let u = &mut self.unit;
        if u.files == 0 {
            u.group = group;
            u.first_key.clone_from(&object.key);
        }
        u.last_key.clone_from(&object.key);
        u.files += 1;
        u.bytes += object.size;
        serde_json::to_writer(&mut u.lines, object).expect("an object serialises");
        u.lines.push(b'\n');
    }

    /// Adds the unit gathered so far to the shard being filled, closing that shard
    /// first when the unit would take it past a limit.
    fn add_unit(&mut self) {
        let unit = std::mem::take(&mut self.unit);
        if let Some(f) = &self.filling {
            let over = f.spec.files + unit.files > self.limits.max_files
                || f.spec.bytes + unit.bytes > self.limits.max_bytes;
            if over {
                self.close();
            }
        }
        if unit.files > self.limits.max_files || unit.bytes > self.limits.max_bytes {
            self.oversized
                .push((unit.group.clone(), unit.files, unit.bytes));
        }
        let index = self.shards.len() as u32;
        let f = self.filling.get_or_insert_with(|| Filling {
            encoder: GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), Compression::fast()),
            spec: ShardSpec {
                index,
                files: 0,
                bytes: 0,
                first_key: unit.first_key.clone(),
                last_key: String::new(),
                empty_folders: Vec::new(),
                next_index: None,
            },
        });
        if let Some(w) = &mut self.walk {
            let index = f.spec.index;
            for g in w.unit_groups.drain(..) {
                w.group_shard.insert(g, index);
            }
        }
        f.encoder
            .write_all(&unit.lines)
            .expect("writing to memory cannot fail");
        self.hasher.write(&unit.lines);
        f.spec.files += unit.files;
        f.spec.bytes += unit.bytes;
        f.spec.last_key = unit.last_key;
    }

    /// Closes the shard being filled: its keys file is ready.
    fn close(&mut self) {
        let Some(f) = self.filling.take() else {
            return;
        };
        let bytes = f.encoder.finish().expect("writing to memory cannot fail");
        let boundary = format!(
            "\u{0}shard {} {} {}\n",
            f.spec.index, f.spec.files, f.spec.bytes
        );
        self.hasher.write(boundary.as_bytes());
        self.ready.push_back((f.spec.index, bytes));
        self.shards.push(f.spec);
    }

    /// The keys file of a shard closed since the last call: (index, gzip NDJSON).
    pub fn take_ready(&mut self) -> Option<(u32, Vec<u8>)> {
        self.ready.pop_front()
    }

    /// The groups larger than a shard's limits: (account/CloudTrail/region, files,
    /// bytes).
    pub fn oversized(&self) -> &[(String, u64, u64)] {
        &self.oversized
    }

    /// Ends the day: closes the last shard. Returns the shards and the content id; the
    /// last keys files are then in [`Planner::take_ready`].
    pub fn finish(&mut self) -> (Vec<ShardSpec>, String) {
        if self.unit.files > 0 {
            self.add_unit();
        }
        self.close();
        if let Some(w) = &self.walk {
            w.give(&mut self.shards);
        }
        (self.shards.clone(), layout::hex48(self.hasher.finish_128()))
    }

    /// Files and bytes pushed.
    pub fn totals(&self) -> (u64, u64) {
        (self.files, self.bytes)
    }
}

/// Reads a keys file (gzip NDJSON of source objects) one object at a time.
pub fn read_keys(gz: bytes::Bytes) -> impl Iterator<Item = Result<SourceObject, String>> {
    use std::io::BufRead;
    let lines =
        std::io::BufReader::new(flate2::read::MultiGzDecoder::new(std::io::Cursor::new(gz)))
            .lines();
    lines.filter_map(|line| match line {
        Ok(l) if l.trim().is_empty() => None,
        Ok(l) => Some(serde_json::from_str(&l).map_err(|e| e.to_string())),
        Err(e) => Some(Err(e.to_string())),
    })
}

/// What planning found.
pub enum Plan {
    /// The whole day fits one shard, which ran in place while it was listed.
    Single(ShardOutput),
    /// The day is a plan of many shards: their keys files and `_plan-RUN.json` are
    /// written; nothing of the shards has run.
    Many(PlanFile),
}

/// While the day may fit one shard, its objects also go to the shard running in place.
/// It is stopped (sent [`Error::Stopped`]) when the listing passes a shard's limits, or
/// earlier when the folders listed so far say the day is much larger: the listing
/// then goes on at its own pace instead of the run's.
struct Speculation {
    tx: Option<mpsc::Sender<Result<SourceObject, Error>>>,
    limits: ShardLimits,
    folders_total: usize,
    folders_seen: usize,
    folder: String,
    stopped_early: bool,
}

/// Folders listed before the size of the day is estimated from them.
const ESTIMATE_AFTER_FOLDERS: usize = 64;

impl Speculation {
    /// Offers the object just pushed to `planner` to the run in place.
    async fn offer(&mut self, object: SourceObject, planner: &Planner, day: Day) {
        let folder = object.key.rsplit_once('/').map_or("", |(f, _)| f);
        if folder != self.folder {
            self.folder = folder.to_string();
            self.folders_seen += 1;
        }
        let Some(tx) = &self.tx else { return };
        let (files, bytes) = planner.totals();
        if !planner.single() {
            info!(day = %day, files, bytes, max_files = self.limits.max_files, max_bytes = self.limits.max_bytes, "the day is larger than one shard: planning shards");
            self.stop().await;
            return;
        }
        if looks_larger(
            files,
            bytes,
            self.folders_seen,
            self.folders_total,
            self.limits,
        ) {
            info!(day = %day, files, folders = self.folders_seen, of = self.folders_total, "the day looks larger than one shard: planning shards");
            self.stopped_early = true;
            self.stop().await;
            return;
        }
        if tx.send(Ok(object)).await.is_err() {
            self.tx = None; // it stopped, and says why
        }
    }

    /// Stops the run in place (its upload is aborted; the commit deletes what it wrote).
    async fn stop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(Error::Stopped)).await;
        }
    }
}

/// Whether a day of `folders_total` folders, of which `folders_seen` held `files` files
/// of `bytes` bytes, looks larger than one shard: once enough folders are seen, the
/// files and bytes per folder so far times the folders, less a fifth for the margin.
pub fn looks_larger(
    files: u64,
    bytes: u64,
    folders_seen: usize,
    folders_total: usize,
    limits: ShardLimits,
) -> bool {
    if folders_seen == 0 || folders_seen < ESTIMATE_AFTER_FOLDERS.min(folders_total) {
        return false;
    }
    let scale = folders_total as f64 / folders_seen as f64 * 0.8;
    files as f64 * scale > limits.max_files as f64 || bytes as f64 * scale > limits.max_bytes as f64
}

/// What the listing made of the day.
struct Listed {
    single: bool,
    shards: Vec<ShardSpec>,
    id: String,
    files: u64,
    bytes: u64,
    /// The keys of a day of one shard whose run in place was stopped early.
    single_keys: Option<Vec<u8>>,
    /// How the next day's delivery index spared files of its folders.
    next_index: Option<IndexUse>,
}

/// Lists the day's folders into `planner`, feeding `speculation` and sending each
/// closed shard's keys file to `keys_tx`.
#[allow(clippy::too_many_arguments)]
async fn list_into(
    s3: &Client,
    cfg: &Config,
    day: Day,
    prefixes: Vec<String>,
    planner: &mut Planner,
    mut speculation: Speculation,
    keys_tx: mpsc::Sender<(u32, Vec<u8>)>,
    deadline: Option<Instant>,
) -> Result<Listed, Error> {
    // The next day's folders that its delivery index vouches for are read only for
    // their files of earlier days.
    let mut next_index = match day.succ() {
        Some(next) => Box::pin(delivery_index::load(s3, cfg, next)).await,
        None => None,
    };
    let objects = listing::day_objects(s3, &cfg.src_bucket, prefixes, cfg.max_concurrent_lists)
        .map_ok(|objects| match next_index.as_mut() {
            Some(filter) => filter.apply(objects),
            None => objects,
        })
        .map_ok(|objects| futures::stream::iter(objects).map(Ok))
        .try_flatten();
    let mut objects = std::pin::pin!(objects);
    let mut keys_tx = Some(keys_tx);
    let mut n = 0u64;
    let listed = loop {
        let object = match objects.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(o)) => o,
        };
        planner.push(&object);
        n += 1;
        speculation.offer(object, planner, day).await;
        while let Some(ready) = planner.take_ready() {
            if let Some(k) = &keys_tx {
                if k.send(ready).await.is_err() {
                    keys_tx = None; // the writer failed, and says why
                }
            }
        }
        if n.is_multiple_of(4096) && deadline.is_some_and(|d| Instant::now() >= d) {
            break Err(Error::Deadline {
                day: day.to_string(),
                shard: ShardLabel {
                    index: 0,
                    shards: 1,
                    max_files: cfg.shard_limits.max_files,
                    max_bytes: cfg.shard_limits.max_bytes,
                },
                files_done: 0,
                files_listed: n,
                listing_complete: false,
            });
        }
    };
    if let Err(e) = listed {
        // The shard in place stops with an error of its own (its upload aborted).
        speculation.stop().await;
        return Err(e);
    }
    let stopped_early = speculation.stopped_early;
    drop(speculation);
    let single = planner.single();
    let (shards, id) = planner.finish();
    let mut single_keys = None;
    while let Some((index, keys)) = planner.take_ready() {
        if single {
            single_keys = stopped_early.then_some(keys);
        } else if let Some(k) = &keys_tx {
            let _ = k.send((index, keys)).await;
        }
    }
    for (group, files, bytes) in planner.oversized() {
        warn!(day = %day, trail = %group, files, bytes, max_files = cfg.shard_limits.max_files, max_bytes = cfg.shard_limits.max_bytes, "one account and region holds more than a shard's limits: it is one shard of its own (DEDUP keeps an account and region in one shard)");
    }
    let (files, bytes) = planner.totals();
    let next_index = next_index.map(|f| f.used());
    if let Some(used) = &next_index {
        info!(day = %day, index = %used.index, folders_matched = used.folders_matched, folders_read_whole = used.folders_read_whole, files_skipped = used.files_skipped, "the next day's folders read by its delivery index");
    }
    Ok(Listed {
        single,
        shards,
        id,
        files,
        bytes,
        single_keys,
        next_index,
    })
}

/// Lists the day's `folders` and plans it (see the module doc), running the day in
/// place while it fits one shard. `run` is the planning run's id; it holds the day's
/// lease.
pub async fn plan_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    run: &str,
    folders: DayFolders,
    deadline: Option<Instant>,
) -> Result<Plan, Error> {
    let settings = PlanSettings::of(cfg);
    let mut planner = Planner::new(cfg.shard_limits, by_trail(cfg), &settings);
    let prefixes = folders_in_order(folders.prefixes, by_trail(cfg));
    if !cfg.validate.is_off() {
        planner.answer_for(&prefixes);
    }
    let all_folders = prefixes.clone();
    let progress = Arc::new(Progress::default());
    let (tx, rx) = mpsc::channel::<Result<SourceObject, Error>>(SPECULATIVE_QUEUE);
    let (keys_tx, keys_rx) = mpsc::channel::<(u32, Vec<u8>)>(KEYS_PUTS);
    let files = PlanFiles::new(&cfg.dst_prefix, day, &layout::run_tag(run));
    let in_place = ShardRun {
        day,
        naming: &Naming::Single,
        label: ShardLabel {
            index: 0,
            shards: 1,
            max_files: cfg.shard_limits.max_files,
            max_bytes: cfg.shard_limits.max_bytes,
        },
        deadline,
        folders: &all_folders,
    };
    let speculation = Speculation {
        tx: Some(tx),
        limits: cfg.shard_limits,
        folders_total: prefixes.len(),
        folders_seen: 0,
        folder: String::new(),
        stopped_early: false,
    };
    let listing = list_into(
        s3,
        cfg,
        day,
        prefixes,
        &mut planner,
        speculation,
        keys_tx,
        deadline,
    );
    let keys_writer = async {
        let puts = tokio_stream_of(keys_rx).map(|(index, body)| {
            let key = files.keys(index);
            async move {
                writer::put(
                    s3,
                    &cfg.dst_bucket,
                    &key,
                    ByteStream::from(body),
                    "application/gzip",
                )
                .await
            }
        });
        puts.buffer_unordered(KEYS_PUTS)
            .try_for_each(|()| async { Ok(()) })
            .await
    };
    let counted = shard::counted(tokio_stream_of(rx), progress.clone());
    let in_place_run = shard::run(s3, cfg, in_place.clone(), counted, progress);
    let (listed, written, ran) = tokio::join!(listing, keys_writer, in_place_run);
    let mut listed = listed?;
    let next_index = listed.next_index.take();
    if listed.single {
        if let Some(keys) = listed.single_keys {
            // The day fits one shard after all: it runs now, from its listing.
            info!(day = %day, files = listed.files, "the day fits one shard after all: running it");
            let progress = Arc::new(Progress::default());
            let objects = read_keys(keys.into()).map(|o| {
                o.map_err(|e| Error::Internal {
                    stage: "plan",
                    detail: format!("a keys file made here does not read back: {e}"),
                })
            });
            let objects = shard::counted(futures::stream::iter(objects), progress.clone());
            let output = shard::run(s3, cfg, in_place, objects, progress).await?;
            return Ok(Plan::Single(with_index_use(output, next_index)));
        }
        return Ok(Plan::Single(with_index_use(ran?, next_index)));
    }
    if let Some(first) = listed.shards.first_mut() {
        first.next_index = next_index;
    }
    match ran {
        Err(Error::Stopped) | Ok(_) => {}
        Err(e) => return Err(e),
    }
    written?;
    let plan = PlanFile {
        run: run.to_string(),
        plan: listed.id,
        day: day.to_string(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        source: format!("s3://{}/{}", cfg.src_bucket, cfg.src_prefix),
        files: listed.files,
        bytes: listed.bytes,
        settings,
        shards: listed.shards,
    };
    writer::put_json(s3, &cfg.dst_bucket, &files.plan(), &plan).await?;
    info!(day = %day, run, plan = %plan.plan, shards = plan.shards.len(), files = plan.files, bytes = plan.bytes, key = %format!("s3://{}/{}", cfg.dst_bucket, files.plan()), "day planned");
    Ok(Plan::Many(plan))
}

/// `output` with how the next day's delivery index was used in its selection.
fn with_index_use(mut output: ShardOutput, used: Option<IndexUse>) -> ShardOutput {
    if let Some(sel) = &mut output.selection {
        sel.next_index = used.map(Box::new);
    }
    output
}

/// A receiver as a stream.
fn tokio_stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64) -> SourceObject {
        SourceObject {
            key: key.to_string(),
            size,
            etag: Some(format!("\"{size}\"")),
        }
    }

    fn settings() -> PlanSettings {
        let cfg = Config::from_lookup(|n| match n {
            "SRC_BUCKET" => Some("src".into()),
            "DST_BUCKET" => Some("dst".into()),
            _ => None,
        })
        .unwrap();
        PlanSettings::of(&cfg)
    }

    fn plan(
        objects: &[SourceObject],
        max_files: u64,
        max_bytes: u64,
        dedup: Dedup,
    ) -> (Vec<ShardSpec>, String, Vec<Vec<SourceObject>>) {
        let limits = ShardLimits {
            max_files,
            max_bytes,
        };
        let mut p = Planner::new(limits, dedup != Dedup::None, &settings());
        for o in objects {
            p.push(o);
        }
        let (shards, id) = p.finish();
        let mut keys = Vec::new();
        while let Some((i, gz)) = p.take_ready() {
            assert_eq!(i as usize, keys.len(), "keys files come in shard order");
            let got: Vec<SourceObject> = read_keys(gz.into()).map(Result::unwrap).collect();
            keys.push(got);
        }
        (shards, id, keys)
    }

    fn key(account: &str, region: &str, n: usize) -> String {
        format!("AWSLogs/{account}/CloudTrail/{region}/2024/02/12/f{n:03}.json.gz")
    }

    /// With VALIDATE, each folder of the walk that got no file goes to the shard of
    /// its account and region's files, or to the first when none has files; folders
    /// with files go nowhere.
    #[test]
    fn empty_folders_go_to_the_shard_of_their_account_and_region() {
        let folder = |account: &str, day: &str| {
            format!("AWSLogs/{account}/CloudTrail/eu-west-1/2024/02/{day}/")
        };
        let walk = [
            folder("111111111111", "12"),
            folder("222222222222", "12"),
            folder("222222222222", "13"),
            folder("333333333333", "12"),
        ];
        let objects: Vec<SourceObject> = (0..3)
            .map(|n| obj(&format!("{}f{n}.json.gz", walk[0]), 10))
            .chain((0..3).map(|n| obj(&format!("{}f{n}.json.gz", walk[2]), 10)))
            .collect();
        let limits = ShardLimits {
            max_files: 4,
            max_bytes: 1000,
        };
        let mut p = Planner::new(limits, true, &settings());
        p.answer_for(&walk);
        for o in &objects {
            p.push(o);
        }
        let (shards, id) = p.finish();
        let empty: Vec<&[String]> = shards.iter().map(|s| &s.empty_folders[..]).collect();
        assert_eq!(
            empty,
            [&[walk[3].clone()][..], &[walk[1].clone()][..]],
            "{shards:?}"
        );
        // The content id does not depend on them.
        let mut q = Planner::new(limits, true, &settings());
        for o in &objects {
            q.push(o);
        }
        let (plain, plain_id) = q.finish();
        assert_eq!(plain_id, id);
        assert!(plain.iter().all(|s| s.empty_folders.is_empty()));
    }

    /// Without DEDUP, shards are consecutive runs of the objects, cut before a limit
    /// would be passed; their keys files hold exactly those objects.
    #[test]
    fn cuts_by_files_and_bytes_in_order() {
        let objects: Vec<SourceObject> = (0..10)
            .map(|n| obj(&key("111111111111", "eu-west-1", n), 10))
            .collect();
        let (shards, _, keys) = plan(&objects, 4, 1000, Dedup::None);
        let sizes: Vec<u64> = shards.iter().map(|s| s.files).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(keys.concat(), objects);
        assert_eq!(shards[1].first_key, objects[4].key);
        assert_eq!(shards[1].last_key, objects[7].key);
        let (shards, _, _) = plan(&objects, 100, 25, Dedup::None);
        let sizes: Vec<u64> = shards.iter().map(|s| s.bytes).collect();
        assert_eq!(sizes, [20, 20, 20, 20, 20]);
        // An object larger than the byte limit is a shard of its own.
        let mut big = objects.clone();
        big[3].size = 500;
        let (shards, _, _) = plan(&big, 100, 25, Dedup::None);
        let files: Vec<u64> = shards.iter().map(|s| s.files).collect();
        assert_eq!(files, [2, 1, 1, 2, 2, 2]);
    }

    /// With DEDUP, an account and region is never split; one larger than a shard is
    /// a shard of its own, and reported.
    #[test]
    fn dedup_keeps_each_account_region_whole() {
        let mut objects = Vec::new();
        for (account, n) in [
            ("111111111111", 3),
            ("222222222222", 5),
            ("333333333333", 2),
        ] {
            for i in 0..n {
                objects.push(obj(&key(account, "us-east-1", i), 1));
            }
        }
        let mut p = Planner::new(
            ShardLimits {
                max_files: 4,
                max_bytes: 100,
            },
            true,
            &settings(),
        );
        for o in &objects {
            p.push(o);
        }
        let (shards, _) = p.finish();
        let files: Vec<u64> = shards.iter().map(|s| s.files).collect();
        assert_eq!(files, [3, 5, 2]);
        assert_eq!(
            p.oversized(),
            &[("222222222222/CloudTrail/us-east-1".to_string(), 5, 5)]
        );
    }

    /// The content id changes with the sources, the boundaries and the settings, and
    /// only with them.
    #[test]
    fn content_id() {
        let objects: Vec<SourceObject> = (0..10)
            .map(|n| obj(&key("111111111111", "eu-west-1", n), 10))
            .collect();
        let (_, a, _) = plan(&objects, 4, 1000, Dedup::None);
        let (_, again, _) = plan(&objects, 4, 1000, Dedup::None);
        assert_eq!(a, again);
        assert_eq!(a.len(), 12);
        let (_, cut_elsewhere, _) = plan(&objects, 5, 1000, Dedup::None);
        assert_ne!(a, cut_elsewhere);
        let mut changed = objects.clone();
        changed[9].etag = Some("\"other\"".into());
        let (_, other_sources, _) = plan(&changed, 4, 1000, Dedup::None);
        assert_ne!(a, other_sources);
        let mut p = Planner::new(
            ShardLimits {
                max_files: 4,
                max_bytes: 1000,
            },
            false,
            &PlanSettings {
                gzip_level: 9,
                ..settings()
            },
        );
        objects.iter().for_each(|o| p.push(o));
        assert_ne!(a, p.finish().1);
    }

    /// `single` is true exactly while the day fits one shard.
    #[test]
    fn single_while_within_limits() {
        let limits = ShardLimits {
            max_files: 2,
            max_bytes: 100,
        };
        let mut p = Planner::new(limits, false, &settings());
        assert!(p.single());
        p.push(&obj("a", 50));
        p.push(&obj("b", 50));
        assert!(p.single());
        p.push(&obj("c", 0));
        assert!(!p.single());
    }

    /// A day looks larger than one shard from its first 64 folders (or all, when it has
    /// fewer), with a fifth for the margin.
    #[test]
    fn estimates_from_the_first_folders() {
        let limits = ShardLimits {
            max_files: 200_000,
            max_bytes: 1 << 31,
        };
        // 10 M files over 17,000 folders: 64 folders of 588 say so at once.
        assert!(looks_larger(64 * 588, 0, 64, 17_000, limits));
        // The organisation day of 98,600 files over 3,400 folders does not.
        assert!(!looks_larger(64 * 29, 0, 64, 3_400, limits));
        // Too few folders seen to tell.
        assert!(!looks_larger(63 * 5_000, 0, 63, 17_000, limits));
        // A day of 10 folders is judged on all 10, with the margin.
        assert!(!looks_larger(150_000, 0, 9, 10, limits));
        assert!(!looks_larger(240_000, 0, 10, 10, limits));
        assert!(looks_larger(260_000, 0, 10, 10, limits));
        // By bytes too.
        assert!(looks_larger(64, 1 << 29, 64, 1_000, limits));
    }

    /// The account and region of a key, with or without an organisation folder.
    #[test]
    fn trails_and_folder_order() {
        assert_eq!(
            trail_of("AWSLogs/o-abc123def4/111111111111/CloudTrail/eu-west-1/2024/02/12/x"),
            "111111111111/CloudTrail/eu-west-1"
        );
        assert_eq!(
            trail_of("AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/13/"),
            "111111111111/CloudTrail/eu-west-1"
        );
        let folders = vec![
            "AWSLogs/o-abc123def4/111111111111/CloudTrail/eu-west-1/2024/02/12/".to_string(),
            "AWSLogs/111111111111/CloudTrail/us-east-1/2024/02/12/".to_string(),
            "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/12/".to_string(),
            "AWSLogs/o-abc123def4/222222222222/CloudTrail/eu-west-1/2024/02/12/".to_string(),
        ];
        let mut sorted = folders.clone();
        sorted.sort();
        assert_eq!(folders_in_order(folders.clone(), false), sorted);
        assert_eq!(
            folders_in_order(folders, true),
            [
                "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/12/",
                "AWSLogs/o-abc123def4/111111111111/CloudTrail/eu-west-1/2024/02/12/",
                "AWSLogs/111111111111/CloudTrail/us-east-1/2024/02/12/",
                "AWSLogs/o-abc123def4/222222222222/CloudTrail/eu-west-1/2024/02/12/",
            ]
        );
    }
}
