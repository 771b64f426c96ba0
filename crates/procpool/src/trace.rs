//! Events and spans for `tracing` subscribers, with the `tracing` feature; without it, the
//! macros here expand to nothing, so that a pool without subscribers pays nothing. The
//! library never prints: what it says goes to whatever subscriber the program installs.

/// An event at debug level, with `tracing`'s field syntax.
macro_rules! debug {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::debug!(target: "procpool", $($arg)*);
        }
    };
}

/// An event at info level.
macro_rules! info {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::info!(target: "procpool", $($arg)*);
        }
    };
}

pub(crate) use {debug, info};

/// A span around one call, entered while the caller waits for it: the task's name, then
/// its outcome and, where known, the worker that ran it.
pub(crate) struct CallSpan {
    #[cfg(feature = "tracing")]
    span: tracing::span::EnteredSpan,
}

impl CallSpan {
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn enter(method: &'static str, task: &'static str) -> CallSpan {
        CallSpan {
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                target: "procpool",
                "call",
                method,
                task,
                outcome = tracing::field::Empty,
                worker = tracing::field::Empty,
                pid = tracing::field::Empty,
            )
            .entered(),
        }
    }

    /// Records how the call ended: `None` when it succeeded.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn record(&self, failure: Option<&crate::Error>) {
        #[cfg(feature = "tracing")]
        match failure {
            None => {
                self.span.record("outcome", "ok");
            }
            Some(error) => {
                self.span
                    .record("outcome", tracing::field::debug(error.kind()));
                if let Some(worker) = error.worker_info() {
                    self.span.record("worker", worker.index);
                    self.span.record("pid", worker.pid);
                }
            }
        }
    }
}
