//! What a run found: the results model written to `results.json`, and the terminal table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::load::Outcome;
use crate::machine::Machine;
use crate::proc::Usage;

/// One system's figures for one workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Correct answers in the measured window.
    pub requests: u64,
    /// Errors in the measured window (wrong status, wrong body, transport).
    pub errors: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// A few error answers, abridged.
    pub error_samples: Vec<String>,
    /// Length of the measured window, s.
    pub secs: f64,
    /// Correct answers per second.
    pub throughput: f64,
    /// Latency percentiles of the correct answers, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Server memory and CPU, generator CPU.
    pub usage: Usage,
}

impl Stats {
    /// Figures of a run.
    pub fn new(o: &Outcome, usage: Usage) -> Self {
        let h = &o.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let (p50, p90, p99, max, mean) = if h.is_empty() {
            (0.0, 0.0, 0.0, 0.0, 0.0)
        } else {
            (
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                h.mean() / 1000.0,
            )
        };
        Self {
            requests: o.ok,
            errors: o.error_count(),
            error_kinds: o.errors.clone(),
            error_samples: o.error_samples.clone(),
            secs: o.secs,
            throughput: o.throughput(),
            p50_ms: p50,
            p90_ms: p90,
            p99_ms: p99,
            max_ms: max,
            mean_ms: mean,
            usage,
        }
    }
}

/// Figures of one system divided by the same figures of a reference system.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ratios {
    /// Throughput ratio (higher is better for the system).
    pub throughput: Option<f64>,
    /// p50 latency ratio (lower is better).
    pub p50: Option<f64>,
    /// p99 latency ratio (lower is better).
    pub p99: Option<f64>,
}

impl Ratios {
    fn of(s: &Stats, reference: Option<&Stats>) -> Self {
        let div = |a: f64, b: f64| (b > 0.0 && a > 0.0).then_some(a / b);
        match reference {
            Some(r) => Self {
                throughput: div(s.throughput, r.throughput),
                p50: div(s.p50_ms, r.p50_ms),
                p99: div(s.p99_ms, r.p99_ms),
            },
            None => Self::default(),
        }
    }
}

/// One system's figures with its ratios to the ceiling and to the baseline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SystemResult {
    /// Absolute figures.
    #[serde(flatten)]
    pub stats: Stats,
    /// Divided by the ceiling's.
    pub vs_ceiling: Ratios,
    /// Divided by the baseline's.
    pub vs_baseline: Ratios,
}

/// An HTTP workload on the three systems.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// `W1`, `W3-1`, …
    pub id: String,
    /// What it does.
    pub name: String,
    /// `ok`, `errors` (some answer was wrong), `not available`.
    pub status: String,
    /// Anything to know when reading the figures.
    pub note: Option<String>,
    /// Roster.
    pub roster: Option<SystemResult>,
    /// The axum JSON echo.
    pub ceiling: Option<SystemResult>,
    /// axum + PostgreSQL.
    pub baseline: Option<SystemResult>,
}

impl WorkloadResult {
    /// A workload with its figures; ratios are computed here.
    pub fn new(
        id: String,
        name: String,
        roster: Option<Stats>,
        ceiling: Option<Stats>,
        baseline: Option<Stats>,
    ) -> Self {
        let wrap = |s: &Option<Stats>| {
            s.as_ref().map(|s| SystemResult {
                stats: s.clone(),
                vs_ceiling: Ratios::of(s, ceiling.as_ref()),
                vs_baseline: Ratios::of(s, baseline.as_ref()),
            })
        };
        let any_errors = [&roster, &ceiling, &baseline]
            .iter()
            .any(|s| s.as_ref().is_some_and(|s| s.errors > 0));
        Self {
            status: if roster.is_none() {
                "not available".into()
            } else if any_errors {
                "errors".into()
            } else {
                "ok".into()
            },
            roster: wrap(&roster),
            ceiling: wrap(&ceiling),
            baseline: wrap(&baseline),
            id,
            name,
            note: None,
        }
    }

    /// The systems that ran it, by name.
    pub fn systems(&self) -> Vec<(&'static str, &SystemResult)> {
        [
            ("roster", &self.roster),
            ("ceiling", &self.ceiling),
            ("baseline", &self.baseline),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.as_ref().map(|s| (n, s)))
        .collect()
    }
}

/// A single job measured once (replay, bulk deactivate, export, loading users).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobResult {
    /// `W6`, `W7`, `W8`, `load`, `rss`.
    pub id: String,
    /// What it does.
    pub name: String,
    /// `ok`, `errors`, `not available`, `failed`.
    pub status: String,
    /// How much was done (`unit`s).
    pub amount: u64,
    /// `users`, `events`.
    pub unit: String,
    /// Wall time, s.
    pub secs: f64,
    /// amount / secs.
    pub rate_per_sec: f64,
    /// Peak resident size of the process doing it, MiB.
    pub rss_peak_mb: Option<f64>,
    /// Other figures (task time, catch-up time, bytes, …).
    pub details: Map<String, Value>,
    /// Anything to know.
    pub note: Option<String>,
}

impl JobResult {
    /// A job that did `amount` in `secs`.
    pub fn done(id: &str, name: String, amount: u64, unit: &str, secs: f64) -> Self {
        Self {
            id: id.into(),
            name,
            status: "ok".into(),
            amount,
            unit: unit.into(),
            secs,
            rate_per_sec: if secs > 0.0 {
                amount as f64 / secs
            } else {
                0.0
            },
            rss_peak_mb: None,
            details: Map::new(),
            note: None,
        }
    }

    /// A job that could not run.
    pub fn missing(id: &str, name: String, status: &str, note: String) -> Self {
        Self {
            status: status.into(),
            note: Some(note),
            ..Self::done(id, name, 0, "", 0.0)
        }
    }
}

/// One of the targets and whether this run met it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetCheck {
    /// The goal.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// `None`: not judged (not available, or scaled-down quick run).
    pub met: Option<bool>,
}

/// Everything a run found: `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Always `roster-bench`.
    pub suite: String,
    /// `full` or `quick`.
    pub mode: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// How long the run took, s.
    pub total_secs: f64,
    /// The machine.
    pub machine: Machine,
    /// Concurrency, durations, counts.
    pub config: Map<String, Value>,
    /// Things to know when reading the figures.
    pub notes: Vec<String>,
    /// HTTP workloads.
    pub workloads: Vec<WorkloadResult>,
    /// Single jobs (loads, W6–W8, memory with the big set loaded).
    pub jobs: Vec<JobResult>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
}

fn num(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r >= 100.0 => format!("{r:.0}"),
        Some(r) if r >= 10.0 => format!("{r:.1}"),
        Some(r) => format!("{r:.2}"),
    }
}

impl Results {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Roster bench ({} mode), {}", self.mode, self.started_at);
        let _ = writeln!(s, "machine: {}", self.machine.summary());
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<7}{:<34}{:<9}{:>8}{:>6}{:>6} |{:>7}{:>6}{:>6} |{:>7}{:>6}{:>6} |{:>7}{:>6}{:>7}  {:<14}",
            "id",
            "workload",
            "system",
            "req/s",
            "×ceil",
            "×base",
            "p50 ms",
            "×ceil",
            "×base",
            "p99 ms",
            "×ceil",
            "×base",
            "max ms",
            "err",
            "RSS MB",
            "CPU s+g+o"
        );
        let _ = writeln!(s, "{}", "-".repeat(148));
        for w in &self.workloads {
            let title = if w.status == "errors" {
                format!("{} [ERRORS]", w.name)
            } else {
                w.name.clone()
            };
            let systems = w.systems();
            if w.roster.is_none() {
                let _ = writeln!(
                    s,
                    "{:<7}{:<34}{:<9}not available{}",
                    w.id,
                    title,
                    "roster",
                    w.note
                        .as_ref()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                );
            }
            for (i, (name, r)) in systems.iter().enumerate() {
                let st = &r.stats;
                let (id, t) = if i == 0 && w.roster.is_some() {
                    (w.id.as_str(), title.as_str())
                } else {
                    ("", "")
                };
                let _ = writeln!(
                    s,
                    "{:<7}{:<34}{:<9}{:>8}{:>6}{:>6} |{:>7}{:>6}{:>6} |{:>7}{:>6}{:>6} |{:>7}{:>6}{:>7.0}  {:<14}",
                    id,
                    truncate(t, 33),
                    name,
                    num(st.throughput),
                    ratio(r.vs_ceiling.throughput),
                    ratio(r.vs_baseline.throughput),
                    num(st.p50_ms),
                    ratio(r.vs_ceiling.p50),
                    ratio(r.vs_baseline.p50),
                    num(st.p99_ms),
                    ratio(r.vs_ceiling.p99),
                    ratio(r.vs_baseline.p99),
                    num(st.max_ms),
                    st.errors,
                    st.usage.rss_peak_mb,
                    format!(
                        "{:.2}+{:.2}+{:.2}",
                        st.usage.server_cpu_cores,
                        st.usage.generator_cpu_cores,
                        st.usage.other_cpu_cores
                    ),
                );
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<7}{:<44}{:<14}{:>12}{:>9}{:>14}{:>10}  note",
            "id", "job", "status", "amount", "secs", "rate/s", "RSS MB"
        );
        let _ = writeln!(s, "{}", "-".repeat(148));
        for j in &self.jobs {
            let _ = writeln!(
                s,
                "{:<7}{:<44}{:<14}{:>12}{:>9.2}{:>14}{:>10}  {}",
                j.id,
                truncate(&j.name, 43),
                j.status,
                if j.amount > 0 {
                    format!("{} {}", j.amount, j.unit)
                } else {
                    "-".into()
                },
                j.secs,
                if j.rate_per_sec > 0.0 {
                    num(j.rate_per_sec)
                } else {
                    "-".into()
                },
                j.rss_peak_mb
                    .map_or_else(|| "-".into(), |m| format!("{m:.0}")),
                j.note.clone().unwrap_or_default()
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<58}{:<56}result", "target", "measured");
        let _ = writeln!(s, "{}", "-".repeat(148));
        for t in &self.targets {
            let _ = writeln!(
                s,
                "{:<58}{:<56}{}",
                t.goal,
                truncate(&t.measured, 55),
                match t.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "not judged",
                }
            );
        }
        let _ = writeln!(
            s,
            "\n×ceil / ×base: this row's figure divided by the ceiling's / the baseline's (for req/s higher is better, for latency lower). CPU s+g+o: cores used by the server (baseline: plus PostgreSQL) + by the generator + by anything else on the machine (other load makes the figures worse)."
        );
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(throughput: f64, p50: f64, p99: f64) -> Stats {
        Stats {
            requests: 10,
            errors: 0,
            error_kinds: BTreeMap::new(),
            error_samples: vec![],
            secs: 1.0,
            throughput,
            p50_ms: p50,
            p90_ms: p50,
            p99_ms: p99,
            max_ms: p99,
            mean_ms: p50,
            usage: Usage::default(),
        }
    }

    #[test]
    fn ratios_against_ceiling_and_baseline() {
        let w = WorkloadResult::new(
            "W1".into(),
            "create".into(),
            Some(stats(400.0, 2.0, 8.0)),
            Some(stats(1000.0, 1.0, 4.0)),
            Some(stats(100.0, 4.0, 16.0)),
        );
        let r = w.roster.as_ref().unwrap();
        assert_eq!(r.vs_ceiling.throughput, Some(0.4));
        assert_eq!(r.vs_baseline.throughput, Some(4.0));
        assert_eq!(r.vs_ceiling.p99, Some(2.0));
        assert_eq!(r.vs_baseline.p50, Some(0.5));
        assert_eq!(w.status, "ok");
        let missing = WorkloadResult::new("W9".into(), "login".into(), None, None, None);
        assert_eq!(missing.status, "not available");
    }
}
