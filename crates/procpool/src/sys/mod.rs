//! Every libc call and every `unsafe` block of the crate, behind safe functions.
//!
//! Only Linux is supported for now: worker death with the parent relies on
//! `PR_SET_PDEATHSIG`, and the automatic worker entry on `.init_array`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("procpool supports Linux only for now");

#[cfg(target_os = "linux")]
mod memory;
#[cfg(target_os = "linux")]
pub(crate) use memory::*;

#[cfg(target_os = "linux")]
mod shm;
#[cfg(target_os = "linux")]
pub(crate) use shm::*;

/// The number of CPUs this process may run on.
///
/// It respects the process's CPU affinity mask and a cgroup CPU quota, so in a container
/// limited to two CPUs it says 2 however many the machine has. It is at least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
