//! How fast does `imap` stream results, pulling its input lazily with a bounded number of
//! calls in flight?
//!
//! 10,000 no-ops through a warm pool of 2, one call a frame (the default) and 100 calls a
//! frame, ordered and unordered. Throughput is per item.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use procpool::MapOptions;
use procpool_benches::{noop, pool};

mod common;

const ITEMS: u64 = 10_000;

fn imap(c: &mut Criterion) {
    let pool = pool(2);
    let mut group = c.benchmark_group("imap_noop");
    group.throughput(Throughput::Elements(ITEMS));
    for chunksize in [1, 100] {
        group.bench_function(format!("ordered/chunksize_{chunksize}"), |b| {
            b.iter(|| {
                let options = MapOptions::new().chunksize(chunksize);
                let mut sum = 0;
                for x in pool
                    .imap_with(noop, 0..ITEMS, options)
                    .expect("imap starts")
                {
                    sum += x.expect("the no-op runs");
                }
                assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
            });
        });
        group.bench_function(format!("unordered/chunksize_{chunksize}"), |b| {
            b.iter(|| {
                let options = MapOptions::new().chunksize(chunksize);
                let mut sum = 0;
                for x in pool
                    .imap_unordered_with(noop, 0..ITEMS, options)
                    .expect("imap starts")
                {
                    sum += x.expect("the no-op runs");
                }
                assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config(Duration::from_secs(2));
    targets = imap
}
criterion_main!(benches);
