//! Progress bars on standard error, drawn only when it is a terminal.

use std::fmt::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A bar of `len` steps called `unit` ("pages", "items", "runs"), with the rate and the time
/// left; hidden when `show` is false or standard error is not a terminal.
pub fn bar(len: u64, unit: &str, message: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!(
        "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{rate}}, {{elapsed}} so far, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        let style = style.progress_chars("=> ").with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn Write| {
                let _ = write!(out, "{:.1}/s", state.per_sec());
            },
        );
        bar.set_style(style);
    }
    bar.set_message(message.to_owned());
    bar
}
