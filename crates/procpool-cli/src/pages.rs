//! A crawl's pages fetched with one of Pool's methods and handed on in page order as they
//! arrive, stopping at the first fatal error or at a signal.
//!
//! Two threads share the work. The fetching thread runs the method and sends what each
//! request came to ([`Event`]) down a channel, in whatever order the method delivers. The
//! calling thread receives, puts pages back in order and hands each page's new reposts to the
//! caller's writer as soon as every page before it has come; it also receives the signals
//! (SIGINT, SIGTERM) when asked to. When the crawl stops early, the pool is terminated, which
//! cancels the requests still in flight in its workers.
//!
//! How soon a fatal error is seen depends on the method, as it does in Python's Pool: serial,
//! `apply`, `apply_async` and `imap_unordered` see each page as it completes; `imap` sees
//! pages in order, so a failure waits for the pages before it; `map` and `map_async` hand back
//! all their pages at once, but a page that fails fails the map at once, which cancels the
//! other requests (see [`get_repost_page`]): no page of that map is written then.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use procpool::{MapOptions, Pool};
use procpool_cli::crawl::{self, CrawlError, MAX_PAGES, Page, PageRequest, Repost};

use crate::method::Method;
use crate::tasks::{self, get_repost_page, get_repost_timeline};

/// Which pages a crawl asks for, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// The first page alone, then exactly the pages its `total_number` says exist: no
    /// request past the end.
    TotalFirst,
    /// The tutorial's way: all ten pages at once, before the total is known, keeping those it
    /// turns out to call for. Pages past the end are asked for anyway.
    AllAtOnce,
}

/// What a crawl is asked to do.
#[derive(Debug)]
pub struct Job<'a> {
    /// The pool, for every method but serial.
    pub pool: Option<Arc<Pool>>,
    /// Which of Pool's methods fetches the pages.
    pub method: Method,
    /// Which pages are asked for, and when.
    pub plan: Plan,
    /// The endpoint, post, token, page size, timeout and retries; its page is ignored.
    pub template: &'a PageRequest,
    /// The first page to fetch (1, or later when resuming).
    pub first_page: u32,
    /// Repost ids already written (when resuming): they are not handed on again.
    pub seen: HashSet<u64>,
    /// Whether SIGINT and SIGTERM stop the crawl (instead of ending the process).
    pub catch_signals: bool,
}

/// Why a crawl stopped before its last page.
#[derive(Debug)]
pub enum Stop {
    /// A page failed for good.
    Page(CrawlError),
    /// The pool failed: a worker died, or the pool broke.
    Pool(procpool::Error),
    /// The writer failed.
    Write(io::Error),
    /// A signal arrived (its number).
    Signal(i32),
    /// The fetching thread ended without this page.
    Lost(u32),
}

impl Stop {
    /// The stop as an error, for a caller that keeps nothing of a stopped crawl.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Stop::Page(error) => error.into(),
            Stop::Pool(error) => error.into(),
            Stop::Write(error) => anyhow::Error::new(error).context("cannot write the reposts"),
            Stop::Signal(signal) => crate::cmd::Interrupted { signal }.into(),
            Stop::Lost(page) => anyhow::anyhow!("page {page} never came back from the pool"),
        }
    }
}

/// What a crawl did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The post's `total_number`, once a page told it.
    pub total_number: Option<u64>,
    /// The last page the total calls for (0 until the total is known).
    pub last_page: u32,
    /// Pages handed to the writer, in order from the first page.
    pub pages_written: u32,
    /// Reposts handed to the writer.
    pub reposts_written: u64,
    /// The pages written that host agents fetched (a crawl through `--redis`), by host.
    pub hosts: BTreeMap<String, Vec<u32>>,
    /// Why the crawl stopped early, if it did.
    pub stop: Option<Stop>,
}

/// What the fetching thread sends.
#[derive(Debug)]
enum Event {
    /// What one page request came to.
    Page(Result<Page, CrawlError>),
    /// The pool failed.
    Pool(procpool::Error),
    /// A signal arrived.
    Signal(i32),
    /// The fetching thread has sent all it will.
    Finished,
}

/// Crawls `job`'s pages, handing each page's reposts not seen before to `write`, in page
/// order, as soon as the pages before it are in; `on_page` is told of each page written,
/// with the last page once known.
///
/// The pool is the crawl's own: `apply_async` and `map_async` close it once the last page is
/// asked for, as the tutorial does (`apply_async` for each page, then `close`), so that the
/// workers no page needs exit while the pages come. On a stop the pool is terminated; on
/// success it is left for the caller to close (if not closed already) and join.
pub fn crawl(
    job: Job<'_>,
    mut on_page: impl FnMut(u32, u32),
    mut write: impl FnMut(&[Repost]) -> io::Result<()>,
) -> Outcome {
    let (events, received) = mpsc::channel();
    let signals = job
        .catch_signals
        .then(|| Signals::start(events.clone()))
        .flatten();
    let fetcher = {
        let pool = job.pool.clone();
        let (method, plan, template, first) =
            (job.method, job.plan, job.template.clone(), job.first_page);
        thread::Builder::new()
            .name("crawl-fetch".to_owned())
            .spawn(move || {
                fetch(pool.as_deref(), method, plan, &template, first, &events);
                let _ = events.send(Event::Finished);
            })
    };
    let mut outcome = Outcome::default();
    match fetcher {
        Ok(_detached) => {
            // The fetching thread is not joined: a serial request in flight would hold the
            // stop up to its timeout. It ends at its next send, or with the process.
            order(
                &job,
                &received,
                signals.as_ref(),
                &mut outcome,
                &mut on_page,
                &mut write,
            );
        }
        Err(error) => outcome.stop = Some(Stop::Write(error)),
    }
    if outcome.stop.is_some()
        && let Some(pool) = &job.pool
    {
        tracing::debug!("terminating the pool to cancel the requests in flight");
        pool.terminate();
    }
    drop(signals);
    outcome
}

/// Receives events until the last page is written or the crawl stops, writing pages in order.
fn order(
    job: &Job<'_>,
    received: &Receiver<Event>,
    signals: Option<&Signals>,
    outcome: &mut Outcome,
    on_page: &mut impl FnMut(u32, u32),
    write: &mut impl FnMut(&[Repost]) -> io::Result<()>,
) {
    let mut seen = job.seen.clone();
    let mut next = job.first_page;
    // Pages come in any order; those after a gap wait here.
    let mut waiting: BTreeMap<u32, Page> = BTreeMap::new();
    // Failures of pages that may turn out to be past the end (all at once, before the total
    // is known).
    let mut doubtful: BTreeMap<u32, CrawlError> = BTreeMap::new();
    let signalled = || signals.and_then(Signals::received);
    loop {
        if outcome.total_number.is_some() && next > outcome.last_page {
            return;
        }
        let event = match received.recv() {
            Ok(event) => event,
            // Every sender is gone, which the signals' thread never is before this returns.
            Err(_) => Event::Finished,
        };
        // A signal to the process group reaches the workers too; their deaths may come
        // before the signal's own event, and must not hide it.
        if let Some(signal) = signalled() {
            outcome.stop = Some(Stop::Signal(signal));
            return;
        }
        match event {
            // Everything the fetching thread sent has been handled, and the loop's first
            // check found pages still missing.
            Event::Finished => {
                // A page that failed before the total was known stopped a map: it is why
                // the pages asked for with it never came.
                outcome.stop = Some(match doubtful.pop_first() {
                    Some((_, error)) => Stop::Page(error),
                    None => Stop::Lost(next),
                });
                return;
            }
            Event::Signal(signal) => {
                outcome.stop = Some(Stop::Signal(signal));
                return;
            }
            Event::Pool(error) => {
                outcome.stop = Some(Stop::Pool(error));
                return;
            }
            Event::Page(Err(error)) => {
                let known_wanted = outcome.total_number.is_some() || error.page() == next;
                if job.plan == Plan::AllAtOnce && !known_wanted {
                    doubtful.insert(error.page(), error);
                    continue;
                }
                if outcome.last_page == 0 || error.page() <= outcome.last_page {
                    outcome.stop = Some(Stop::Page(error));
                    return;
                }
                // A page past the end failed; it was never needed.
            }
            Event::Page(Ok(page)) => {
                if outcome.total_number.is_none() {
                    outcome.total_number = Some(page.total_number);
                    // A post with no reposts still has its (empty) first page.
                    outcome.last_page = crawl::remaining_pages(job.template, page.total_number)
                        .last()
                        .map_or(1, |request| request.page);
                    on_page(0, outcome.last_page);
                    if next > outcome.last_page {
                        // Resumed after the last page: nothing is left.
                        return;
                    }
                    if let Some((_, error)) = doubtful
                        .into_iter()
                        .find(|(page, _)| *page <= outcome.last_page)
                    {
                        outcome.stop = Some(Stop::Page(error));
                        return;
                    }
                    doubtful = BTreeMap::new();
                }
                if page.page >= next && page.page <= outcome.last_page {
                    waiting.insert(page.page, page);
                }
            }
        }
        while let Some(page) = waiting.remove(&next) {
            if let Some(host) = &page.fetched_by {
                outcome
                    .hosts
                    .entry(host.clone())
                    .or_default()
                    .push(page.page);
            }
            let fresh: Vec<Repost> = page
                .reposts
                .into_iter()
                .filter(|repost| seen.insert(repost.id))
                .collect();
            if let Err(error) = write(&fresh) {
                outcome.stop = Some(Stop::Write(error));
                return;
            }
            outcome.pages_written += 1;
            outcome.reposts_written += fresh.len() as u64;
            on_page(next, outcome.last_page);
            next += 1;
        }
    }
}

/// The fetching thread: asks for the pages with `method` and sends what each came to.
fn fetch(
    pool: Option<&Pool>,
    method: Method,
    plan: Plan,
    template: &PageRequest,
    first: u32,
    events: &Sender<Event>,
) {
    match plan {
        Plan::AllAtOnce => {
            let requests = (1..=MAX_PAGES).map(|p| template.with_page(p)).collect();
            batch(pool, method, requests, true, events);
        }
        Plan::TotalFirst => {
            // The first page alone, through the same method, to learn the total.
            let (first_events, first_received) = mpsc::channel();
            batch(
                pool,
                method,
                vec![template.with_page(first)],
                false,
                &first_events,
            );
            drop(first_events);
            let mut total = None;
            for event in first_received {
                if let Event::Page(Ok(page)) = &event {
                    total = Some(page.total_number);
                }
                if events.send(event).is_err() {
                    return;
                }
            }
            let Some(total) = total else { return };
            let rest: Vec<PageRequest> = crawl::remaining_pages(template, total)
                .into_iter()
                .filter(|request| request.page > first)
                .collect();
            if !rest.is_empty() {
                batch(pool, method, rest, true, events);
            }
        }
    }
}

/// Runs `requests` with `method`, sending what each came to as the method delivers it. Stops
/// early once nobody receives. With `last` (the crawl's last batch), an asynchronous method
/// closes the pool once every request is submitted.
fn batch(
    pool: Option<&Pool>,
    method: Method,
    requests: Vec<PageRequest>,
    last: bool,
    events: &Sender<Event>,
) {
    let page = |result| events.send(Event::Page(result)).is_ok();
    let failed = |error| {
        let _ = events.send(Event::Pool(error));
    };
    let one_a_chunk = MapOptions::new().chunksize(1);
    let pool = match (method, pool) {
        (Method::Serial, _) => {
            for request in requests {
                if !page(crawl::fetch_page(&request)) {
                    return;
                }
            }
            return;
        }
        (_, Some(pool)) => pool,
        (_, None) => unreachable!("every method but serial is given a pool"),
    };
    match method {
        Method::Serial => unreachable!("handled above"),
        Method::Apply => {
            for request in requests {
                match pool.apply(get_repost_timeline, (request,)) {
                    Ok(result) => {
                        if !page(result) {
                            return;
                        }
                    }
                    Err(error) => return failed(error),
                }
            }
        }
        Method::ApplyAsync => {
            let mut pending = Vec::with_capacity(requests.len());
            for request in requests {
                match pool.apply_async(get_repost_timeline, (request,)) {
                    Ok(result) => pending.push(result),
                    Err(error) => return failed(error),
                }
            }
            if last {
                pool.close();
            }
            // One waiter a page, so that each page is handed on the moment it is done.
            thread::scope(|scope| {
                for result in &pending {
                    let events = events.clone();
                    scope.spawn(move || {
                        let event = match result.get() {
                            Ok(result) => Event::Page(result),
                            Err(error) => Event::Pool(error),
                        };
                        let _ = events.send(event);
                    });
                }
            });
        }
        Method::Map | Method::MapAsync => {
            let all = if method == Method::Map {
                pool.map_with(get_repost_page, requests, one_a_chunk)
            } else {
                pool.map_async_with(get_repost_page, requests, one_a_chunk)
                    .and_then(|pending| {
                        if last {
                            pool.close();
                        }
                        pending.get()
                    })
            };
            match all {
                Ok(pages) => {
                    for result in pages {
                        if !page(Ok(result)) {
                            return;
                        }
                    }
                }
                Err(error) => match tasks::page_error(&error) {
                    Some(error) => {
                        page(Err(error));
                    }
                    None => failed(error),
                },
            }
        }
        Method::Imap | Method::ImapUnordered => {
            let results = if method == Method::Imap {
                pool.imap_with(get_repost_timeline, requests, one_a_chunk)
            } else {
                pool.imap_unordered_with(get_repost_timeline, requests, one_a_chunk)
            };
            let results = match results {
                Ok(results) => results,
                Err(error) => return failed(error),
            };
            for result in results {
                match result {
                    Ok(result) => {
                        if !page(result) {
                            return;
                        }
                    }
                    Err(error) => return failed(error),
                }
            }
        }
    }
}

/// SIGINT and SIGTERM, caught for the length of a crawl and sent as events.
///
/// Once caught, they stay caught until the process ends (signal-hook does not put the
/// default action back), which is harmless: the command ends soon after its crawl.
struct Signals {
    /// Set by the handlers themselves, before any thread of the process runs on: SIGINT's
    /// and SIGTERM's.
    flags: [(i32, Arc<AtomicBool>); 2],
    handle: signal_hook::iterator::Handle,
    ids: Vec<signal_hook::SigId>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Signals {
    /// Catches SIGINT and SIGTERM. If they cannot be caught, they keep their default action
    /// (ending the process), which is logged.
    fn start(events: Sender<Event>) -> Option<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flags = [SIGINT, SIGTERM].map(|signal| (signal, Arc::new(AtomicBool::new(false))));
        let mut ids = Vec::new();
        let unregister = |ids: Vec<signal_hook::SigId>| {
            for id in ids {
                signal_hook::low_level::unregister(id);
            }
        };
        for (signal, flag) in &flags {
            match signal_hook::flag::register(*signal, Arc::clone(flag)) {
                Ok(id) => ids.push(id),
                Err(error) => {
                    tracing::warn!("cannot catch signal {signal}: {error}");
                    unregister(ids);
                    return None;
                }
            }
        }
        let mut iterator = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(iterator) => iterator,
            Err(error) => {
                tracing::warn!("cannot catch SIGINT and SIGTERM: {error}");
                unregister(ids);
                return None;
            }
        };
        let handle = iterator.handle();
        let thread = thread::Builder::new()
            .name("crawl-signals".to_owned())
            .spawn(move || {
                for signal in iterator.forever() {
                    tracing::info!("caught signal {signal}: stopping the crawl");
                    if events.send(Event::Signal(signal)).is_err() {
                        return;
                    }
                }
            });
        Some(Signals {
            flags,
            handle,
            ids,
            thread: thread.ok(),
        })
    }

    /// The signal caught, if any (SIGINT first, if both were).
    fn received(&self) -> Option<i32> {
        self.flags
            .iter()
            .find(|(_, flag)| flag.load(Ordering::SeqCst))
            .map(|(signal, _)| *signal)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").finish_non_exhaustive()
    }
}
