//! How long until a fresh pool is ready and its first results are back, under each start
//! method?
//!
//! `pool_of_2_first_result`: a pool of 2 workers started and one no-op run.
//! `pool_of_100_first_map`: a pool of 100 started (`build` returns once every worker is
//! ready) and a map of 100 no-ops run. Each is measured with the forkserver (the default:
//! a server process spawned from this bench binary, each worker forked from it) and with
//! spawn (each worker this bench binary re-executed). The clock stops at the last result;
//! the pool's shutdown is not timed.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use procpool::{Pool, StartMethod};
use procpool_benches::{start_and_first_map, start_and_first_result};

mod common;

const METHODS: [(&str, StartMethod); 2] = [
    ("forkserver", StartMethod::Forkserver),
    ("spawn", StartMethod::Spawn),
];

/// The time `start` takes, summed over `iters` pools, each dropped off the clock.
fn timed(iters: u64, start: impl Fn() -> Pool) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        let pool = start();
        total += started.elapsed();
        drop(pool);
    }
    total
}

fn startup(c: &mut Criterion) {
    let mut group = c.benchmark_group("startup");
    for (name, method) in METHODS {
        group.bench_function(BenchmarkId::new("pool_of_2_first_result", name), |b| {
            b.iter_custom(|iters| timed(iters, || start_and_first_result(2, method)));
        });
    }
    // Tens of milliseconds an iteration: the same count of iterations in every sample, not
    // the growing counts of linear sampling, keeps a run of ten samples short.
    group.sampling_mode(SamplingMode::Flat);
    for (name, method) in METHODS {
        group.bench_function(BenchmarkId::new("pool_of_100_first_map", name), |b| {
            b.iter_custom(|iters| timed(iters, || start_and_first_map(100, method)));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config(Duration::from_secs(2));
    targets = startup
}
criterion_main!(benches);
