//! Prometheus metrics of the API (`GET /metrics`): requests by route and
//! status with a latency histogram, runs started per tenant, upload bytes.
//! Routes are the matched templates (`/v1/runs/{id}`), never raw paths, so
//! the number of series stays bounded whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The API's counters.
#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    runs_started: Mutex<BTreeMap<String, u64>>,
    upload_bytes: AtomicU64,
}

impl ApiMetrics {
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((method.into(), route.into(), status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = latency.entry((method.into(), route.into())).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn run_started(&self, tenant: &str) {
        *self
            .runs_started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.into())
            .or_default() += 1;
    }

    pub fn upload_bytes(&self, n: u64) {
        self.upload_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP toolhost_api_requests_total API requests by route and status.\n# TYPE toolhost_api_requests_total counter\n");
        for ((method, route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "toolhost_api_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP toolhost_api_request_seconds API request latency.\n# TYPE toolhost_api_request_seconds histogram\n");
        for ((method, route), h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "toolhost_api_request_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "toolhost_api_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "toolhost_api_request_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "toolhost_api_request_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP toolhost_api_runs_started_total Runs started through the API, by tenant.\n# TYPE toolhost_api_runs_started_total counter\n");
        for (tenant, n) in self
            .runs_started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "toolhost_api_runs_started_total{{tenant=\"{}\"}} {n}",
                escape(tenant)
            );
        }
        out.push_str("# HELP toolhost_api_upload_bytes_total Target bytes received.\n# TYPE toolhost_api_upload_bytes_total counter\n");
        let _ = writeln!(
            out,
            "toolhost_api_upload_bytes_total {}",
            self.upload_bytes.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = ApiMetrics::default();
        m.request("GET", "/v1/runs/{id}", 200, Duration::from_millis(3));
        m.request("GET", "/v1/runs/{id}", 404, Duration::from_millis(30));
        m.run_started("team-a");
        m.upload_bytes(10);
        let text = m.render();
        assert!(text.contains("toolhost_api_requests_total{method=\"GET\",route=\"/v1/runs/{id}\",status=\"404\"} 1"), "{text}");
        assert!(text.contains("toolhost_api_request_seconds_bucket{method=\"GET\",route=\"/v1/runs/{id}\",le=\"0.005\"} 1"), "{text}");
        assert!(
            text.contains(
                "toolhost_api_request_seconds_count{method=\"GET\",route=\"/v1/runs/{id}\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("toolhost_api_runs_started_total{tenant=\"team-a\"} 1"));
        assert!(text.contains("toolhost_api_upload_bytes_total 10"));
    }
}
