//! What does it cost to move bytes to a worker and back? `apply` of a task that returns its
//! argument, for 1 KiB, 1 MiB and 64 MiB: as a `ByteBuf`, copied through the socket, and as a
//! `SharedBytes`, mapped on each side; beside a plain copy of the same buffer in this
//! process (a round trip through the socket copies the bytes several times).
//!
//! Throughput counts the payload once per round trip.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use procpool_benches::{echo, echo_shared, payload, pool, shared_payload};

mod common;

fn round_trip(c: &mut Criterion) {
    let pool = pool(2);
    let mut group = c.benchmark_group("payload_round_trip");
    for (label, len) in [("1KiB", 1 << 10), ("1MiB", 1 << 20), ("64MiB", 64 << 20)] {
        let bytes = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("apply_echo/{label}"), |b| {
            // Each round trip sends what the last one gave back, so no copy of the caller's
            // own is timed.
            let mut held = Some(bytes.clone());
            b.iter(|| {
                let sent = held.take().expect("the last round trip gave it back");
                let back = pool.apply(echo, (sent,)).expect("echo runs");
                assert_eq!(back.len(), len);
                held = Some(back);
            });
        });
        let shared = shared_payload(len);
        group.bench_function(format!("apply_echo_shared/{label}"), |b| {
            b.iter(|| {
                let back = pool
                    .apply(echo_shared, (shared.clone(),))
                    .expect("echo runs");
                assert_eq!(back.len(), len);
            });
        });
        group.bench_function(format!("copy_in_process/{label}"), |b| {
            b.iter(|| black_box(bytes.clone()));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config(Duration::from_secs(2));
    targets = round_trip
}
criterion_main!(benches);
