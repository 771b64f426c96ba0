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
mod shm;
#[cfg(target_os = "linux")]
pub(crate) use shm::*;
