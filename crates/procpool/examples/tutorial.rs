//! The tutorial's first experiment: factorials of 1..=10 through `apply_async`, printing the
//! pid of the worker that ran each, then the timing of 1..=100 serially and through the pool.
//!
//! Run it with `cargo run --release -p procpool --example tutorial`.

use std::time::Instant;

use num_bigint::BigUint;
use procpool::Pool;

/// The tutorial's `get_factorial`: `n!`, printing the worker's pid when asked.
#[procpool::task]
fn get_factorial(n: u64, show_pid: bool) -> BigUint {
    if show_pid {
        println!("pid is {}", std::process::id());
    }
    (1..=n).map(BigUint::from).product()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cpu_count() = {}", procpool::cpu_count());
    println!("parent pid is {}", std::process::id());

    // f_list_para_apply_async(10, pid=1): one apply_async per number, then close, join, get.
    let pool = Pool::new()?;
    println!("worker pids: {:?}", pool.worker_pids());
    let pending: Vec<_> = (1..=10)
        .map(|n| pool.apply_async(get_factorial, (n, true)))
        .collect::<Result<_, _>>()?;
    pool.close();
    pool.join()?;
    let results: Vec<BigUint> = pending.iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    println!("10! = {}", results[9]);

    // f_list_serial(100) against f_list_para_apply_async(100) on a warm pool.
    let serial = Instant::now();
    let expected: Vec<BigUint> = (1..=100).map(|n| get_factorial(n, false)).collect();
    let serial = serial.elapsed();

    let pool = Pool::new()?;
    let parallel = Instant::now();
    let pending: Vec<_> = (1..=100)
        .map(|n| pool.apply_async(get_factorial, (n, false)))
        .collect::<Result<_, _>>()?;
    let results: Vec<BigUint> = pending.iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    let parallel = parallel.elapsed();
    assert_eq!(results, expected);
    println!(
        "factorials of 1..=100: serial {serial:?}, apply_async on a warm pool of {} {parallel:?}",
        pool.processes()
    );
    pool.close();
    pool.join()?;
    Ok(())
}
