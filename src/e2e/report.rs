//! The e2e report as plain data: what was sent per node, what the nodes' own metrics say about
//! batches and flushes during the run, throughput, end-to-end lag, and the verification. Also
//! the two pure helpers that feed it: reading batch figures out of `GET /metrics` text and
//! percentiles of lag samples.

use super::verify::Verification;
use crate::client::load::SimSummary;
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

/// One node's batch histograms (`logmesh_batch_events`), as read from `GET /metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BatchFigures {
    /// Batches the node's store writer committed (`_count{sink="store"}`).
    pub store_flushes: f64,
    /// Events in them (`_sum{sink="store"}`).
    pub store_events: f64,
    /// Batches the node's event log writer appended (`_count{sink="event log"}`).
    pub event_log_flushes: f64,
    pub event_log_events: f64,
}

impl BatchFigures {
    /// Reads the figures out of a Prometheus text exposition; absent series are zero.
    pub fn from_metrics_text(text: &str) -> BatchFigures {
        let mut figures = BatchFigures::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("logmesh_batch_events_") else {
                continue;
            };
            let Some((series, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let slot = match series {
                r#"count{sink="store"}"# => &mut figures.store_flushes,
                r#"sum{sink="store"}"# => &mut figures.store_events,
                r#"count{sink="event log"}"# => &mut figures.event_log_flushes,
                r#"sum{sink="event log"}"# => &mut figures.event_log_events,
                _ => continue,
            };
            *slot = value;
        }
        figures
    }

    /// What happened between `before` and `self`. A counter that went down means the node
    /// restarted in between (its metrics start at zero): then everything it counted since
    /// the restart is the increase, as Prometheus' `increase()` reads a reset.
    pub fn since(&self, before: &BatchFigures) -> BatchFigures {
        let increase = |after: f64, before: f64| {
            if after >= before {
                after - before
            } else {
                after
            }
        };
        BatchFigures {
            store_flushes: increase(self.store_flushes, before.store_flushes),
            store_events: increase(self.store_events, before.store_events),
            event_log_flushes: increase(self.event_log_flushes, before.event_log_flushes),
            event_log_events: increase(self.event_log_events, before.event_log_events),
        }
    }
}

/// One node's batching during the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeBatches {
    pub url: String,
    /// `None` when the node's metrics could not be read before or after the run.
    pub during_run: Option<BatchFigures>,
    pub mean_store_batch: Option<f64>,
    /// Set when the node's metrics could not be read.
    pub error: Option<String>,
}

impl NodeBatches {
    pub fn new(
        url: &str,
        before: Result<BatchFigures, String>,
        after: Result<BatchFigures, String>,
    ) -> NodeBatches {
        match (before, after) {
            (Ok(before), Ok(after)) => {
                let during = after.since(&before);
                NodeBatches {
                    url: url.to_owned(),
                    during_run: Some(during),
                    mean_store_batch: (during.store_flushes > 0.0)
                        .then(|| during.store_events / during.store_flushes),
                    error: None,
                }
            }
            (Err(error), _) | (_, Err(error)) => NodeBatches {
                url: url.to_owned(),
                during_run: None,
                mean_store_batch: None,
                error: Some(error),
            },
        }
    }
}

/// End-to-end lag: from a probe's 202 to the probe being found by a search.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LagFigures {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LagFigures {
    pub fn from_samples(samples: &[Duration]) -> LagFigures {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let rank = |q: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let index = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[index]
        };
        LagFigures {
            samples: ms.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// Everything `logmesh e2e` found, printed and written with `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's tag: in every event id (`e2e-<run>-…`) and service name of the run.
    pub run: String,
    pub passed: bool,
    pub nodes: Vec<String>,
    pub members: Vec<String>,
    pub load: SimSummary,
    pub batches: Vec<NodeBatches>,
    pub lag: LagFigures,
    /// From the end of sending until the verification passed (or the deadline).
    pub drain_seconds: f64,
    pub verification: Verification,
}

impl Report {
    /// The report for the terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "logmesh e2e run {}: {}",
            self.run,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        out.push_str("load (lag probes included): ");
        out.push_str(&self.load.render());
        let _ = writeln!(out, "batches during the run (the nodes' metrics):");
        for node in &self.batches {
            match (&node.during_run, &node.error) {
                (Some(b), _) => {
                    let _ = writeln!(
                        out,
                        "  {}: {} store flushes of {} events (mean {:.1}), {} event log flushes of {} events",
                        node.url,
                        b.store_flushes,
                        b.store_events,
                        node.mean_store_batch.unwrap_or(0.0),
                        b.event_log_flushes,
                        b.event_log_events
                    );
                }
                (None, error) => {
                    let _ = writeln!(
                        out,
                        "  {}: unknown ({})",
                        node.url,
                        error.as_deref().unwrap_or("no metrics")
                    );
                }
            }
        }
        let lag = &self.lag;
        let _ = writeln!(
            out,
            "end-to-end lag (202 to searchable, {} probes): p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            lag.samples, lag.p50_ms, lag.p90_ms, lag.p99_ms, lag.max_ms
        );
        let v = &self.verification;
        let _ = writeln!(
            out,
            "verification after {:.1} s of draining: {} acknowledged, {} rows in service_logs, {} in service_severity, {} stored without their 202",
            self.drain_seconds,
            v.acknowledged,
            v.service_logs_rows,
            v.service_severity_total,
            v.stored_in_doubt
        );
        for log in &v.event_logs {
            let _ = writeln!(
                out,
                "  {}'s event log: {} lines of the run, {} acknowledged missing, {} repeated",
                log.member, log.lines, log.acknowledged_missing, log.repeated_lines
            );
        }
        for problem in &v.problems {
            let _ = writeln!(out, "MISMATCH: {problem}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE logmesh_batch_events histogram
logmesh_batch_events_sum{sink=\"store\"} 1200.0
logmesh_batch_events_count{sink=\"store\"} 12
logmesh_batch_events_bucket{le=\"1.0\",sink=\"store\"} 0
logmesh_batch_events_sum{sink=\"event log\"} 1200.0
logmesh_batch_events_count{sink=\"event log\"} 30
logmesh_events_total{service=\"a\",severity=\"info\"} 5
";

    #[test]
    fn batch_figures_come_from_the_histograms() {
        let figures = BatchFigures::from_metrics_text(METRICS);
        assert_eq!(figures.store_flushes, 12.0);
        assert_eq!(figures.store_events, 1200.0);
        assert_eq!(figures.event_log_flushes, 30.0);
        assert_eq!(figures.event_log_events, 1200.0);
        assert_eq!(BatchFigures::from_metrics_text(""), BatchFigures::default());
    }

    #[test]
    fn a_restarted_node_counts_from_zero() {
        let before = BatchFigures {
            store_flushes: 10.0,
            store_events: 100.0,
            ..Default::default()
        };
        let after = BatchFigures {
            store_flushes: 15.0,
            store_events: 150.0,
            ..Default::default()
        };
        assert_eq!(after.since(&before).store_flushes, 5.0);
        let restarted = BatchFigures {
            store_flushes: 3.0,
            store_events: 30.0,
            ..Default::default()
        };
        assert_eq!(restarted.since(&before).store_events, 30.0);
        let node = NodeBatches::new("u", Ok(before), Ok(after));
        assert_eq!(node.mean_store_batch, Some(10.0));
    }

    #[test]
    fn lag_percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let lag = LagFigures::from_samples(&samples);
        assert_eq!(lag.samples, 100);
        assert_eq!(lag.p50_ms, 50.0);
        assert_eq!(lag.p99_ms, 99.0);
        assert_eq!(lag.max_ms, 100.0);
        assert_eq!(LagFigures::from_samples(&[]).p50_ms, 0.0);
    }
}
