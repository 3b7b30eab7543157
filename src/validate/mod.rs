//! Validate: CloudTrail's signed digests checked against the log files a shard read
//! (`VALIDATE=report|strict`).
//!
//! While the records stage reads a file it takes the SHA-256 of the decoded bytes
//! ([`crate::records::RecordReader::with_sha256`]); nothing is read twice. Beside the
//! reading, one account and region at a time ([`stage`]), this stage:
//!
//! 1. lists the digest folders that cover the log folders read: for each
//!    `…/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/` read, `…/ACCOUNT/CloudTrail-Digest/REGION/`
//!    of that day, and of the next day the digests ending before 02:00 UTC (a digest
//!    covers the hour *before* its end time, so the next day's first one covers the
//!    day's last deliveries);
//! 2. reads each digest (GET, `MAX_CONCURRENT_GETS` at once besides the log files', in
//!    key order) with
//!    its `x-amz-meta-signature`, and checks it with [`crate::digest`]: location,
//!    signature by the key `ListPublicKeys` gives in the digest's region, and the chain
//!    — each digest must name the one before it in its chain (per trail; `_backfill`
//!    digests are a chain of their own, each saying when it was made, and checked with
//!    the keys of that time: [`PublicKeys::for_digest`]);
//! 3. once the group's log files are read, compares the hashes: every log file a verified digest lists in a folder that was
//!    read is **verified** (same SHA-256), **modified** (another), or **missing** (not
//!    in the bucket); a file read that no verified digest lists is **not covered**.
//!
//! A digest that does not verify vouches for nothing: its files count as not covered
//! (unless another digest lists them), and the link after it is not checked (its break
//! is that digest's fault, already counted). A gap in a chain is a missing digest.
//!
//! The chains are checked one account and region at a time, so memory holds a group's
//! digests or two; the files read are kept as the rows of the shard's inventory
//! ([`crate::inventory`]: key, size, ETag, SHA-256, records written; ~90 bytes a file,
//! [`FilesRead`]). A shard is planned never to split an account and region when
//! validating ([`crate::plan`]), so each shard checks its groups whole, and the day's
//! counts are the sum of its shards'.

pub mod stage;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::Setting;
use crate::digest::{self, DigestFile, Link, Metadata, PublicKey};
use crate::error::Error;
use crate::pages::{Pages, Text};
use crate::records::FileDone;
use crate::trigger::Day;

pub(crate) use stage::read_digest;

/// `VALIDATE`: whether digests are checked, and what a problem does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validate {
    /// Digests are not read.
    #[default]
    Off,
    /// The day is written, and the manifest, metrics and log say what was found.
    Report,
    /// The day fails, with no manifest, on any file modified or missing or any digest
    /// invalid or missing (files not covered stay a count).
    Strict,
}

impl Setting for Validate {
    const ALL: &'static [Self] = &[Validate::Off, Validate::Report, Validate::Strict];

    fn name(self) -> &'static str {
        match self {
            Validate::Off => "off",
            Validate::Report => "report",
            Validate::Strict => "strict",
        }
    }
}

crate::setting_str!(Validate);

impl Validate {
    pub fn is_off(&self) -> bool {
        *self == Validate::Off
    }
}

/// What validation found, as the manifest's `validation` object (these names are read
/// by tools: keep them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    /// Log files read whose SHA-256 is the one a verified digest lists.
    pub files_verified: u64,
    /// Log files read whose SHA-256 is not the one a verified digest lists.
    pub files_modified: u64,
    /// Log files a verified digest lists, in a folder read, that are not in the bucket.
    pub files_missing: u64,
    /// Log files read that no verified digest lists (delivered after the newest
    /// digest, validation off for the trail, or their digest invalid or missing).
    pub files_not_covered: u64,
    pub digests_verified: u64,
    /// Digests with a bad signature, wrong location, unknown key, or unreadable.
    pub digests_invalid: u64,
    /// Gaps in a chain: digests named by the next one and not found.
    pub digests_missing: u64,
}

impl Validation {
    /// Adds another shard's counts.
    pub fn add(&mut self, o: &Validation) {
        self.files_verified += o.files_verified;
        self.files_modified += o.files_modified;
        self.files_missing += o.files_missing;
        self.files_not_covered += o.files_not_covered;
        self.digests_verified += o.digests_verified;
        self.digests_invalid += o.digests_invalid;
        self.digests_missing += o.digests_missing;
    }

    /// Whether anything was found that `strict` fails on.
    pub fn failed(&self) -> bool {
        self.files_modified + self.files_missing + self.digests_invalid + self.digests_missing > 0
    }
}

impl std::fmt::Display for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "log files: {} verified, {} modified, {} missing, {} not covered; digests: {} verified, {} invalid, {} missing",
            self.files_verified,
            self.files_modified,
            self.files_missing,
            self.files_not_covered,
            self.digests_verified,
            self.digests_invalid,
            self.digests_missing
        )
    }
}

/// The log files a shard read, in order — key, size, ETag, the SHA-256 of the decoded
/// bytes, the records written from it — and what the digests said of each: the rows of
/// the shard's inventory ([`crate::inventory`]). Found by a 64-bit hash of the key
/// (checked against the key: exact). File names and ETags are kept end to end in one
/// buffer, each folder once, without what the folder already says: a CloudTrail name's
/// `ACCOUNT_CloudTrail_REGION_` and `.json.gz`, and an MD5 ETag as its 16 bytes. About
/// 90 bytes a file for CloudTrail's.
#[derive(Debug, Default)]
pub struct FilesRead {
    index: HashMap<u64, u32>,
    /// Keys whose hash another key had first.
    collided: HashMap<String, u32>,
    pub(crate) rows: Pages<Row, ROW_PAGE>,
    /// Each row's name (its key after the folder, see [`Row::flags`]), then its ETag.
    text: Text,
    /// The rows' folders, each once per run of rows in it (files come folder by folder).
    prefixes: Vec<String>,
    /// The CloudTrail name stem of the last prefix ([`stem_of`]).
    stem: String,
    folders: BTreeSet<String>,
    /// The digests rows name ([`Row::digest`]).
    pub(crate) digests: DigestNames,
}

/// The keys of the digests rows name, each kept as its folder (once per run of them),
/// the stem of its name (once per trail: `ACCOUNT_CloudTrail-Digest_REGION_TRAIL_HOME`)
/// and its time: ~30 bytes a digest instead of ~150.
#[derive(Debug, Default)]
pub(crate) struct DigestNames {
    folders: Vec<String>,
    stems: Vec<String>,
    stem_index: HashMap<String, u32>,
    entries: Pages<DigestEntry, ROW_PAGE>,
    /// Names that do not split so, by entry.
    other: HashMap<u32, String>,
}

#[derive(Debug)]
struct DigestEntry {
    folder: u32,
    /// `u32::MAX`: the name is in `other`.
    stem: u32,
    time: [u8; 16],
    backfill: bool,
}

impl DigestNames {
    /// Adds `key`; its index.
    pub(crate) fn push(&mut self, key: &str) -> u32 {
        let i = self.entries.len() as u32;
        let folder = folder_of(key);
        if self.folders.last().is_none_or(|f| f != folder) {
            self.folders.push(folder.to_string());
        }
        let name = &key[folder.len()..];
        let split = name_parts(name).and_then(|(stem, time, backfill)| {
            Some((stem, <[u8; 16]>::try_from(time.as_bytes()).ok()?, backfill))
        });
        let mut entry = DigestEntry {
            folder: self.folders.len() as u32 - 1,
            stem: u32::MAX,
            time: [0; 16],
            backfill: false,
        };
        match split {
            Some((stem, time, backfill)) => {
                let next = self.stems.len() as u32;
                let s = *self.stem_index.entry(stem.to_string()).or_insert(next);
                if s == next {
                    self.stems.push(stem.to_string());
                }
                (entry.stem, entry.time, entry.backfill) = (s, time, backfill);
            }
            None => {
                self.other.insert(i, name.to_string());
            }
        }
        self.entries.push(entry);
        i
    }

    /// The key of digest `i`.
    pub(crate) fn get(&self, i: u32) -> String {
        let e = &self.entries[i as usize];
        let folder = &self.folders[e.folder as usize];
        if e.stem == u32::MAX {
            return format!("{folder}{}", self.other[&i]);
        }
        let time = std::str::from_utf8(&e.time).expect("a name's part, as put");
        let backfill = if e.backfill { "_backfill" } else { "" };
        let stem = &self.stems[e.stem as usize];
        format!("{folder}{stem}_{time}{backfill}.json.gz")
    }
}

/// Rows a page: ~290 KB.
const ROW_PAGE: usize = 4096;

/// [`Row::flags`]: the name in the text lacks its folder's CloudTrail stem.
const STEM: u8 = 1;
/// … lacks `.json.gz`.
const GZ: u8 = 2;
/// … and the ETag is a quoted MD5 in lowercase hex, kept as its 16 bytes.
const MD5: u8 = 4;

/// `ACCOUNT_CloudTrail_REGION_`, how CloudTrail's names begin in a folder
/// `…/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/`.
fn stem_of(folder: &str) -> Option<String> {
    let i = folder.find("/CloudTrail/")?;
    let account = folder[..i].rsplit('/').next()?;
    let region = folder[i + "/CloudTrail/".len()..].split('/').next()?;
    Some(format!("{account}_CloudTrail_{region}_"))
}

/// The 16 bytes of an ETag `"<32 lowercase hex>"` (a single-part upload's MD5).
fn md5_etag(etag: &str) -> Option<[u8; 16]> {
    let hex = etag.strip_prefix('"')?.strip_suffix('"')?;
    let lower = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if hex.len() != 32 || !hex.bytes().all(lower) {
        return None;
    }
    hex::decode(hex).ok()?.try_into().ok()
}

/// One source file of the inventory.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Its folder in [`FilesRead`]'s prefixes; where its name starts in the text, its
    /// length, and its ETag's after it.
    folder: u32,
    at: u32,
    key_len: u16,
    etag_len: u16,
    /// What of the key and ETag the text leaves out ([`STEM`], [`GZ`], [`MD5`]).
    flags: u8,
    /// As stored; 0 for a file missing.
    pub size: u64,
    /// Of the decoded bytes; for a file missing, what its digest lists.
    pub sha256: [u8; 32],
    /// Records written from it (after selection).
    pub records: u64,
    pub status: Status,
    /// The verified digest that lists it (an index into [`FilesRead::digests`]).
    pub digest: Option<u32>,
}

/// What the digests say of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Verified,
    Modified,
    /// Listed by a verified digest, not in the bucket (not read).
    Missing,
    NotCovered,
}

fn key_id(key: &str) -> u64 {
    twox_hash::xxhash3_128::Hasher::oneshot(key.as_bytes()) as u64
}

/// The folder of a key, with its last `/`.
pub(crate) fn folder_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

impl FilesRead {
    /// Rows to come, of files in `folders` and any others: digests are looked for in
    /// all of them, so that a file of them a digest lists is missing if not read.
    pub fn with_folders(folders: &[String]) -> FilesRead {
        FilesRead {
            folders: folders.iter().cloned().collect(),
            ..FilesRead::default()
        }
    }

    /// A file read to its end (its SHA-256 taken), `kept` of its records written.
    pub fn add(&mut self, file: &FileDone<'_>, kept: u64) {
        let folder = folder_of(file.key);
        if !self.folders.contains(folder) {
            self.folders.insert(folder.to_string());
        }
        let row = Row {
            size: file.size,
            sha256: file.sha256.unwrap_or_default(),
            records: kept,
            ..self.text_of(file.key, file.etag)
        };
        self.push(file.key, row);
    }

    /// Adds `row`, of `key`, and finds it by its key.
    fn push(&mut self, key: &str, row: Row) {
        let i = self.rows.len() as u32;
        self.rows.push(row);
        match self.index.entry(key_id(key)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(key.to_string(), i);
            }
        }
    }

    /// The row of `key`.
    fn find(&self, key: &str) -> Option<usize> {
        match self.index.get(&key_id(key)) {
            Some(&i) if self.key(&self.rows[i as usize]) == key => Some(i as usize),
            _ => self.collided.get(key).map(|&i| i as usize),
        }
    }

    /// A row with `key` and `etag` put in the text (S3 keys are at most 1,024 bytes).
    fn text_of(&mut self, key: &str, etag: Option<&str>) -> Row {
        let folder = folder_of(key);
        if self.prefixes.last().is_none_or(|p| p != folder) {
            self.prefixes.push(folder.to_string());
            self.stem = stem_of(folder).unwrap_or_default();
        }
        let mut flags = 0;
        let mut name = &key[folder.len()..];
        if let Some(rest) = name.strip_prefix(self.stem.as_str()) {
            if !self.stem.is_empty() {
                (name, flags) = (rest, flags | STEM);
            }
        }
        if let Some(rest) = name.strip_suffix(".json.gz") {
            (name, flags) = (rest, flags | GZ);
        }
        let etag = etag.unwrap_or_default();
        let md5 = md5_etag(etag);
        if md5.is_some() {
            flags |= MD5;
        }
        let etag = md5.as_ref().map_or(etag.as_bytes(), |m| &m[..]);
        let at = self.text.append(&[name.as_bytes(), etag]);
        let etag_len = etag.len();
        Row {
            folder: self.prefixes.len() as u32 - 1,
            at,
            key_len: name.len() as u16,
            etag_len: etag_len as u16,
            flags,
            size: 0,
            sha256: [0; 32],
            records: 0,
            status: Status::NotCovered,
            digest: None,
        }
    }

    /// A row's key.
    pub(crate) fn key(&self, r: &Row) -> String {
        let name = std::str::from_utf8(self.text.get(r.at, r.key_len as usize))
            .expect("a key's part, as put");
        let folder = &self.prefixes[r.folder as usize];
        let stem = match r.flags & STEM {
            0 => None,
            _ => stem_of(folder),
        };
        let gz = if r.flags & GZ != 0 { ".json.gz" } else { "" };
        format!("{folder}{}{name}{gz}", stem.unwrap_or_default())
    }

    /// A row's ETag.
    pub(crate) fn etag(&self, r: &Row) -> Option<String> {
        let both = self
            .text
            .get(r.at, r.key_len as usize + r.etag_len as usize);
        let bytes = &both[r.key_len as usize..];
        match (r.etag_len, r.flags & MD5) {
            (0, _) => None,
            (_, 0) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => Some(format!("\"{}\"", hex::encode(bytes))),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    fn count(&self, status: Status) -> u64 {
        self.rows.iter().filter(|r| r.status == status).count() as u64
    }
}

/// `…/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/` → (`…/ACCOUNT/CloudTrail-Digest/REGION/`, day).
fn digest_region_of(log_folder: &str) -> Option<(String, Day)> {
    let i = log_folder.rfind("/CloudTrail/")?;
    let rest = &log_folder[i + "/CloudTrail/".len()..];
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let [region, y, m, d] = parts.as_slice() else {
        return None;
    };
    let day = Day::from_ymd(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    let prefix = format!("{}/CloudTrail-Digest/{region}/", &log_folder[..i]);
    Some((prefix, day))
}

/// The digest group (`…/CloudTrail-Digest/REGION/`) of a log folder's account and
/// region: the digests checked together.
pub(crate) fn log_group(folder: &str) -> Option<String> {
    digest_region_of(folder).map(|(group, _)| group)
}

/// The digest folders to list for `folders` (log folders): folder → the end-time
/// cut-off of the names taken from it (`None`: all), grouped by account and region
/// (the map's order).
pub fn digest_folders(folders: &BTreeSet<String>) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    for f in folders {
        let Some((region, day)) = digest_region_of(f) else {
            continue;
        };
        out.insert(format!("{region}{}", day.path()), None);
        if let Some(next) = day.succ() {
            let cutoff = format!("{}T02", next.0.format("%Y%m%d"));
            out.entry(format!("{region}{}", next.path()))
                .or_insert(Some(cutoff));
        }
    }
    out
}

/// A digest key's name, parsed: the chain it belongs to and its end time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DigestName {
    /// `…/CloudTrail-Digest/REGION/` plus the name without its time (and `_backfill`
    /// kept): digests of one chain share it.
    chain: String,
    /// `YYYYMMDDTHHMMSSZ`.
    time: String,
}

/// A digest's file name as (the name before its time, `YYYYMMDDTHHMMSSZ`, whether it
/// is a backfill digest's).
fn name_parts(name: &str) -> Option<(&str, &str, bool)> {
    let stem = name.strip_suffix(".json.gz")?;
    let (stem, backfill) = match stem.strip_suffix("_backfill") {
        Some(s) => (s, true),
        None => (stem, false),
    };
    let (head, time) = stem.rsplit_once('_')?;
    (time.len() == 16 && time.ends_with('Z')).then_some((head, time, backfill))
}

fn digest_name(key: &str) -> Option<DigestName> {
    let (head, time, backfill) = name_parts(key.rsplit('/').next()?)?;
    let region = key.split("/CloudTrail-Digest/").nth(1)?.split('/').next()?;
    let backfill = if backfill { "_backfill" } else { "" };
    let chain = format!("{region}/{head}{backfill}");
    Some(DigestName {
        chain,
        time: time.to_string(),
    })
}

/// The region of a digest key (`…/CloudTrail-Digest/REGION/…`).
pub(crate) fn region_of(key: &str) -> Option<&str> {
    key.split("/CloudTrail-Digest/").nth(1)?.split('/').next()
}

/// One digest object as read.
#[derive(Debug, Clone)]
pub struct DigestObject {
    pub key: String,
    /// Uncompressed bytes, or why they could not be had.
    pub body: Result<Vec<u8>, String>,
    pub signature: Option<String>,
    pub signature_algorithm: Option<String>,
    /// Its `x-amz-meta-backfill-generation-timestamp`: when a backfill digest was made.
    pub backfill_generated: Option<String>,
}

impl DigestObject {
    /// Whether its key is a backfill digest's (`…_backfill.json.gz`).
    pub fn is_backfill(&self) -> bool {
        self.key.ends_with("_backfill.json.gz")
    }

    /// When a backfill digest was made, if it says so in a form read here (RFC 3339,
    /// or `YYYYMMDDTHHMMSSZ`).
    pub fn backfill_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let t = self.backfill_generated.as_deref()?.trim();
        if !self.is_backfill() {
            return None;
        }
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.to_utc())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").map(|t| t.and_utc())
            })
            .ok()
    }

    /// The digest, parsed, when it is readable, where it says it is in `bucket`, and
    /// signed by the key it names among `keys` (a backfill digest also saying when it
    /// was made, as the AWS CLI requires); else why not.
    pub fn verified(&self, bucket: &str, keys: &[PublicKey]) -> Result<DigestFile, String> {
        if self.is_backfill() && self.backfill_time().is_none() {
            return Err(match &self.backfill_generated {
                None => {
                    "a backfill digest without its backfill-generation-timestamp metadata".into()
                }
                Some(t) => format!("its backfill-generation-timestamp {t:?} is not a time"),
            });
        }
        let bytes = self.body.as_ref().map_err(Clone::clone)?;
        let parsed = digest::parse(bytes).map_err(|e| e.to_string())?;
        let meta = Metadata {
            signature: self.signature.as_deref(),
            signature_algorithm: self.signature_algorithm.as_deref(),
        };
        digest::check(&parsed, (bucket, &self.key), meta, keys).map_err(|e| e.to_string())?;
        Ok(parsed)
    }
}

/// The synchronous core: digests of one account and region at a time, checked against
/// the files read.
pub struct Checker<'a> {
    bucket: &'a str,
    read: FilesRead,
    /// The digest folders of the group being checked ([`digest_folders`]): a digest
    /// named in them was listed, if it exists (a digest names one of its own account
    /// and region).
    listed: BTreeMap<String, Option<String>>,
    counts: Validation,
}

impl<'a> Checker<'a> {
    /// A checker of digests in `bucket` against `read`, and the files added to it.
    pub fn new(bucket: &'a str, read: FilesRead) -> Checker<'a> {
        Checker {
            bucket,
            listed: BTreeMap::new(),
            read,
            counts: Validation::default(),
        }
    }

    /// A file read to its end: see [`FilesRead::add`]. The files of an account and
    /// region are to be added before its digests are checked.
    pub fn add(&mut self, file: &FileDone<'_>, kept: u64) {
        self.read.add(file, kept);
    }

    /// Whether the digest `key` would have been listed.
    fn listed(&self, key: &str) -> bool {
        match (self.listed.get(folder_of(key)), digest_name(key)) {
            (Some(None), Some(_)) => true,
            (Some(Some(cutoff)), Some(n)) => n.time.as_str() < cutoff.as_str(),
            _ => false,
        }
    }

    /// Checks the digests of one account and region (any order) with `keys`, the public
    /// keys of their region; `listed` are the digest folders they were listed from
    /// ([`digest_folders`]), so that a digest named in them was listed, if it exists.
    pub fn group(
        &mut self,
        listed: BTreeMap<String, Option<String>>,
        mut digests: Vec<DigestObject>,
        keys: &[PublicKey],
    ) {
        self.listed = listed;
        let mut chains: BTreeMap<String, Vec<(String, DigestObject)>> = BTreeMap::new();
        for d in digests.drain(..) {
            match digest_name(&d.key) {
                Some(n) => chains.entry(n.chain).or_default().push((n.time, d)),
                None => {
                    // Listed in a digest folder, but not named as a digest is.
                    self.invalid(&d.key, "its name is not a CloudTrail digest's");
                }
            }
        }
        for (_, mut chain) in chains {
            chain.sort_by(|a, b| a.0.cmp(&b.0));
            self.chain(chain.into_iter().map(|(_, d)| d).collect(), keys);
        }
    }

    fn invalid(&mut self, key: &str, why: &str) {
        self.counts.digests_invalid += 1;
        warn!(object = %format!("s3://{}/{key}", self.bucket), problem = why, "digest invalid");
    }

    /// One chain, oldest first.
    fn chain(&mut self, chain: Vec<DigestObject>, keys: &[PublicKey]) {
        // The previous digest, when it verified: (parsed, its signature).
        let mut prev: Option<(DigestFile, Option<String>)> = None;
        let mut first = true;
        for d in chain {
            let parsed = match d.verified(self.bucket, keys) {
                Ok(p) => p,
                Err(why) => {
                    self.invalid(&d.key, &why);
                    prev = None;
                    first = false;
                    continue;
                }
            };
            self.counts.digests_verified += 1;
            if let Some((p, sig)) = &prev {
                if let Link::Gap { names } = digest::link(p, sig.as_deref(), &parsed) {
                    self.counts.digests_missing += 1;
                    warn!(object = %format!("s3://{}/{}", self.bucket, d.key), names = %format!("s3://{names}"),
                        "digest chain broken: the digest it names is missing or not the one before it");
                }
            } else if !first {
                debug!(key = %d.key, "chain not checked: the digest before it did not verify");
            } else if let Some(names) = self.named_and_unlisted(&parsed) {
                // The first of its chain here names a digest that would have been
                // listed with it: that one is gone.
                self.counts.digests_missing += 1;
                warn!(object = %format!("s3://{}/{}", self.bucket, d.key), names = %format!("s3://{}/{names}", self.bucket),
                    "digest chain broken: the digest it names is missing");
            }
            self.files(&parsed);
            prev = Some((parsed, d.signature));
            first = false;
        }
    }

    /// The previous digest `d` names, when it is in this bucket and in a folder listed
    /// (so that, had it existed, it would be in the chain before `d`).
    fn named_and_unlisted(&self, d: &DigestFile) -> Option<String> {
        let g = &d.digest;
        let (bucket, key) = (
            g.previous_digest_s3_bucket.as_deref()?,
            g.previous_digest_s3_object.as_deref()?,
        );
        (bucket == self.bucket && self.listed(key)).then(|| key.to_string())
    }

    /// The log files a verified digest lists, against the files read. A file is judged
    /// by the first verified digest that lists it.
    fn files(&mut self, d: &DigestFile) {
        let mut digest_index = None;
        for f in &d.digest.log_files {
            if f.s3_bucket != self.bucket || !self.read.folders.contains(folder_of(&f.s3_object)) {
                continue;
            }
            let read = &mut self.read;
            let index =
                *digest_index.get_or_insert_with(|| read.digests.push(&d.digest.digest_s3_object));
            let listed: Option<[u8; 32]> = hex::decode(f.hash_value.trim())
                .ok()
                .and_then(|h| h.try_into().ok());
            let object = || format!("s3://{}/{}", f.s3_bucket, f.s3_object);
            match read.find(&f.s3_object).map(|i| &mut read.rows[i]) {
                Some(r) if r.status != Status::NotCovered => {}
                Some(r) => {
                    r.digest = Some(index);
                    if listed == Some(r.sha256) {
                        r.status = Status::Verified;
                    } else {
                        r.status = Status::Modified;
                        warn!(object = %object(), digest = %d.digest.digest_s3_object,
                            "log file modified: its SHA-256 is not the one its digest lists");
                    }
                }
                None => {
                    let row = Row {
                        sha256: listed.unwrap_or_default(),
                        status: Status::Missing,
                        digest: Some(index),
                        ..read.text_of(&f.s3_object, None)
                    };
                    read.push(&f.s3_object, row);
                    warn!(object = %object(), digest = %d.digest.digest_s3_object,
                        "log file missing: its digest lists it, the bucket does not have it");
                }
            }
        }
    }

    /// The counts, and the files with what the digests said of each.
    pub fn finish(mut self) -> (Validation, FilesRead) {
        let r = &self.read;
        self.counts.files_verified = r.count(Status::Verified);
        self.counts.files_modified = r.count(Status::Modified);
        self.counts.files_missing = r.count(Status::Missing);
        self.counts.files_not_covered = r.count(Status::NotCovered);
        (self.counts, self.read)
    }
}

/// The CloudTrail client configuration `ListPublicKeys` is asked with ([`Config`]'s
/// `cloudtrail`). By default (`None`) the SDK's standard configuration
/// ([`crate::aws::sdk_config`]: the same credentials, region and retries as S3; the
/// endpoint from `AWS_ENDPOINT_URL_CLOUDTRAIL`), loaded once per process when first
/// needed. Not a setting: every two compare equal.
///
/// [`Config`]: crate::Config
#[derive(Clone, Default)]
pub struct CloudTrailConfig(Option<aws_sdk_cloudtrail::config::Builder>);

impl CloudTrailConfig {
    /// This configuration (tests, or a caller with clients of its own).
    pub fn with(builder: aws_sdk_cloudtrail::config::Builder) -> CloudTrailConfig {
        CloudTrailConfig(Some(builder))
    }

    async fn builder(&self) -> aws_sdk_cloudtrail::config::Builder {
        static SDK: tokio::sync::OnceCell<aws_config::SdkConfig> =
            tokio::sync::OnceCell::const_new();
        match &self.0 {
            Some(b) => b.clone(),
            None => {
                let sdk = SDK.get_or_init(crate::aws::sdk_config).await;
                aws_sdk_cloudtrail::config::Builder::from(sdk)
            }
        }
    }
}

impl std::fmt::Debug for CloudTrailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.0.is_some() {
            "given"
        } else {
            "standard"
        };
        write!(f, "CloudTrailConfig({what})")
    }
}

impl PartialEq for CloudTrailConfig {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CloudTrailConfig {}

/// CloudTrail's public keys, asked once per region with `ListPublicKeys`.
pub struct PublicKeys {
    base: aws_sdk_cloudtrail::config::Builder,
    range: (aws_smithy_types::DateTime, aws_smithy_types::DateTime),
    cache: HashMap<String, Vec<PublicKey>>,
    /// (region, hour) of the backfill generation times asked about.
    asked: BTreeSet<(String, i64)>,
}

impl PublicKeys {
    /// Keys valid from the day before `day` to three days after (the digests of a
    /// `DAY_BY=event` day reach into the day after next).
    pub async fn new(cloudtrail: &CloudTrailConfig, day: Day) -> PublicKeys {
        let at = |d: chrono::NaiveDate| {
            let t = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
            aws_smithy_types::DateTime::from_secs(t.timestamp())
        };
        let start = at(day.0 - chrono::Days::new(1));
        let end = at(day.0 + chrono::Days::new(3));
        PublicKeys {
            base: cloudtrail.builder().await,
            range: (start, end),
            cache: HashMap::new(),
            asked: BTreeSet::new(),
        }
    }

    /// The keys of `region`.
    pub async fn of(&mut self, region: &str) -> Result<&[PublicKey], Error> {
        if !self.cache.contains_key(region) {
            let keys = self.list(region, self.range).await?;
            info!(region, keys = keys.len(), "public keys listed");
            self.cache.insert(region.to_string(), keys);
        }
        Ok(&self.cache[region])
    }

    /// The keys digest `d` may be signed with: its region's, and for a backfill digest
    /// made outside the day's range also those valid within an hour of its
    /// `backfill-generation-timestamp` (CloudTrail signs a backfill digest when it makes
    /// it; the AWS CLI asks the same window).
    pub async fn for_digest(&mut self, d: &DigestObject) -> Result<&[PublicKey], Error> {
        let region = region_of(&d.key).unwrap_or_default().to_string();
        self.of(&region).await?;
        if let Some(t) = d.backfill_time() {
            let at = t.timestamp();
            let (start, end) = (self.range.0.secs(), self.range.1.secs());
            let outside = at < start || at > end;
            if outside && self.asked.insert((region.clone(), at.div_euclid(3600))) {
                let from = aws_smithy_types::DateTime::from_secs;
                let window = (from(at - 3600), from(at + 3600));
                let more = self.list(&region, window).await?;
                info!(region, around = %t, keys = more.len(), "public keys listed for a backfill digest");
                let have = self.cache.get_mut(&region).expect("listed above");
                for k in more {
                    if !have.iter().any(|h| h.fingerprint == k.fingerprint) {
                        have.push(k);
                    }
                }
            }
        }
        Ok(&self.cache[&region])
    }

    async fn list(
        &self,
        region: &str,
        (start, end): (aws_smithy_types::DateTime, aws_smithy_types::DateTime),
    ) -> Result<Vec<PublicKey>, Error> {
        let conf = self
            .base
            .clone()
            .region(aws_sdk_cloudtrail::config::Region::new(region.to_string()))
            .build();
        let client = aws_sdk_cloudtrail::Client::from_conf(conf);
        let mut pages = client
            .list_public_keys()
            .start_time(start)
            .end_time(end)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(|e| Error::PublicKeys {
            region: region.to_string(),
            detail: crate::error::error_chain(&e),
        })? {
            for k in page.public_key_list() {
                if let Some(v) = k.value() {
                    keys.push(PublicKey::new(v.as_ref().to_vec()));
                }
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest folders of a day's log folders: the day's whole, the next day's
    /// first hours; the org and single-account layouts.
    #[test]
    fn digest_folders_of_log_folders() {
        let folders: BTreeSet<String> = [
            "AWSLogs/o-abcdefghij/222222222222/CloudTrail/us-east-1/2024/02/12/",
            "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/12/",
            "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/13/",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let got: Vec<(String, Option<String>)> = digest_folders(&folders).into_iter().collect();
        let want = [
            (
                "AWSLogs/111111111111/CloudTrail-Digest/eu-west-1/2024/02/12/",
                None,
            ),
            (
                "AWSLogs/111111111111/CloudTrail-Digest/eu-west-1/2024/02/13/",
                None,
            ),
            (
                "AWSLogs/111111111111/CloudTrail-Digest/eu-west-1/2024/02/14/",
                Some("20240214T02"),
            ),
            (
                "AWSLogs/o-abcdefghij/222222222222/CloudTrail-Digest/us-east-1/2024/02/12/",
                None,
            ),
            (
                "AWSLogs/o-abcdefghij/222222222222/CloudTrail-Digest/us-east-1/2024/02/13/",
                Some("20240213T02"),
            ),
        ];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(f, c)| (f.to_string(), c.map(String::from)))
            .collect();
        assert_eq!(got, want);
    }

    /// The rows give back each key and ETag exactly as added, whatever of them the
    /// text leaves out, and are found by key.
    #[test]
    fn files_read_keep_keys_and_etags_exactly() {
        let folder = "AWSLogs/o-abcdefghij/111111111111/CloudTrail/eu-west-1/2024/02/12/";
        let keys_etags: [(String, Option<&str>); 6] = [
            (
                format!("{folder}111111111111_CloudTrail_eu-west-1_20240212T0005Z_AbCdEf0123456789.json.gz"),
                Some("\"0123456789abcdef0123456789abcdef\""),
            ),
            (
                format!("{folder}111111111111_CloudTrail_eu-west-1_20240212T0010Z_x.json"),
                Some("\"0123456789ABCDEF0123456789ABCDEF\""),
            ),
            (format!("{folder}other.json.gz"), Some("\"0123456789abcdef0123456789abcdef-3\"")),
            (format!("{folder}222222222222_CloudTrail_eu-west-1_y.json.gz"), None),
            ("AWSLogs/x/Config/a.json.gz".to_string(), Some("plain")),
            ("top.json.gz".to_string(), Some("\"\"")),
        ];
        let mut read = FilesRead::default();
        for (key, etag) in &keys_etags {
            let file = FileDone {
                key,
                size: 7,
                etag: *etag,
                records: 1,
                sha256: Some([1; 32]),
            };
            read.add(&file, 1);
        }
        for (i, (key, etag)) in keys_etags.iter().enumerate() {
            let r = &read.rows[i];
            assert_eq!(&read.key(r), key);
            let etag = etag.filter(|e| !e.is_empty()).map(str::to_string);
            assert_eq!(read.etag(r), etag, "{key}");
            assert_eq!(read.find(key), Some(i));
        }
        assert_eq!(read.rows[0].flags, STEM | GZ | MD5);
        let p = "AWSLogs/111111111111/CloudTrail-Digest/eu-west-1/2024/02/12/";
        let digests = [
            format!("{p}111111111111_CloudTrail-Digest_eu-west-1_my_trail_us-east-1_20240212T063000Z.json.gz"),
            format!("{p}111111111111_CloudTrail-Digest_eu-west-1_my_trail_us-east-1_20240212T073000Z_backfill.json.gz"),
            format!("{p}odd.json"),
            format!("{p}111111111111_CloudTrail-Digest_eu-west-1_my_trail_us-east-1_20240212T083000Z.json.gz"),
        ];
        let mut names = DigestNames::default();
        let at: Vec<u32> = digests.iter().map(|d| names.push(d)).collect();
        assert_eq!(at, [0, 1, 2, 3]);
        for (i, d) in digests.iter().enumerate() {
            assert_eq!(&names.get(i as u32), d);
        }
        assert_eq!(names.stems.len(), 1);
        assert_eq!(read.find(&format!("{folder}absent.json.gz")), None);
    }

    /// A digest's chain and time come from its name; `_backfill` digests are a chain
    /// of their own; trail names may hold underscores.
    #[test]
    fn digest_names() {
        let p = "AWSLogs/111111111111/CloudTrail-Digest/eu-west-1/2024/02/12/";
        let n = digest_name(&format!("{p}111111111111_CloudTrail-Digest_eu-west-1_my_trail_us-east-1_20240212T063000Z.json.gz")).unwrap();
        assert_eq!(n.time, "20240212T063000Z");
        assert_eq!(
            n.chain,
            "eu-west-1/111111111111_CloudTrail-Digest_eu-west-1_my_trail_us-east-1"
        );
        let b = digest_name(&format!("{p}111111111111_CloudTrail-Digest_eu-west-1_my_trail_us-east-1_20240212T063000Z_backfill.json.gz")).unwrap();
        assert_eq!(b.time, n.time);
        assert_ne!(b.chain, n.chain);
        assert_eq!(digest_name(&format!("{p}notes.txt")), None);
        assert_eq!(region_of(&format!("{p}x.json.gz")), Some("eu-west-1"));
    }
}
