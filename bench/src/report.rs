//! The results table (markdown), the ratios, and where they were measured.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::load::Measured;
use crate::measure::Plans;

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::now_utc()
        .date()
        .format(&fmt)
        .unwrap_or_else(|_| "unknown-date".into())
}

pub fn now_utc() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

#[derive(Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub server: &'static str,
    pub concurrency: usize,
    pub measured: Measured,
    /// CPU seconds the server (all threads and worker processes) used in
    /// the window.
    pub server_cpu_s: f64,
    /// CPU seconds the load generator used in the window.
    pub client_cpu_s: f64,
}

impl Row {
    /// Adds a later round of the same scenario and server.
    pub fn merge(&mut self, other: Row) {
        self.measured.merge(other.measured);
        self.server_cpu_s += other.server_cpu_s;
        self.client_cpu_s += other.client_cpu_s;
    }

    fn is_download(&self) -> bool {
        self.scenario.starts_with("download")
    }

    /// The headline figure: req/s for pages, MB/s for downloads.
    pub fn figure(&self) -> f64 {
        if self.is_download() {
            self.measured.mb_per_s()
        } else {
            self.measured.req_per_s()
        }
    }

    fn unit(&self) -> &'static str {
        if self.is_download() {
            "MB/s"
        } else {
            "req/s"
        }
    }

    /// The headline figure per CPU-second of the server.
    pub fn per_server_cpu(&self) -> f64 {
        if self.server_cpu_s <= 0.0 {
            return f64::NAN;
        }
        if self.is_download() {
            self.measured.bytes as f64 / 1e6 / self.server_cpu_s
        } else {
            self.measured.requests as f64 / self.server_cpu_s
        }
    }

    pub fn cores(&self, cpu_s: f64) -> f64 {
        cpu_s / self.measured.window.as_secs_f64()
    }

    pub fn one_line(&self) -> String {
        format!(
            "{:.0} {} ({:.1} MB/s), p50 {:.2} ms, p99 {:.2} ms, server {:.2} cores, load generator {:.2} cores, {} errors",
            self.figure(),
            self.unit(),
            self.measured.mb_per_s(),
            self.measured.latency_ms(0.5),
            self.measured.latency_ms(0.99),
            self.cores(self.server_cpu_s),
            self.cores(self.client_cpu_s),
            self.measured.errors
        )
    }
}

pub struct Report {
    /// The first heading, without the date.
    pub title: String,
    /// What the baselines are, after "Summary: hoard relative to the baselines".
    pub baselines_blurb: String,
    pub command: String,
    pub hoard_bin: PathBuf,
    pub plans: Plans,
    /// What the small-response and the download scenarios are, for the
    /// load line ("pages", "download").
    pub plan_names: (&'static str, &'static str),
    pub client_threads: usize,
    /// One line each on the baseline servers (versions, settings).
    pub server_lines: Vec<String>,
    /// The scenario-specific section ("Data and uploads"), markdown.
    pub setup_md: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub git: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn cpu_model() -> String {
    read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total() -> String {
    read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into())
}

/// Milliseconds as the reports write them: 2 decimals under 10, 1 above.
pub fn fmt_ms(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

impl Report {
    fn scenarios(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = Vec::new();
        for r in &self.rows {
            if !v.contains(&r.scenario) {
                v.push(r.scenario);
            }
        }
        v
    }

    fn row(&self, scenario: &str, server: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.server == server)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "# {}, {}\n", self.title, now_utc());

        let _ = writeln!(
            w,
            "## Summary: hoard relative to the baselines ({})\n",
            self.baselines_blurb
        );
        let _ = writeln!(
            w,
            "Each ratio compares figures measured one after the other in this run, on this machine, with the same load generator.\n"
        );
        for sc in self.scenarios() {
            let Some(h) = self.row(sc, "hoard") else {
                continue;
            };
            let mut line = format!("- **{sc}**: hoard {} {}", fmt_num(h.figure()), h.unit());
            let mut cpu_line = String::new();
            for b in self
                .rows
                .iter()
                .filter(|r| r.scenario == sc && r.server != "hoard")
            {
                let _ = write!(
                    line,
                    "{} **{:.2}×** {} ({} {})",
                    if line.contains('×') { "," } else { " =" },
                    h.figure() / b.figure(),
                    b.server,
                    fmt_num(b.figure()),
                    b.unit()
                );
                let _ = write!(
                    cpu_line,
                    "{}{:.2}× {}",
                    if cpu_line.is_empty() { "" } else { ", " },
                    h.per_server_cpu() / b.per_server_cpu(),
                    b.server
                );
            }
            let _ = writeln!(w, "{line}");
            if !cpu_line.is_empty() {
                let _ = writeln!(
                    w,
                    "  - per CPU-second of the server ({} per server CPU-s: hoard {}): {cpu_line}",
                    h.unit().trim_end_matches("/s"),
                    fmt_num(h.per_server_cpu())
                );
            }
        }

        let _ = writeln!(w, "\n## Results\n");
        let _ = writeln!(
            w,
            "| scenario | server | conns | req/s | MB/s | p50 ms | p99 ms | server CPU (cores) | load-gen CPU (cores) | per server CPU-s | errors |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for r in &self.rows {
            let m = &r.measured;
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} {} | {} |",
                r.scenario,
                r.server,
                r.concurrency,
                fmt_num(m.req_per_s()),
                fmt_num(m.mb_per_s()),
                m.latency_ms(0.5),
                m.latency_ms(0.99),
                r.cores(r.server_cpu_s),
                r.cores(r.client_cpu_s),
                fmt_num(r.per_server_cpu()),
                if r.is_download() { "MB" } else { "req" },
                m.errors
            );
        }

        let _ = writeln!(w, "\n{}", self.setup_md.trim_end());

        let _ = writeln!(w, "\n## How this was run\n");
        let _ = write!(w, "{}", how_run(&self.command, &self.git, &self.hoard_bin));
        for line in &self.server_lines {
            let _ = writeln!(w, "- {line}");
        }
        let _ = writeln!(
            w,
            "- load: HTTP/1.1 keep-alive, closed loop; {} {} connections, {} {} connections; {:.0} s warm-up + {:.0} s measured per row; load generator on {} thread(s), on the same machine",
            self.plan_names.0,
            self.plans.pages.concurrency,
            self.plan_names.1,
            self.plans.download.concurrency,
            self.plans.pages.warmup.as_secs_f64(),
            self.plans.pages.duration.as_secs_f64(),
            self.client_threads
        );

        let mut notes = self.notes.clone();
        for r in &self.rows {
            if r.measured.errors > 0 {
                notes.push(format!(
                    "{} / {}: {} errors, first: {}",
                    r.scenario,
                    r.server,
                    r.measured.errors,
                    r.measured.first_error.as_deref().unwrap_or("?")
                ));
            }
            if r.measured.reconnects > 0 {
                notes.push(format!(
                    "{} / {}: {} new connections during the run (the server closed connections, or after errors)",
                    r.scenario, r.server, r.measured.reconnects
                ));
            }
            if r.cores(r.client_cpu_s) >= 0.8 * self.client_threads as f64 {
                notes.push(format!(
                    "{} / {}: the load generator was (nearly) saturated ({:.2} of {} cores): this row may be limited by the load generator, not the server (its per-CPU-second figure is the better comparison)",
                    r.scenario,
                    r.server,
                    r.cores(r.client_cpu_s),
                    self.client_threads
                ));
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(w, "\n## Notes\n");
            for n in notes {
                let _ = writeln!(w, "- {n}");
            }
        }
        s
    }
}

/// The command, the git commit, the machine and the hoard binary, as
/// markdown list items.
pub fn how_run(command: &str, git: &str, hoard_bin: &std::path::Path) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "- command: `{command}`");
    let _ = writeln!(w, "- git: {git}");
    let _ = writeln!(
        w,
        "- machine: {} CPUs ({}), {} RAM, Linux {}, load average at the end: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model(),
        mem_total(),
        read("/proc/sys/kernel/osrelease").trim(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let built = std::fs::metadata(hoard_bin)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
            time::OffsetDateTime::from(t)
                .format(&fmt)
                .unwrap_or_default()
        })
        .unwrap_or_else(|| "unknown".into());
    let _ = writeln!(
        w,
        "- hoard: `{}` (built {built}; the git line above is the checkout at run time)",
        hoard_bin.display()
    );
    s
}
