//! The `tracing` feature: a span per blocking call, with its task and outcome, and events for
//! workers' starts, readiness and deaths, delivered to the program's subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tests_integration::{finish, pool, serial};

use crate::tasks::square;

#[procpool::task]
fn abort_here() -> u32 {
    std::process::abort()
}

/// Everything the subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn calls_have_spans_and_workers_have_events() {
    let _serial = serial();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The supervisor's events come from its own thread: the subscriber must be global. Each
    // test runs in a process of its own under nextest, the suite's runner.
    tracing::subscriber::set_global_default(subscriber).expect("no subscriber yet");
    let pool = pool(1);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    let error = pool.apply(abort_here, ()).unwrap_err();
    assert_eq!(error.kind(), procpool::ErrorKind::WorkerDied);
    assert_eq!(pool.map(square, 1..=3).unwrap(), [1, 4, 9]);
    finish(pool);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "worker started",
        "worker ready",
        "worker died",
        "exit=was killed by signal 6 (SIGABRT)",
        "method=\"apply\"",
        "outcome=\"ok\"",
        "outcome=WorkerDied",
        "method=\"map\"",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}
