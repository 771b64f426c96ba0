//! The `tracing` feature: a span per call, blocking or not, with its task and outcome, and
//! events for workers' starts, readiness and deaths, delivered to the program's subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

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

impl Captured {
    /// What was written so far.
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The subscriber's output, emptied. The supervisor's events come from its own thread, so
/// the subscriber is the global one, installed once for the process (tests that share a
/// process take turns through `serial`).
fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    let captured = CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no subscriber yet");
        captured
    });
    captured.0.lock().unwrap().clear();
    captured.clone()
}

/// The line that says the span of a call by `method` closed.
fn closed(text: &str, method: &str) -> Option<String> {
    let method = format!("method=\"{method}\"");
    text.lines()
        .find(|line| line.contains(&method) && line.contains("close"))
        .map(str::to_string)
}

#[test]
fn calls_have_spans_and_workers_have_events() {
    let _serial = serial();
    let captured = capture();
    let pool = pool(1);
    assert_eq!(pool.apply(square, (3,)).unwrap(), 9);
    let error = pool.apply(abort_here, ()).unwrap_err();
    assert_eq!(error.kind(), procpool::ErrorKind::WorkerDied);
    assert_eq!(pool.map(square, 1..=3).unwrap(), [1, 4, 9]);
    finish(pool);
    let text = captured.text();
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

#[test]
fn async_calls_have_spans_that_end_when_their_last_result_is_in() {
    let _serial = serial();
    let captured = capture();
    let pool = pool(1);
    let pid = pool.worker_pids()[0];
    let one = pool.apply_async(square, (3,)).unwrap();
    one.wait();
    // Closed once the result is in, while the handle is still held.
    let line = closed(&captured.text(), "apply_async").expect("the span of apply_async closed");
    for field in [
        "task=\"it::tasks::square\"".to_string(),
        "outcome=\"ok\"".to_string(),
        "worker=0".to_string(),
        format!("pid={pid}"),
    ] {
        assert!(line.contains(&field), "no {field} in {line}");
    }
    assert_eq!(one.get().unwrap(), 9);

    let dying = pool.apply_async(abort_here, ()).unwrap();
    assert_eq!(
        dying.get().unwrap_err().kind(),
        procpool::ErrorKind::WorkerDied
    );
    let line = captured
        .text()
        .lines()
        .find(|line| line.contains("method=\"apply_async\"") && line.contains("outcome=WorkerDied"))
        .map(str::to_string);
    let line = line.expect("the span of the failed apply_async closed");
    assert!(
        line.contains("close") && line.contains("worker=0"),
        "{line}"
    );

    let squares = pool.map_async(square, 1..=3).unwrap();
    squares.wait();
    let line = closed(&captured.text(), "map_async").expect("the span of map_async closed");
    assert!(
        line.contains("calls=3") && line.contains("outcome=\"ok\""),
        "{line}"
    );

    let mut results = pool.imap(square, 1..=3).unwrap();
    assert_eq!(results.next().unwrap().unwrap(), 1);
    assert_eq!(results.next().unwrap().unwrap(), 4);
    assert_eq!(results.next().unwrap().unwrap(), 9);
    let line = closed(&captured.text(), "imap").expect("the span of imap closed");
    assert!(line.contains("outcome=\"ok\""), "{line}");

    // An iterator dropped unread: its span ends with its last call, which the pool's join
    // waits for.
    drop(pool.imap_unordered(square, 1..=2).unwrap());
    finish(pool);
    let line = closed(&captured.text(), "imap_unordered").expect("the span of imap_unordered");
    assert!(line.contains("outcome=\"ok\""), "{line}");
}
