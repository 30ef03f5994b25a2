//! What a run prints: a table for people and one JSON line with the same figures for scripts,
//! plus the measurements taken from `/proc` (resident memory and CPU time of the servers named
//! by `--server-pid`, and of the bench itself).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value, json};

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`: 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// The figures of one run, in the order they were added.
pub struct Report {
    fields: Map<String, Value>,
    /// (name, value as shown) pairs of the human table.
    rows: Vec<(String, String)>,
}

impl Report {
    pub fn new(scenario: &str, label: Option<&str>) -> Self {
        let mut report = Self {
            fields: Map::new(),
            rows: Vec::new(),
        };
        report.add("scenario", scenario, "");
        if let Some(label) = label {
            report.add("label", label, "");
        }
        report
    }

    /// Adds one figure; `unit` is shown in the table and is part of the JSON key's meaning.
    pub fn add(&mut self, key: &str, value: impl Into<Value>, unit: &str) {
        let value = value.into();
        let shown = match &value {
            Value::String(text) => text.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        self.rows.push((
            key.to_owned(),
            format!("{shown} {unit}").trim_end().to_owned(),
        ));
        self.fields.insert(key.to_owned(), value);
    }

    /// A figure for the JSON line only (a list, say), too long for the table.
    pub fn add_json_only(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_owned(), value.into());
    }

    /// A duration in seconds, three decimals.
    pub fn seconds(&mut self, key: &str, duration: Duration) {
        self.add(key, round(duration.as_secs_f64(), 3), "s");
    }

    /// `{key}_p50_ms`, `_p99_ms` and `_max_ms` of `samples_ns` (sorted here), or nulls if empty.
    pub fn percentiles(&mut self, key: &str, samples_ns: &mut [u64]) {
        self.percentiles_at(
            key,
            samples_ns,
            &[("p50", 0.50), ("p99", 0.99), ("max", 1.0)],
        );
    }

    /// `{key}_{suffix}_ms` for each (suffix, quantile) of `samples_ns` (sorted here), or nulls
    /// if empty.
    pub fn percentiles_at(&mut self, key: &str, samples_ns: &mut [u64], at: &[(&str, f64)]) {
        samples_ns.sort_unstable();
        for &(suffix, quantile) in at {
            let value = quantile_ms(samples_ns, quantile).map_or(Value::Null, Value::from);
            self.add(&format!("{key}_{suffix}_ms"), value, "ms");
        }
    }

    /// Reason -> count, as a JSON object and one table row.
    pub fn reasons(&mut self, key: &str, reasons: &HashMap<String, u64>) {
        let mut sorted: Vec<_> = reasons.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let object: Map<String, Value> = sorted
            .iter()
            .map(|(reason, count)| ((*reason).clone(), json!(count)))
            .collect();
        let shown = sorted
            .iter()
            .map(|(reason, count)| format!("{count}× {reason}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.rows.push((
            key.to_owned(),
            if shown.is_empty() {
                "none".into()
            } else {
                shown
            },
        ));
        self.fields.insert(key.to_owned(), Value::Object(object));
    }

    /// The figures as the JSON line has them.
    #[cfg(test)]
    pub fn json(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Prints the table (unless `json_only`), then the JSON line last.
    pub fn print(&self, json_only: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if !json_only {
            let width = self
                .rows
                .iter()
                .map(|(name, _)| name.len())
                .max()
                .unwrap_or(0);
            for (name, value) in &self.rows {
                writeln!(out, "  {name:<width$}  {value}")?;
            }
        }
        serde_json::to_writer(&mut out, &self.fields).context("could not write the JSON line")?;
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }
}

/// The nearest-rank quantile of sorted nanosecond samples, in milliseconds.
pub fn quantile_ms(sorted_ns: &[u64], quantile: f64) -> Option<f64> {
    if sorted_ns.is_empty() {
        return None;
    }
    let rank = ((quantile * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    Some(round(sorted_ns[rank - 1] as f64 / 1e6, 3))
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Memory and CPU of the processes being measured, read at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Summed `VmRSS` of the servers, in KiB; `None` without `--server-pid` or if one is gone.
    pub server_rss_kib: Option<u64>,
    /// Summed user + system CPU time of the servers, in seconds.
    pub server_cpu_s: Option<f64>,
    /// This process's `VmRSS`, in KiB.
    pub client_rss_kib: Option<u64>,
    /// This process's CPU time, in seconds: a bench near one core per core it has is the
    /// limit of what it measures, not the server.
    pub client_cpu_s: Option<f64>,
}

impl Sample {
    pub fn take(server_pids: &[u32]) -> Self {
        let sum = |read: fn(&str) -> Option<f64>| -> Option<f64> {
            if server_pids.is_empty() {
                return None;
            }
            server_pids
                .iter()
                .map(|pid| read(&pid.to_string()))
                .sum::<Option<f64>>()
        };
        Self {
            server_rss_kib: sum(|pid| rss_kib(pid).map(|kib| kib as f64)).map(|kib| kib as u64),
            server_cpu_s: sum(cpu_seconds),
            client_rss_kib: rss_kib("self"),
            client_cpu_s: cpu_seconds("self"),
        }
    }
}

/// Adds the server memory and CPU figures between `before` and `after`, and the bench's own
/// memory; `per` is what memory is divided by (streams), if anything.
pub fn add_resources(report: &mut Report, before: Sample, after: Sample, per: Option<u64>) {
    report.add("server_rss_before_kib", before.server_rss_kib, "KiB");
    report.add("server_rss_after_kib", after.server_rss_kib, "KiB");
    if let (Some(per), Some(before), Some(after)) =
        (per, before.server_rss_kib, after.server_rss_kib)
    {
        let each = (after as f64 - before as f64) / per.max(1) as f64;
        report.add("server_rss_per_stream_kib", round(each, 2), "KiB");
    }
    if let (Some(before), Some(after)) = (before.server_cpu_s, after.server_cpu_s) {
        report.add("server_cpu_s", round(after - before, 2), "s");
    }
    if let (Some(before), Some(after)) = (before.client_cpu_s, after.client_cpu_s) {
        report.add("client_cpu_s", round(after - before, 2), "s");
    }
    report.add("client_rss_kib", after.client_rss_kib, "KiB");
    if let (Some(per), Some(before), Some(after)) =
        (per, before.client_rss_kib, after.client_rss_kib)
    {
        let each = (after as f64 - before as f64) / per.max(1) as f64;
        report.add("client_rss_per_stream_kib", round(each, 2), "KiB");
    }
}

/// `VmRSS` of `/proc/{pid}/status` in KiB (`pid` may be `self`).
fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime of `/proc/{pid}/stat`, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / CLOCK_TICKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(quantile_ms(&samples, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&samples, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&samples, 1.0), Some(100.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }

    #[test]
    fn own_process_figures_are_readable() {
        let sample = Sample::take(&[std::process::id()]);
        assert!(sample.server_rss_kib.is_some_and(|kib| kib > 0));
        assert!(sample.server_cpu_s.is_some());
        assert!(sample.client_rss_kib.is_some());
        assert!(sample.client_cpu_s.is_some());
    }
}
