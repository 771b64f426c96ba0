//! How many no-op tasks a second does `map` move through a warm pool of 2?
//!
//! With the automatic chunk size over 100,000 items, and with a chunk size of 1 over 10,000
//! items: one frame per task costs a round trip each, so the full 100,000 would take a
//! sample of ten runs well past a few seconds on 2 cores. Throughput is reported per item,
//! so the two lines compare directly.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use procpool::MapOptions;
use procpool_benches::{noop, pool};

mod common;

const AUTO_ITEMS: u64 = 100_000;
const CHUNK_1_ITEMS: u64 = 10_000;

fn map(c: &mut Criterion) {
    let pool = pool(2);
    let mut group = c.benchmark_group("map_noop");
    group.throughput(Throughput::Elements(AUTO_ITEMS));
    group.bench_function("auto_chunks/100000", |b| {
        b.iter(|| {
            let out = pool.map(noop, 0..AUTO_ITEMS).expect("the map runs");
            assert_eq!(out.len(), AUTO_ITEMS as usize);
        });
    });
    group.throughput(Throughput::Elements(CHUNK_1_ITEMS));
    group.bench_function("chunksize_1/10000", |b| {
        b.iter(|| {
            let out = pool
                .map_with(noop, 0..CHUNK_1_ITEMS, MapOptions::new().chunksize(1))
                .expect("the map runs");
            assert_eq!(out.len(), CHUNK_1_ITEMS as usize);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config(Duration::from_secs(3));
    targets = map
}
criterion_main!(benches);
