//! A host agent for the tests of pools over Redis: `pp_host URL QUEUE PROCESSES LEASE_MS
//! NAME`. Serves until it is killed (or its standard input closes, when it hands its calls
//! back and exits).
//!
//! `pp_host square URL QUEUE X`: a caller that prints the square of X, computed by a host.
//!
//! `pp_host caller URL QUEUE LEASE_MS LOG N`: a caller that queues N calls of
//! `work_logged(LOG, 100)`, says `queued` on one line, and blocks until it is killed.

use std::io::{Read, Write};
use std::time::Duration;

fn main() {
    tests_integration::remote_tasks::linked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args[0] == "caller" {
        return caller(&args[1..]);
    }
    if args[0] == "square" {
        return square(&args[1..]);
    }
    let [url, queue, processes, lease, name] = &args[..] else {
        panic!("usage: pp_host URL QUEUE PROCESSES LEASE_MS NAME");
    };
    let host = procpool::Host::new(url, queue)
        .processes(processes.parse().expect("a number of processes"))
        .lease(Duration::from_millis(lease.parse().expect("a lease in ms")))
        .name(name)
        .start()
        .expect("the host starts");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    host.stop().expect("the host stops cleanly");
}

fn caller(args: &[String]) {
    let [url, queue, lease, log, n] = args else {
        panic!("usage: pp_host caller URL QUEUE LEASE_MS LOG N");
    };
    let pool = procpool::Pool::builder()
        .redis(url)
        .queue(queue)
        .lease(Duration::from_millis(lease.parse().expect("a lease in ms")))
        .build()
        .expect("the pool starts");
    let n: u64 = n.parse().expect("a count");
    let calls: Vec<_> = (0..n)
        .map(|_| {
            pool.apply_async(
                tests_integration::remote_tasks::work_logged,
                (log.clone(), 100),
            )
            .expect("queued")
        })
        .collect();
    println!("queued");
    std::io::stdout().flush().expect("flush");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(calls);
}

fn square(args: &[String]) {
    let [url, queue, x] = args else {
        panic!("usage: pp_host square URL QUEUE X");
    };
    let pool = procpool::Pool::builder()
        .redis(url)
        .queue(queue)
        .build()
        .expect("the pool starts");
    let x: u64 = x.parse().expect("a number");
    let squared = pool
        .apply(tests_integration::remote_tasks::square, (x,))
        .expect("the call");
    println!("{squared}");
}
