//! A program for the SIGCHLD test: it ignores SIGCHLD, so the kernel reaps its children at
//! once and their exit status is lost; a task that exits with code 3 must then be reported
//! as a death whose status could not be read (or, under the forkserver, whose children the
//! program's SIGCHLD does not touch, with its real code), never as an invented code, and the
//! pool must carry on. Prints what it saw, one fact a line.

#[procpool::task]
fn exit_with(code: i32) -> u32 {
    std::process::exit(code)
}

#[procpool::task]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    // SAFETY: no other thread exists yet that could be changing SIGCHLD's disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let pool = procpool::Pool::builder()
        .processes(1)
        .build()
        .expect("the pool starts");
    let error = pool.apply(exit_with, (3,)).unwrap_err();
    println!("kind: {:?}", error.kind());
    println!("exit: {:?}", error.worker_exit());
    println!("message: {error}");
    println!(
        "after: {}",
        pool.apply(square, (6,)).expect("the pool carries on")
    );
    pool.close();
    pool.join().expect("join");
}
