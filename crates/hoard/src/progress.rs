//! Progress for commands that wait: a bar on a terminal (indicatif), and
//! plain lines, at most one every few seconds, when stderr is a file or a
//! pipe (CI logs, `2>log`), where a bar would be noise.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is printed at most.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    last_line: Option<Instant>,
}

impl Progress {
    /// Progress towards `total` (unknown: `None`), named `label`.
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        let template = if total.is_some() {
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})"
        } else {
            "{prefix} {spinner} {pos} {msg} ({elapsed})"
        };
        Self::with_template(label, total, template)
    }

    /// Progress through `total` bytes, shown as sizes and a rate.
    pub fn bytes(label: &str, total: u64) -> Progress {
        let template = "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} \
                        {binary_bytes_per_sec} {msg} (ETA {eta})";
        Self::with_template(label, Some(total), template)
    }

    fn with_template(label: &str, total: Option<u64>, template: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            label: label.to_owned(),
            last_line: None,
        }
    }

    /// Where things are: `pos` of `total`, and a note.
    pub fn update(&mut self, pos: u64, total: Option<u64>, note: &str) {
        match &self.bar {
            Some(bar) => {
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_position(pos);
                bar.set_message(note.to_owned());
            }
            None => {
                if self.last_line.is_some_and(|t| t.elapsed() < LINE_EVERY) {
                    return;
                }
                self.last_line = Some(Instant::now());
                let of = total.map_or(String::new(), |t| format!(" of {t}"));
                let note = if note.is_empty() {
                    String::new()
                } else {
                    format!(" {note}")
                };
                eprintln!("{}: {pos}{of}{note}", self.label);
            }
        }
    }

    /// Moves the bar only: for callers that print their own lines.
    pub fn set_bar(&self, pos: u64, note: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
            bar.set_message(note.to_owned());
        }
    }

    /// A line that stays (above the bar, on a terminal).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar; what it showed is said by the caller's summary.
    pub fn finish(self) {
        self.clear();
    }

    /// [`Progress::finish`], for a bar that is shared.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
