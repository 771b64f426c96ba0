//! The host agent's own thread: starts the jobs it reads on the local pool, completes them,
//! renews their leases, and takes over the jobs of hosts that were lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use redis::Value;

use crate::backend::Backend;
use crate::codec;
use crate::error::{Error, ErrorKind, WorkerInfo};
use crate::registry;
use crate::remote::{self, Entry, GROUP, Keys, Reply, connect, millis, redis_error};
use crate::result::Collector;
use crate::shared::Fds;
use crate::wire;

/// The agent: starts the jobs it reads on the local pool, completes them, renews its leases
/// and takes over the jobs of hosts that were lost.
pub(super) struct Agent {
    conn: redis::Connection,
    url: remote::Url,
    keys: Keys,
    name: String,
    lease: Duration,
    backend: Arc<Backend>,
    /// The jobs on the local pool, by their local id.
    running: HashMap<u64, Running>,
    /// The callers seen running lately, and when that was read.
    callers: HashMap<String, Instant>,
    /// How many times the host has looked for lost calls.
    reaps: u64,
    busy: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tx: Sender<u64>,
    complete: redis::Script,
    renew: redis::Script,
}

/// A local job made for a job read from the queue, and its id: run by a runner on a
/// borrowed worker, or submitted to the local pool.
pub(super) type LocalJob = (u64, crate::job::Job);

/// Tells the agent that local job `local` ended.
struct Ended {
    tx: Mutex<Sender<u64>>,
    local: u64,
}

impl Wake for Ended {
    fn wake(self: Arc<Self>) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tx.send(self.local);
    }
}

/// A job from the queue on the local pool.
struct Running {
    /// The queue entry's id.
    entry: String,
    /// The caller's pool id and job id.
    pool: String,
    job: u64,
    collector: Arc<Collector>,
    task: &'static str,
    count: usize,
    /// Another host has the job now (or its caller deleted it): its outcome is dropped.
    lost: bool,
    /// For a run again after a worker's death: the frame, and how many runs are left.
    again: Option<(Vec<u8>, u32)>,
    timeout: Option<Duration>,
    retried: u32,
}

/// A job read from the queue.
struct Job {
    entry: String,
    pool: String,
    job: u64,
    frame: Vec<u8>,
    retries: u32,
    timeout: Option<Duration>,
}

impl Job {
    fn parse(mut entry: Entry) -> Result<Job, String> {
        let field = |name: &str| format!("the entry has no field {name}");
        Ok(Job {
            pool: entry.text("p").ok_or_else(|| field("p"))?.to_owned(),
            job: entry.number("j").ok_or_else(|| field("j"))?,
            retries: entry.number("r").unwrap_or(0),
            timeout: match entry.number::<u64>("d").unwrap_or(0) {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            frame: entry.take("f").ok_or_else(|| field("f"))?,
            entry: entry.id,
        })
    }
}

/// A result to write for a job: `ok` with a RESULTS body, or an error.
type Outcome = Result<(Vec<u8>, WorkerInfo), Error>;

impl Agent {
    /// An agent on `conn`, for the queue `keys` as host `name` with leases of `lease`,
    /// running jobs on `backend`; `busy` counts the jobs it holds, `tx` is where its local
    /// jobs say they ended, by their local ids.
    pub(super) fn new(
        conn: redis::Connection,
        url: remote::Url,
        (keys, name, lease): (Keys, String, Duration),
        backend: Arc<Backend>,
        busy: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        tx: Sender<u64>,
    ) -> Agent {
        Agent {
            conn,
            url,
            keys,
            name,
            lease,
            backend,
            running: HashMap::new(),
            callers: HashMap::new(),
            reaps: 0,
            busy,
            stop,
            tx,
            complete: redis::Script::new(remote::COMPLETE),
            renew: redis::Script::new(remote::RENEW),
        }
    }

    pub(super) fn run(agent: &Mutex<Agent>, rx: Receiver<u64>) -> Result<(), Error> {
        let lock = || agent.lock().unwrap_or_else(|e| e.into_inner());
        let (lease, stop, name) = {
            let agent = lock();
            (agent.lease, Arc::clone(&agent.stop), agent.name.clone())
        };
        let renew_every = lease / 3;
        // A host killed just after it renewed is idle for a whole lease: looking this often
        // gives its calls to this host within the lease and 100 ms of its death.
        let reap_every = (lease / 2).min(Duration::from_millis(100));
        let mut renew_at = Instant::now() + renew_every;
        let mut reap_at = Instant::now();
        let mut pause = Duration::ZERO;
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let now = Instant::now();
            let wait = renew_at
                .min(reap_at)
                .saturating_duration_since(now)
                .min(Duration::from_millis(50));
            let step = match rx.recv_timeout(wait) {
                Ok(local) => lock().done(local),
                Err(RecvTimeoutError::Timeout) => Ok(()),
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let step = step.and_then(|()| {
                let now = Instant::now();
                if now >= renew_at {
                    lock().renew_leases()?;
                    renew_at = now + renew_every;
                }
                if now >= reap_at {
                    lock().reap()?;
                    reap_at = now + reap_every;
                }
                Ok(())
            });
            match step {
                Ok(()) => pause = Duration::ZERO,
                Err(error) => {
                    // The server is gone or cannot answer now (loading, failing over): the
                    // host goes on and tries again; a job whose result could not be written
                    // stays pending, and is run again once its lease has passed.
                    pause = (pause * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                    crate::trace::warning!(host = %name, %error, "the host will try again");
                    let _ = (&error, &name);
                    std::thread::sleep(pause);
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let mut agent = lock();
        agent.give_back();
        agent.backend.terminate();
        Ok(())
    }

    /// Runs a Redis command, connecting again once if the connection broke.
    fn query<T: redis::FromRedisValue>(
        &mut self,
        what: &str,
        run: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        match run(&mut self.conn) {
            Ok(value) => Ok(value),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match connect(&self.url.0, what) {
                        Ok(conn) => {
                            self.conn = conn;
                            return run(&mut self.conn).map_err(|e| redis_error(what, &e));
                        }
                        Err(error) if Instant::now() >= deadline => return Err(error),
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                // The server lost the queue (a restart without persistence): set it up
                // again; the jobs the host held are gone, and its next renewal says so.
                remote::create_group(&mut self.conn, &self.keys.tasks)?;
                run(&mut self.conn).map_err(|e| redis_error(what, &e))
            }
            Err(e) => Err(redis_error(what, &e)),
        }
    }

    /// A runner ran local job `local`: its result goes to its caller now, if it is in
    /// (the job went through the local queue if no worker was idle: then it is completed
    /// when it ends, as submitted jobs are).
    pub(super) fn finish_run(&mut self, local: u64, ran: Result<(), Error>) -> Result<(), Error> {
        if let Err(error) = ran {
            return self.fail_local(local, error);
        }
        if self.watch_local(local) {
            self.done(local)?;
        }
        Ok(())
    }

    /// Takes jobs read from the queue (counted in `busy` already): the local jobs to run,
    /// by a runner on a borrowed worker (the local supervisor's thread then stands between
    /// neither the job and its worker nor the result and this host, a wake-up each; it then
    /// hands each to [`finish_run`](Agent::finish_run)), or through [`submit_local`]. The
    /// jobs of a caller that is gone end without a result. A job that cannot be started or
    /// ended for a Redis failure stays pending, and is taken again once its lease has
    /// passed.
    ///
    /// [`submit_local`]: Agent::submit_local
    pub(super) fn take(&mut self, entries: Vec<Entry>) -> Vec<LocalJob> {
        let mut jobs = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = entry.id.clone();
            match Job::parse(entry) {
                Ok(job) => jobs.push(job),
                Err(_) => {
                    // Not a job of procpool's: dropped from the queue.
                    let _ = self.complete(&id, None, None);
                }
            }
        }
        // The callers' states, read at most once every third of a lease: a caller that
        // died is known within its lease and a third, and a call costs no extra round trip.
        let now = Instant::now();
        let fresh = self.lease / 3;
        self.callers
            .retain(|_, read| now.duration_since(*read) < fresh);
        let mut pools: Vec<&str> = jobs
            .iter()
            .map(|job| job.pool.as_str())
            .filter(|pool| !self.callers.contains_key(*pool))
            .collect();
        pools.sort_unstable();
        pools.dedup();
        let keys: Vec<String> = pools.iter().map(|pool| self.keys.pool(pool)).collect();
        let states: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            // Unknown states count as running: a call of a caller that died runs for
            // nothing, but none of a live caller's is dropped.
            self.query("cannot read the callers' state", |conn| {
                redis::cmd("MGET").arg(&keys).query(conn)
            })
            .unwrap_or_else(|_| vec![Some("running".to_owned()); keys.len()])
        };
        for (pool, state) in pools.iter().zip(&states) {
            if state.as_deref() == Some("running") {
                // Only a running caller is remembered: one whose key is missing is asked
                // again next time, so that a caller whose keys were lost and set again
                // (it queues its calls again then) is not taken for dead meanwhile.
                self.callers.insert((*pool).to_owned(), now);
            }
        }
        let mut local = Vec::with_capacity(jobs.len());
        for job in jobs {
            if self.callers.contains_key(&job.pool) {
                if let Ok(Some(made)) = self.start_local(job) {
                    local.push(made);
                }
            } else {
                let _ = self.complete(&job.entry, None, None);
            }
        }
        local
    }

    /// Makes the local job of `job`; a frame that is not a valid job of a task this program
    /// has ends with an error at once.
    fn start_local(&mut self, job: Job) -> Result<Option<LocalJob>, Error> {
        let Job {
            entry,
            pool,
            job,
            mut frame,
            retries,
            timeout,
        } = job;
        let checked = wire::adopt(&mut frame, 0)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Codec,
                    format!("the host received a malformed job: {e}"),
                )
            })
            .and_then(|adopted| match registry::by_name(&adopted.name) {
                Some(task) => Ok((task.name, adopted.count)),
                None => Err(Error::new(
                    ErrorKind::Unregistered,
                    format!(
                        "task `{}` is not registered in the host's program",
                        adopted.name
                    ),
                )),
            });
        let (task, count) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                let error = error.on_host(&self.name);
                return self
                    .complete_with(&entry, &pool, job, Err(error))
                    .map(|()| None);
            }
        };
        let again = (retries > 0).then(|| (frame.clone(), retries));
        self.run_local(
            Running {
                entry,
                pool,
                job,
                collector: Collector::new(),
                task,
                count,
                lost: false,
                again,
                timeout,
                retried: 0,
            },
            frame,
        )
    }

    /// Makes the local job of `running`, whose RUN frame is `frame`, and holds `running`
    /// until it ends; `None` if the frame cannot be a job, which then ends with an error.
    fn run_local(
        &mut self,
        running: Running,
        mut frame: Vec<u8>,
    ) -> Result<Option<LocalJob>, Error> {
        let (task, count) = (running.task, running.count);
        let collector = Arc::clone(&running.collector);
        let made = self.backend.job(
            task,
            |id| wire::adopt(&mut frame, id).map(|_| (frame, Fds::default())),
            &collector,
            (0, 1, count),
            running.timeout,
        );
        let job = match made {
            Ok(job) => job,
            Err(e) => {
                let error = Error::new(
                    ErrorKind::Codec,
                    format!("the host received a malformed job: {e}"),
                );
                return self
                    .complete_with(&running.entry, &running.pool, running.job, Err(error))
                    .map(|()| None);
            }
        };
        let local = job.id;
        self.backend.link(&collector);
        self.running.insert(local, running);
        Ok(Some((local, job)))
    }

    /// Submits a local job to the local pool, to be completed when it ends.
    fn submit_local(&mut self, (local, job): LocalJob) -> Result<(), Error> {
        if let Err(error) = self.backend.submit([job]) {
            return self.fail_local(local, error);
        }
        if self.watch_local(local) {
            self.tx.send(local).ok();
        }
        Ok(())
    }

    /// Has the agent told when local job `local` ends, by the thread that delivers its one
    /// batch (the local supervisor's, or a cancel's), with no other thread between; true if
    /// it has ended already, and then nobody will tell.
    fn watch_local(&mut self, local: u64) -> bool {
        let Some(running) = self.running.get(&local) else {
            return false;
        };
        let ended = Waker::from(Arc::new(Ended {
            tx: Mutex::new(self.tx.clone()),
            local,
        }));
        running
            .collector
            .poll_filled(running.count, &mut Context::from_waker(&ended))
            .is_ready()
    }

    /// Local job `local` could not be started: its call ends with `error`.
    fn fail_local(&mut self, local: u64, error: Error) -> Result<(), Error> {
        let Some(running) = self.running.remove(&local) else {
            return Ok(());
        };
        let error = error.on_host(&self.name);
        self.complete_with(&running.entry, &running.pool, running.job, Err(error))
    }

    /// A local job ended: its result goes to its caller, if the host still owns the job.
    fn done(&mut self, local: u64) -> Result<(), Error> {
        let Some(mut running) = self.running.remove(&local) else {
            return Ok(());
        };
        if running.lost {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        let mut batches = Vec::new();
        while let Some(batch) = running.collector.take_batch() {
            batches.push(batch);
        }
        let outcome: Outcome = match batches.len() {
            1 => batches.pop().expect("one batch").into_sent(),
            n => Err(Error::new(
                ErrorKind::PoolBroken,
                format!("the host's job ended in {n} parts"),
            )),
        };
        if let Err(error) = &outcome
            && error.kind() == ErrorKind::WorkerDied
            && let Some((frame, left)) = running.again.take()
            && left > 0
        {
            // The worker died under the job: run it again, as a local pool would.
            running.again = (left > 1).then(|| (frame.clone(), left - 1));
            running.retried += 1;
            running.collector = Collector::new();
            return match self.run_local(running, frame)? {
                Some(made) => self.submit_local(made),
                None => Ok(()),
            };
        }
        let outcome = outcome
            .and_then(|(body, worker)| {
                if body.len() > remote::MAX_ENTRY {
                    return Err(Error::new(
                        ErrorKind::Codec,
                        format!(
                            "the results take {} bytes, over the limit of {} for a call over Redis",
                            body.len(),
                            remote::MAX_ENTRY
                        ),
                    )
                    .task(running.task)
                    .worker(worker));
                }
                Ok((body, worker))
            })
            .map_err(|error| error.with_retries(running.retried).on_host(&self.name));
        self.complete_with(&running.entry, &running.pool, running.job, outcome)
    }

    /// Writes the outcome of the caller's job `job` and ends its entry.
    fn complete_with(
        &mut self,
        entry: &str,
        pool: &str,
        job: u64,
        outcome: Outcome,
    ) -> Result<(), Error> {
        let results = self.keys.results(pool);
        let mut fields: Vec<(&str, Vec<u8>)> = vec![("j", job.to_string().into_bytes())];
        let worker = match &outcome {
            Ok((_, worker)) => Some(*worker),
            Err(error) => error.worker_info(),
        };
        match outcome {
            Ok((body, _)) => {
                fields.push(("s", b"ok".to_vec()));
                fields.push(("r", body));
            }
            Err(error) => {
                let record = codec::encode(&error.to_record())
                    .map_err(|e| Error::new(ErrorKind::Codec, e.to_string()))?;
                fields.push(("s", b"err".to_vec()));
                fields.push(("r", record));
            }
        }
        fields.push(("h", self.name.clone().into_bytes()));
        if let Some(worker) = worker {
            fields.push(("w", worker.index.to_string().into_bytes()));
            fields.push(("p", worker.pid.to_string().into_bytes()));
        }
        self.complete(entry, Some(&results), Some(&fields))?;
        Ok(())
    }

    /// Ends entry `entry` with the fenced completion script; `fields` go to `results`.
    fn complete(
        &mut self,
        entry: &str,
        results: Option<&str>,
        fields: Option<&[(&str, Vec<u8>)]>,
    ) -> Result<(), Error> {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        let script = self.complete.clone();
        let tasks = self.keys.tasks.clone();
        let name = self.name.clone();
        let results = results.unwrap_or(&tasks).to_owned();
        self.query::<i64>("cannot write a result", |conn| {
            let mut call = script.key(&tasks);
            call.key(&results).arg(GROUP).arg(&name).arg(entry);
            for (field, value) in fields.unwrap_or(&[]) {
                call.arg(*field).arg(&value[..]);
            }
            call.invoke(conn)
        })?;
        Ok(())
    }

    /// Renews the leases of the jobs the host runs; jobs it no longer owns (taken by
    /// another host after a pause, or deleted by their caller) are stopped.
    fn renew_leases(&mut self) -> Result<(), Error> {
        let ids: Vec<String> = self
            .running
            .values()
            .filter(|running| !running.lost)
            .map(|running| running.entry.clone())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let script = self.renew.clone();
        let tasks = self.keys.tasks.clone();
        let name = self.name.clone();
        let kept: Vec<String> = self.query("cannot renew the leases", |conn| {
            script
                .key(&tasks)
                .arg(GROUP)
                .arg(&name)
                .arg(&ids)
                .invoke(conn)
        })?;
        for running in self.running.values_mut() {
            if !running.lost && !kept.contains(&running.entry) {
                running.lost = true;
                running.collector.cancel();
            }
        }
        Ok(())
    }

    /// Takes over jobs idle past the lease: their hosts were lost. A job delivered more
    /// often than its limit ends as [`ErrorKind::WorkerDied`] and goes to the dead-letter
    /// stream.
    fn reap(&mut self) -> Result<(), Error> {
        let lease = millis(self.lease);
        let mut cursor = "0-0".to_owned();
        for _ in 0..10 {
            let (tasks, name) = (self.keys.tasks.clone(), self.name.clone());
            let at = cursor.clone();
            let reply: Value = self.query("cannot claim jobs", |conn| {
                redis::cmd("XAUTOCLAIM")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg(&name)
                    .arg(lease)
                    .arg(&at)
                    .arg("COUNT")
                    .arg(100)
                    .query(conn)
            })?;
            cursor = match &reply {
                Value::Array(parts) => parts
                    .first()
                    .cloned()
                    .and_then(remote::as_text)
                    .unwrap_or_else(|| "0-0".into()),
                _ => "0-0".into(),
            };
            let claimed: Vec<Entry> = remote::entries(Reply::Claimed(reply))
                .into_iter()
                .filter(|entry| !self.running.values().any(|r| r.entry == entry.id))
                .collect();
            let mut fresh = Vec::new();
            for entry in claimed {
                self.busy.fetch_add(1, Ordering::SeqCst);
                let id = entry.id.clone();
                let deliveries = self.deliveries(&id)?.saturating_sub(self.given_back(&id)?);
                let limit: u32 = entry.number("m").unwrap_or(remote::DELIVERIES);
                if deliveries > limit {
                    self.bury(entry, deliveries)?;
                } else {
                    fresh.push(entry);
                }
            }
            for made in self.take(fresh) {
                let _ = self.submit_local(made);
            }
            if cursor == "0-0" {
                break;
            }
        }
        self.reaps += 1;
        if self.reaps.is_multiple_of(100) {
            self.forget_dead_hosts()?;
        }
        Ok(())
    }

    /// Removes from the group the hosts that hold nothing and have not been heard of for
    /// ten leases: hosts that died (their calls were taken over long ago), whose names
    /// would otherwise pile up in the group.
    fn forget_dead_hosts(&mut self) -> Result<(), Error> {
        let tasks = self.keys.tasks.clone();
        let consumers: Vec<Vec<Value>> = self.query("cannot list the hosts", |conn| {
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&tasks)
                .arg(GROUP)
                .query(conn)
        })?;
        let quiet = millis(self.lease) * 10;
        for fields in consumers {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| remote::as_text(pair[0].clone()).as_deref() == Some(name))
                    .map(|pair| pair[1].clone())
            };
            let name = field("name").and_then(remote::as_text);
            let pending = field("pending").and_then(remote::as_text);
            let idle = field("idle").and_then(remote::as_text);
            let (Some(name), Some(pending), Some(idle)) = (name, pending, idle) else {
                continue;
            };
            let idle: u64 = idle.parse().unwrap_or(0);
            if name != self.name && pending == "0" && idle > quiet {
                // A host that came back meanwhile joins again at its next read.
                // In one script with a look at what it holds: one that took a call since
                // stays.
                let forget = redis::Script::new(
                    r"
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
",
                );
                let _ = self.query::<i64>("cannot remove a host", |conn| {
                    forget.key(&tasks).arg(GROUP).arg(&name).invoke(conn)
                });
            }
        }
        Ok(())
    }

    /// How many times stopping hosts handed entry `id` back.
    fn given_back(&mut self, id: &str) -> Result<u32, Error> {
        let given = self.keys.given.clone();
        let count: Option<u32> = self.query("cannot read a job's hand-backs", |conn| {
            redis::cmd("HGET").arg(&given).arg(id).query(conn)
        })?;
        Ok(count.unwrap_or(0))
    }

    /// How many times entry `id` has been delivered.
    fn deliveries(&mut self, id: &str) -> Result<u32, Error> {
        let tasks = self.keys.tasks.clone();
        let reply: Value = self.query("cannot read a job's deliveries", |conn| {
            redis::cmd("XPENDING")
                .arg(&tasks)
                .arg(GROUP)
                .arg(id)
                .arg(id)
                .arg(1)
                .query(conn)
        })?;
        let count = match reply {
            Value::Array(mut rows) if rows.len() == 1 => match rows.pop() {
                Some(Value::Array(row)) => row.get(3).and_then(|v| match v {
                    Value::Int(n) => Some(*n as u32),
                    _ => None,
                }),
                _ => None,
            },
            _ => None,
        };
        Ok(count.unwrap_or(1))
    }

    /// Ends a job whose hosts kept being lost: copied to the dead-letter stream, and its
    /// caller told.
    fn bury(&mut self, mut entry: Entry, deliveries: u32) -> Result<(), Error> {
        let dead = self.keys.dead.clone();
        let fields: Vec<(Vec<u8>, Vec<u8>)> = std::mem::take(&mut entry.fields);
        self.query::<()>("cannot write to the dead-letter stream", |conn| {
            let mut add = redis::cmd("XADD");
            add.arg(&dead).arg("MAXLEN").arg("~").arg(10_000).arg("*");
            for (field, value) in &fields {
                add.arg(&field[..]).arg(&value[..]);
            }
            add.arg("id").arg(&entry.id).query(conn)
        })?;
        let text = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name.as_bytes())
                .and_then(|(_, v)| std::str::from_utf8(v).ok().map(str::to_owned))
        };
        let (Some(pool), Some(job)) = (text("p"), text("j").and_then(|j| j.parse().ok())) else {
            return self.complete(&entry.id, None, None);
        };
        let task = fields
            .iter()
            .find(|(f, _)| f == b"f")
            .and_then(|(_, frame)| wire::adopt(&mut frame.clone(), 0).ok())
            .map_or_else(|| "?".to_owned(), |adopted| adopted.name);
        let error = Error::new(
            ErrorKind::WorkerDied,
            format!(
                "was lost: the hosts that held the call stopped renewing it {} times",
                deliveries - 1
            ),
        )
        .task(&task)
        .on_host(&self.name);
        self.complete_with(&entry.id, &pool, job, Err(error))
    }

    /// Hands the jobs the host holds back to the queue, for other hosts to take at once
    /// without counting a delivery, and leaves the group.
    fn give_back(&mut self) {
        let ids: Vec<String> = self
            .running
            .values()
            .filter(|r| !r.lost)
            .map(|r| r.entry.clone())
            .collect();
        self.hand_back(ids);
        for running in self.running.values_mut() {
            running.lost = true;
            running.collector.cancel();
        }
    }

    /// Hands entries `ids` back to the queue, those the host still owns, and leaves the
    /// group if it then holds none: for the jobs it runs when it stops, and for those its
    /// reader read as it stopped.
    pub(super) fn hand_back(&mut self, ids: Vec<String>) {
        let (tasks, given, name) = (
            self.keys.tasks.clone(),
            self.keys.given.clone(),
            self.name.clone(),
        );
        let idle = millis(self.lease) * 10;
        let script = redis::Script::new(remote::GIVE_BACK);
        let _ = self.query::<i64>("cannot give jobs back", |conn| {
            script
                .key(&tasks)
                .key(&given)
                .arg(GROUP)
                .arg(&name)
                .arg(idle)
                .arg(&ids)
                .invoke(conn)
        });
    }
}
