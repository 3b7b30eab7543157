//! Layout: every key of a day's output folder, pure (no I/O), in one place.
//!
//! ```text
//! DST_PREFIX/YYYY/MM/DD/
//!   000000.ndjson.gz, 000001…             chunks of a day run as one shard (or .parquet)
//!   PLAN-00003-000000.ndjson.gz, …         chunks of shard 3 of a day of many shards
//!   _manifest.json                         written last: the day is complete
//!   _lease.json                            one run per day at a time
//!   _plan-RUN.json                         the plan of run RUN (a day of many shards)
//!   _plan-RUN-00003.keys.json.gz           the source objects shard 3 reads
//!   _plan-RUN-00003.done.json              shard 3's result, once it has written its chunks
//!   _plan-RUN-00003.failed.json            why shard 3's last attempt failed (until it succeeds)
//!   _plan-RUN.commit.json                  who commits the day (created once, conditionally)
//! ```
//!
//! Every name that is not a chunk starts with `_`: Hive and Athena skip such files, so
//! nothing but records is ever read as data. `PLAN` is the plan's content id (12 hex
//! digits of a hash of the listing it splits and the settings that shape the output):
//! two plans over the same sources name their chunks alike and write the same bytes,
//! and a plan over other sources can never overwrite a chunk another plan keeps. `RUN`
//! is 12 hex digits of a hash of the planning run's id (unique per run). Chunk names
//! sort in record order: shard by shard, chunk by chunk.

use crate::config::{OutputFormat, Setting};
use crate::trigger::Day;

pub const MANIFEST_NAME: &str = "_manifest.json";
pub const LEASE_NAME: &str = "_lease.json";
/// With `DAY_BY=event`: what the day's run learnt of its delivery folders
/// ([`crate::delivery_index`]).
pub const DELIVERY_INDEX_NAME: &str = "_delivery-index.json.gz";
/// What every file of a plan's starts with.
pub const PLAN_PREFIX: &str = "_plan-";

/// `DST_PREFIX/YYYY/MM/DD/`.
pub fn day_prefix(dst_prefix: &str, day: Day) -> String {
    format!("{dst_prefix}{}", day.path())
}

/// `DST_PREFIX/YYYY/MM/DD/_manifest.json`.
pub fn manifest_key(dst_prefix: &str, day: Day) -> String {
    format!("{}{MANIFEST_NAME}", day_prefix(dst_prefix, day))
}

/// `DST_PREFIX/YYYY/MM/DD/_delivery-index.json.gz`.
pub fn delivery_index_key(dst_prefix: &str, day: Day) -> String {
    format!("{}{DELIVERY_INDEX_NAME}", day_prefix(dst_prefix, day))
}

/// `DST_PREFIX/YYYY/MM/DD/_lease.json`.
pub fn lease_key(dst_prefix: &str, day: Day) -> String {
    format!("{}{LEASE_NAME}", day_prefix(dst_prefix, day))
}

/// 12 hex digits naming a run in file names (its id may hold any character).
pub fn run_tag(run_id: &str) -> String {
    hex48(twox_hash::XxHash3_128::oneshot(run_id.as_bytes()))
}

/// The first 48 bits of a 128-bit hash as 12 hex digits.
pub fn hex48(hash: u128) -> String {
    format!("{:012x}", hash >> 80)
}

/// How the chunks of one shard are named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Naming {
    /// The only shard of its day: `NNNNNN` (the names a day has always had).
    Single,
    /// Shard `index` of the plan whose content id is `plan`: `PLAN-SSSSS-NNNNNN`.
    Shard { plan: String, index: u32 },
}

/// The chunk key of chunk `n` of a shard named by `naming`.
pub fn chunk_key(
    dst_prefix: &str,
    day: Day,
    naming: &Naming,
    n: u32,
    format: OutputFormat,
) -> String {
    let folder = day_prefix(dst_prefix, day);
    let suffix = format.suffix();
    match naming {
        Naming::Single => format!("{folder}{n:06}{suffix}"),
        Naming::Shard { plan, index } => format!("{folder}{plan}-{index:05}-{n:06}{suffix}"),
    }
}

/// Where one shard's chunks go: the bucket, the day's folder under `DST_PREFIX`, their
/// names and format.
#[derive(Debug, Clone, Copy)]
pub struct DayOutput<'a> {
    pub bucket: &'a str,
    pub dst_prefix: &'a str,
    pub day: Day,
    pub naming: &'a Naming,
    pub format: OutputFormat,
}

impl DayOutput<'_> {
    /// The key of chunk `n`.
    pub fn chunk_key(&self, n: u32) -> String {
        chunk_key(self.dst_prefix, self.day, self.naming, n, self.format)
    }
}

/// The format of an object name that is one of our chunks (`000012.ndjson.gz`,
/// `0123456789ab-00003-000000.parquet`); `None` for any other name.
pub fn chunk_format(name: &str) -> Option<OutputFormat> {
    let (stem, format) = OutputFormat::ALL
        .iter()
        .copied()
        .find_map(|f| Some((name.strip_suffix(f.suffix())?, f)))?;
    let digits = |s: &str, min: usize| s.len() >= min && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match stem.split('-').collect::<Vec<_>>().as_slice() {
        [n] => digits(n, 6),
        [plan, shard, n] => {
            plan.len() == 12
                && plan
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && digits(shard, 5)
                && digits(n, 6)
        }
        _ => false,
    };
    ok.then_some(format)
}

/// The files of a plan of run `tag`, in the day's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFiles {
    folder: String,
    tag: String,
}

impl PlanFiles {
    pub fn new(dst_prefix: &str, day: Day, tag: &str) -> PlanFiles {
        PlanFiles {
            folder: day_prefix(dst_prefix, day),
            tag: tag.to_string(),
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `_plan-RUN.json`.
    pub fn plan(&self) -> String {
        format!("{}{PLAN_PREFIX}{}.json", self.folder, self.tag)
    }

    /// `_plan-RUN.commit.json`.
    pub fn commit(&self) -> String {
        format!("{}{PLAN_PREFIX}{}.commit.json", self.folder, self.tag)
    }

    /// `_plan-RUN-SSSSS.keys.json.gz`.
    pub fn keys(&self, shard: u32) -> String {
        self.shard_file(shard, "keys.json.gz")
    }

    /// `_plan-RUN-SSSSS.done.json`.
    pub fn done(&self, shard: u32) -> String {
        self.shard_file(shard, "done.json")
    }

    /// `_plan-RUN-SSSSS.failed.json`.
    pub fn failed(&self, shard: u32) -> String {
        self.shard_file(shard, "failed.json")
    }

    /// What the keys of this plan's shard files start with (`_plan-RUN-`), to list them.
    pub fn shard_files_prefix(&self) -> String {
        format!("{}{PLAN_PREFIX}{}-", self.folder, self.tag)
    }

    fn shard_file(&self, shard: u32, what: &str) -> String {
        format!("{}{shard:05}.{what}", self.shard_files_prefix())
    }

    /// The shard whose `done` file `key` is, if it is one of this plan's.
    pub fn done_shard(&self, key: &str) -> Option<u32> {
        self.shard_of(key, ".done.json")
    }

    /// The shard whose `failed` file `key` is, if it is one of this plan's.
    pub fn failed_shard(&self, key: &str) -> Option<u32> {
        self.shard_of(key, ".failed.json")
    }

    fn shard_of(&self, key: &str, suffix: &str) -> Option<u32> {
        let n = key
            .strip_prefix(&self.shard_files_prefix())?
            .strip_suffix(suffix)?;
        (n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse().ok())
            .flatten()
    }
}

/// The key of the inventory of a shard named by `naming` ([`crate::inventory`]):
/// `_inventory.json.gz`, or `_inventory-PLAN-SSSSS.json.gz`.
pub fn inventory_key(dst_prefix: &str, day: Day, naming: &Naming) -> String {
    let folder = day_prefix(dst_prefix, day);
    match naming {
        Naming::Single => format!("{folder}{INVENTORY_PREFIX}.json.gz"),
        Naming::Shard { plan, index } => {
            format!("{folder}{INVENTORY_PREFIX}-{plan}-{index:05}.json.gz")
        }
    }
}

/// What every inventory's name starts with.
pub const INVENTORY_PREFIX: &str = "_inventory";

/// Whether an object name (without its folder) is an inventory.
pub fn is_inventory(name: &str) -> bool {
    name.starts_with(INVENTORY_PREFIX)
}

/// Whether an object name (without its folder) is a file of some plan.
pub fn is_plan_file(name: &str) -> bool {
    name.starts_with(PLAN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Day {
        "2024-02-05".parse().unwrap()
    }

    /// Keys follow the layout of the module doc.
    #[test]
    fn keys() {
        let (nd, pq) = (OutputFormat::Ndjson, OutputFormat::Parquet);
        let single = Naming::Single;
        let shard = Naming::Shard {
            plan: "0123456789ab".into(),
            index: 3,
        };
        let cases = [
            (
                chunk_key("daily/", day(), &single, 0, nd),
                "daily/2024/02/05/000000.ndjson.gz",
            ),
            (
                chunk_key("", day(), &single, 12, nd),
                "2024/02/05/000012.ndjson.gz",
            ),
            (
                chunk_key("d/", day(), &single, 3, pq),
                "d/2024/02/05/000003.parquet",
            ),
            (
                chunk_key("d/", day(), &shard, 7, nd),
                "d/2024/02/05/0123456789ab-00003-000007.ndjson.gz",
            ),
            (manifest_key("x/y/", day()), "x/y/2024/02/05/_manifest.json"),
            (lease_key("x/", day()), "x/2024/02/05/_lease.json"),
            (
                delivery_index_key("x/", day()),
                "x/2024/02/05/_delivery-index.json.gz",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let files = PlanFiles::new("d/", day(), "abcdefabcdef");
        assert_eq!(files.plan(), "d/2024/02/05/_plan-abcdefabcdef.json");
        assert_eq!(
            files.commit(),
            "d/2024/02/05/_plan-abcdefabcdef.commit.json"
        );
        assert_eq!(
            files.keys(42),
            "d/2024/02/05/_plan-abcdefabcdef-00042.keys.json.gz"
        );
        assert_eq!(files.done_shard(&files.done(42)), Some(42));
        assert_eq!(files.failed_shard(&files.failed(7)), Some(7));
        assert_eq!(files.done_shard(&files.failed(7)), None);
        let other = PlanFiles::new("d/", day(), "000000000000");
        assert_eq!(other.done_shard(&files.done(42)), None);
    }

    /// Chunk names of a day of many shards sort in record order: shard, then chunk.
    #[test]
    fn sharded_names_sort_in_record_order() {
        let mut keys = Vec::new();
        for shard in [0, 1, 9, 10, 99_999] {
            for n in [0, 9, 10, 999_999] {
                let naming = Naming::Shard {
                    plan: "00ff00ff00ff".into(),
                    index: shard,
                };
                keys.push(chunk_key("p/", day(), &naming, n, OutputFormat::Ndjson));
            }
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    /// Only our own chunk names are recognised, so cleanup touches nothing else.
    #[test]
    fn chunk_names() {
        let (ndjson, parquet) = (Some(OutputFormat::Ndjson), Some(OutputFormat::Parquet));
        let cases = [
            ("000000.ndjson.gz", ndjson),
            ("000123.ndjson.gz", ndjson),
            ("1234567.ndjson.gz", ndjson),
            ("000002.parquet", parquet),
            ("0123456789ab-00003-000000.ndjson.gz", ndjson),
            ("0123456789ab-00003-000000.parquet", parquet),
            ("_manifest.json", None),
            ("_plan-0123456789ab-00003.done.json", None),
            ("12.ndjson.gz", None),
            ("00001a.ndjson.gz", None),
            ("000001.ndjson", None),
            ("000001.json.gz", None),
            ("000001.parquet.tmp", None),
            ("1.parquet", None),
            ("notes.txt", None),
            ("0123456789AB-00003-000000.ndjson.gz", None),
            ("0123456789a-00003-000000.ndjson.gz", None),
            ("0123456789ab-0003-000000.ndjson.gz", None),
            ("0123456789ab-00003-00000.ndjson.gz", None),
            ("0123456789ab-00003-000000-1.ndjson.gz", None),
        ];
        for (name, want) in cases {
            assert_eq!(chunk_format(name), want, "{name}");
        }
    }

    /// Run tags are 12 hex digits, the same for the same run id, different for others.
    #[test]
    fn run_tags() {
        let a = run_tag("20240213T010000.000001Z-7-0@2024/02/13/[$LATEST]abc");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            a,
            run_tag("20240213T010000.000001Z-7-0@2024/02/13/[$LATEST]abc")
        );
        assert_ne!(
            a,
            run_tag("20240213T010000.000001Z-7-1@2024/02/13/[$LATEST]abc")
        );
        assert!(is_plan_file(&format!("_plan-{a}.json")));
        assert!(!is_plan_file("_manifest.json"));
    }
}
