//! A parent for the no-orphans test: starts a pool of three workers, prints their pids on one
//! line, makes every worker busy with a task that waits at the rendezvous given as the first
//! argument, then blocks until its standard input closes (or it is killed, which is the
//! point). Busy workers do not read their socket, so only `PR_SET_PDEATHSIG` can end them.

use std::io::{Read, Write};

#[procpool::task]
fn hold(path: String) -> u64 {
    u64::from(tests_integration::meet(&path).unwrap_or(0))
}

fn main() {
    let path = std::env::args().nth(1).expect("a rendezvous path");
    let pool = procpool::Pool::builder()
        .processes(3)
        .build()
        .expect("the pool starts");
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", pids.join(" ")).expect("print the pids");
    stdout.flush().expect("flush the pids");
    let held: Vec<_> = (0..3)
        .map(|_| pool.apply_async(hold, (path.clone(),)).expect("submit"))
        .collect();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}
