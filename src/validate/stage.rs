//! `VALIDATE`'s stage of a shard, run beside the reading of its log files rather than
//! after it:
//!
//! ```text
//! source objects ──(their folders, in order)──▶ fetch: per account and region, LIST its
//!       │                                        digest folders, GET the digests
//!       ▼                                                   │ (a group at a time)
//! records stage ──(each file read: key, SHA-256)──▶ check ◀─┘
//! ```
//!
//! The digests of an account and region are checked once the records stage has read
//! the last of its files: a shard's files come account and region by account and
//! region (the listing's order, or the plan's, which never splits one), in the same
//! order as the folders that name the digest groups. So the digest GETs overlap the log
//! GETs, and memory holds the digests of a group or two.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;

use aws_sdk_s3::Client;
use flate2::read::MultiGzDecoder;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tracing::info;

use super::{
    digest_folders, digest_name, folder_of, log_group, region_of, Checker, DigestObject, FilesRead,
    PublicKeys, Validation,
};
use crate::error::Error;
use crate::listing::{self, SourceObject};
use crate::records::FileDone;

/// Digest groups fetched and waiting for their files to be read.
const GROUPS_QUEUE: usize = 2;

/// A log file read to its end, as the records stage hands it to the check.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    /// Of the decoded bytes.
    pub sha256: [u8; 32],
    /// Records written from it.
    pub kept: u64,
}

impl FileRow {
    pub fn new(file: &FileDone<'_>, kept: u64) -> FileRow {
        FileRow {
            key: file.key.to_string(),
            size: file.size,
            etag: file.etag.map(str::to_string),
            sha256: file.sha256.unwrap_or_default(),
            kept,
        }
    }
}

/// Where the stage's inputs come from, and how much it may ask at once.
pub struct Inputs<'a> {
    pub s3: &'a Client,
    pub bucket: &'a str,
    /// Log folders to answer for even if no file of them is read ([`FilesRead::with_folders`]).
    pub folders: &'a [String],
    /// The log folders of the source objects, in their order, each once per run.
    pub seen: mpsc::UnboundedReceiver<String>,
    /// The files read, in order; closed when the records stage ends.
    pub rows: mpsc::UnboundedReceiver<FileRow>,
    /// LISTs and GETs at once.
    pub concurrency: (usize, usize),
}

/// `objects` as they are, each folder of them sent on `tx` when it begins; `tx` is
/// dropped when `objects` end.
pub fn tee_folders<'a>(
    objects: impl Stream<Item = Result<SourceObject, Error>> + 'a,
    tx: mpsc::UnboundedSender<String>,
) -> impl Stream<Item = Result<SourceObject, Error>> + 'a {
    let state = (Box::pin(objects), tx, String::new());
    futures::stream::unfold(state, |(mut objects, tx, mut last)| async move {
        let item = objects.next().await?;
        if let Ok(o) = &item {
            let folder = folder_of(&o.key);
            if folder != last {
                last = folder.to_string();
                // A closed receiver: the stage stopped, and reports why.
                let _ = tx.send(last.clone());
            }
        }
        Some((item, (objects, tx, last)))
    })
}

/// Runs the stage: fetches each account and region's digests while its files are read,
/// and checks them once they are. `deadline` is asked once a group.
pub async fn run(
    input: Inputs<'_>,
    keys: &mut PublicKeys,
    deadline: impl Fn() -> Result<(), Error>,
) -> Result<(Validation, FilesRead), Error> {
    let Inputs {
        s3,
        bucket,
        folders,
        seen,
        rows,
        concurrency,
    } = input;
    let (tx, groups) = mpsc::channel(GROUPS_QUEUE);
    let fetch = fetch_groups(s3, bucket, concurrency, group_runs(seen, folders), tx);
    let files = Files::new(bucket, FilesRead::with_folders(folders));
    let check = files.check(rows, groups, keys, deadline);
    let (digests, (v, read)) = tokio::try_join!(fetch, check)?;
    info!(files_read = read.len(), digests, validation = %v, "digests checked");
    Ok((v, read))
}

/// The digests of one account and region, and the digest folders they were listed from.
struct DigestGroup {
    group: String,
    listed: BTreeMap<String, Option<String>>,
    digests: Vec<DigestObject>,
}

/// The log folders `seen`, as runs of one account and region each, in their order,
/// each with the `given` folders of its account and region; then the given folders of
/// accounts and regions no file came from.
fn group_runs(
    seen: mpsc::UnboundedReceiver<String>,
    given: &[String],
) -> impl Stream<Item = (String, BTreeSet<String>)> + use<> {
    let mut by_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in given {
        if let Some(g) = log_group(f) {
            by_group.entry(g).or_default().insert(f.clone());
        }
    }
    let state = (Some(seen), by_group, None::<(String, BTreeSet<String>)>);
    futures::stream::unfold(state, |(mut seen, mut given, mut run)| async move {
        while let Some(rx) = &mut seen {
            let Some(folder) = rx.recv().await else {
                seen = None;
                break;
            };
            let Some(g) = log_group(&folder) else {
                continue;
            };
            match &mut run {
                Some((current, folders)) if *current == g => {
                    folders.insert(folder);
                }
                _ => {
                    let mut folders = given.remove(&g).unwrap_or_default();
                    folders.insert(folder);
                    if let Some(done) = run.replace((g, folders)) {
                        return Some((done, (seen, given, run)));
                    }
                }
            }
        }
        let next = run.take().or_else(|| given.pop_first())?;
        Some((next, (seen, given, run)))
    })
}

/// Whether a digest `key` listed in a folder with `cutoff` is taken.
fn wanted(key: &str, cutoff: &Option<String>) -> bool {
    match cutoff {
        None => true,
        Some(c) => digest_name(key).is_some_and(|n| n.time.as_str() < c.as_str()),
    }
}

/// Lists the digest folders of each group of `runs` and reads their digests, `lists`
/// LISTs and `gets` GETs at once, across groups; sends each group whole, in order, on
/// `tx`. Returns the number of digests read.
async fn fetch_groups(
    s3: &Client,
    bucket: &str,
    (lists, gets): (usize, usize),
    runs: impl Stream<Item = (String, BTreeSet<String>)>,
    tx: mpsc::Sender<DigestGroup>,
) -> Result<u64, Error> {
    type Listed = BTreeMap<String, Option<String>>;
    enum Job {
        List(String, Option<String>),
        End(String, Listed),
    }
    enum Got<T> {
        One(T),
        End(String, Listed),
    }
    let jobs = runs.flat_map(|(group, folders)| {
        let listed = digest_folders(&folders);
        let mut each: Vec<Job> = (listed.iter())
            .map(|(f, c)| Job::List(f.clone(), c.clone()))
            .collect();
        each.push(Job::End(group, listed));
        futures::stream::iter(each)
    });
    let keys = jobs
        .map(|job| async move {
            match job {
                Job::List(folder, cutoff) => {
                    let (_, objects) = listing::list_level(s3, bucket, &folder).await?;
                    let keys = objects.into_iter().filter(|o| wanted(&o.key, &cutoff));
                    let keys = keys.map(|o| Ok::<_, Error>(Got::One(o.key)));
                    Ok::<_, Error>(keys.collect::<Vec<_>>())
                }
                Job::End(g, listed) => Ok(vec![Ok(Got::End(g, listed))]),
            }
        })
        .buffered(lists.max(1))
        .map_ok(futures::stream::iter)
        .try_flatten();
    let fetched = keys
        .map_ok(|got| async move {
            match got {
                Got::One(key) => read_digest(s3, bucket, key).await.map(Got::One),
                Got::End(g, listed) => Ok(Got::End(g, listed)),
            }
        })
        .try_buffered(gets.max(1));
    let mut fetched = std::pin::pin!(fetched);
    let (mut digests, mut total) = (Vec::new(), 0u64);
    while let Some(got) = fetched.next().await {
        match got? {
            Got::One(d) => {
                total += 1;
                digests.push(d);
            }
            Got::End(group, listed) => {
                let digests = std::mem::take(&mut digests);
                let group = DigestGroup {
                    group,
                    listed,
                    digests,
                };
                if tx.send(group).await.is_err() {
                    break; // the check stopped, and reports why
                }
            }
        }
    }
    Ok(total)
}

/// The check's side: the files read so far, and how far the records stage is.
struct Files<'a> {
    checker: Checker<'a>,
    bucket: &'a str,
    /// The folder of the last file (its group is looked at when it changes).
    folder: String,
    /// The digest groups whose files have begun, and the one being read.
    begun: HashSet<String>,
    reading: Option<String>,
    /// Whether the records stage has ended (every file is in).
    ended: bool,
}

impl<'a> Files<'a> {
    fn new(bucket: &'a str, read: FilesRead) -> Files<'a> {
        Files {
            checker: Checker::new(bucket, read),
            bucket,
            folder: String::new(),
            begun: HashSet::new(),
            reading: None,
            ended: false,
        }
    }

    fn add(&mut self, row: FileRow) -> Result<(), Error> {
        let folder = folder_of(&row.key);
        let group = (folder != self.folder).then(|| {
            self.folder = folder.to_string();
            log_group(folder)
        });
        if let Some(Some(group)) = group {
            if self.reading.as_deref() != Some(group.as_str()) {
                if !self.begun.insert(group.clone()) {
                    // The digests of its group may have been checked already.
                    return Err(Error::Internal {
                        stage: "validate",
                        detail: format!(
                            "the files of {group} did not come together: s3://{}/{} came after others",
                            self.bucket, row.key
                        ),
                    });
                }
                self.reading = Some(group);
            }
        }
        let file = FileDone {
            key: &row.key,
            size: row.size,
            etag: row.etag.as_deref(),
            records: row.kept,
            sha256: Some(row.sha256),
        };
        self.checker.add(&file, row.kept);
        Ok(())
    }

    /// Whether every file of `group` that will be read has been.
    fn complete(&self, group: &str) -> bool {
        self.ended || (self.begun.contains(group) && self.reading.as_deref() != Some(group))
    }

    /// Takes in the files read and the digest groups fetched, and checks each group
    /// once its files are all in.
    async fn check(
        mut self,
        mut rows: mpsc::UnboundedReceiver<FileRow>,
        mut groups: mpsc::Receiver<DigestGroup>,
        keys: &mut PublicKeys,
        deadline: impl Fn() -> Result<(), Error>,
    ) -> Result<(Validation, FilesRead), Error> {
        let mut pending: Option<DigestGroup> = None;
        let mut fetched_all = false;
        loop {
            if let Some(g) = pending.take_if(|g| self.complete(&g.group)) {
                deadline()?;
                if !g.digests.is_empty() {
                    for d in &g.digests {
                        keys.for_digest(d).await?;
                    }
                    let region = region_of(&g.group).unwrap_or_default().to_string();
                    let keys = keys.of(&region).await?;
                    self.checker.group(g.listed, g.digests, keys);
                }
                continue;
            }
            if self.ended && fetched_all && pending.is_none() {
                break;
            }
            // Never both off: with every file in, a pending group is complete.
            tokio::select! {
                row = rows.recv(), if !self.ended => match row {
                    Some(row) => self.add(row)?,
                    None => self.ended = true,
                },
                g = groups.recv(), if pending.is_none() && !fetched_all => match g {
                    Some(g) => pending = Some(g),
                    None => fetched_all = true,
                },
            }
        }
        Ok(self.checker.finish())
    }
}

/// GETs one digest: its body, gunzipped, and its signature metadata. A body that is
/// not gzip JSON is the digest's problem (counted invalid), not the run's; a GET that
/// fails (after the SDK's retries) fails the run.
pub(crate) async fn read_digest(
    s3: &Client,
    bucket: &str,
    key: String,
) -> Result<DigestObject, Error> {
    let what = "GetObject (a digest)";
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| Error::s3(what, bucket, &key, e))?;
    let meta = out.metadata().cloned().unwrap_or_default();
    let gz = out
        .body
        .collect()
        .await
        .map_err(|e| Error::s3_read(what, bucket, &key, &e))?
        .into_bytes();
    let mut body = Vec::new();
    let body = match MultiGzDecoder::new(gz.as_ref()).read_to_end(&mut body) {
        Ok(_) => Ok(body),
        Err(e) => Err(format!("its body is not gzip: {e}")),
    };
    Ok(DigestObject {
        key,
        body,
        signature: meta.get("signature").cloned(),
        signature_algorithm: meta.get("signature-algorithm").cloned(),
        backfill_generated: meta.get("backfill-generation-timestamp").cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(account: &str, region: &str, day: &str) -> String {
        format!("AWSLogs/{account}/CloudTrail/{region}/2024/02/{day}/")
    }

    fn group(account: &str, region: &str) -> String {
        format!("AWSLogs/{account}/CloudTrail-Digest/{region}/")
    }

    /// The folders seen come out as runs of one account and region, with the given
    /// folders of each; the given ones no file came from come last.
    #[tokio::test]
    async fn folders_seen_become_runs_of_one_group() {
        let (tx, rx) = mpsc::unbounded_channel();
        for f in [
            folder("111111111111", "eu-west-1", "12"),
            folder("111111111111", "eu-west-1", "13"),
            "AWSLogs/111111111111/Config/eu-west-1/2024/02/12/".to_string(),
            folder("111111111111", "us-east-1", "12"),
            folder("222222222222", "eu-west-1", "13"),
        ] {
            tx.send(f).unwrap();
        }
        drop(tx);
        let given = [
            folder("222222222222", "eu-west-1", "12"),
            folder("333333333333", "eu-west-1", "12"),
        ];
        let runs: Vec<(String, BTreeSet<String>)> = group_runs(rx, &given).collect().await;
        let want = |g: String, f: &[String]| (g, f.iter().cloned().collect::<BTreeSet<_>>());
        assert_eq!(
            runs,
            [
                want(
                    group("111111111111", "eu-west-1"),
                    &[
                        folder("111111111111", "eu-west-1", "12"),
                        folder("111111111111", "eu-west-1", "13")
                    ]
                ),
                want(
                    group("111111111111", "us-east-1"),
                    &[folder("111111111111", "us-east-1", "12")]
                ),
                want(
                    group("222222222222", "eu-west-1"),
                    &[
                        folder("222222222222", "eu-west-1", "12"),
                        folder("222222222222", "eu-west-1", "13")
                    ]
                ),
                want(
                    group("333333333333", "eu-west-1"),
                    &[folder("333333333333", "eu-west-1", "12")]
                ),
            ]
        );
    }

    /// Each folder of the objects is told once per run, and the sender is let go at
    /// their end.
    #[tokio::test]
    async fn objects_tell_their_folders() {
        let object = |key: String| {
            Ok(SourceObject {
                key,
                size: 1,
                etag: None,
            })
        };
        let a = folder("111111111111", "eu-west-1", "12");
        let b = folder("111111111111", "eu-west-1", "13");
        let objects = [
            object(format!("{a}1.json.gz")),
            object(format!("{a}2.json.gz")),
            object(format!("{b}1.json.gz")),
        ];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let passed: Vec<_> = tee_folders(futures::stream::iter(objects), tx)
            .collect()
            .await;
        assert_eq!(passed.len(), 3);
        let mut told = Vec::new();
        while let Some(f) = rx.recv().await {
            told.push(f);
        }
        assert_eq!(told, [a, b]);
    }

    fn row(key: String) -> FileRow {
        FileRow {
            key,
            size: 1,
            etag: None,
            sha256: [0; 32],
            kept: 1,
        }
    }

    /// A group is complete once the files have moved past it, or every file is in; its
    /// files coming back later is refused, naming the file.
    #[test]
    fn a_group_is_complete_once_its_files_are_past() {
        let (a, b) = (
            folder("111111111111", "eu-west-1", "12"),
            folder("222222222222", "eu-west-1", "12"),
        );
        let (ga, gb) = (
            group("111111111111", "eu-west-1"),
            group("222222222222", "eu-west-1"),
        );
        let mut files = Files::new("src", FilesRead::default());
        assert!(!files.complete(&ga));
        files.add(row(format!("{a}1.json.gz"))).unwrap();
        assert!(!files.complete(&ga));
        files.add(row(format!("{b}1.json.gz"))).unwrap();
        assert!(files.complete(&ga));
        assert!(!files.complete(&gb));
        let err = files.add(row(format!("{a}2.json.gz"))).unwrap_err();
        assert!(
            err.to_string().contains(&format!("s3://src/{a}2.json.gz")),
            "{err}"
        );
        files.ended = true;
        assert!(files.complete(&gb));
        assert!(files.complete(&group("333333333333", "eu-west-1")));
    }
}
