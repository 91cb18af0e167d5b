//! The live progress line: a spinner with the running figures on a terminal, and a plain
//! line every few seconds when stderr is a file or a pipe (CI logs, scripts).

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
