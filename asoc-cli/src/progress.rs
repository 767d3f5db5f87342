//! A progress bar with bytes, rate and ETA on standard error, drawn only
//! when standard error is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// One transfer's bar (hidden when not on a terminal).
pub(crate) struct Progress(ProgressBar);

impl Progress {
    /// A bar for `total` bytes (a spinner with a byte count when unknown).
    pub(crate) fn new(label: &str, total: Option<u64>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let (bar, template) = match total {
            Some(t) => (
                ProgressBar::new(t),
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        Self(bar)
    }

    /// `n` more bytes done.
    pub(crate) fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}
