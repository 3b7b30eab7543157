//! Delivery index: what an event day's run learnt of its own delivery folders, so that
//! the run of the day before reads only those of their files that hold its events.
//!
//! With `DAY_BY=event` the run of day D reads the delivery folders D and D+1, and most
//! of its time in D+1 goes to files holding no event of D: CloudTrail delivers within
//! minutes, so D's events in D+1 are in each region's first files. The run of D+1 reads
//! every file of folder D+1 anyway. As it reads them it writes, beside its manifest,
//! `_delivery-index.json.gz`: for each account and region folder of D+1, the SHA-256 of
//! its listing (each file's name, size and ETag, in key order) and the names of the
//! files that hold a record of an earlier day. The manifest names the index with its
//! SHA-256 (`delivery_index`).
//!
//! The run of D, when that manifest is there, lists folder D+1 as always and compares
//! each account and region folder with the index: a folder whose listing hashes the
//! same is read only for the files the index names; any other (a file added, removed
//! or rewritten since, or a folder the index does not know) is read whole. No event is
//! left unread on a guess: a file skipped was read by the run of D+1, under the same
//! name, size and ETag, and held no record of a day before D+1. The manifest of D says
//! what was skipped (`selection.next_index`). An index that is missing, of another
//! source, or does not match its manifest's SHA-256 is not used: the folder is read
//! whole, as before.
//!
//! A folder that several shards read has one part per shard (its files in key order,
//! cut where the shards were cut); its listing is compared part by part.
//!
//! Only with `VALIDATE=off`: with it on, every file of D+1 is read so that its digest
//! is checked against it. Building, merging, rendering and matching are pure; the
//! reading and writing are at the end of this file.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};

use aws_lc_rs::digest::{Context, SHA256};
use aws_sdk_s3::Client;
use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::inventory::InventoryFile;
use crate::listing::SourceObject;
use crate::manifest::Manifest;
use crate::pages::{Pages, Text};
use crate::select::DayBy;
use crate::trigger::Day;

/// Files of one folder read by one shard, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub files: u64,
    /// Lowercase hex SHA-256 of their names, sizes and ETags (`listing_line`).
    pub sha256: String,
}

/// One account and region folder of the delivery day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderEntry {
    /// `…/CloudTrail/REGION/YYYY/MM/DD/`.
    pub folder: String,
    pub parts: Vec<Part>,
    /// Names (after `folder`) of its files holding a record of an earlier day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<String>,
}

/// What `_delivery-index.json.gz` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryIndex {
    /// The delivery day of the folders (`YYYY-MM-DD`).
    pub day: String,
    /// `s3://bucket/prefix` they were read from.
    pub source: String,
    pub folders: Vec<FolderEntry>,
}

/// How the run of the day before used an index (the manifest's
/// `selection.next_index`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexUse {
    /// `s3://bucket/key` of the index, and its SHA-256 as its manifest names it.
    pub index: String,
    pub sha256: String,
    /// Folders listed as the index has them: only their files of earlier days read.
    pub folders_matched: u64,
    /// Folders listed otherwise, or unknown to the index: read whole.
    pub folders_read_whole: u64,
    /// Files of the matched folders not read.
    pub files_skipped: u64,
}

/// What a folder's SHA-256 is taken over, for one listed file: its name, size and ETag,
/// each framed by its length (a name may hold any byte but `/`), and whether the
/// listing gave an ETag at all.
fn listing_line(ctx: &mut Context, name: &str, size: u64, etag: Option<&str>) {
    ctx.update(&(name.len() as u64).to_le_bytes());
    ctx.update(name.as_bytes());
    ctx.update(&size.to_le_bytes());
    match etag {
        Some(etag) => {
            ctx.update(&[1]);
            ctx.update(&(etag.len() as u64).to_le_bytes());
            ctx.update(etag.as_bytes());
        }
        None => ctx.update(&[0]),
    }
}

/// The folder of a key (up to its last `/`) and its name.
fn split(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(i) => key.split_at(i + 1),
        None => ("", key),
    }
}

/// One folder as the builder keeps it: where its name is in the text, its files and
/// their hash, and which of the builder's `earlier` names are its.
#[derive(Debug)]
struct Row {
    folder: (u32, u32),
    files: u64,
    sha256: [u8; 32],
    earlier: std::ops::Range<usize>,
}

/// Builds one shard's part of the index, file by file, in the order read (a pure core:
/// the records stage feeds it). It runs beside the records stage's buffers for the
/// whole shard, so what it keeps is in [`Pages`] and [`Text`], not small strings.
pub struct IndexBuilder {
    /// `YYYY/MM/DD/`: only folders of the run's own delivery day are indexed.
    day_path: String,
    text: Text,
    folders: Pages<Row, 1024>,
    /// Names of files with earlier records: (where in `text`, length).
    earlier: Pages<(u32, u32), 4096>,
    /// The last folder's hash, while it is open.
    open: Option<Context>,
}

impl std::fmt::Debug for IndexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder")
            .field("day_path", &self.day_path)
            .field("folders", &self.folders.len())
            .finish_non_exhaustive()
    }
}

impl IndexBuilder {
    pub fn new(day: Day) -> IndexBuilder {
        IndexBuilder {
            day_path: day.path(),
            text: Text::default(),
            folders: Pages::default(),
            earlier: Pages::default(),
            open: None,
        }
    }

    fn text_of(&self, (at, len): (u32, u32)) -> &str {
        std::str::from_utf8(self.text.get(at, len as usize)).expect("put as a str")
    }

    /// A file read to its end; `earlier` when it held a record of a day before its
    /// folder's.
    pub fn file(&mut self, key: &str, size: u64, etag: Option<&str>, earlier: bool) {
        let (folder, name) = split(key);
        if !folder.ends_with(&self.day_path) {
            return;
        }
        let last = self.folders.len().checked_sub(1);
        if last.is_none_or(|i| self.text_of(self.folders[i].folder) != folder) {
            self.close();
            let at = self.text.append(&[folder.as_bytes()]);
            let n = self.earlier.len();
            self.folders.push(Row {
                folder: (at, folder.len() as u32),
                files: 0,
                sha256: [0; 32],
                earlier: n..n,
            });
        }
        let i = self.folders.len() - 1;
        listing_line(
            self.open.get_or_insert_with(|| Context::new(&SHA256)),
            name,
            size,
            etag,
        );
        self.folders[i].files += 1;
        if earlier {
            let at = self.text.append(&[name.as_bytes()]);
            self.earlier.push((at, name.len() as u32));
            self.folders[i].earlier.end += 1;
        }
    }

    fn close(&mut self) {
        if let (Some(ctx), Some(i)) = (self.open.take(), self.folders.len().checked_sub(1)) {
            self.folders[i]
                .sha256
                .copy_from_slice(ctx.finish().as_ref());
        }
    }

    /// The shard's folders, each with one part.
    pub fn finish(mut self) -> Vec<FolderEntry> {
        self.close();
        self.folders
            .iter()
            .map(|row| FolderEntry {
                folder: self.text_of(row.folder).to_string(),
                parts: vec![Part {
                    files: row.files,
                    sha256: hex::encode(row.sha256),
                }],
                earlier: row
                    .earlier
                    .clone()
                    .map(|e| self.text_of(self.earlier[e]).to_string())
                    .collect(),
            })
            .collect()
    }
}

/// The day's index from its shards' parts, in shard order: a folder cut between two
/// shards gets a part from each.
pub fn merge(day: Day, source: &str, shards: Vec<Vec<FolderEntry>>) -> DeliveryIndex {
    let mut folders: Vec<FolderEntry> = Vec::new();
    for entry in shards.into_iter().flatten() {
        match folders.last_mut() {
            Some(last) if last.folder == entry.folder => {
                last.parts.extend(entry.parts);
                last.earlier.extend(entry.earlier);
            }
            _ => folders.push(entry),
        }
    }
    DeliveryIndex {
        day: day.to_string(),
        source: source.to_string(),
        folders,
    }
}

/// The index as stored: gzip JSON, no timestamp in the header.
pub fn render(index: &DeliveryIndex) -> Vec<u8> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    serde_json::to_writer(&mut gz, index).expect("serialising to memory");
    gz.flush().expect("writing to memory");
    gz.finish().expect("writing to memory")
}

/// Reads an index back.
pub fn parse(gz: &[u8]) -> Result<DeliveryIndex, String> {
    let mut json = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut json)
        .map_err(|e| format!("not gzip: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("not an index: {e}"))
}

/// Applies an index to the listing of the next day's folders (a pure core: the plan's
/// listing feeds it folder by folder).
#[derive(Debug)]
pub struct Filter {
    folders: HashMap<String, (Vec<Part>, HashSet<String>)>,
    used: IndexUse,
}

impl Filter {
    /// `index` as `used` (its key and SHA-256) says, counts at zero.
    pub fn new(index: DeliveryIndex, used: IndexUse) -> Filter {
        let folders = index
            .folders
            .into_iter()
            .map(|f| (f.folder, (f.parts, f.earlier.into_iter().collect())))
            .collect();
        Filter { folders, used }
    }

    /// The objects of one listed folder (sorted) that are to be read: all of them, but
    /// for a folder the index has with the same listing, only those it names.
    pub fn apply(&mut self, mut objects: Vec<SourceObject>) -> Vec<SourceObject> {
        let Some(first) = objects.first() else {
            return objects;
        };
        let folder = split(&first.key).0;
        let Some((parts, earlier)) = self.folders.get(folder) else {
            return objects;
        };
        if !Self::same_listing(parts, &objects) {
            self.used.folders_read_whole += 1;
            return objects;
        }
        let before = objects.len();
        objects.retain(|o| earlier.contains(split(&o.key).1));
        self.used.folders_matched += 1;
        self.used.files_skipped += (before - objects.len()) as u64;
        objects
    }

    /// Whether `objects` are, part by part, the files the index was made from.
    fn same_listing(parts: &[Part], objects: &[SourceObject]) -> bool {
        // Checked: counts that do not add up (a damaged index) are another listing.
        let total = parts.iter().try_fold(0u64, |n, p| n.checked_add(p.files));
        if total != Some(objects.len() as u64) {
            return false;
        }
        let mut rest = objects;
        parts.iter().all(|part| {
            let (these, after) = rest.split_at(part.files as usize);
            rest = after;
            let mut ctx = Context::new(&SHA256);
            for o in these {
                listing_line(&mut ctx, split(&o.key).1, o.size, o.etag.as_deref());
            }
            hex::encode(ctx.finish()) == part.sha256
        })
    }

    /// Whether the index is of a folder the listing has.
    pub fn knows(&self, folder: &str) -> bool {
        self.folders.contains_key(folder)
    }

    /// What the filter did.
    pub fn used(&self) -> IndexUse {
        self.used.clone()
    }
}

/// The index of `next`'s delivery folders, when the run of the day `next` wrote one
/// for this source with `DAY_BY=event`; otherwise (or when it cannot be read) `None`,
/// and the folders are read whole. Only for `DAY_BY=event` with `VALIDATE=off`.
pub async fn load(s3: &Client, cfg: &Config, next: Day) -> Option<Filter> {
    if cfg.day_by != DayBy::Event || !cfg.validate.is_off() {
        return None;
    }
    let dst = cfg.dst_bucket.as_str();
    let source = format!("s3://{}/{}", cfg.src_bucket, cfg.src_prefix);
    let manifest_key = crate::layout::manifest_key(&cfg.dst_prefix, next);
    let what = "GetObject (reading the next day's manifest for its delivery index)";
    let manifest = match crate::writer::get_json::<Manifest>(s3, dst, &manifest_key, what).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            info!(day = %next, "the next day is not aggregated: its delivery folders are read whole");
            return None;
        }
        Err(e) => {
            warn!(day = %next, error = %e, "the next day's manifest could not be read: its delivery folders are read whole");
            return None;
        }
    };
    let by_event = manifest.selection.as_ref().map(|s| s.day_by) == Some(DayBy::Event);
    let Some(entry) = manifest
        .delivery_index
        .filter(|_| by_event && manifest.source == source)
    else {
        info!(day = %next, manifest = %format!("s3://{dst}/{manifest_key}"), "the next day's manifest names no delivery index of this source: its delivery folders are read whole");
        return None;
    };
    match read(s3, dst, &entry, next, &source).await {
        Ok(index) => {
            let used = IndexUse {
                index: format!("s3://{dst}/{}", entry.key),
                sha256: entry.sha256,
                ..IndexUse::default()
            };
            info!(day = %next, index = %used.index, folders = index.folders.len(), "the next day's delivery index read");
            Some(Filter::new(index, used))
        }
        Err(why) => {
            warn!(day = %next, index = %format!("s3://{dst}/{}", entry.key), why, "the next day's delivery index is not used: its delivery folders are read whole");
            None
        }
    }
}

/// Reads and checks the index `entry` names.
async fn read(
    s3: &Client,
    bucket: &str,
    entry: &InventoryFile,
    next: Day,
    source: &str,
) -> Result<DeliveryIndex, String> {
    let what = "GetObject (reading the next day's delivery index)";
    let bytes = crate::writer::get_if_exists(s3, bucket, &entry.key, what)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("it is gone")?;
    let sha256 = crate::digest::sha256_hex(&bytes);
    if sha256 != entry.sha256 {
        return Err(format!(
            "its SHA-256 is {sha256}, its manifest says {} (rewritten by a later run)",
            entry.sha256
        ));
    }
    let index = parse(&bytes)?;
    if index.day != next.to_string() || index.source != source {
        return Err(format!(
            "it is of {} in {}, not {next} in {source}",
            index.day, index.source
        ));
    }
    Ok(index)
}

/// Writes the day's index from its shards' parts; `None` when a shard made none.
pub async fn write(
    s3: &Client,
    cfg: &Config,
    day: Day,
    source: &str,
    parts: Option<Vec<Vec<FolderEntry>>>,
) -> Result<Option<InventoryFile>, Error> {
    let Some(parts) = parts else { return Ok(None) };
    let index = merge(day, source, parts);
    let bytes = render(&index);
    let entry = InventoryFile {
        key: crate::layout::delivery_index_key(&cfg.dst_prefix, day),
        files: index
            .folders
            .iter()
            .flat_map(|f| &f.parts)
            .map(|p| p.files)
            .sum(),
        bytes: bytes.len() as u64,
        sha256: crate::digest::sha256_hex(&bytes),
    };
    let body = aws_sdk_s3::primitives::ByteStream::from(bytes);
    crate::writer::put(s3, &cfg.dst_bucket, &entry.key, body, "application/gzip").await?;
    info!(key = %format!("s3://{}/{}", cfg.dst_bucket, entry.key), folders = index.folders.len(), files = entry.files, "delivery index written");
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/13/";
    const G: &str = "AWSLogs/222222222222/CloudTrail/eu-west-1/2024/02/13/";

    fn obj(folder: &str, name: &str, size: u64) -> SourceObject {
        SourceObject {
            key: format!("{folder}{name}"),
            size,
            etag: Some(format!("\"{name}-etag\"")),
        }
    }

    fn day() -> Day {
        "2024-02-13".parse().unwrap()
    }

    /// Builds the index of `shards` (each a list of (object, earlier)).
    fn index_of(shards: &[&[(SourceObject, bool)]]) -> DeliveryIndex {
        let parts = shards
            .iter()
            .map(|files| {
                let mut b = IndexBuilder::new(day());
                for (o, earlier) in *files {
                    b.file(&o.key, o.size, o.etag.as_deref(), *earlier);
                }
                b.finish()
            })
            .collect();
        merge(day(), "s3://src/AWSLogs/", parts)
    }

    fn filter(index: DeliveryIndex) -> Filter {
        Filter::new(parse(&render(&index)).unwrap(), IndexUse::default())
    }

    /// A folder listed as indexed is read only for its files of earlier days; another
    /// folder is read whole.
    #[test]
    fn a_matching_folder_keeps_only_its_files_of_earlier_days() {
        let f = [obj(F, "a", 10), obj(F, "b", 20), obj(F, "c", 30)];
        let index = index_of(&[&[
            (f[0].clone(), true),
            (f[1].clone(), false),
            (f[2].clone(), false),
        ]]);
        assert_eq!(index.folders[0].earlier, vec!["a"]);
        let mut filter = filter(index);
        assert_eq!(filter.apply(f.to_vec()), vec![f[0].clone()]);
        let g = vec![obj(G, "x", 1)];
        assert_eq!(filter.apply(g.clone()), g);
        assert!(filter.apply(Vec::new()).is_empty());
        let used = filter.used();
        assert_eq!(
            (
                used.folders_matched,
                used.folders_read_whole,
                used.files_skipped
            ),
            (1, 0, 2)
        );
        assert!(filter.knows(F) && !filter.knows(G));
    }

    /// Any change to a folder's listing since it was indexed reads it whole.
    #[test]
    fn a_changed_folder_is_read_whole() {
        let f = vec![obj(F, "a", 10), obj(F, "b", 20)];
        let index = index_of(&[&[(f[0].clone(), true), (f[1].clone(), false)]]);
        let mut added = f.clone();
        added.push(obj(F, "c", 5));
        let mut resized = f.clone();
        resized[1].size = 21;
        let mut retagged = f.clone();
        retagged[1].etag = Some("\"other\"".into());
        let mut renamed = f.clone();
        renamed[1].key = format!("{F}bb");
        for changed in [added, resized, retagged, renamed, vec![f[0].clone()]] {
            let mut filter = filter(index.clone());
            assert_eq!(filter.apply(changed.clone()), changed);
            assert_eq!(filter.used().folders_read_whole, 1);
            assert_eq!(filter.used().files_skipped, 0);
        }
        // Counts that wrap around to the listing's length are not the listing.
        let mut damaged = index.clone();
        damaged.folders[0].parts = vec![
            Part {
                files: u64::MAX,
                sha256: String::new(),
            },
            Part {
                files: 3,
                sha256: String::new(),
            },
        ];
        let mut filter = filter(damaged);
        assert_eq!(filter.apply(f.clone()), f);
    }

    /// A folder cut between shards has a part from each, compared part by part; files
    /// of other delivery days are not indexed.
    #[test]
    fn a_folder_cut_between_shards_matches_part_by_part() {
        let f = [obj(F, "a", 1), obj(F, "b", 2), obj(F, "c", 3)];
        let other_day = obj(
            "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/14/",
            "z",
            9,
        );
        let index = index_of(&[
            &[(f[0].clone(), false)],
            &[
                (f[1].clone(), false),
                (f[2].clone(), true),
                (other_day, true),
            ],
        ]);
        assert_eq!(index.folders.len(), 1);
        assert_eq!(index.folders[0].parts.len(), 2);
        assert_eq!(index.folders[0].parts[1].files, 2);
        let mut filter = filter(index);
        assert_eq!(filter.apply(f.to_vec()), vec![f[2].clone()]);
        assert_eq!(filter.used().files_skipped, 2);
    }

    /// A listing's hash tells apart listings that differ anywhere: a name that holds
    /// what would be a separator, an ETag absent or empty, another size.
    #[test]
    fn listing_hashes_frame_every_field() {
        let hash = |files: &[(&str, u64, Option<&str>)]| {
            let mut ctx = Context::new(&SHA256);
            for (name, size, etag) in files {
                listing_line(&mut ctx, name, *size, *etag);
            }
            hex::encode(ctx.finish())
        };
        let cases: [&[(&str, u64, Option<&str>)]; 6] = [
            &[("a", 1, Some("e"))],
            &[("a", 1, Some(""))],
            &[("a", 1, None)],
            &[("a", 2, Some("e"))],
            &[("a\t1\te\n", 1, Some("e"))],
            &[("a", 1, Some("e")), ("b", 1, Some("e"))],
        ];
        let hashes: HashSet<String> = cases.iter().map(|c| hash(c)).collect();
        assert_eq!(hashes.len(), cases.len());
        assert_eq!(hash(cases[0]), hash(&[("a", 1, Some("e"))]));
    }

    /// The stored form reads back, and is the same bytes every time.
    #[test]
    fn renders_deterministically() {
        let index = index_of(&[&[(obj(F, "a", 1), true)]]);
        assert_eq!(render(&index), render(&index));
        assert_eq!(parse(&render(&index)).unwrap(), index);
        assert!(parse(b"not gzip").is_err());
    }
}
