//! What does one `apply` of a no-op cost on a warm pool: the round trip from the caller to
//! a worker and back, with nothing else in flight?

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use procpool_benches::{noop, pool};

mod common;

fn apply(c: &mut Criterion) {
    let pool = pool(2);
    c.bench_function("apply/noop_round_trip", |b| {
        b.iter(|| pool.apply(noop, (black_box(7),)).expect("the no-op runs"));
    });
    c.bench_function("apply_async/noop_then_get", |b| {
        b.iter(|| {
            pool.apply_async(noop, (black_box(7),))
                .expect("the no-op is submitted")
                .get()
                .expect("the no-op runs")
        });
    });
}

criterion_group! {
    name = benches;
    config = common::config(Duration::from_secs(2));
    targets = apply
}
criterion_main!(benches);
