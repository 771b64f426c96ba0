//! How many tasks a second does a pool run when it replaces each worker after one job?
//!
//! A pool of 2 with `max_tasks_per_child(1)` maps 200 no-ops in chunks of one, so that
//! each call runs in a worker started for it (Python's `maxtasksperchild=1`): what is
//! measured is mostly starting a worker and its handshake, under each start method. The
//! pool is built once; the replacements are made during the maps. Throughput is per call.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use procpool::StartMethod;
use procpool_benches::{map_one_by_one, one_job_per_worker};

mod common;

const CALLS: u64 = 200;

fn recycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("max_tasks_per_child_1");
    group.throughput(Throughput::Elements(CALLS));
    for (name, method) in [
        ("forkserver", StartMethod::Forkserver),
        ("spawn", StartMethod::Spawn),
    ] {
        let pool = one_job_per_worker(2, method);
        group.bench_function(BenchmarkId::new("map_chunksize_1", name), |b| {
            b.iter(|| map_one_by_one(&pool, CALLS));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config(Duration::from_secs(3));
    targets = recycle
}
criterion_main!(benches);
