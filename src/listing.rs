//! Listing: the source objects of one day, found with delimited `ListObjectsV2`.
//!
//! The walk under `SRC_PREFIX`:
//! 1. child folders that are 12-digit account ids are accounts; child folders that are
//!    organisation ids (`o-` + 10–32 lowercase letters or digits) are listed once
//!    more, and *their* 12-digit children are accounts. One setting therefore serves
//!    an organisation trail (`AWSLogs/o-…/ACCOUNT/`), a single-account trail
//!    (`AWSLogs/ACCOUNT/`) and a bucket holding both; any other child is ignored. A
//!    prefix that is itself an organisation or an account folder works too;
//! 2. the regions: every child folder of `ACCOUNT/CloudTrail/` (so `CloudTrail-Digest/`
//!    and `CloudTrail-Insight/` are never entered);
//! 3. the objects directly in `ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/` (no other day).
//!
//! Every listing goes through the SDK's paginator (continuation tokens followed);
//! listings of one level run concurrently, at most `max_concurrent` at once. Levels 1
//! and 2 are walked first ([`day_folders`]); level 3 is a stream ([`day_objects`])
//! consumed as the objects are fetched, in key order, which fixes the order of records
//! in the output.

use aws_sdk_s3::Client;
use futures::{Stream, StreamExt, TryStreamExt};
use tracing::debug;

use crate::config::is_account_id;
use crate::error::Error;
use crate::ordered::in_order;
use crate::trigger::Day;

/// How many folders, in multiples of `MAX_CONCURRENT_LISTS`, may be listed ahead of
/// the one being read: room for the LISTs after a slow one to go on.
pub const LIST_WINDOW: usize = 2;

/// One source object of the day (a line of a plan's keys file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
    /// Its ETag in the listing (a read of another version is refused).
    pub etag: Option<String>,
}

/// What a child folder name under the source prefix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Account,
    Organisation,
    Other,
}

/// Classifies one folder name (without slashes).
fn classify(name: &str) -> Child {
    if is_account_id(name) {
        Child::Account
    } else if let Some(rest) = name.strip_prefix("o-") {
        let ok = (10..=32).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Child::Organisation
        } else {
            Child::Other
        }
    } else {
        Child::Other
    }
}

/// One delimited listing: the child folders (full prefixes) and the objects directly
/// under `prefix`, over all pages.
pub async fn list_level(
    s3: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<(Vec<String>, Vec<SourceObject>), Error> {
    let mut folders = Vec::new();
    let mut objects = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .into_paginator()
        .send();
    let mut page_no = 0u32;
    while let Some(page) = pages
        .try_next()
        .await
        .map_err(|e| Error::s3("ListObjectsV2", bucket, prefix, e))?
    {
        page_no += 1;
        let before = (folders.len(), objects.len());
        for cp in page.common_prefixes() {
            if let Some(p) = cp.prefix() {
                folders.push(p.to_string());
            }
        }
        for o in page.contents() {
            if let Some(k) = o.key() {
                objects.push(SourceObject {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(str::to_string),
                });
            }
        }
        debug!(
            bucket,
            prefix,
            page = page_no,
            folders = folders.len() - before.0,
            objects = objects.len() - before.1,
            "listed"
        );
    }
    Ok((folders, objects))
}

/// The last path segment of a folder prefix: `a/b/c/` → `c`.
fn folder_name(prefix: &str) -> &str {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Lists many prefixes, `max_concurrent` at a time; results in the order of
/// `prefixes`.
async fn list_many(
    s3: &Client,
    bucket: &str,
    prefixes: Vec<String>,
    max_concurrent: usize,
) -> Result<Vec<(String, Vec<String>, Vec<SourceObject>)>, Error> {
    let lists = futures::stream::iter(prefixes).map(|p| async move {
        let (folders, objects) = list_level(s3, bucket, &p).await?;
        Ok::<_, Error>((p, folders, objects))
    });
    futures::StreamExt::buffered(lists, max_concurrent.max(1))
        .try_collect()
        .await
}

/// The day's folders (`…/CloudTrail/REGION/YYYY/MM/DD/`, one per delivery day read),
/// found by the first two levels of the walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayFolders {
    /// Accounts found (for the log and the "nothing found" hint).
    pub accounts: usize,
    /// One folder per account, region and delivery day read, sorted.
    pub prefixes: Vec<String>,
}

/// Walks the accounts and regions under `src_prefix` to the folders of `days` (the
/// delivery days a day reads: [`crate::select::folders_read`]). Their objects are
/// listed by [`day_objects`], as they are needed. A folder that does not exist (yet)
/// lists as empty.
pub async fn day_folders(
    s3: &Client,
    bucket: &str,
    src_prefix: &str,
    days: &[Day],
    max_concurrent: usize,
) -> Result<DayFolders, Error> {
    let mut accounts = Vec::new();
    let mut orgs = Vec::new();
    // SRC_PREFIX may name one account's folder (`AWSLogs/123456789012/`) itself.
    let top = if is_account_id(folder_name(src_prefix)) {
        vec![src_prefix.to_string()]
    } else {
        list_level(s3, bucket, src_prefix).await?.0
    };
    for folder in top {
        match classify(folder_name(&folder)) {
            Child::Account => accounts.push(folder),
            Child::Organisation => orgs.push(folder),
            Child::Other => {
                debug!(bucket, prefix = %folder, "not an account or organisation; skipped")
            }
        }
    }
    for (org, folders, _) in list_many(s3, bucket, orgs, max_concurrent).await? {
        for folder in folders {
            if is_account_id(folder_name(&folder)) {
                accounts.push(folder);
            } else {
                debug!(bucket, prefix = %folder, org = %org, "not an account; skipped");
            }
        }
    }
    accounts.sort();
    accounts.dedup();
    let trails: Vec<String> = accounts.iter().map(|a| format!("{a}CloudTrail/")).collect();
    let mut prefixes = Vec::new();
    for (_, regions, _) in list_many(s3, bucket, trails, max_concurrent).await? {
        for region in regions {
            for day in days {
                prefixes.push(format!("{region}{}", day.path()));
            }
        }
    }
    prefixes.sort();
    Ok(DayFolders {
        accounts: accounts.len(),
        prefixes,
    })
}

/// The objects of the day's folders, one folder's objects at a time, in key order:
/// the folders are sorted and none is a prefix of another, so folder after folder,
/// each sorted, is the order of all keys. At most `max_concurrent` LISTs run, and at
/// most [`LIST_WINDOW`] × `max_concurrent` folders are listed ahead of the one being
/// consumed, so memory holds a window of the listing, never the whole day's (100,000
/// keys are ~13 MB); a slow LIST holds back its folder, not the LISTs after it.
pub fn day_objects<'a>(
    s3: &'a Client,
    bucket: &'a str,
    prefixes: Vec<String>,
    max_concurrent: usize,
) -> impl Stream<Item = Result<Vec<SourceObject>, Error>> + 'a {
    let lists = futures::stream::iter(prefixes).map(move |p| {
        move || async move {
            let (_, mut objects) = list_level(s3, bucket, &p).await?;
            // A key ending in '/' is a console-made "folder" marker, not a log file.
            objects.retain(|o| !o.key.ends_with('/'));
            objects.sort();
            Ok(objects)
        }
    });
    let max_concurrent = max_concurrent.max(1);
    in_order(lists, max_concurrent, LIST_WINDOW * max_concurrent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Account and organisation ids are told apart from everything else.
    #[test]
    fn classifies_children() {
        let cases = [
            ("123456789012", Child::Account),
            ("000000000000", Child::Account),
            ("12345678901", Child::Other),
            ("1234567890123", Child::Other),
            ("12345678901a", Child::Other),
            ("o-abc123def4", Child::Organisation),
            ("o-abcdefghijklmnopqrstuvwxyz012345", Child::Organisation),
            ("o-abc123def", Child::Other),
            ("o-ABC123DEF4", Child::Other),
            ("o-abcdefghijklmnopqrstuvwxyz0123456", Child::Other),
            ("CloudTrail", Child::Other),
            ("cloudtrail-daily", Child::Other),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), want, "{name}");
        }
    }

    /// Folder names come from the last segment of a prefix.
    #[test]
    fn folder_names() {
        assert_eq!(folder_name("AWSLogs/o-abc123def4/"), "o-abc123def4");
        assert_eq!(folder_name("123456789012/"), "123456789012");
    }
}
