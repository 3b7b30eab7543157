//! Fuzzing of the two parsers of untrusted input, the SQS message parser and the
//! records reader (gzip detection, multi-member gzip, JSON), with bolero's random
//! engine on the stable toolchain. Inputs are the real fixtures mutated (bytes flipped,
//! inserted, deleted, ranges repeated, the file cut), gzip-compressed or not, and raw
//! random bytes. Properties: no panic; every record handed out is one JSON object on one
//! line; and, against serde_json reading the whole document into a `Value`, the reader
//! accepts exactly the valid delivery files and gives their records.
//!
//! `cargo test --test fuzz` runs a short fuzz (20,000 inputs a target); `FUZZ_ITERATIONS=10000000
//! cargo test --release --test fuzz` the long one recorded in README.md. A failing input
//! is printed with its `BOLERO_RANDOM_SEED`; it becomes a test case in `src/records.rs`.

use std::io::{Read, Write};

use bolero::check;
use cloudtrail_aggregator::records::RecordReader;
use serde_json::Value;

const SEEDS: &[&[u8]] = &[
    include_bytes!("fixtures/cloudtrail/SerializerTestFileCompact.json.gz"),
    include_bytes!("fixtures/cloudtrail/loki-cloudtrail-log-file.json.gz"),
    include_bytes!("fixtures/cloudtrail/SerializerTestFileNewFieldsInRoot.json"),
    include_bytes!("fixtures/cloudtrail/SerializerAllFieldsNull.json"),
    include_bytes!("fixtures/cloudtrail/SerializerTestFileBadJsonFormat.json"),
    include_bytes!("fixtures/cloudtrail/insights-example.json"),
    b"{\"Records\":[{\"a\":\"\\u003d\",\"n\":1.5e3},{}]}",
];

fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A seed (as plain JSON) mutated by `edits`: (operation, position, byte).
fn mutate(seed: usize, edits: &[(u8, u16, u8)]) -> Vec<u8> {
    let raw = SEEDS[seed % SEEDS.len()];
    let mut v = gunzip(raw).unwrap_or_else(|| raw.to_vec());
    const PUNCT: &[u8] = b"{}[]\",:\\ \n0e-.tnfu";
    for &(op, pos, byte) in edits {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let at = pos as usize % v.len();
        match op % 6 {
            0 => v[at] ^= byte | 1,
            1 => v.insert(at, byte),
            2 => {
                v.remove(at);
            }
            3 => v.truncate(at),
            4 => {
                let end = (at + byte as usize).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
            _ => v[at] = PUNCT[byte as usize % PUNCT.len()],
        }
    }
    v
}

/// What serde_json says the records of a document are, reading it whole into a typed
/// value: `Some(records)` for a valid delivery file (one object, one `Records` array of
/// objects; other keys validated and ignored), `None` otherwise. (Not into a `Value`:
/// that refuses numbers past f64's range, which JSON allows and the reader keeps.)
fn reference(json: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Records")]
        records: Vec<Box<serde_json::value::RawValue>>,
    }
    // A struct also reads from an array; a delivery file is an object.
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let file: File = serde_json::from_slice(json).ok()?;
    let records: Vec<String> = file.records.iter().map(|r| compact(r.get())).collect();
    records
        .iter()
        .all(|r| r.starts_with('{'))
        .then_some(records)
}

/// JSON text without whitespace outside strings.
fn compact(json: &str) -> String {
    let (mut out, mut in_str, mut escape) = (String::new(), false, false);
    for c in json.chars() {
        if in_str {
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c.is_ascii_whitespace() {
            continue;
        } else if c == '"' {
            in_str = true;
        }
        out.push(c);
    }
    out
}

fn read(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    RecordReader::default()
        .read(bytes, &mut |r| {
            out.push(r.to_vec());
            true
        })
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn check_records(records: &[Vec<u8>]) {
    for r in records {
        assert!(
            !r.contains(&b'\n') && !r.contains(&b'\r'),
            "a record on two lines"
        );
        assert_eq!(r.first(), Some(&b'{'), "a record is an object");
        serde_json::from_slice::<serde::de::IgnoredAny>(r).expect("a record is valid JSON");
    }
}

/// Mutated delivery files, plain or gzip: never a panic; valid records always; exactly
/// serde_json's verdict on plain ones.
#[test]
fn records_reader_on_mutated_files() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static VALID: AtomicUsize = AtomicUsize::new(0);
    static INVALID: AtomicUsize = AtomicUsize::new(0);
    check!()
        .with_iterations(iterations())
        .with_type::<(u8, Vec<(u8, u16, u8)>, bool)>()
        .for_each(|(seed, edits, compress)| {
            let plain = mutate(*seed as usize, edits);
            let input = if *compress {
                gzip(&plain)
            } else {
                plain.clone()
            };
            let got = read(&input);
            if let Ok(records) = &got {
                check_records(records);
            }
            match (reference(&plain), &got) {
                (Some(want), Ok(records)) => {
                    VALID.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(records.len(), want.len());
                    for (r, w) in records.iter().zip(&want) {
                        assert_eq!(&compact(std::str::from_utf8(r).unwrap()), w);
                    }
                }
                (None, Err(_)) => {
                    INVALID.fetch_add(1, Ordering::Relaxed);
                }
                (Some(_), Err(e)) => panic!("a valid file refused: {e}"),
                (None, Ok(r)) => panic!("an invalid file read as {} records", r.len()),
            }
        });
    // Both verdicts were reached: the inputs were neither all broken nor all intact.
    let (valid, invalid) = (
        VALID.load(Ordering::Relaxed),
        INVALID.load(Ordering::Relaxed),
    );
    assert!(
        valid > 100 && invalid > 100,
        "{valid} valid, {invalid} invalid inputs"
    );
}

/// Raw bytes (a damaged gzip stream among them): never a panic, only valid records.
#[test]
fn records_reader_on_raw_bytes() {
    check!()
        .with_iterations(iterations())
        .with_type::<(bool, Vec<u8>)>()
        .for_each(|(magic, bytes)| {
            let mut input = bytes.clone();
            if *magic {
                input.splice(0..0, [0x1f, 0x8b]);
            }
            if let Ok(records) = read(&input) {
                check_records(&records);
            }
        });
}

/// Message bodies, random and mutated from the real ones: never a panic; a day is
/// only ever given within CloudTrail's life and not after today.
#[test]
fn message_parser() {
    let bodies: Vec<String> = ["explicit-date.json", "iso-date.json", "scheduler.json"]
        .iter()
        .map(|name| {
            let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
            let event: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            event["Records"][0]["body"].as_str().unwrap().to_string()
        })
        .collect();
    let today = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    check!()
        .with_iterations(iterations())
        .with_type::<(u8, Vec<(u8, u16, u8)>, String)>()
        .for_each(|(which, edits, random)| {
            let mut body = bodies[*which as usize % bodies.len()].clone().into_bytes();
            for &(op, pos, byte) in edits {
                if body.is_empty() {
                    break;
                }
                let at = pos as usize % body.len();
                match op % 3 {
                    0 => body[at] = b"0123456789{}[]\":,-T"[byte as usize % 19],
                    1 => {
                        body.remove(at);
                    }
                    _ => body.insert(at, byte % 128),
                }
            }
            for text in [String::from_utf8_lossy(&body).into_owned(), random.clone()] {
                if let Ok((day, _)) = cloudtrail_aggregator::trigger::parse_body(&text, today) {
                    let d = day.to_string();
                    assert!(
                        d.as_str() >= "2013-11-01" && d.as_str() <= "2024-03-01",
                        "{d}"
                    );
                }
            }
        });
}
