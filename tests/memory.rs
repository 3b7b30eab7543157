//! What fetched files keep alive, measured by a counting allocator (this test binary's
//! own global allocator, so the other tests are not slowed by it).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use cloudtrail_aggregator::source::Source;
use common::*;

/// The system allocator, counting the bytes each thread frees.
struct Counting;

thread_local! {
    static FREED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged; the count is a
// thread-local `Cell` without a destructor, so it allocates nothing and is usable
// while a thread is torn down (`try_with` skips it if not).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = FREED.try_with(|f| f.set(f.get() + layout.size()));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Dropping fetched files frees exactly their bytes: each holds an allocation of its
/// own, not a view of the HTTP connection's read buffer (which would keep that whole
/// buffer alive while the file waits for the records stage). Over TCP with the SDK's
/// default HTTP client, as in the Lambda.
#[tokio::test]
async fn fetched_files_hold_only_their_own_bytes() {
    const SRC: &str = "cloudtrail-logs";
    let server = S3::new();
    let plain = server.client();
    create_bucket(&plain, SRC).await;
    let mut keys = Vec::new();
    for n in 0..30 {
        let recs: Vec<String> = (0..1 + n % 4)
            .map(|i| record("111111111111", "eu-west-1", n * 10 + i))
            .collect();
        let key = log_key("AWSLogs/", "111111111111", "eu-west-1", "2024/02/12", n);
        put(&plain, SRC, &key, gzip(&delivery(&recs))).await;
        keys.push(key);
    }
    let sdk = S3::sdk_config_at(&server.serve_tcp().await);
    let cfg = cloudtrail_aggregator::Config::from_map(
        &[("SRC_BUCKET", SRC), ("DST_BUCKET", "aggregated")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .unwrap();
    let s3 = cloudtrail_aggregator::aws::s3_client(&sdk, &cfg);
    let src = Source::new(&s3, SRC);

    let mut files: Vec<Bytes> = Vec::with_capacity(keys.len());
    for key in &keys {
        let size = get(&plain, SRC, key).await.unwrap().len() as u64;
        let object = cloudtrail_aggregator::listing::SourceObject {
            key: key.clone(),
            size,
            etag: None,
        };
        let body = src.get(&object).await.unwrap();
        assert_eq!(
            Some(&body[..]),
            get(&plain, SRC, key).await.as_deref(),
            "{key}"
        );
        files.push(body);
    }

    let held: usize = files.iter().map(Bytes::len).sum();
    let list = files.capacity() * std::mem::size_of::<Bytes>();
    let before = FREED.with(Cell::get);
    drop(files);
    let freed = FREED.with(Cell::get) - before;
    assert_eq!(
        freed - list,
        held,
        "dropping {held} bytes of files freed {} bytes",
        freed - list
    );
}
