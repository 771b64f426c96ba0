//! Memory-aware workers: the two options of [`Builder`](crate::Builder) that bound a
//! worker's memory, their checks, and what the worker and the pool agree on when a limit is
//! hit.
//!
//! - `max_memory_per_child`: when a job's results arrive, the driver that holds the worker
//!   (the supervisor or a borrowing caller) reads its resident memory from
//!   `/proc/<pid>/statm`, and a worker over the bound is retired as after
//!   `max_tasks_per_child`.
//! - `memory_limit`: the worker lowers its own `RLIMIT_DATA` (soft and hard) after SETUP,
//!   before the initializer, and installs a `SIGABRT` handler: an allocation the limit
//!   refuses makes the standard library abort, and the handler, seeing `errno` at
//!   `ENOMEM`, exits with [`EXIT_OUT_OF_MEMORY`] instead, which the pool reads as the limit.
//!
//! Only the resource limit exists. A cgroup v2 child group per worker (`memory.max`, with
//! `memory.events`' `oom_kill` to tell an OOM kill from other SIGKILLs) needs a delegated
//! unified hierarchy with the memory controller; the machines this was built and tested on
//! had none (cgroup v1's memory hierarchy, an empty unified one), so it is not written.

use crate::error::BuildError;

/// The exit code of a worker whose allocation the memory limit refused. The pool takes a
/// worker of a pool with a limit that exits with it for one that ran out of memory.
pub(crate) const EXIT_OUT_OF_MEMORY: i32 = 86;

/// The least memory limit `build` takes: a worker needs a few MiB for itself (its heap,
/// its buffers for frames) before any task runs.
pub(crate) const MIN_LIMIT: u64 = 16 << 20;

/// The most either option takes: 2^48 bytes (256 TiB), the address space of a process on
/// x86-64 and AArch64 with 4-level page tables; more can only be a mistake.
pub(crate) const MAX_BYTES: u64 = 1 << 48;

/// The memory options of a local pool, checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    /// The `RLIMIT_DATA` each worker sets for itself, in bytes.
    pub(crate) limit: Option<u64>,
    /// The resident memory over which a worker is retired after a job, in bytes.
    pub(crate) max_per_child: Option<u64>,
}

impl Memory {
    /// Checks the options as [`Builder::build`](crate::Builder::build) received them.
    pub(crate) fn checked(
        limit: Option<u64>,
        max_per_child: Option<u64>,
    ) -> Result<Memory, BuildError> {
        if let Some(limit) = limit
            && !(MIN_LIMIT..=MAX_BYTES).contains(&limit)
        {
            return Err(BuildError::invalid(format!(
                "memory_limit must be from {MIN_LIMIT} bytes (16 MiB) to {MAX_BYTES} bytes (256 TiB), got {limit}"
            )));
        }
        if let Some(max) = max_per_child
            && !(1..=MAX_BYTES).contains(&max)
        {
            return Err(BuildError::invalid(format!(
                "max_memory_per_child must be from 1 byte to {MAX_BYTES} bytes (256 TiB), got {max}"
            )));
        }
        Ok(Memory {
            limit,
            max_per_child,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Memory::checked(None, None).is_ok());
        assert!(Memory::checked(Some(MIN_LIMIT), Some(1)).is_ok());
        assert!(Memory::checked(Some(MAX_BYTES), Some(MAX_BYTES)).is_ok());
        for (limit, max) in [
            (Some(0), None),
            (Some(MIN_LIMIT - 1), None),
            (Some(MAX_BYTES + 1), None),
            (None, Some(0)),
            (None, Some(MAX_BYTES + 1)),
        ] {
            let error = Memory::checked(limit, max).unwrap_err();
            let name = if limit.is_some() {
                "memory_limit"
            } else {
                "max_memory_per_child"
            };
            assert!(error.to_string().contains(name), "{error}");
        }
    }
}
