//! What a hostile task cannot do: hang a call by writing on its worker's socket, steal a
//! result through a forked copy of the pool, or be killed by the terminal's signals.

use std::time::Duration;

use procpool::{ApplyOptions, ErrorKind};
use tests_integration::{finish, pool, serial};

use crate::tasks::square;

/// Writes `text` on the worker's own socket (the one descriptor of the worker that is a
/// socket), as a task that scribbles on a descriptor it does not own would, and returns.
#[procpool::task]
fn scribble(text: String) -> u32 {
    let mut written = 0;
    for fd in 3..256 {
        // SAFETY: `stat` is plain data; fstat writes only into it.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on any number is safe; a closed one fails.
        if unsafe { libc::fstat(fd, &mut stat) } == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
        {
            // SAFETY: write from a live buffer of the length given.
            let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
            assert_eq!(n, text.len() as isize, "the write went through");
            written += 1;
        }
    }
    written
}

#[test]
fn bytes_a_task_writes_on_its_socket_end_its_worker_at_once() {
    let _serial = serial();
    let pool = pool(2);
    let bound = Duration::from_secs(60);
    for text in ["Hi, world\n", "{\"a\":1}", "abc"] {
        // Through the supervisor, waiting with a generous bound: the call must end, as a
        // dead worker's, not run out the bound.
        let pending = pool.apply_async(scribble, (text.to_string(),)).unwrap();
        let error = pending.get_timeout(bound).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{text:?}: {error}");
        assert!(error.to_string().contains("not a frame"), "{error}");
        // On a borrowed worker, with a task timeout that must not be what ends it.
        let options = ApplyOptions::new().timeout(bound);
        let error = pool
            .apply_with(scribble, (text.to_string(),), options)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WorkerDied, "{text:?}: {error}");
        assert!(error.to_string().contains("not a frame"), "{error}");
    }
    assert_eq!(pool.apply(square, (4,)).unwrap(), 16, "the pool carries on");
    let stats = pool.stats();
    assert_eq!(stats.worker_deaths, 6);
    assert_eq!(stats.in_flight, 0);
    finish(pool);
}
