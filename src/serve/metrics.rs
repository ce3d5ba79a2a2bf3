//! Request counts and latencies, rendered in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// What the server has done so far.
#[derive(Default)]
pub struct Metrics {
    /// Requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests by the first bucket they fit, the last slot for those over every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    total_micros: AtomicU64,
    count: AtomicU64,
}

impl Metrics {
    pub fn record(&self, route: &str, status: u16, latency: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
        let seconds = latency.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.total_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP digits_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE digits_http_requests_total counter\n");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for ((route, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "digits_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP digits_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE digits_http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "digits_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "digits_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.total_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "digits_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "digits_http_request_duration_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_add_up() {
        let metrics = Metrics::default();
        metrics.record("/api/predict", 200, Duration::from_micros(300));
        metrics.record("/api/predict", 200, Duration::from_millis(7));
        metrics.record("/api/predict", 415, Duration::from_secs(10));
        let text = metrics.render();
        assert!(
            text.contains("digits_http_requests_total{route=\"/api/predict\",status=\"200\"} 2")
        );
        assert!(
            text.contains("digits_http_requests_total{route=\"/api/predict\",status=\"415\"} 1")
        );
        assert!(text.contains("digits_http_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("digits_http_request_duration_seconds_bucket{le=\"0.01\"} 2"));
        assert!(text.contains("digits_http_request_duration_seconds_bucket{le=\"2.5\"} 2"));
        assert!(text.contains("digits_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("digits_http_request_duration_seconds_count 3"));
    }
}
