//! How long until a fresh pool of 2 workers is ready and its first result is back?
//!
//! Each iteration starts a pool (two worker processes re-executed from this bench binary,
//! through their handshake), runs one no-op task, and stops the clock; the pool's shutdown
//! is not timed.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use procpool_benches::start_and_first_result;

fn startup(c: &mut Criterion) {
    c.bench_function("startup/pool_of_2_first_result", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let pool = start_and_first_result(2);
                total += started.elapsed();
                drop(pool);
            }
            total
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = startup
}
criterion_main!(benches);
