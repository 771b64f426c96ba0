//! Bulk bytes without copies: a 64 MiB buffer in shared memory, read by several workers at
//! once, and a result the workers build in shared memory themselves.
//!
//! ```sh
//! cargo run --release -p procpool --example shared_bytes
//! ```

use std::time::Instant;

use procpool::{Pool, SharedBytes};

/// How many bytes of `bytes[start..end]` are zero: each worker maps the same 64 MiB and
/// reads only its part.
#[procpool::task]
fn zeros_in(bytes: SharedBytes, start: usize, end: usize) -> u64 {
    bytes[start..end].iter().filter(|&&b| b == 0).count() as u64
}

/// A new buffer, made in the worker: every byte of `bytes` plus one.
#[procpool::task]
fn plus_one(bytes: SharedBytes) -> SharedBytes {
    SharedBytes::new(bytes.len(), |out| {
        for (o, b) in out.iter_mut().zip(bytes.iter()) {
            *o = b.wrapping_add(1);
        }
    })
    .expect("shared memory")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const LEN: usize = 64 << 20;
    let bytes = SharedBytes::new(LEN, |b| {
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i % 7) as u8;
        }
    })?;
    let pool = Pool::new()?;

    // Cloning a `SharedBytes` copies no byte, and neither does sending it: each of the
    // eight calls maps the same memory.
    let parts = 8;
    let started = Instant::now();
    let calls: Vec<_> = (0..parts)
        .map(|p| (bytes.clone(), p * LEN / parts, (p + 1) * LEN / parts))
        .collect();
    let zeros: u64 = pool.starmap(zeros_in, calls)?.into_iter().sum();
    println!(
        "{zeros} zero bytes in 64 MiB, counted by {} workers in {:.1?}",
        pool.processes(),
        started.elapsed()
    );
    assert_eq!(zeros, LEN.div_ceil(7) as u64);

    let started = Instant::now();
    let next = pool.apply(plus_one, (bytes.clone(),))?;
    println!(
        "64 MiB made in a worker and mapped here in {:.1?}",
        started.elapsed()
    );
    assert!(next.iter().zip(bytes.iter()).all(|(n, b)| *n == b + 1));

    pool.close();
    pool.join()?;
    Ok(())
}
