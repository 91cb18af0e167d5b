//! The live progress line: a spinner with the running figures on a terminal, and a plain
//! line every few seconds when stderr is a file or a pipe (CI logs, scripts). Counted phases
//! (connections opened, subscriptions answered) print every second when piped, and always
//! their last step, so a log shows each phase progress and finish.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    every: Duration,
    label: &'static str,
}

impl Progress {
    pub fn new(label: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            last_line: None,
            every: Duration::from_secs(2),
            label,
        }
    }

    /// Shows the current state: on a terminal at once, elsewhere at most every 2 s.
    pub fn update(&mut self, message: impl Into<String>) {
        match &self.bar {
            Some(bar) => bar.set_message(message.into()),
            None => {
                if self.last_line.is_none_or(|at| at.elapsed() >= self.every) {
                    self.last_line = Some(Instant::now());
                    eprintln!("[{}] {}", self.label, message.into());
                }
            }
        }
    }

    /// `done` of `total` in a counted phase (`what` is e.g. "connected"): on a terminal at
    /// once, elsewhere every second and when the phase completes.
    pub fn count(&mut self, what: &str, done: usize, total: usize) {
        let message = format!("{what} {done}/{total}");
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => {
                if count_line_due(self.last_line, Instant::now(), done, total) {
                    self.last_line = Some(Instant::now());
                    eprintln!("[{}] {message}", self.label);
                }
            }
        }
    }

    /// A line that stays (a phase change).
    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("{}: {message}", self.label)),
            None => eprintln!("[{}] {message}", self.label),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// How often a counted phase prints when stderr is not a terminal.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// Whether a piped counted phase prints now: its first step, its last, and one a second
/// between.
fn count_line_due(last: Option<Instant>, now: Instant, done: usize, total: usize) -> bool {
    done >= total || last.is_none_or(|at| now.duration_since(at) >= COUNT_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piped_count_prints_its_first_step_its_last_and_once_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(count_line_due(None, t0, 1, 1000), "the first step");
        assert!(!count_line_due(Some(t0), ms(999), 500, 1000));
        assert!(
            count_line_due(Some(t0), ms(1000), 501, 1000),
            "a second later"
        );
        assert!(
            count_line_due(Some(t0), ms(1), 1000, 1000),
            "the last step, always"
        );
    }
}
