//! The same pool over Redis Streams: the keys and scripts that callers and host agents share
//! (here), the caller's side (`caller`), and reading replies (`reply`). The host agent, which
//! runs the calls on a local pool of its own, is in `host.rs`.
//!
//! One queue is a set of keys with one hash tag, so that scripts work on one slot:
//!
//! | key | what |
//! |---|---|
//! | `rp:{Q}:tasks` | stream of jobs, read by the hosts' consumer group `hosts` |
//! | `rp:{Q}:res:<pool>` | stream of one caller's results; expires with the caller |
//! | `rp:{Q}:pool:<pool>` | the caller's liveness: `running` or `terminated`, expires with it |
//! | `rp:{Q}:dead` | jobs that reached their delivery limit, for inspection |
//!
//! `Q` is the queue's name and the task registry's fingerprint, so hosts of another build
//! never see a caller's jobs. A job entry holds the caller's pool id `p`, the job id `j`, the
//! RUN frame `f` (the local wire's, with no descriptors), the delivery limit `m`, the retries
//! after a worker's death `r` and the per-call timeout in ms `d` (0: none). A result entry
//! holds the job id `j`, the status `s` (`ok`: `r` is a RESULTS frame body; `err`: `r` is an
//! encoded error), the host `h`, the worker's slot `w` and pid `p`.

mod caller;
mod reply;

pub(crate) use caller::{Remote, RemoteConfig};
pub(crate) use reply::{Entry, Reply, as_text, entries};

use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// The consumer group of the hosts that serve a queue.
pub(crate) const GROUP: &str = "hosts";

/// How long a host may stay silent before its jobs are given to another, and how long a
/// caller's keys outlive it, unless set otherwise.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The largest job or result that goes through the queue: Redis refuses values over 512 MiB
/// by default, and a queue of large entries holds the server's memory.
pub(crate) const MAX_ENTRY: usize = 256 << 20;

/// How many times a job whose host was lost is delivered, in all, before it fails.
pub(crate) const DELIVERIES: u32 = 3;

/// The names of one queue's keys.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    pub(crate) tasks: String,
    pub(crate) dead: String,
    /// How many times each entry was handed back by a host that stopped, which the delivery
    /// count must not hold against it.
    pub(crate) given: String,
}

impl Keys {
    /// The keys of queue `name` for this build's task registry.
    pub(crate) fn new(name: &str) -> Result<Keys, Error> {
        if name.is_empty() || name.len() > 200 || name.contains(['{', '}']) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("a queue name has 1 to 200 characters and no braces, got {name:?}"),
            ));
        }
        let fingerprint = crate::registry::registry_fingerprint();
        let prefix = format!("rp:{{{name}@{fingerprint:016x}}}:");
        Ok(Keys {
            tasks: format!("{prefix}tasks"),
            dead: format!("{prefix}dead"),
            given: format!("{prefix}given"),
            prefix,
        })
    }

    pub(crate) fn results(&self, pool: &str) -> String {
        format!("{}res:{pool}", self.prefix)
    }

    pub(crate) fn pool(&self, pool: &str) -> String {
        format!("{}pool:{pool}", self.prefix)
    }
}

/// Ends a job if its host still owns it: writes the result (when the caller's result stream
/// still exists), acknowledges and deletes the entry. KEYS: the task stream, the result
/// stream. ARGV: the group, the host, the entry id, then the result's fields and values.
/// Returns 1 if the job was still the host's, 0 if another host has it now.
pub(crate) const COMPLETE: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 1 and p[1][2] == ARGV[2] then
  if #ARGV > 3 and redis.call('EXISTS', KEYS[2]) == 1 then
    local fields = {}
    for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Renews a host's leases: for each entry it still owns and that still exists, resets the
/// entry's idle time without counting a delivery. An entry it owns that its caller deleted
/// (cancelled or terminated) is acknowledged. KEYS: the task stream. ARGV: the group, the
/// host, the entry ids. Returns the ids the host still owns.
pub(crate) const RENEW: &str = r"
local kept = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 1 then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
      kept[#kept + 1] = ARGV[i]
    else
      redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    end
  end
end
return kept
";

/// Hands back the entries a stopping host still owns: each goes to the consumer `returned`,
/// idle past any lease, so the next reaper takes it at once, and the hand-back is counted
/// in the `given` hash so that it is not held against the entry's delivery limit; then the
/// host leaves the group. KEYS: the task stream, the `given` hash. ARGV: the group, the
/// host, the idle time to set (ms), the entry ids.
pub(crate) const GIVE_BACK: &str = r"
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], 'returned', 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
  end
end
redis.call('PEXPIRE', KEYS[2], 86400000)
local left = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #left == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return 1
";

/// Opens a connection, with `what` in the error.
pub(crate) fn connect(url: &str, what: &str) -> Result<redis::Connection, Error> {
    // rustls needs a process-wide crypto provider; one the program installed stays.
    #[cfg(feature = "redis-tls")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = redis::Client::open(url).map_err(|e| redis_error(what, &e))?;
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .map_err(|e| redis_error(what, &e))?;
    // A server that stops answering (a partition that drops packets, a stopped process)
    // must end in an error, not in a read that waits forever.
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| redis_error(what, &e))?;
    Ok(conn)
}

/// How long one command may wait for the server's answer; every blocking read asks for
/// far less.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `error` means the connection is gone or the server cannot answer now (loading a
/// snapshot, a replica being promoted, a busy script, out of memory): worth trying again.
pub(crate) fn is_transient(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(
            error.code(),
            Some(
                "LOADING" | "READONLY" | "MASTERDOWN" | "BUSY" | "OOM" | "TRYAGAIN" | "CLUSTERDOWN"
            )
        )
}

/// A Redis URL whose `Debug` leaves its password out.
#[derive(Clone)]
pub(crate) struct Url(pub(crate) String);

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = &self.0;
        match (text.find("://"), text.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                write!(f, "\"{}<credentials>{}\"", &text[..scheme + 3], &text[at..])
            }
            _ => write!(f, "{text:?}"),
        }
    }
}

/// A Redis failure, as the caller's error. The URL is never in it: it may hold a password.
pub(crate) fn redis_error(what: &str, error: &redis::RedisError) -> Error {
    Error::new(ErrorKind::PoolBroken, format!("Redis: {what}: {error}"))
}

/// Milliseconds, for Redis, at least 1.
pub(crate) fn millis(duration: Duration) -> u64 {
    (duration.as_millis() as u64).max(1)
}

/// Creates the hosts' consumer group of task stream `tasks`, and the stream, unless they
/// exist. The group starts at the stream's beginning, not its end: jobs that a caller wrote
/// before any group existed (into a stream that a restarted server lost) are still read.
/// Done jobs are deleted, so nothing old is read twice.
pub(crate) fn create_group(conn: &mut redis::Connection, tasks: &str) -> Result<(), Error> {
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(tasks)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(conn);
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(redis_error("cannot set up the queue", &e)),
        _ => Ok(()),
    }
}
