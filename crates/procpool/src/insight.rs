//! What each worker slot of a pool did, as mpire's insights show it: [`Insights`], the
//! snapshot callers see, and the atomic `Recorder` that both drivers of a worker (the
//! supervisor and a blocking call that borrowed it) add to.
//!
//! A slot is one of the pool's `processes` places for a worker. When a worker dies or is
//! recycled, its replacement starts in the same slot, and the slot's figures go on adding
//! up: a replaced worker's calls and time still count. Nothing is kept per past worker, so
//! a pool that recycles workers for ever keeps a fixed size.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one worker slot of a pool did, summed over every worker that ran in it; part of
/// [`Insights`].
///
/// Times are measured by the parent, as [`Event::Finished`](crate::Event::Finished)'s
/// `in_worker` is: a call is busy from when its worker starts it (when the call is handed to
/// an idle worker, or when the call ahead of it completes) to when the parent has read its
/// results, so busy time includes a round trip per job.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInsight {
    /// The slot, from 0 to `processes - 1`: the `index` of
    /// [`WorkerInfo`](crate::WorkerInfo) and [`current_worker`](crate::current_worker).
    pub slot: usize,
    /// The process id of the slot's worker now; `None` while it is being replaced, and once
    /// the pool has shut down.
    pub pid: Option<u32>,
    /// Worker processes started in the slot: 1, plus one for each replacement.
    pub workers: u64,
    /// Calls whose results came back from the slot's workers: a value, the task's own
    /// error, or a panic. Calls whose worker died under them, ran past their timeout or
    /// were cancelled while running are not counted (their time is: see `busy`).
    pub calls: u64,
    /// Time the slot's workers spent on calls, the unfinished ones included: a call still
    /// running counts up to now, and a call whose worker died, was killed for a timeout or
    /// a cancel counts up to then.
    pub busy: Duration,
    /// Time the slot's workers were ready and ran no call: from each worker's start-up
    /// until it left the slot (it died, was recycled or the pool shut down) or until now,
    /// less `busy`.
    pub idle: Duration,
    /// Time from each worker's spawn to its readiness (handshake and initializer), summed
    /// over the slot's workers that became ready.
    pub startup: Duration,
    /// The most memory any of the slot's workers held resident, in bytes: the kernel's
    /// high-water mark (`VmHWM` in `/proc/<pid>/status`), read by the parent. `None` when
    /// it was never read.
    ///
    /// It is read when [`Pool::insights`](crate::Pool::insights) is called (for the workers
    /// running then), when the pool recycles a worker, and just before the pool kills one
    /// (a timeout, a cancel, `terminate`). A worker that dies by itself (a crash, the
    /// kernel's OOM killer) takes its last high-water mark with it: the slot keeps what was
    /// read before. Each figure is one worker's own peak, never a sum.
    pub peak_memory: Option<u64>,
}

impl WorkerInsight {
    /// The share of the slot's ready time spent on calls, from 0 to 1; 0 before any.
    pub fn utilization(&self) -> f64 {
        let up = self.busy + self.idle;
        if up.is_zero() {
            0.0
        } else {
            self.busy.as_secs_f64() / up.as_secs_f64()
        }
    }
}

/// What the workers of a pool did, slot by slot, from
/// [`Pool::insights`](crate::Pool::insights). Its `Display` is a table with a line per slot,
/// then totals and means:
///
/// ```text
///  slot      pid  workers      calls       busy       idle  busy %   start-up  peak memory
///     0    41811        1         50     1.02 s    13.1 ms    98.7    2.31 ms      3.1 MiB
///     1    41812        2         50     1.01 s    25.6 ms    97.5    4.87 ms      3.2 MiB
/// total                 3        100     2.03 s    38.7 ms    98.1    7.18 ms      3.2 MiB
/// mean                          50.0     1.02 s    19.4 ms            2.39 ms
/// ```
///
/// The total of `peak memory` is the highest slot's, not a sum. The means of calls, busy
/// and idle are per slot; the mean start-up is per worker started (one that died before it
/// was ready adds no time).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Insights {
    /// One entry per slot, in slot order.
    pub workers: Vec<WorkerInsight>,
}

impl Insights {
    /// Calls run, over every slot.
    pub fn calls(&self) -> u64 {
        self.workers.iter().map(|w| w.calls).sum()
    }

    /// Time busy, over every slot.
    pub fn busy(&self) -> Duration {
        self.workers.iter().map(|w| w.busy).sum()
    }

    /// Time idle, over every slot.
    pub fn idle(&self) -> Duration {
        self.workers.iter().map(|w| w.idle).sum()
    }

    /// Start-up time, over every worker started.
    pub fn startup(&self) -> Duration {
        self.workers.iter().map(|w| w.startup).sum()
    }

    /// Worker processes started, replacements included.
    pub fn worker_starts(&self) -> u64 {
        self.workers.iter().map(|w| w.workers).sum()
    }

    /// The highest [`WorkerInsight::peak_memory`] of any slot.
    pub fn peak_memory(&self) -> Option<u64> {
        self.workers.iter().filter_map(|w| w.peak_memory).max()
    }
}

impl fmt::Display for Insights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5}  {:>7}  {:>7}  {:>9}  {:>9}  {:>9}  {:>6}  {:>9}  {:>11}",
            "slot", "pid", "workers", "calls", "busy", "idle", "busy %", "start-up", "peak memory"
        )?;
        let percent = |busy: Duration, idle: Duration| {
            let up = (busy + idle).as_secs_f64();
            if up > 0.0 {
                format!("{:.1}", 100.0 * busy.as_secs_f64() / up)
            } else {
                "-".into()
            }
        };
        let memory = |bytes: Option<u64>| bytes.map_or_else(|| "-".into(), human_bytes);
        for w in &self.workers {
            let pid = w.pid.map_or_else(|| "-".into(), |pid| pid.to_string());
            writeln!(
                f,
                "{:>5}  {:>7}  {:>7}  {:>9}  {:>9}  {:>9}  {:>6}  {:>9}  {:>11}",
                w.slot,
                pid,
                w.workers,
                w.calls,
                human_duration(w.busy),
                human_duration(w.idle),
                percent(w.busy, w.idle),
                human_duration(w.startup),
                memory(w.peak_memory),
            )?;
        }
        writeln!(
            f,
            "{:<5}  {:>7}  {:>7}  {:>9}  {:>9}  {:>9}  {:>6}  {:>9}  {:>11}",
            "total",
            "",
            self.worker_starts(),
            self.calls(),
            human_duration(self.busy()),
            human_duration(self.idle()),
            percent(self.busy(), self.idle()),
            human_duration(self.startup()),
            memory(self.peak_memory()),
        )?;
        let slots = self.workers.len().max(1) as u32;
        let starts = u32::try_from(self.worker_starts().max(1)).unwrap_or(u32::MAX);
        write!(
            f,
            "{:<5}  {:>7}  {:>7}  {:>9.1}  {:>9}  {:>9}  {:>6}  {:>9}",
            "mean",
            "",
            "",
            self.calls() as f64 / f64::from(slots),
            human_duration(self.busy() / slots),
            human_duration(self.idle() / slots),
            "",
            human_duration(self.startup() / starts),
        )
    }
}

/// A duration in three significant figures, in the unit that suits it.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let (value, unit) = if secs >= 1.0 {
        (secs, "s")
    } else if secs >= 1e-3 {
        (secs * 1e3, "ms")
    } else {
        (secs * 1e6, "µs")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

/// A size in bytes, in KiB, MiB or GiB with one decimal.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The live figures of one slot. Aligned to 128 bytes, as crossbeam's `CachePadded` is on
/// x86-64, so that two borrowers driving neighbouring slots from two threads do not share a
/// cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    workers: AtomicU64,
    calls: AtomicU64,
    busy_ns: AtomicU64,
    /// Ready time of the slot's past workers.
    up_ns: AtomicU64,
    startup_ns: AtomicU64,
    peak: AtomicU64,
    /// When the current worker became ready, as a [`Recorder::stamp`]; 0 when there is no
    /// ready worker in the slot.
    ready_at: AtomicU64,
    /// When the current worker started the call it runs now; 0 when it runs none.
    busy_since: AtomicU64,
}

/// The live figures of every slot of a pool: relaxed atomic adds and stores, a few a job,
/// made by whichever thread drives the slot's worker (no lock, no system call).
#[derive(Debug)]
pub(crate) struct Recorder {
    epoch: Instant,
    slots: Box<[Slot]>,
}

impl Recorder {
    pub(crate) fn new(slots: usize) -> Recorder {
        Recorder {
            epoch: Instant::now(),
            slots: (0..slots).map(|_| Slot::default()).collect(),
        }
    }

    /// `at` as nanoseconds since the recorder was made, never 0 (which means "none").
    fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }

    /// A worker process was started in `slot`.
    pub(crate) fn started(&self, slot: usize) {
        self.slots[slot].workers.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker in `slot`, spawned at `spawned`, became ready at `now`.
    pub(crate) fn ready(&self, slot: usize, spawned: Instant, now: Instant) {
        let record = &self.slots[slot];
        let startup = now.saturating_duration_since(spawned).as_nanos();
        record.startup_ns.fetch_add(
            u64::try_from(startup).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        record.ready_at.store(self.stamp(now), Ordering::Relaxed);
    }

    /// The worker in `slot` started a call at `now`.
    #[inline]
    pub(crate) fn busy_from(&self, slot: usize, now: Instant) {
        self.slots[slot]
            .busy_since
            .store(self.stamp(now), Ordering::Relaxed);
    }

    /// The worker in `slot` completed a job of `calls` calls that took `took`; `next` says
    /// whether it starts another at once.
    #[inline]
    pub(crate) fn completed(
        &self,
        slot: usize,
        calls: usize,
        took: Duration,
        next: Option<Instant>,
    ) {
        let record = &self.slots[slot];
        record.calls.fetch_add(calls as u64, Ordering::Relaxed);
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        record.busy_ns.fetch_add(took, Ordering::Relaxed);
        let since = next.map_or(0, |at| self.stamp(at));
        record.busy_since.store(since, Ordering::Relaxed);
    }

    /// The worker in `slot` left it at `now` (it died, was recycled, or the pool shut down):
    /// its ready time and its unfinished call's time are added to the slot's. Once a worker:
    /// a second call for it adds nothing.
    pub(crate) fn left(&self, slot: usize, now: Instant) {
        let record = &self.slots[slot];
        let now = self.stamp(now);
        let busy_since = record.busy_since.swap(0, Ordering::Relaxed);
        if busy_since != 0 {
            record
                .busy_ns
                .fetch_add(now.saturating_sub(busy_since), Ordering::Relaxed);
        }
        let ready_at = record.ready_at.swap(0, Ordering::Relaxed);
        if ready_at != 0 {
            record
                .up_ns
                .fetch_add(now.saturating_sub(ready_at), Ordering::Relaxed);
        }
    }

    /// A worker of `slot` held `bytes` resident at most.
    pub(crate) fn peak(&self, slot: usize, bytes: u64) {
        self.slots[slot].peak.fetch_max(bytes, Ordering::Relaxed);
    }

    /// The figures now; `pids` are the workers in the slots now.
    pub(crate) fn snapshot(&self, pids: &[Option<u32>]) -> Insights {
        let now = self.stamp(Instant::now());
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let since = |at: u64| if at == 0 { 0 } else { now.saturating_sub(at) };
        let workers = self
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                // The call running now and the ready worker's time so far count too.
                let busy = load(&slot.busy_ns) + since(load(&slot.busy_since));
                let up = load(&slot.up_ns) + since(load(&slot.ready_at));
                let peak = load(&slot.peak);
                WorkerInsight {
                    slot: index,
                    pid: pids.get(index).copied().flatten(),
                    workers: load(&slot.workers),
                    calls: load(&slot.calls),
                    busy: Duration::from_nanos(busy),
                    idle: Duration::from_nanos(up.saturating_sub(busy)),
                    startup: Duration::from_nanos(load(&slot.startup_ns)),
                    peak_memory: (peak > 0).then_some(peak),
                }
            })
            .collect();
        Insights { workers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_adds_up_its_workers() {
        let recorder = Recorder::new(2);
        let t0 = recorder.epoch;
        let ms = Duration::from_millis;
        recorder.started(0);
        recorder.ready(0, t0, t0 + ms(5));
        recorder.busy_from(0, t0 + ms(10));
        recorder.completed(0, 3, ms(20), None);
        recorder.peak(0, 1 << 20);
        // The worker dies while running a call, and a replacement starts.
        recorder.busy_from(0, t0 + ms(40));
        recorder.left(0, t0 + ms(50));
        recorder.left(0, t0 + ms(60));
        recorder.started(0);
        recorder.ready(0, t0 + ms(50), t0 + ms(57));
        recorder.peak(0, 1 << 10);
        recorder.left(0, t0 + ms(67));
        let insights = recorder.snapshot(&[Some(7), None]);
        let slot = &insights.workers[0];
        assert_eq!(slot.workers, 2);
        assert_eq!(slot.calls, 3);
        assert_eq!(slot.busy, ms(30));
        // Ready from 5 to 50, then from 57 to 67: 55 ms, of which 30 busy.
        assert_eq!(slot.idle, ms(25));
        assert_eq!(slot.startup, ms(12));
        assert_eq!(slot.peak_memory, Some(1 << 20));
        assert_eq!(slot.pid, Some(7));
        assert_eq!(insights.workers[1].peak_memory, None);
        assert_eq!(insights.calls(), 3);
        assert_eq!(insights.worker_starts(), 2);
        assert!((slot.utilization() - 30.0 / 55.0).abs() < 1e-9);
    }

    #[test]
    fn the_table_has_a_line_per_slot_then_totals_and_means() {
        let slot = |slot, calls, busy_ms| WorkerInsight {
            slot,
            pid: Some(100 + slot as u32),
            workers: 1,
            calls,
            busy: Duration::from_millis(busy_ms),
            idle: Duration::from_millis(10),
            startup: Duration::from_micros(2500),
            peak_memory: Some(3 << 20),
        };
        let insights = Insights {
            workers: vec![slot(0, 50, 1020), slot(1, 50, 990)],
        };
        let text = insights.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].contains("peak memory"), "{text}");
        assert!(
            lines[1].contains("101") || lines[1].contains("100"),
            "{text}"
        );
        assert!(
            lines[1].contains("1.02 s") && lines[1].contains("3.0 MiB"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("total") && lines[3].contains("100"),
            "{text}"
        );
        assert!(
            lines[3].contains("2.01 s") && lines[3].contains("5.00 ms"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("mean") && lines[4].contains("50.0"),
            "{text}"
        );
        assert!(lines[4].contains("2.50 ms"), "{text}");
        // Every line but the last has the header's width: the columns line up.
        let width = lines[0].chars().count();
        for line in &lines[1..4] {
            assert_eq!(line.chars().count(), width, "{text}");
        }
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_duration(Duration::from_micros(1500)), "1.50 ms");
        assert_eq!(human_duration(Duration::from_secs(125)), "125 s");
        assert_eq!(human_duration(Duration::from_nanos(42_000)), "42.0 µs");
    }
}
