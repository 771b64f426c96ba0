//! A batch: the outcomes of one job's calls as they arrived, decoded on demand.

use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, WorkerInfo};
use crate::shared;
use crate::wire::{PackedItems, ResultItems, ResultsAt};

/// The outcomes of some calls of one submission, as one job delivered them: call `i` of the
/// batch is the submission's call `start + i * stride`.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(super) start: usize,
    pub(super) stride: usize,
    pub(super) count: usize,
    pub(super) outcomes: Outcomes,
    /// For [`Imap`](crate::Imap), which takes calls one by one and in order: how many have been taken,
    /// and where the next one's result starts in the body (`None` before the first).
    pub(super) taken: usize,
    pub(super) next: Option<ResultsAt>,
    /// The host agent whose worker sent the results, for a pool over Redis.
    #[cfg(feature = "redis")]
    pub(super) host: Option<std::sync::Arc<str>>,
}

#[derive(Debug)]
pub(super) enum Outcomes {
    /// The body of a RESULTS frame that `worker` sent, checked when it arrived; its results
    /// are decoded only when they are asked for.
    Results {
        body: Vec<u8>,
        /// The descriptors that came with the frame, which `SharedBytes` results name; each
        /// decoding maps a duplicate, so a result can be decoded more than once.
        fds: Vec<OwnedFd>,
        task: &'static str,
        worker: WorkerInfo,
    },
    /// Every call ended with this error.
    Failed(Error),
}

impl Batch {
    /// The calls whose results `body` holds; it must have passed `FromWorker::decode` as a
    /// RESULTS frame of `count` items.
    pub(crate) fn results(
        (start, stride, count): (usize, usize, usize),
        body: Vec<u8>,
        fds: Vec<OwnedFd>,
        task: &'static str,
        worker: WorkerInfo,
    ) -> Batch {
        Batch::new(
            (start, stride, count),
            Outcomes::Results {
                body,
                fds,
                task,
                worker,
            },
        )
    }

    /// Calls that all ended with `error`.
    pub(crate) fn failed((start, stride, count): (usize, usize, usize), error: Error) -> Batch {
        Batch::new((start, stride, count), Outcomes::Failed(error))
    }

    pub(super) fn new((start, stride, count): (usize, usize, usize), outcomes: Outcomes) -> Batch {
        Batch {
            start,
            stride,
            count,
            outcomes,
            taken: 0,
            next: None,
            #[cfg(feature = "redis")]
            host: None,
        }
    }

    pub(super) fn index(&self, i: usize) -> usize {
        self.start + i * self.stride
    }

    /// Results that host agent `host` sent: the errors in them name it.
    #[cfg(feature = "redis")]
    pub(crate) fn on_host(mut self, host: &str) -> Batch {
        self.host = Some(host.into());
        self
    }

    /// The caller's error for a call that failed in `worker`.
    fn failure(&self, failure: crate::error::TaskFailure, task: &str, worker: WorkerInfo) -> Error {
        let error = Error::from_failure(failure, task, worker);
        #[cfg(feature = "redis")]
        if let Some(host) = &self.host {
            return error.on_host(host);
        }
        error
    }

    /// The batch as it leaves a host agent: the RESULTS frame's body and the worker that
    /// sent it, or the error every call ended with.
    #[cfg(feature = "redis")]
    pub(crate) fn into_sent(self) -> Result<(Vec<u8>, WorkerInfo), Error> {
        match self.outcomes {
            Outcomes::Results {
                body,
                fds,
                task,
                worker,
            } => {
                if fds.is_empty() {
                    Ok((body, worker))
                } else {
                    Err(crate::error::Error::new(
                        crate::ErrorKind::InvalidInput,
                        "a SharedBytes result cannot cross machines: return its bytes as a Vec<u8> from a pool over Redis",
                    )
                    .task(task)
                    .worker(worker))
                }
            }
            Outcomes::Failed(error) => Err(error),
        }
    }

    /// Hands each call's index and encoded result (or error) to `visit`, in order.
    pub(super) fn visit(&self, mut visit: impl FnMut(usize, Result<&[u8], Error>)) {
        match &self.outcomes {
            Outcomes::Results {
                body,
                fds,
                task,
                worker,
            } => shared::decoding(fds, 0, || {
                for (i, item) in ResultItems::new(body).enumerate() {
                    let item = item.map_err(|failure| self.failure(failure, task, *worker));
                    visit(self.index(i), item);
                }
            }),
            Outcomes::Failed(error) => {
                for i in 0..self.count {
                    visit(self.index(i), Err(error.clone()));
                }
            }
        }
    }

    /// Every call's result decoded, in order, if every call succeeded and decodes: the
    /// common case, in one tight loop; `None` otherwise, for [`Batch::visit`] to say which
    /// failed and how.
    pub(super) fn decode_all<R: DeserializeOwned>(&self) -> Option<Vec<R>> {
        let Outcomes::Results { body, fds, .. } = &self.outcomes else {
            return None;
        };
        shared::decoding(fds, 0, || decode_items(ResultItems::new(body)))
    }

    /// The results as plain bytes, if every call succeeded, every result takes the same
    /// size and none holds a descriptor (see [`ResultItems::packed`]).
    pub(super) fn packed(&self) -> Option<PackedItems<'_>> {
        match &self.outcomes {
            Outcomes::Results { body, fds, .. } if fds.is_empty() => {
                ResultItems::new(body).packed()
            }
            _ => None,
        }
    }

    /// How many bytes the batch holds: its frame's body, if it has one.
    pub(super) fn body_len(&self) -> usize {
        match &self.outcomes {
            Outcomes::Results { body, .. } => body.len(),
            Outcomes::Failed(_) => 0,
        }
    }

    /// Whether every call succeeded.
    pub(super) fn all_ok(&self) -> bool {
        match &self.outcomes {
            Outcomes::Results { body, .. } => ResultItems::new(body).all(|item| item.is_ok()),
            Outcomes::Failed(_) => self.count == 0,
        }
    }

    /// The error of the first call that failed, if one did.
    pub(super) fn first_error(&self) -> Option<Error> {
        match &self.outcomes {
            Outcomes::Results {
                body, task, worker, ..
            } => ResultItems::new(body)
                .find_map(Result::err)
                .map(|failure| Error::from_failure(failure, task, *worker)),
            Outcomes::Failed(error) => (self.count > 0).then(|| error.clone()),
        }
    }

    /// The worker that sent the results, if one did.
    pub(super) fn worker(&self) -> Option<WorkerInfo> {
        match &self.outcomes {
            Outcomes::Results { worker, .. } => Some(*worker),
            Outcomes::Failed(_) => None,
        }
    }

    /// Takes the next call not yet taken: its index, and its result decoded by `decode`.
    pub(super) fn take_next<T>(
        &mut self,
        decode: impl FnOnce(Result<&[u8], Error>) -> T,
    ) -> (usize, T) {
        let index = self.index(self.taken);
        self.taken += 1;
        match &self.outcomes {
            Outcomes::Results {
                body,
                fds,
                task,
                worker,
            } => {
                let mut items = match self.next {
                    Some(at) => ResultItems::at(body, at),
                    None => ResultItems::new(body),
                };
                let item = items.next().expect("the batch has a call left");
                self.next = Some(items.position());
                let item = item.map_err(|failure| self.failure(failure, task, *worker));
                (index, shared::decoding(fds, 0, || decode(item)))
            }
            Outcomes::Failed(error) => (index, decode(Err(error.clone()))),
        }
    }

    pub(super) fn exhausted(&self) -> bool {
        self.taken == self.count
    }
}

/// Every item of `items` decoded, if every call succeeded and decodes.
pub(super) fn decode_items<R: DeserializeOwned>(items: ResultItems<'_>) -> Option<Vec<R>> {
    let mut values = Vec::with_capacity(items.len());
    match items.packed() {
        Some(packed) => {
            for bytes in packed {
                values.push(codec::decode(bytes).ok()?);
            }
        }
        None => {
            for item in items {
                values.push(codec::decode(item.ok()?).ok()?);
            }
        }
    }
    Some(values)
}
