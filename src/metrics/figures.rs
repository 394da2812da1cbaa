//! The figures `GET /status` shows per route and per refusal reason, read from the very
//! series `/metrics` renders (no second count is kept, so the two can never disagree).

use std::collections::{BTreeMap, HashMap};

use prometheus::core::Collector;
use prometheus::proto::{Histogram, Metric};
use serde::Serialize;

use super::Metrics;

/// One route's counts since the gateway started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteFigures {
    /// Finished requests.
    pub requests: u64,
    /// Finished requests by status class (`2xx`, `4xx`, ...); classes never seen are absent.
    pub classes: BTreeMap<String, u64>,
    /// Requests a rate limit, quota or in-flight cap refused, by reason.
    pub limited: BTreeMap<String, u64>,
    /// Failed upstream exchanges, by kind (`connect`, `tls`, `timeout`, `exchange`).
    pub upstream_errors: BTreeMap<String, u64>,
    /// Time to the response head.
    pub latency_ms: Latency,
}

/// A duration histogram summarised: the mean and quantiles interpolated within buckets
/// (as Prometheus' `histogram_quantile` does), in milliseconds; `None` before any sample.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Latency {
    fn of(h: &Histogram) -> Self {
        let count = h.get_sample_count();
        if count == 0 {
            return Latency::default();
        }
        let q = |q: f64| quantile(h, q).map(|s| round(s * 1000.0));
        Latency {
            count,
            mean: Some(round(h.get_sample_sum() * 1000.0 / count as f64)),
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
        }
    }
}

/// Three decimals are more than a millisecond figure needs, and keep the JSON short.
fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The `q` quantile in seconds: linear within the bucket it falls in; past the last finite
/// bound, that bound.
fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    let total = h.get_sample_count() as f64;
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for b in h.get_bucket() {
        let (upper, count) = (b.upper_bound(), b.cumulative_count() as f64);
        if count >= rank {
            if !upper.is_finite() {
                return Some(lower);
            }
            let inside = count - below;
            let share = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

fn label<'m>(m: &'m Metric, name: &str) -> &'m str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn each(c: &impl Collector, mut f: impl FnMut(&Metric)) {
    for family in c.collect() {
        family.get_metric().iter().for_each(&mut f);
    }
}

/// A counter's value as a count (counters here only ever count whole events).
fn count(m: &Metric) -> u64 {
    m.get_counter().get_value().max(0.0) as u64
}

impl Metrics {
    /// Every route's figures, by route name (`-`: requests that matched no route).
    pub fn route_figures(&self) -> HashMap<String, RouteFigures> {
        let mut out: HashMap<String, RouteFigures> = HashMap::new();
        each(&self.requests, |m| {
            let n = count(m);
            let r = out.entry(label(m, "route").to_owned()).or_default();
            r.requests += n;
            *r.classes.entry(label(m, "class").to_owned()).or_default() += n;
        });
        each(&self.limited, |m| {
            let r = out.entry(label(m, "route").to_owned()).or_default();
            *r.limited.entry(label(m, "reason").to_owned()).or_default() += count(m);
        });
        each(&self.upstream_errors, |m| {
            let r = out.entry(label(m, "upstream").to_owned()).or_default();
            *r.upstream_errors
                .entry(label(m, "kind").to_owned())
                .or_default() += count(m);
        });
        each(&self.request_duration, |m| {
            let r = out.entry(label(m, "route").to_owned()).or_default();
            r.latency_ms = Latency::of(m.get_histogram());
        });
        out
    }

    /// Refused requests by denial reason, and refused connections by reason; only reasons
    /// that counted something.
    pub fn refusal_figures(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let nonzero = |c: &prometheus::IntCounterVec| {
            let mut out = BTreeMap::new();
            each(c, |m| {
                let n = count(m);
                if n > 0 {
                    out.insert(label(m, "reason").to_owned(), n);
                }
            });
            out
        };
        (nonzero(&self.denials), nonzero(&self.refused))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, StatusCode};

    use super::*;

    #[test]
    fn route_figures_count_what_the_series_counted_and_interpolate_latency() {
        let m = Metrics::new(prometheus::Registry::new()).expect("metrics");
        for ms in [1, 2, 3, 40] {
            m.request(
                "orders",
                &Method::GET,
                StatusCode::OK,
                Duration::from_millis(ms),
            );
        }
        m.request(
            "orders",
            &Method::POST,
            StatusCode::FORBIDDEN,
            Duration::from_millis(1),
        );
        let f = m.route_figures();
        let orders = &f["orders"];
        assert_eq!(orders.requests, 5);
        assert_eq!(orders.classes["2xx"], 4);
        assert_eq!(orders.classes["4xx"], 1);
        let l = orders.latency_ms;
        assert_eq!(l.count, 5);
        assert!((l.mean.unwrap_or_default() - 9.4).abs() < 0.01, "{l:?}");
        // The median falls in the 1-2.5 ms bucket; the p99 in 25-50 ms.
        let (p50, p99) = (l.p50.unwrap_or_default(), l.p99.unwrap_or_default());
        assert!((1.0..=2.5).contains(&p50), "{l:?}");
        assert!((25.0..=50.0).contains(&p99), "{l:?}");
    }

    #[test]
    fn refusal_figures_name_only_reasons_that_counted() {
        let m = Metrics::new(prometheus::Registry::new()).expect("metrics");
        assert!(m.refusal_figures().0.is_empty());
        m.refused(crate::metrics::ConnRefusal::ALL[0]);
        let (_, conns) = m.refusal_figures();
        assert_eq!(conns.values().sum::<u64>(), 1);
    }
}
