//! Timed workloads. Each number is the median of many repetitions of the whole batch.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::codecs::{Codec, NAMES};
use crate::for_each_codec;
use crate::workloads::{self, Rec};

pub struct Cfg {
    pub scale: f64,
}

/// Median ns of `f` over at least `min` and at most `max` runs, stopping once `budget` (scaled)
/// is spent; one warm-up run first. Returns (median ns, runs).
fn median_ns(cfg: &Cfg, min: usize, max: usize, budget_ms: u64, mut f: impl FnMut()) -> (f64, usize) {
    f();
    let budget = Duration::from_millis((budget_ms as f64 * cfg.scale) as u64);
    let start = Instant::now();
    let mut t = Vec::with_capacity(max);
    while t.len() < max && (t.len() < min || start.elapsed() < budget) {
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_nanos() as f64);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[t.len() / 2], t.len())
}

#[derive(Clone)]
struct Row {
    codec: &'static str,
    enc: Option<f64>,
    dec: Option<f64>,
    bytes: Option<usize>,
    runs: (usize, usize),
    note: String,
}

fn ratio(x: Option<f64>, base: Option<f64>) -> String {
    match (x, base) {
        (Some(x), Some(b)) if b > 0.0 => format!("{:.2}", x / b),
        _ => "–".into(),
    }
}

fn fmt_ns(x: Option<f64>) -> String {
    match x {
        Some(x) => format!("{:.0}", x),
        None => "error".into(),
    }
}

fn print_table(title: &str, rows: &[Row], per: &str, gb: Option<usize>) {
    println!("\n### {title}\n");
    let base = rows.iter().find(|r| r.codec == "bincode1").cloned();
    let (be, bd, bb) = base.map(|b| (b.enc, b.dec, b.bytes.map(|x| x as f64))).unwrap_or((None, None, None));
    if let Some(_) = gb {
        println!("| codec | encode ns {per} | enc GB/s | ×bincode1 | decode ns {per} | dec GB/s | ×bincode1 | bytes | ×bincode1 | runs e/d | note |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    } else {
        println!("| codec | encode ns {per} | ×bincode1 | decode ns {per} | ×bincode1 | bytes | ×bincode1 | runs e/d | note |");
        println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    }
    for r in rows {
        let gbs = |x: Option<f64>| match (x, gb) {
            (Some(x), Some(n)) => format!("{:.2}", n as f64 / x),
            _ => "–".into(),
        };
        if gb.is_some() {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
                r.codec,
                fmt_ns(r.enc),
                gbs(r.enc),
                ratio(r.enc, be),
                fmt_ns(r.dec),
                gbs(r.dec),
                ratio(r.dec, bd),
                r.bytes.map(|b| b.to_string()).unwrap_or("–".into()),
                ratio(r.bytes.map(|x| x as f64), bb),
                r.runs.0,
                r.runs.1,
                r.note
            );
        } else {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
                r.codec,
                fmt_ns(r.enc),
                ratio(r.enc, be),
                fmt_ns(r.dec),
                ratio(r.dec, bd),
                r.bytes.map(|b| b.to_string()).unwrap_or("–".into()),
                ratio(r.bytes.map(|x| x as f64), bb),
                r.runs.0,
                r.runs.1,
                r.note
            );
        }
    }
}

/// Encodes each of `items` separately, appending into one shared frame, then decodes each
/// from its own slice. (encode ns, decode ns, frame bytes) for the whole batch.
fn items_bench<C: Codec, T: Serialize + DeserializeOwned + PartialEq>(
    cfg: &Cfg,
    items: &[T],
    min: usize,
    max: usize,
    budget: u64,
) -> Row {
    let mut frame: Vec<u8> = Vec::new();
    let mut offs: Vec<usize> = Vec::with_capacity(items.len() + 1);
    let mut err = None;
    let (enc, re) = median_ns(cfg, min, max, budget, || {
        frame.clear();
        offs.clear();
        for it in items {
            offs.push(frame.len());
            if let Err(e) = C::enc(&mut frame, black_box(it)) {
                err.get_or_insert(e);
            }
        }
        offs.push(frame.len());
        black_box(&frame);
    });
    if let Some(e) = err {
        return Row { codec: C::NAME, enc: None, dec: None, bytes: None, runs: (0, 0), note: e };
    }
    // Check once that every item comes back.
    for (i, w) in offs.windows(2).enumerate() {
        let v: T = C::dec(&frame[w[0]..w[1]]).expect("decode");
        assert!(v == items[i], "{}: item {i} differs", C::NAME);
    }
    let (dec, rd) = median_ns(cfg, min, max, budget, || {
        for w in offs.windows(2) {
            let v: T = C::dec(black_box(&frame[w[0]..w[1]])).unwrap();
            black_box(v);
        }
    });
    Row { codec: C::NAME, enc: Some(enc), dec: Some(dec), bytes: Some(frame.len()), runs: (re, rd), note: String::new() }
}

/// As `items_bench`, but in procpool's *sized* layout, which a writer falls back to when
/// items differ in length: each item is a `u32` length then its bytes (the length is
/// written as a placeholder and patched after the item is encoded); a reader takes the
/// length, then decodes exactly that slice.
fn items_bench_sized<C: Codec, T: Serialize + DeserializeOwned + PartialEq>(
    cfg: &Cfg,
    items: &[T],
    min: usize,
    max: usize,
    budget: u64,
) -> Row {
    let mut frame: Vec<u8> = Vec::new();
    let (enc, re) = median_ns(cfg, min, max, budget, || {
        frame.clear();
        for it in items {
            let at = frame.len();
            frame.extend_from_slice(&[0; 4]);
            C::enc(&mut frame, black_box(it)).unwrap();
            let n = (frame.len() - at - 4) as u32;
            frame[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
        black_box(&frame);
    });
    let decode_all = |check: bool| {
        let mut rest = &frame[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let v: T = C::dec(black_box(&rest[4..4 + n])).unwrap();
            if check {
                assert!(v == items[i]);
            }
            black_box(v);
            rest = &rest[4 + n..];
            i += 1;
        }
    };
    decode_all(true);
    let (dec, rd) = median_ns(cfg, min, max, budget, || decode_all(false));
    Row {
        codec: "postcard, sized layout",
        enc: Some(enc),
        dec: Some(dec),
        bytes: Some(frame.len()),
        runs: (re, rd),
        note: "u32 length before each item, as the wire's sized layout".into(),
    }
}

/// Encodes `value` whole into a reused Vec (cleared each time), decodes it back.
fn whole_bench<C: Codec, T: Serialize + DeserializeOwned + PartialEq>(
    cfg: &Cfg,
    value: &T,
    min: usize,
    max: usize,
    budget: u64,
) -> Row {
    let mut buf: Vec<u8> = Vec::new();
    if let Err(e) = C::enc(&mut buf, value) {
        return Row { codec: C::NAME, enc: None, dec: None, bytes: None, runs: (0, 0), note: format!("encode: {e}") };
    }
    let bytes = buf.len();
    let back: Result<T, String> = C::dec(&buf);
    match back {
        Err(e) => {
            let (enc, re) = median_ns(cfg, min, max, budget, || {
                buf.clear();
                C::enc(&mut buf, black_box(value)).unwrap();
                black_box(&buf);
            });
            return Row { codec: C::NAME, enc: Some(enc), dec: None, bytes: Some(bytes), runs: (re, 0), note: format!("decode: {e}") };
        }
        Ok(v) => assert!(v == *value, "{}: roundtrip differs", C::NAME),
    }
    let (enc, re) = median_ns(cfg, min, max, budget, || {
        buf.clear();
        C::enc(&mut buf, black_box(value)).unwrap();
        black_box(&buf);
    });
    let (dec, rd) = median_ns(cfg, min, max, budget, || {
        let v: T = C::dec(black_box(&buf)).unwrap();
        black_box(&v);
        drop(v);
    });
    Row { codec: C::NAME, enc: Some(enc), dec: Some(dec), bytes: Some(bytes), runs: (re, rd), note: String::new() }
}

pub fn run(cfg: &Cfg) {
    let _ = NAMES;
    // 1. map of 100k no-ops: arguments (u64,) and results u64.
    let args: Vec<(u64,)> = (0..100_000u64).map(|i| (i,)).collect();
    let results: Vec<u64> = (0..100_000u64).collect();
    let mut rows = vec![];
    for_each_codec!(C => { rows.push(items_bench::<C, (u64,)>(cfg, &args, 21, 201, 1500)); });
    rows.push(items_bench_sized::<crate::codecs::Postcard, (u64,)>(cfg, &args, 21, 201, 1500));
    print_table("1a. map of 100k no-ops: arguments, 100,000 × `(u64,)` appended one by one into one frame, decoded one by one", &rows, "/100k", None);
    let mut rows = vec![];
    for_each_codec!(C => { rows.push(items_bench::<C, u64>(cfg, &results, 21, 201, 1500)); });
    rows.push(items_bench_sized::<crate::codecs::Postcard, u64>(cfg, &results, 21, 201, 1500));
    print_table("1b. map of 100k no-ops: results, 100,000 × `u64`, same way", &rows, "/100k", None);

    // 2. factorials.
    let facts = workloads::factorials(3000);
    let mut rows = vec![];
    for_each_codec!(C => { rows.push(items_bench::<C, num_bigint::BigUint>(cfg, &facts, 11, 101, 2500)); });
    print_table("2. factorials: `BigUint` n! for n in 1..=3000, each appended into one frame, each decoded", &rows, "/3000", None);

    // 3. payloads.
    let mib = 1usize << 20;
    for (size, min, max, budget) in [(mib, 31usize, 401usize, 1200u64), (64 * mib, 5, 21, 3000)] {
        let label = if size == mib { "1 MiB" } else { "64 MiB" };
        let mut rng = workloads::Rng::new(7);
        let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        // memcpy baselines, same run.
        let mut dst = vec![0u8; size];
        let (memcpy, _) = median_ns(cfg, min, max, budget, || {
            dst.copy_from_slice(black_box(&data));
            black_box(&dst);
        });
        let (alloc_copy, _) = median_ns(cfg, min, max, budget, || {
            let v = black_box(&data).to_vec();
            black_box(&v);
        });
        println!(
            "\n#### {label} baselines: memcpy into a warm buffer {:.0} ns = {:.2} GB/s; `to_vec()` (fresh allocation + copy, what a decode must at least do) {:.0} ns = {:.2} GB/s",
            memcpy,
            size as f64 / memcpy,
            alloc_copy,
            size as f64 / alloc_copy
        );
        let bb = ByteBuf::from(data.clone());
        let mut rows = vec![];
        for_each_codec!(C => { rows.push(whole_bench::<C, ByteBuf>(cfg, &bb, min, max, budget)); });
        for r in rows.iter_mut() {
            r.note = format!("{} memcpy {:.2} GB/s", r.note, size as f64 / memcpy);
        }
        print_table(&format!("3. payload {label} as `serde_bytes::ByteBuf`"), &rows, "", Some(size));
        drop(bb);
        let mut rows = vec![];
        for_each_codec!(C => { rows.push(whole_bench::<C, Vec<u8>>(cfg, &data, min, max, budget)); });
        print_table(&format!("3. payload {label} as `Vec<u8>` (element-wise)"), &rows, "", Some(size));
        let floats: Vec<f64> = (0..size / 8).map(|i| i as f64 * 0.5 + (rng.next() % 7) as f64).collect();
        let mut rows = vec![];
        for_each_codec!(C => { rows.push(whole_bench::<C, Vec<f64>>(cfg, &floats, min, max, budget)); });
        print_table(&format!("3. payload {label} as `Vec<f64>` ({} elements)", size / 8), &rows, "", Some(size));
    }

    // 4. struct-heavy.
    let recs: Vec<Rec> = workloads::records(10_000);
    let mut rows = vec![];
    for_each_codec!(C => { rows.push(whole_bench::<C, Vec<Rec>>(cfg, &recs, 21, 301, 2000)); });
    print_table("4. struct-heavy: `Vec` of 10,000 records, encoded and decoded whole", &rows, "/10k", None);
}
