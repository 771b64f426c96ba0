//! A global allocator that, while `TRACK` is on, counts allocations and records the largest
//! single request; while `GUARD` is on it refuses (returns null for) requests over 1 GiB and
//! says so on stderr first, so that an up-front allocation from a hostile length shows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

pub struct Tracking;

pub static TRACK: AtomicBool = AtomicBool::new(false);
pub static GUARD: AtomicBool = AtomicBool::new(false);
pub static COUNT: AtomicUsize = AtomicUsize::new(0);
pub static BYTES: AtomicUsize = AtomicUsize::new(0);
pub static MAX_REQ: AtomicUsize = AtomicUsize::new(0);

const GUARD_LIMIT: usize = 1 << 30;

#[inline(always)]
fn note(size: usize) -> bool {
    if TRACK.load(Relaxed) {
        COUNT.fetch_add(1, Relaxed);
        BYTES.fetch_add(size, Relaxed);
        MAX_REQ.fetch_max(size, Relaxed);
        if GUARD.load(Relaxed) && size > GUARD_LIMIT {
            let msg = format!("GUARD: refused an allocation of {size} bytes\n");
            GUARD.store(false, Relaxed);
            eprint!("{msg}");
            return false;
        }
    }
    true
}

unsafe impl GlobalAlloc for Tracking {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub count: usize,
    pub bytes: usize,
    pub max_req: usize,
}

/// Runs `f` with tracking on and returns what it allocated.
pub fn tracked<R>(f: impl FnOnce() -> R) -> (R, Stats) {
    COUNT.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    MAX_REQ.store(0, Relaxed);
    TRACK.store(true, Relaxed);
    let r = f();
    TRACK.store(false, Relaxed);
    (r, Stats { count: COUNT.load(Relaxed), bytes: BYTES.load(Relaxed), max_req: MAX_REQ.load(Relaxed) })
}
