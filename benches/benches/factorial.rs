//! The Pool tutorial's CPU-light job and its CPU-heavy cousin: the factorials of 1..=100
//! (serial, through a warm pool, through a pool started for the job) and of 1..=3000 with
//! 2 workers against the serial loop (the speed-up case: the last items weigh the most).
//!
//! Two more lines for 1..=100 ask what chunking could reach with the pool as it is: one
//! chunk per worker of contiguous items (1..=50 weighs about an eighth of 51..=100), and one
//! chunk per worker of alternate items (odd, then even: two chunks of equal weight), a
//! strided layout like the one the automatic chunk size sends.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use procpool::MapOptions;
use procpool_benches::{factorial, factorials_serial, pool};

mod common;

fn light(c: &mut Criterion) {
    let mut group = c.benchmark_group("factorial_1_to_100");
    group.bench_function("serial", |b| b.iter(|| factorials_serial(100)));
    let warm = pool(2);
    group.bench_function("warm_pool_of_2_map", |b| {
        b.iter(|| warm.map(factorial, 1..=100u64).expect("the map runs"));
    });
    let halves = MapOptions::new().chunksize(50);
    group.bench_function("warm_pool_of_2_two_contiguous_chunks", |b| {
        b.iter(|| {
            warm.map_with(factorial, 1..=100u64, halves)
                .expect("the map runs")
        });
    });
    let strided: Vec<u64> = (1..=100u64)
        .filter(|k| k % 2 == 1)
        .chain((1..=100u64).filter(|k| k % 2 == 0))
        .collect();
    group.bench_function("warm_pool_of_2_two_strided_chunks", |b| {
        b.iter(|| {
            warm.map_with(factorial, strided.iter().copied(), halves)
                .expect("the map runs")
        });
    });
    drop(warm);
    group.bench_function("cold_pool_of_2_map", |b| {
        b.iter(|| {
            let cold = pool(2);
            cold.map(factorial, 1..=100u64).expect("the map runs")
        });
    });
    group.finish();
}

fn heavy(c: &mut Criterion) {
    let mut group = c.benchmark_group("factorial_1_to_3000");
    group.bench_function("serial", |b| b.iter(|| factorials_serial(3000)));
    let warm = pool(2);
    group.bench_function("warm_pool_of_2_map", |b| {
        b.iter(|| warm.map(factorial, 1..=3000u64).expect("the map runs"));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config(Duration::from_secs(3));
    targets = light, heavy
}
criterion_main!(benches);
