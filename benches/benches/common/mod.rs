//! What every criterion bench file shares: its settings. (A folder, so that cargo does not
//! take it for a bench of its own.)

use std::time::Duration;

use criterion::Criterion;

/// Ten samples after a short warm-up, over `measurement`: each sample starts processes or
/// moves much data, so more samples would only make the run longer.
pub fn config(measurement: Duration) -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(measurement)
}
