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

/// An event at warn level.
#[cfg(feature = "redis")]
macro_rules! warning {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::warn!(target: "procpool", $($arg)*);
        }
    };
}

#[cfg(feature = "redis")]
pub(crate) use warning;
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

/// A span over one call that goes on while its caller does other things (`apply_async`,
/// `map_async`, `imap` and their kin): opened when the call is submitted, never entered,
/// and closed when its last result is in. Its fields are [`CallSpan`]'s, and `calls`.
///
/// `worker` and `pid` are those of the worker that ran a call of one, or of the first
/// failure to arrive; `outcome` is `"ok"`, or the kind of the first failure to arrive.
pub(crate) struct AsyncSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
    /// Whether a failure was recorded: the first one stays.
    #[cfg(feature = "tracing")]
    failed: bool,
}

impl AsyncSpan {
    /// The span of a call of `task` by `method`, of `calls` calls where that is known;
    /// `None` without the `tracing` feature, or when no subscriber wants the span.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn open(
        method: &'static str,
        task: &'static str,
        calls: Option<usize>,
    ) -> Option<AsyncSpan> {
        #[cfg(feature = "tracing")]
        {
            let span = tracing::info_span!(
                target: "procpool",
                "call",
                method,
                task,
                calls,
                outcome = tracing::field::Empty,
                worker = tracing::field::Empty,
                pid = tracing::field::Empty,
            );
            if span.is_disabled() {
                return None;
            }
            Some(AsyncSpan {
                span,
                failed: false,
            })
        }
        #[cfg(not(feature = "tracing"))]
        None
    }

    /// Records the worker that ran the call, unless a failure named one already.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn worker(&self, worker: crate::WorkerInfo) {
        #[cfg(feature = "tracing")]
        if !self.failed {
            self.span.record("worker", worker.index);
            self.span.record("pid", worker.pid);
        }
    }

    /// Records a failure of one of the calls, if it is the first.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn failed(&mut self, error: &crate::Error) {
        #[cfg(feature = "tracing")]
        if !self.failed {
            self.failed = true;
            self.span
                .record("outcome", tracing::field::debug(error.kind()));
            if let Some(worker) = error.worker_info() {
                self.span.record("worker", worker.index);
                self.span.record("pid", worker.pid);
            }
        }
    }

    /// Whether a failure has been recorded.
    pub(crate) fn has_failed(&self) -> bool {
        #[cfg(feature = "tracing")]
        {
            self.failed
        }
        #[cfg(not(feature = "tracing"))]
        false
    }

    /// Closes the span: every result is in.
    pub(crate) fn close(self) {
        #[cfg(feature = "tracing")]
        if !self.failed {
            self.span.record("outcome", "ok");
        }
    }
}
