//! The caller's side of a pool over Redis: jobs go into the queue's task stream, results come
//! back on a stream of the pool's own, read by one thread that also keeps the pool's keys
//! alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Value;

use super::*;

use crate::codec;
use crate::error::{ErrorRecord, WorkerInfo};
use crate::event::Events;
use crate::job::Job;
use crate::result::{Batch, Callbacks, Link};
use crate::stats::{Counters, Stats};
use crate::wire::FromWorker;

/// What a pool over Redis needs to start.
#[derive(Clone, Debug)]
pub(crate) struct RemoteConfig {
    pub(crate) url: String,
    pub(crate) queue: String,
    pub(crate) lease: Duration,
    pub(crate) retries: u32,
    pub(crate) task_timeout: Option<Duration>,
}

/// How long the pool tries to reach Redis again, once it cannot reach it or gets no answer,
/// before it fails every call in flight.
const RECONNECT: Duration = Duration::from_secs(10);

/// A pool's handle on its queue. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Remote {
    shared: Arc<Shared>,
}

struct Shared {
    keys: Keys,
    url: Url,
    /// The pool's id in the queue's keys.
    id: String,
    results: String,
    pool_key: String,
    lease: Duration,
    retries: u32,
    task_timeout: Option<Duration>,
    /// For submissions, cancels and the end; the reader has its own.
    conn: Mutex<redis::Connection>,
    table: Mutex<Table>,
    changed: Condvar,
    next_id: AtomicU64,
    counters: Arc<Counters>,
    callbacks: Arc<Callbacks>,
    canceller: Arc<dyn Fn() + Send + Sync>,
    /// Tells the reader to stop.
    stop: AtomicBool,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("tasks", &self.keys.tasks)
            .field("pool", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Table {
    phase: Phase,
    /// Jobs in the queue or running on a host, by id, with their entry's id once written.
    pending: HashMap<u64, (Job, Option<String>)>,
}

#[derive(Default)]
enum Phase {
    #[default]
    Running,
    Closed,
    /// Terminated, or broken: new work gets this error.
    Ended(Error),
}

impl Remote {
    /// Connects, creates the queue if it is new, and starts the thread that reads results.
    pub(crate) fn start(config: RemoteConfig) -> Result<Remote, Error> {
        let keys = Keys::new(&config.queue)?;
        let mut conn = connect(&config.url, "cannot connect")?;
        let id = format!("{:016x}", pool_id());
        let results = keys.results(&id);
        let pool_key = keys.pool(&id);
        let ttl = millis(config.lease);
        ensure_keys(&mut conn, &keys.tasks, &results, &pool_key, ttl)
            .map_err(|e| redis_error("cannot set up the queue", &e))?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let weak = weak.clone();
            Shared {
                keys,
                url: Url(config.url.clone()),
                id,
                results,
                pool_key,
                lease: config.lease,
                retries: config.retries,
                task_timeout: config.task_timeout,
                conn: Mutex::new(conn),
                table: Mutex::new(Table::default()),
                changed: Condvar::new(),
                next_id: AtomicU64::new(1),
                callbacks: Arc::new(Callbacks::new(Arc::clone(&counters))),
                counters,
                canceller: Arc::new(move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.cancel_marked();
                    }
                }),
                stop: AtomicBool::new(false),
                reader: Mutex::new(None),
            }
        });
        let reader_conn = connect(&config.url, "cannot connect")?;
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("procpool-redis".into())
                .spawn(move || shared.read(reader_conn))
                .map_err(|e| {
                    Error::new(ErrorKind::PoolBroken, format!("cannot start a thread: {e}"))
                })?
        };
        *shared.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
        Ok(Remote { shared })
    }

    pub(crate) fn next_job_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.shared.counters
    }

    pub(crate) fn link(&self) -> Link {
        Link {
            cancel: Arc::clone(&self.shared.canceller),
            callbacks: Arc::clone(&self.shared.callbacks),
        }
    }

    /// Writes `jobs` to the queue.
    pub(crate) fn submit(&self, jobs: impl IntoIterator<Item = Job>) -> Result<(), Error> {
        let shared = &self.shared;
        let mut jobs: Vec<Job> = jobs.into_iter().collect();
        if let Some(job) = jobs.iter().find(|job| !job.fds.as_slice().is_empty()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a SharedBytes cannot cross machines: send its bytes as a Vec<u8> to a pool over Redis",
            )
            .task(job.task));
        }
        if let Some(job) = jobs.iter().find(|job| job.frame.len() > MAX_ENTRY) {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "the arguments take {} bytes, over the limit of {MAX_ENTRY} for a call over Redis (use a smaller chunk size, or keep large data in shared storage)",
                    job.frame.len()
                ),
            )
            .task(job.task));
        }
        let mut pipe = redis::pipe();
        let mut ids = Vec::with_capacity(jobs.len());
        {
            let mut table = shared.lock();
            shared.check_open(&table)?;
            for job in &mut jobs {
                shared.add_entry(&mut pipe, job);
                ids.push(job.id);
                job.accept();
            }
            // In the table before the entries exist: a result can come back at once.
            for job in jobs {
                table.pending.insert(job.id, (job, None));
            }
        }
        let written = shared.with_conn(|conn| pipe.query::<Vec<String>>(conn));
        let mut table = shared.lock();
        match written {
            Ok(entries) => {
                // A call cancelled while its entry was written has ended: its entry goes.
                let mut ended = Vec::new();
                for (id, entry) in ids.iter().zip(entries) {
                    match table.pending.get_mut(id) {
                        Some((_, slot)) => *slot = Some(entry),
                        None => ended.push(entry),
                    }
                }
                drop(table);
                if !ended.is_empty() {
                    let _ = shared.with_conn(|conn| {
                        redis::cmd("XDEL")
                            .arg(&shared.keys.tasks)
                            .arg(&ended)
                            .query::<()>(conn)
                    });
                }
                Ok(())
            }
            Err(e) => {
                let error = redis_error("cannot queue the call", &e);
                for id in ids {
                    if let Some((job, _)) = table.pending.remove(&id) {
                        job.fail(&error);
                    }
                }
                shared.changed.notify_all();
                Err(error)
            }
        }
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        self.shared.check_open(&self.shared.lock())
    }

    pub(crate) fn subscribe(&self) -> Events {
        self.shared.counters.events.subscribe()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    pub(crate) fn close(&self) {
        let mut table = self.shared.lock();
        if let Phase::Running = table.phase {
            table.phase = Phase::Closed;
        }
        self.shared.changed.notify_all();
    }

    pub(crate) fn join(&self) -> Result<(), Error> {
        self.join_until(None).map(|_| ())
    }

    pub(crate) fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.join_until(Some(Instant::now() + timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<bool, Error> {
        let shared = &self.shared;
        let mut table = shared.lock();
        if let Phase::Running = table.phase {
            return Err(Error::new(
                ErrorKind::StillRunning,
                "join called on a running pool: call close or terminate first",
            ));
        }
        while !table.pending.is_empty() {
            table = match deadline {
                None => shared
                    .changed
                    .wait(table)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Ok(false);
                    };
                    shared
                        .changed
                        .wait_timeout(table, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        drop(table);
        shared.finish();
        Ok(true)
    }

    /// Fails every call not yet ended, deletes their entries so that no host starts them,
    /// and tells hosts running them to stop.
    pub(crate) fn terminate(&self) {
        let shared = &self.shared;
        let pending = {
            let mut table = shared.lock();
            if let Phase::Running | Phase::Closed = table.phase {
                table.phase = Phase::Ended(Error::closed());
            }
            std::mem::take(&mut table.pending)
        };
        let entries: Vec<&String> = pending.values().filter_map(|(_, e)| e.as_ref()).collect();
        {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&shared.pool_key)
                .arg("terminated")
                .arg("PX")
                .arg(millis(shared.lease))
                .ignore();
            if !entries.is_empty() {
                pipe.cmd("XDEL")
                    .arg(&shared.keys.tasks)
                    .arg(&entries)
                    .ignore();
            }
            // Redis may be gone: the calls end here either way.
            let _ = shared.with_conn(|conn| pipe.query::<()>(conn));
        }
        for (job, _) in pending.into_values() {
            let error = Error::terminated(job.task);
            job.fail(&error);
        }
        shared.changed.notify_all();
        shared.finish();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `run` on the connection for submissions, connecting again once if it broke
    /// (a command that may have run already is then run again: a job may be queued twice,
    /// and its first result is kept).
    fn with_conn<T>(
        &self,
        run: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        match run(&mut conn) {
            Err(e) if is_transient(&e) => {
                if let Ok(again) = connect(&self.url.0, "cannot connect again") {
                    *conn = again;
                }
                run(&mut conn)
            }
            done => done,
        }
    }

    /// Adds to `pipe` the entry that queues `job`: the fields the module docs list.
    fn add_entry(&self, pipe: &mut redis::Pipeline, job: &Job) {
        let timeout = job.timeout.or(self.task_timeout);
        pipe.cmd("XADD")
            .arg(&self.keys.tasks)
            .arg("*")
            .arg("p")
            .arg(&self.id)
            .arg("j")
            .arg(job.id)
            .arg("m")
            .arg(DELIVERIES + self.retries)
            .arg("r")
            .arg(self.retries)
            .arg("d")
            .arg(timeout.map_or(0, millis))
            .arg("f")
            .arg(&job.frame[..]);
    }

    fn check_open(&self, table: &Table) -> Result<(), Error> {
        match &table.phase {
            Phase::Running => Ok(()),
            Phase::Closed => Err(Error::closed()),
            Phase::Ended(error) => Err(error.clone()),
        }
    }

    /// Ends the calls whose handles were cancelled: their entries are deleted, so that no
    /// host starts them, and a host running one stops it at its next renewal.
    fn cancel_marked(&self) {
        let cancelled: Vec<(Job, Option<String>)> = {
            let mut table = self.lock();
            let ids: Vec<u64> = table
                .pending
                .iter()
                .filter(|(_, (job, _))| job.is_cancelled())
                .map(|(&id, _)| id)
                .collect();
            ids.iter()
                .filter_map(|id| table.pending.remove(id))
                .collect()
        };
        if cancelled.is_empty() {
            return;
        }
        let entries: Vec<&String> = cancelled.iter().filter_map(|(_, e)| e.as_ref()).collect();
        if !entries.is_empty() {
            let _ = self.with_conn(|conn| {
                redis::cmd("XDEL")
                    .arg(&self.keys.tasks)
                    .arg(&entries)
                    .query::<()>(conn)
            });
        }
        for (job, _) in cancelled {
            let error = Error::cancelled(job.task);
            job.fail(&error);
        }
        self.changed.notify_all();
    }

    /// Stops the reader and deletes the pool's keys.
    fn finish(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reader) = reader {
            let _ = reader.join();
        }
        let _ = self.with_conn(|conn| {
            redis::pipe()
                .cmd("DEL")
                .arg(&self.results)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&self.pool_key)
                .arg(millis(self.lease))
                .ignore()
                .query::<()>(conn)
        });
    }

    /// The reader thread: results in, the pool's keys kept alive, Redis reached again after
    /// a failure, and the calls in flight queued again wherever the server lost the pool's
    /// keys (a restart without persistence, a failover, or a pool paused past its lease,
    /// whose queued calls hosts drop).
    fn read(self: Arc<Shared>, mut conn: redis::Connection) {
        let beat = self.lease / 3;
        let mut beaten = Instant::now();
        let mut last = "0-0".to_owned();
        while !self.stop.load(Ordering::SeqCst) {
            let read = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(millis(beat.min(Duration::from_millis(100))))
                .arg("STREAMS")
                .arg(&self.results)
                .arg(&last)
                .query::<Value>(&mut conn);
            let outcome = read.and_then(|reply| {
                self.take_in(&mut conn, reply, &mut last)?;
                if beaten.elapsed() >= beat {
                    if !self.beat(&mut conn)? {
                        last = "0-0".to_owned();
                        self.requeue(&mut conn, false);
                    }
                    beaten = Instant::now();
                }
                Ok(())
            });
            let Err(failure) = outcome else {
                continue;
            };
            // Redis cannot be reached, or does not answer: the connection is not used again,
            // and after RECONNECT of trying, every call in flight fails rather than waits for
            // ever.
            let since = Instant::now();
            conn = loop {
                if since.elapsed() >= RECONNECT || self.stop.load(Ordering::SeqCst) {
                    let error = redis_error(
                        &format!("no answer for {RECONNECT:?}; the calls in flight failed"),
                        &failure,
                    );
                    self.broken(error);
                    return;
                }
                let Ok(mut again) = connect(&self.url.0, "cannot connect again") else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                // What came while the connection was down first; then the calls whose
                // entries the server lost (a restart from an older snapshot, a failover that
                // lost writes) go out again, or all of them if it lost the pool's keys.
                let beat = self
                    .drain(&mut again, &mut last)
                    .and_then(|()| self.beat(&mut again));
                match beat {
                    Ok(true) => self.requeue(&mut again, true),
                    Ok(false) => {
                        last = "0-0".to_owned();
                        self.requeue(&mut again, false);
                    }
                    Err(_) => continue,
                }
                break again;
            };
        }
    }

    /// Refreshes the pool's liveness key and its result stream's expiry; false if the key
    /// was gone.
    fn beat(&self, conn: &mut redis::Connection) -> redis::RedisResult<bool> {
        let ttl = millis(self.lease);
        let (kept, _): (Option<String>, i64) = redis::pipe()
            .cmd("SET")
            .arg(&self.pool_key)
            .arg("running")
            .arg("PX")
            .arg(ttl)
            .arg("XX")
            .cmd("PEXPIRE")
            .arg(&self.results)
            .arg(ttl)
            .query(conn)?;
        Ok(kept.is_some())
    }

    /// Reads and hands over the results that are in, without waiting.
    fn drain(&self, conn: &mut redis::Connection, last: &mut String) -> redis::RedisResult<()> {
        loop {
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("STREAMS")
                .arg(&self.results)
                .arg(&*last)
                .query(conn)?;
            if !self.take_in(conn, reply, last)? {
                return Ok(());
            }
        }
    }

    /// Hands over the results in `reply` (an `XREAD` of the result stream), then deletes
    /// them; `last` becomes the id of the last. Whether any came.
    fn take_in(
        &self,
        conn: &mut redis::Connection,
        reply: Value,
        last: &mut String,
    ) -> redis::RedisResult<bool> {
        let mut entries = entries(Reply::Read(reply));
        let ids: Vec<String> = entries
            .iter_mut()
            .map(|e| std::mem::take(&mut e.id))
            .collect();
        let Some(id) = ids.last() else {
            return Ok(false);
        };
        *last = id.clone();
        // Results first, then the round trip that deletes them.
        for entry in entries {
            self.deliver(entry);
        }
        redis::cmd("XDEL")
            .arg(&self.results)
            .arg(&ids)
            .query::<()>(conn)?;
        Ok(true)
    }

    /// Queues calls in flight again, with the pool's keys, on a server that lost them: all
    /// of them, or with `only_lost` those whose entries are gone (a completed call's entry
    /// goes in the same script that writes its result, which [`Shared::drain`] took in
    /// first). A call that a host still runs may then run twice; its first result is kept.
    fn requeue(&self, conn: &mut redis::Connection, only_lost: bool) {
        let ttl = millis(self.lease);
        if ensure_keys(conn, &self.keys.tasks, &self.results, &self.pool_key, ttl).is_err() {
            return;
        }
        let mut table = self.lock();
        let mut lost: Vec<u64> = table.pending.keys().copied().collect();
        if only_lost {
            let known: Vec<(u64, String)> = table
                .pending
                .iter()
                .filter_map(|(&id, (_, entry))| Some((id, entry.clone()?)))
                .collect();
            let mut check = redis::pipe();
            for (_, entry) in &known {
                check
                    .cmd("XRANGE")
                    .arg(&self.keys.tasks)
                    .arg(entry)
                    .arg(entry);
            }
            let Ok(found) = check.query::<Vec<Vec<Value>>>(conn) else {
                return;
            };
            lost = known
                .iter()
                .zip(found)
                .filter(|(_, rows)| rows.is_empty())
                .map(|((id, _), _)| *id)
                .collect();
        }
        if lost.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for id in &lost {
            let Some((job, _)) = table.pending.get(id) else {
                continue;
            };
            self.add_entry(&mut pipe, job);
        }
        if let Ok(entries) = pipe.query::<Vec<String>>(conn) {
            for (id, entry) in lost.iter().zip(entries) {
                if let Some((_, slot)) = table.pending.get_mut(id) {
                    *slot = Some(entry);
                }
            }
        }
    }

    /// Fails every call in flight, and all new work, with `error`.
    fn broken(&self, error: Error) {
        let pending = {
            let mut table = self.lock();
            table.phase = Phase::Ended(error.clone());
            std::mem::take(&mut table.pending)
        };
        for (job, _) in pending.into_values() {
            let error = error.clone().task(job.task);
            job.fail(&error);
        }
        self.changed.notify_all();
    }

    /// Ends the job a result entry is for; a result for a job that has ended already (one
    /// that was cancelled, or run twice after its host was presumed lost) is dropped.
    fn deliver(&self, mut entry: Entry) {
        let Some(id) = entry.number::<u64>("j") else {
            return;
        };
        let host = entry.text("h").unwrap_or("?").to_owned();
        let worker = WorkerInfo {
            index: entry.number("w").unwrap_or(0),
            pid: entry.number("p").unwrap_or(0),
        };
        let ok = entry.get("s") == Some(b"ok");
        let body = entry.take("r").unwrap_or_default();
        let Some((job, _)) = self.lock().pending.remove(&id) else {
            return;
        };
        if ok {
            match FromWorker::decode(&body) {
                Ok(FromWorker::Results(results))
                    if results.count == job.count && results.fds == 0 =>
                {
                    let batch = Batch::results(job.calls(), body, Vec::new(), job.task, worker)
                        .on_host(&host);
                    job.finish(results.panicked, results.failed, batch, worker, None);
                }
                _ => {
                    let error = Error::new(
                        ErrorKind::PoolBroken,
                        "the host sent results that do not match the call",
                    )
                    .task(job.task)
                    .on_host(&host);
                    job.fail(&error);
                }
            }
        } else {
            let error = match codec::decode::<ErrorRecord>(&body) {
                Ok(record) => Error::from_record(record, &host),
                Err(e) => Error::new(
                    ErrorKind::PoolBroken,
                    format!("the host sent an error that does not decode: {e}"),
                )
                .task(job.task)
                .on_host(&host),
            };
            job.fail(&error);
        }
        self.changed.notify_all();
    }
}

/// A pool id unlikely to be another's: the time, the pid and an address, mixed.
fn pool_id() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let mut x = now ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64);
    // splitmix64's finaliser.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Sets up the queue's group, the pool's result stream (empty, expiring with the pool: a
/// host writes a result only into a stream that exists, so a caller that died leaves nothing
/// once its keys expire) and its liveness key.
fn ensure_keys(
    conn: &mut redis::Connection,
    tasks: &str,
    results: &str,
    pool_key: &str,
    ttl: u64,
) -> redis::RedisResult<()> {
    for stream in [tasks, results] {
        let group = if stream == tasks { GROUP } else { "caller" };
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query::<()>(conn);
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
            _ => {}
        }
    }
    redis::pipe()
        .cmd("PEXPIRE")
        .arg(results)
        .arg(ttl)
        .ignore()
        .cmd("SET")
        .arg(pool_key)
        .arg("running")
        .arg("PX")
        .arg(ttl)
        .ignore()
        .query(conn)
}
