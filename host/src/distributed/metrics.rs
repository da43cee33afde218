//! Host metrics in the Prometheus text format (`GET /metrics`): runs by
//! workflow and outcome, step durations, tool invocations, and gauges
//! (target cache, registry, runs in memory) read when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::RunStatus;

/// Bucket bounds of the step duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    started: BTreeMap<String, u64>,
    ended: BTreeMap<(String, &'static str), u64>,
    steps: BTreeMap<String, Histogram>,
    step_failures: BTreeMap<String, u64>,
    tools: BTreeMap<String, u64>,
    tasks_over_budget: u64,
}

/// The host's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges read at scrape time.
pub struct Gauges {
    pub target_cache_bytes: u64,
    pub target_cache_entries: usize,
    pub registry_workflows: usize,
    pub cached_runs: usize,
    pub steps_in_flight: usize,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A run started (first execution or replay of its start on this host).
    pub fn run_started(&self, workflow: &str) {
        *self.lock().started.entry(workflow.to_string()).or_default() += 1;
    }

    /// A run ended with `status`.
    pub fn run_ended(&self, workflow: &str, status: RunStatus) {
        *self
            .lock()
            .ended
            .entry((workflow.to_string(), status.as_str()))
            .or_default() += 1;
    }

    /// A workflow task was failed because workflow code computed past the
    /// workflow-task budget.
    pub fn workflow_task_over_budget(&self) {
        self.lock().tasks_over_budget += 1;
    }

    /// A step (activity) of `kind` took `elapsed`.
    pub fn step(&self, kind: &str, elapsed: Duration, ok: bool) {
        let mut inner = self.lock();
        let h = inner.steps.entry(kind.to_string()).or_default();
        let s = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += s;
        h.count += 1;
        if !ok {
            *inner.step_failures.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// A tool was started.
    pub fn tool_invoked(&self, tool: &str) {
        *self.lock().tools.entry(tool.to_string()).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let inner = self.lock();
        let mut out = String::new();
        out.push_str("# HELP toolhost_runs_started_total Runs started on this host, by workflow.\n# TYPE toolhost_runs_started_total counter\n");
        for (wf, n) in &inner.started {
            let _ = writeln!(
                out,
                "toolhost_runs_started_total{{workflow=\"{}\"}} {n}",
                label(wf)
            );
        }
        out.push_str("# HELP toolhost_runs_ended_total Runs ended on this host, by workflow and status.\n# TYPE toolhost_runs_ended_total counter\n");
        for ((wf, status), n) in &inner.ended {
            let _ = writeln!(
                out,
                "toolhost_runs_ended_total{{workflow=\"{}\",status=\"{status}\"}} {n}",
                label(wf)
            );
        }
        out.push_str("# HELP toolhost_step_duration_seconds Durations of steps (activities) executed by this host.\n# TYPE toolhost_step_duration_seconds histogram\n");
        for (kind, h) in &inner.steps {
            let k = label(kind);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "toolhost_step_duration_seconds_bucket{{step=\"{k}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "toolhost_step_duration_seconds_bucket{{step=\"{k}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "toolhost_step_duration_seconds_sum{{step=\"{k}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "toolhost_step_duration_seconds_count{{step=\"{k}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP toolhost_step_failures_total Steps that failed on this host.\n# TYPE toolhost_step_failures_total counter\n");
        for (kind, n) in &inner.step_failures {
            let _ = writeln!(
                out,
                "toolhost_step_failures_total{{step=\"{}\"}} {n}",
                label(kind)
            );
        }
        out.push_str("# HELP toolhost_workflow_tasks_over_budget_total Workflow tasks failed (and retried by Temporal) because workflow code computed past workflow_task_budget_secs.\n# TYPE toolhost_workflow_tasks_over_budget_total counter\n");
        let _ = writeln!(
            out,
            "toolhost_workflow_tasks_over_budget_total {}",
            inner.tasks_over_budget
        );
        out.push_str("# HELP toolhost_tool_invocations_total Native tool invocations, by tool.\n# TYPE toolhost_tool_invocations_total counter\n");
        for (tool, n) in &inner.tools {
            let _ = writeln!(
                out,
                "toolhost_tool_invocations_total{{tool=\"{}\"}} {n}",
                label(tool)
            );
        }
        for (name, help, v) in [
            (
                "toolhost_target_cache_bytes",
                "Bytes of unpacked targets in the cache.",
                g.target_cache_bytes as f64,
            ),
            (
                "toolhost_target_cache_entries",
                "Unpacked targets in the cache.",
                g.target_cache_entries as f64,
            ),
            (
                "toolhost_registry_workflows",
                "Workflows in this host's registry.",
                g.registry_workflows as f64,
            ),
            (
                "toolhost_cached_runs",
                "Workflow instances held in memory.",
                g.cached_runs as f64,
            ),
            (
                "toolhost_steps_in_flight",
                "Steps executing now.",
                g.steps_in_flight as f64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.run_started("hello");
        m.run_ended("hello", RunStatus::Succeeded);
        m.step("tools.run", Duration::from_millis(20), true);
        m.step("tools.run", Duration::from_secs(2), false);
        m.tool_invoked("cargo");
        let text = m.render(&Gauges {
            target_cache_bytes: 10,
            target_cache_entries: 1,
            registry_workflows: 3,
            cached_runs: 0,
            steps_in_flight: 0,
        });
        assert!(text.contains("toolhost_runs_started_total{workflow=\"hello\"} 1"));
        assert!(
            text.contains("toolhost_runs_ended_total{workflow=\"hello\",status=\"succeeded\"} 1")
        );
        assert!(
            text.contains(
                "toolhost_step_duration_seconds_bucket{step=\"tools.run\",le=\"0.05\"} 1"
            )
        );
        assert!(
            text.contains("toolhost_step_duration_seconds_bucket{step=\"tools.run\",le=\"5\"} 2")
        );
        assert!(text.contains("toolhost_step_duration_seconds_count{step=\"tools.run\"} 2"));
        assert!(text.contains("toolhost_step_failures_total{step=\"tools.run\"} 1"));
        assert!(text.contains("toolhost_tool_invocations_total{tool=\"cargo\"} 1"));
        assert!(text.contains("toolhost_registry_workflows 3"));
    }
}
