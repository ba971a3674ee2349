//! Latency as trunksim reports it: an HDR histogram of microseconds (3 significant
//! digits, 1 µs to an hour), printed as one line of percentiles and written to
//! `--json` files under stable field names.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde_json::{json, Value};
use trunkd::protocol::Cause;

/// Where a scenario's report goes besides standard output, and where the server's own
/// figures are read.
#[derive(clap::Args, Clone, Debug)]
pub struct Output {
    /// trunkd's API address (`host:port`): its `/metrics`, read before and after the
    /// run, give the server's own latency beside the end-to-end one.
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub api: String,
    /// Also write the report to FILE as JSON (field names in the README).
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// Also write the report to FILE as one self-contained HTML page with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

impl Output {
    /// Writes the `--json` and `--html` files asked for.
    pub fn write(&self, json: &Value, html: impl FnOnce() -> String) -> anyhow::Result<()> {
        write_json(self.json.as_deref(), json)?;
        if let Some(path) = &self.html {
            std::fs::write(path, html()).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Counts by cause, in cause-code order.
pub fn in_cause_order<N: Copy>(counts: &HashMap<Cause, N>) -> Vec<(Cause, N)> {
    let mut v: Vec<_> = counts.iter().map(|(c, n)| (*c, *n)).collect();
    v.sort_by_key(|(c, _)| c.code());
    v
}

/// Counts by cause as the `--json` reports list them: `{"code", "cause", "count"}` each,
/// in cause-code order.
pub fn causes_json<N: Copy + Into<Value>>(counts: &HashMap<Cause, N>) -> Value {
    let list = in_cause_order(counts)
        .into_iter()
        .map(|(c, n)| json!({ "code": c.code(), "cause": c.text(), "count": n.into() }));
    Value::Array(list.collect())
}

/// Set once by `--quiet`: no progress bars.
static QUIET: OnceLock<bool> = OnceLock::new();

/// Turns the progress bars off for the rest of the run (`--quiet`).
pub fn set_quiet(quiet: bool) {
    let _ = QUIET.set(quiet);
}

/// A live progress bar on stderr over `len` steps (a spinner when `None`), drawn with
/// `template` (indicatif's keys: `{pos}`, `{len}`, `{bar:30}`, `{elapsed}`, …, and
/// `{rate}`: steps per second, whole).
/// Hidden under `--quiet`; indicatif also draws nothing when stderr is not a terminal,
/// so piped output and the tests stay clean.
pub fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    if QUIET.get().copied().unwrap_or(false) {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    // The templates are this crate's own constants: a bad one is a bug, shown plainly.
    if let Ok(style) = ProgressStyle::with_template(template) {
        let style = style
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            })
            .progress_chars("=> ");
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A latency distribution, in microseconds.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }
}

/// The percentiles every report gives, with their field names.
const PERCENTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)];

impl Latency {
    /// Adds one sample (anything over an hour counts as an hour).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1), in ms; 0 when empty.
    pub fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.value_at_quantile(q) as f64 / 1000.0
        }
    }

    /// The largest sample, in ms.
    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    /// One line: `label  p50 … p90 … p99 … p99.9 … max … (n samples)`.
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label:<20}p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} samples)",
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.max_ms(),
            self.len()
        )
    }

    /// `{"count", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"}`.
    pub fn json(&self) -> Value {
        let mut v = json!({ "count": self.len(), "max_ms": self.max_ms() });
        for (name, q) in PERCENTILES {
            v[format!("{name}_ms")] = json!(self.ms(q));
        }
        v
    }
}

/// Writes `report` to `path` as pretty JSON, when a path is given.
fn write_json(path: Option<&std::path::Path>, report: &Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::default();
        for ms in 1..=1000 {
            l.record(Duration::from_millis(ms));
        }
        // 3 significant digits: each value within 0.1 % of the exact one.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(close(l.ms(0.5), 500.0), "{}", l.ms(0.5));
        assert!(close(l.ms(0.99), 990.0), "{}", l.ms(0.99));
        assert!(close(l.max_ms(), 1000.0), "{}", l.max_ms());
        let j = l.json();
        assert_eq!(j["count"], 1000);
        assert!(close(j["p90_ms"].as_f64().unwrap(), 900.0));
        assert!(close(j["p99_9_ms"].as_f64().unwrap(), 999.0));
    }

    #[test]
    fn merging_adds_the_samples_and_an_empty_one_reads_zero() {
        let (mut a, mut b) = (Latency::default(), Latency::default());
        assert_eq!(a.ms(0.99), 0.0);
        a.record(Duration::from_micros(100));
        b.record(Duration::from_micros(300));
        b.record(Duration::from_secs(7200)); // over the top: counted as an hour
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert!(a.max_ms() >= 3_600_000.0 * 0.999);
    }
}
