//! A program for the backtrace test: a task panics, and the program prints the error in its
//! alternate form and whether it carries the worker's backtrace. The test runs it with and
//! without `RUST_BACKTRACE`, which its workers inherit.

#[procpool::task]
fn deep_panic(depth: u32) -> u32 {
    if depth == 0 {
        panic!("the bottom");
    }
    deep_panic(depth - 1) + 1
}

fn main() {
    let mut builder = procpool::Pool::builder().processes(1);
    // `off`: the program turns backtraces off whatever the environment says.
    if std::env::args().nth(1).as_deref() == Some("off") {
        builder = builder.backtraces(false);
    }
    let pool = builder.build().expect("the pool starts");
    let error = pool.apply(deep_panic, (3,)).unwrap_err();
    println!("kind: {:?}", error.kind());
    println!("has backtrace: {}", error.panic_backtrace().is_some());
    println!("{error:#}");
    pool.close();
    pool.join().expect("join");
}
