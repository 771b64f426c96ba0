//! A program for the terminal-signals test: it makes itself a process group of its own, as a
//! shell makes a foreground job, catches SIGINT (the program's choice; a caught signal, unlike
//! an ignored one, is not inherited by the workers it starts), holds a call on each
//! of two workers, sends SIGINT to its whole group as a terminal's Ctrl-C does, then lets the
//! calls finish and prints their results. Workers in the program's group would die of it.

#[procpool::task]
fn hold(path: String) -> u64 {
    u64::from(tests_integration::meet(&path).unwrap_or(0))
}

extern "C" fn on_sigint(_: libc::c_int) {}

fn main() {
    // SAFETY: setpgid and signal touch no memory of this process; no other thread exists
    // yet that could be changing the disposition of SIGINT.
    unsafe {
        assert_eq!(libc::setpgid(0, 0), 0, "a process group of its own");
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let pool = procpool::Pool::builder()
        .processes(2)
        .build()
        .expect("the pool starts");
    let rendezvous = tests_integration::Rendezvous::new();
    let held: Vec<_> = (0..2)
        .map(|_| {
            pool.apply_async(hold, (rendezvous.path(),))
                .expect("submit")
        })
        .collect();
    let arrivals = [rendezvous.arrive(), rendezvous.arrive()];
    // SAFETY: kill has no memory effects; 0 names this process's own group.
    assert_eq!(unsafe { libc::kill(0, libc::SIGINT) }, 0);
    for arrival in arrivals {
        arrival.release(1);
    }
    let results: Vec<String> = held
        .iter()
        .map(|h| match h.get() {
            Ok(v) => v.to_string(),
            Err(e) => format!("error: {e}"),
        })
        .collect();
    println!("results: {}", results.join(" "));
    println!("deaths: {}", pool.stats().worker_deaths);
    pool.close();
    pool.join().expect("join");
}
