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
//! Every listing follows continuation tokens; listings of one level run concurrently,
//! at most `max_concurrent` at once. Levels 1 and 2 are walked first ([`day_folders`]);
//! level 3 is a stream ([`day_objects`]) consumed as the objects are fetched, in key
//! order, which fixes the order of records in the output.
//!
//! A folder of the source bucket is listed by the lean path of [`crate::fetch`] once the
//! SDK has shown it how: [`parse_list_page`] reads each page and accepts it only when
//! its parts add up (the key count, the truncation flag and token, every name under the
//! prefix). Anything else lists the folder again through the SDK, from its first page,
//! so a page this module misreads costs time, never a file.

use aws_sdk_s3::Client;
use aws_smithy_xml::decode::{try_data, Document, ScopedDecoder};
use futures::{Stream, StreamExt, TryStreamExt};
use tracing::debug;

use crate::error::Error;
use crate::fetch::{LeanFailed, Source};
use crate::ordered::in_order;
use crate::trigger::Day;

/// How many folders, in multiples of `MAX_CONCURRENT_LISTS`, may be listed ahead of
/// the one being read: room for the LISTs after a slow one to go on.
pub const LIST_WINDOW: usize = 2;

/// One source object of the day.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
}

/// What a child folder name under the source prefix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Account,
    Organisation,
    Other,
}

/// Classifies one folder name (without slashes).
pub fn classify(name: &str) -> Child {
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

/// A 12-digit AWS account id.
pub fn is_account_id(name: &str) -> bool {
    name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit())
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

/// One page of a delimited listing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub folders: Vec<String>,
    pub objects: Vec<SourceObject>,
    /// The continuation token of the next page, when there is one.
    pub next: Option<String>,
}

/// The text of an element (entities decoded).
fn text(tag: &mut ScopedDecoder<'_, '_>) -> Result<String, String> {
    try_data(tag)
        .map(|t| t.into_owned())
        .map_err(|e| e.to_string())
}

/// Reads the XML of one `ListObjectsV2` page, delimiter `/`, under `prefix`. Only a
/// page whose parts add up is accepted: the document ends with its root's end tag;
/// `KeyCount` is present and equals the keys plus the folders read; `IsTruncated` is
/// `true` (with a `NextContinuationToken`) or `false`; `Prefix` echoes `prefix`; keys
/// are not URL-encoded; every key is directly under `prefix` and every folder is one
/// level below it. The error says which check failed.
pub fn parse_list_page(xml: &[u8], prefix: &str) -> Result<ListPage, String> {
    let xml = std::str::from_utf8(xml).map_err(|e| format!("not UTF-8: {e}"))?;
    if !xml.trim_end().ends_with("</ListBucketResult>") {
        return Err("the XML does not end with </ListBucketResult>".into());
    }
    let mut doc = Document::new(xml);
    let mut root = doc.root_element().map_err(|e| e.to_string())?;
    if !root.start_el().matches("ListBucketResult") {
        return Err(format!("root element {:?}", root.start_el().local()));
    }
    let mut page = ListPage::default();
    let mut key_count = None;
    let mut truncated = None;
    let mut echoed_prefix = None;
    while let Some(mut tag) = root.next_tag() {
        let el = tag.start_el();
        if el.matches("Contents") {
            let (mut key, mut size) = (None, None);
            while let Some(mut field) = tag.next_tag() {
                if field.start_el().matches("Key") {
                    key = Some(text(&mut field)?);
                } else if field.start_el().matches("Size") {
                    let s = text(&mut field)?;
                    size = Some(s.parse::<u64>().map_err(|_| format!("Size {s:?}"))?);
                }
            }
            match (key, size) {
                (Some(key), Some(size)) => page.objects.push(SourceObject { key, size }),
                _ => return Err("an object without Key or Size".into()),
            }
        } else if el.matches("CommonPrefixes") {
            let mut folder = None;
            while let Some(mut field) = tag.next_tag() {
                if field.start_el().matches("Prefix") {
                    folder = Some(text(&mut field)?);
                }
            }
            page.folders
                .push(folder.ok_or("CommonPrefixes without a Prefix")?);
        } else if el.matches("KeyCount") {
            let s = text(&mut tag)?;
            key_count = Some(s.parse::<usize>().map_err(|_| format!("KeyCount {s:?}"))?);
        } else if el.matches("IsTruncated") {
            truncated = Some(match text(&mut tag)?.as_str() {
                "true" => true,
                "false" => false,
                other => return Err(format!("IsTruncated {other:?}")),
            });
        } else if el.matches("NextContinuationToken") {
            page.next = Some(text(&mut tag)?);
        } else if el.matches("Prefix") {
            echoed_prefix = Some(text(&mut tag)?);
        } else if el.matches("EncodingType") {
            return Err("the keys are encoded (EncodingType)".into());
        }
    }
    let listed = page.objects.len() + page.folders.len();
    if key_count != Some(listed) {
        return Err(format!(
            "KeyCount {key_count:?} for {listed} keys and folders read"
        ));
    }
    match truncated {
        Some(true) if page.next.as_deref().is_some_and(|t| !t.is_empty()) => {}
        Some(true) => return Err("truncated without a NextContinuationToken".into()),
        Some(false) => page.next = None,
        None => return Err("no IsTruncated".into()),
    }
    if echoed_prefix.as_deref() != Some(prefix) {
        return Err(format!("Prefix {echoed_prefix:?}, not {prefix:?}"));
    }
    for o in &page.objects {
        let under = o
            .key
            .strip_prefix(prefix)
            .filter(|rest| !rest.contains('/'));
        if under.is_none() {
            return Err(format!("key {:?} is not directly under the prefix", o.key));
        }
    }
    for f in &page.folders {
        let under = f
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('/'))
            .filter(|name| !name.is_empty() && !name.contains('/'));
        if under.is_none() {
            return Err(format!("folder {f:?} is not one level under the prefix"));
        }
    }
    Ok(page)
}

/// One delimited listing of the source bucket, like [`list_level`]: by the lean path
/// while it works, else through the SDK.
pub async fn list_folder(
    src: &Source,
    prefix: &str,
) -> Result<(Vec<String>, Vec<SourceObject>), Error> {
    if let Some(listed) = lean_list(src, prefix).await {
        return Ok(listed);
    }
    list_level(src.sdk(), src.bucket(), prefix).await
}

/// All pages of `prefix` by the lean path; `None` when it is not open or a page is
/// not accepted (it is then closed for the rest of the run).
async fn lean_list(src: &Source, prefix: &str) -> Option<(Vec<String>, Vec<SourceObject>)> {
    let (mut folders, mut objects) = (Vec::new(), Vec::new());
    let mut token: Option<String> = None;
    for page_no in 1u32.. {
        let parsed = match src.lean_list_page(prefix, token.as_deref()).await? {
            Ok(xml) => parse_list_page(&xml, prefix),
            Err(LeanFailed(why)) => Err(why),
        };
        let page = match parsed {
            Ok(page) if page.next.is_some() && page.next == token => {
                Err("the same continuation token twice".to_string())
            }
            other => other,
        };
        let page = match page {
            Ok(page) => page,
            Err(why) => {
                src.lean_list_failed(prefix, &why);
                return None;
            }
        };
        debug!(
            bucket = src.bucket(),
            prefix,
            page = page_no,
            folders = page.folders.len(),
            objects = page.objects.len(),
            "listed (lean)"
        );
        folders.extend(page.folders);
        objects.extend(page.objects);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    Some((folders, objects))
}

/// The last path segment of a folder prefix: `a/b/c/` → `c`.
fn folder_name(prefix: &str) -> &str {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Lists many prefixes, `max_concurrent` at a time; results in the order of
/// `prefixes`.
async fn list_many(
    src: &Source,
    prefixes: Vec<String>,
    max_concurrent: usize,
) -> Result<Vec<(String, Vec<String>, Vec<SourceObject>)>, Error> {
    let lists = futures::stream::iter(prefixes).map(|p| async move {
        let (folders, objects) = list_folder(src, &p).await?;
        Ok::<_, Error>((p, folders, objects))
    });
    in_order(lists, max_concurrent).try_collect().await
}

/// The day's folders (`…/CloudTrail/REGION/YYYY/MM/DD/`), found by the first two
/// levels of the walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayFolders {
    /// Accounts found (for the log and the "nothing found" hint).
    pub accounts: usize,
    /// One folder per account and region, sorted.
    pub prefixes: Vec<String>,
}

/// Walks the accounts and regions under `src_prefix` to the folders of `day`. Their
/// objects are listed by [`day_objects`], as they are needed.
pub async fn day_folders(
    src: &Source,
    src_prefix: &str,
    day: Day,
    max_concurrent: usize,
) -> Result<DayFolders, Error> {
    let mut accounts = Vec::new();
    let mut orgs = Vec::new();
    // SRC_PREFIX may name one account's folder (`AWSLogs/123456789012/`) itself.
    let top = if is_account_id(folder_name(src_prefix)) {
        vec![src_prefix.to_string()]
    } else {
        list_folder(src, src_prefix).await?.0
    };
    for folder in top {
        match classify(folder_name(&folder)) {
            Child::Account => accounts.push(folder),
            Child::Organisation => orgs.push(folder),
            Child::Other => {
                debug!(bucket = src.bucket(), prefix = %folder, "not an account or organisation; skipped")
            }
        }
    }
    for (org, folders, _) in list_many(src, orgs, max_concurrent).await? {
        for folder in folders {
            if is_account_id(folder_name(&folder)) {
                accounts.push(folder);
            } else {
                debug!(bucket = src.bucket(), prefix = %folder, org = %org, "not an account; skipped");
            }
        }
    }
    accounts.sort();
    accounts.dedup();
    let trails: Vec<String> = accounts.iter().map(|a| format!("{a}CloudTrail/")).collect();
    let mut prefixes = Vec::new();
    for (_, regions, _) in list_many(src, trails, max_concurrent).await? {
        for region in regions {
            prefixes.push(format!("{region}{}", day.path()));
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
    src: &'a Source,
    prefixes: Vec<String>,
    max_concurrent: usize,
) -> impl Stream<Item = Result<Vec<SourceObject>, Error>> + 'a {
    let lists = futures::stream::iter(prefixes).map(move |p| async move {
        let (_, mut objects) = list_folder(src, &p).await?;
        // A key ending in '/' is a console-made "folder" marker, not a log file.
        objects.retain(|o| !o.key.ends_with('/'));
        objects.sort();
        Ok(objects)
    });
    let max_concurrent = max_concurrent.max(1);
    in_order(lists, max_concurrent).window(LIST_WINDOW * max_concurrent)
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

    const DAY_PREFIX: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/02/12/";

    /// A page as S3 answers it (the layout of the ListObjectsV2 documentation), with
    /// `body` between `IsTruncated` and the end.
    fn page(key_count: &str, truncated: &str, body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>trail-bucket</Name><Prefix>{DAY_PREFIX}</Prefix><KeyCount>{key_count}</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>{truncated}</IsTruncated>{body}</ListBucketResult>
"#
        )
    }

    fn contents(name: &str, size: &str) -> String {
        format!(
            "<Contents><Key>{DAY_PREFIX}{name}</Key><LastModified>2024-02-12T00:10:00.000Z</LastModified>\
             <ETag>&quot;599bab3ed2c697f1d26842727561fd94&quot;</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm>\
             <Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
    }

    /// A page is read into its objects, folders and continuation token; entities in
    /// names are decoded.
    #[test]
    fn reads_a_list_page() {
        let body = format!(
            "{}{}<CommonPrefixes><Prefix>{DAY_PREFIX}sub/</Prefix></CommonPrefixes>\
             <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>",
            contents("a_1.json.gz", "857"),
            contents("b&amp;c_2.json.gz", "0"),
        );
        let got = parse_list_page(page("3", "true", &body).as_bytes(), DAY_PREFIX).unwrap();
        assert_eq!(
            got,
            ListPage {
                folders: vec![format!("{DAY_PREFIX}sub/")],
                objects: vec![
                    SourceObject {
                        key: format!("{DAY_PREFIX}a_1.json.gz"),
                        size: 857
                    },
                    SourceObject {
                        key: format!("{DAY_PREFIX}b&c_2.json.gz"),
                        size: 0
                    },
                ],
                next: Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=".into()),
            }
        );
        // The last page: a token, if any, is not followed.
        let last = page("1", "false", &contents("a_1.json.gz", "857"));
        let got = parse_list_page(last.as_bytes(), DAY_PREFIX).unwrap();
        assert_eq!((got.objects.len(), got.next), (1, None));
        // An empty folder (self-closed elements as s3s writes them are fine too).
        let empty = page("0", "false", "<ContinuationToken/>");
        assert_eq!(
            parse_list_page(empty.as_bytes(), DAY_PREFIX).unwrap(),
            ListPage::default()
        );
    }

    /// Every page whose parts do not add up is refused, saying why.
    #[test]
    fn refuses_a_page_that_does_not_add_up() {
        let one = contents("a_1.json.gz", "857");
        let whole = page("1", "false", &one);
        let cases: Vec<(String, &str)> = vec![
            (page("2", "false", &one), "KeyCount Some(2) for 1"),
            (whole.replace("<KeyCount>1</KeyCount>", ""), "KeyCount None"),
            (page("1", "True", &one), "IsTruncated \"True\""),
            (
                whole.replace("<IsTruncated>false</IsTruncated>", ""),
                "no IsTruncated",
            ),
            (
                page("1", "true", &one),
                "truncated without a NextContinuationToken",
            ),
            (
                page(
                    "1",
                    "true",
                    &format!("{one}<NextContinuationToken></NextContinuationToken>"),
                ),
                "truncated without a NextContinuationToken",
            ),
            (
                whole.replace("2024/02/12/</Prefix>", "2024/02/13/</Prefix>"),
                "Prefix Some(",
            ),
            (
                whole.replace(&format!("<Prefix>{DAY_PREFIX}</Prefix>"), ""),
                "Prefix None",
            ),
            (
                page(
                    "1",
                    "false",
                    &format!("{one}<EncodingType>url</EncodingType>"),
                ),
                "EncodingType",
            ),
            (
                page("1", "false", &contents("x/a_1.json.gz", "857")),
                "not directly under",
            ),
            (
                page("1", "false", &one.replace(DAY_PREFIX, "AWSLogs/")),
                "not directly under",
            ),
            (
                page(
                    "1",
                    "false",
                    &format!("<CommonPrefixes><Prefix>{DAY_PREFIX}a/b/</Prefix></CommonPrefixes>"),
                ),
                "not one level under",
            ),
            (
                page("1", "false", &contents("a_1.json.gz", "-1")),
                "Size \"-1\"",
            ),
            (
                page("1", "false", &one.replace("<Size>857</Size>", "")),
                "without Key or Size",
            ),
            (whole[..whole.len() - 40].to_string(), "does not end with"),
            (
                whole.replace("ListBucketResult", "ListVersionsResult"),
                "does not end with",
            ),
            (
                whole
                    .replace("<ListBucketResult", "<Error")
                    .replace("</ListBucketResult>", "</Error></ListBucketResult>"),
                "root element \"Error\"",
            ),
        ];
        for (xml, want) in cases {
            let err = parse_list_page(xml.as_bytes(), DAY_PREFIX).unwrap_err();
            assert!(err.contains(want), "{err:?} should say {want:?}: {xml}");
        }
        assert!(parse_list_page(&[0xff, 0xfe], DAY_PREFIX)
            .unwrap_err()
            .contains("UTF-8"));
    }

    /// Folder names come from the last segment of a prefix.
    #[test]
    fn folder_names() {
        assert_eq!(folder_name("AWSLogs/o-abc123def4/"), "o-abc123def4");
        assert_eq!(folder_name("123456789012/"), "123456789012");
    }
}
