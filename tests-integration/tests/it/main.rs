//! Tests that start real worker processes, grouped by concern. Every test ends by checking
//! that no child process is left.

mod accounting;
mod background;
mod basic;
mod borrowed;
mod callbacks;
mod cancel;
mod crash_matrix;
mod deadlines;
mod docs;
mod early_job;
mod events;
mod failures;
mod forkserver;
mod futures;
mod insights;
mod isolation;
mod leaks;
mod memory;
mod retries;
mod shared;
mod shutdown;
mod soak;
mod tasks;
mod tracing_events;
