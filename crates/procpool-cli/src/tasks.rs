//! The tasks the experiments run in pool workers, registered with `#[procpool::task]`.
//!
//! They live in the binary crate so that their registry entries are linked for certain.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use num_bigint::BigUint;
use procpool_cli::crawl::{self, CrawlError, Page, PageRequest};

/// Whether tasks print the pid of the worker that runs them, as the tutorial's did.
static SHOW_PIDS: AtomicBool = AtomicBool::new(false);

/// The pool's initializer: sets whether this worker prints pids, and starts its logging
/// with the parent's filter (none when empty).
#[procpool::task]
pub fn init_worker(show: bool, log_filter: String) {
    SHOW_PIDS.store(show, Ordering::Relaxed);
    if !log_filter.is_empty() {
        crate::log::init_worker(&log_filter);
    }
}

/// Sets the same flag in this process, for the serial runs.
pub fn set_show_pids(show: bool) {
    SHOW_PIDS.store(show, Ordering::Relaxed);
}

/// The tutorial's `get_factorial`: `n!` as a big integer.
#[procpool::task]
pub fn get_factorial(n: u64) -> BigUint {
    if SHOW_PIDS.load(Ordering::Relaxed) {
        say(format_args!(
            "pid is {} (factorial of {n})",
            std::process::id()
        ));
    }
    (1..=n).map(BigUint::from).product()
}

/// The tutorial's `get_repost_timeline`: one page of a post's reposts, over HTTP.
#[procpool::task]
pub fn get_repost_timeline(request: PageRequest) -> Result<Page, CrawlError> {
    let show = SHOW_PIDS.load(Ordering::Relaxed);
    if show {
        say(format_args!(
            "pid {} start! (page {})",
            std::process::id(),
            request.page
        ));
    }
    let page = crawl::fetch_page(&request).map(|page| Page {
        fetched_by: procpool::current_host(),
        ..page
    });
    if show {
        say(format_args!(
            "pid {} finished! (page {})",
            std::process::id(),
            request.page
        ));
    }
    page
}

/// The same page for `map` and `map_async`, whose result is every page or one failure: a
/// page that cannot be fetched fails the call, as an exception raised in Python's `fetch`
/// fails its map, so that the map ends at once and cancels the requests still in flight
/// (a task's own `Err` would be a result like any other, and the map would wait for every
/// page). The error crosses to the caller as the panic's message, in JSON, which
/// [`page_error`] reads back.
#[procpool::task]
pub fn get_repost_page(request: PageRequest) -> Page {
    match get_repost_timeline(request) {
        Ok(page) => page,
        Err(error) => {
            let json = serde_json::to_string(&error).expect("a CrawlError encodes as JSON");
            std::panic::panic_any(json)
        }
    }
}

/// The page error that made a [`get_repost_page`] call fail, if that is why `error` is.
pub fn page_error(error: &procpool::Error) -> Option<CrawlError> {
    serde_json::from_str(error.panic_message()?).ok()
}

/// Prints a line from a task. A reader that went away (`procpool seed --show-pids | head`)
/// must not fail the task, so write errors are ignored.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{line}");
}
