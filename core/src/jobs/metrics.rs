//! The jobs surface's metric families (`tessera_jobs_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A run's plugin, job and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// Plugin name.
    pub plugin: String,
    /// Job name.
    pub job: String,
    /// Succeeded, Failed, Skipped, Missed, Replaced or Interrupted.
    pub outcome: String,
}

/// A plugin label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// Plugin name.
    pub plugin: String,
}

/// Job metrics.
#[derive(Clone, Debug)]
pub struct JobsMetrics {
    /// Runs ended, by plugin, job and outcome.
    pub runs: Family<RunLabels, Counter>,
    /// Seconds from a run's start to its end, by plugin.
    pub duration: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// Seconds from a run's scheduled time to its start, by plugin.
    pub lateness: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// Jobs known (declared and registered at run time).
    pub scheduled: Gauge,
    /// 1 while this replica runs the scheduler (the Lease holder; always on SQLite).
    pub scheduling: Gauge,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

fn lateness_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0])
}

impl JobsMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> JobsMetrics {
        let m = JobsMetrics {
            runs: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            lateness: Family::new_with_constructor(lateness_histogram),
            scheduled: Gauge::default(),
            scheduling: Gauge::default(),
        };
        registry.register(
            "jobs_runs",
            "Job runs ended, by plugin, job and outcome (Succeeded, Failed, Skipped, Missed, Replaced, Interrupted)",
            m.runs.clone(),
        );
        registry.register(
            "jobs_run_duration_seconds",
            "Seconds from a job run's start to its end, retries included, by plugin",
            m.duration.clone(),
        );
        registry.register(
            "jobs_lateness_seconds",
            "Seconds from a job run's scheduled time to its start, by plugin",
            m.lateness.clone(),
        );
        registry.register(
            "jobs_scheduled",
            "Jobs known to the core (declared in manifests and registered at run time)",
            m.scheduled.clone(),
        );
        registry.register(
            "jobs_scheduler_active",
            "1 while this replica runs the job scheduler (the Lease holder in a cluster)",
            m.scheduling.clone(),
        );
        m
    }
}
