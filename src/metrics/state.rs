//! The shared store's series, read from its own atomic counters when scraped: the store
//! counts on the request path without knowing about Prometheus, and a store a reload
//! replaces simply starts its counters again (a counter reset, which `rate()` handles).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::state::redis::{LATENCY_BUCKETS_US, RedisStore};

const UP: (&str, &str) = (
    "portcullis_state_up",
    "1 while the shared state store answers (backend label: embedded or redis).",
);
const MODE: (&str, &str) = (
    "portcullis_state_fail_mode",
    "What each concern does while the shared store cannot answer (1 for the mode in force).",
);
const CALLS: (&str, &str) = (
    "portcullis_state_calls_total",
    "Calls to the shared store, by outcome (ok, error, timeout, skipped while in back-off).",
);
const FALLBACKS: (&str, &str) = (
    "portcullis_state_fallbacks_total",
    "Answers taken from this instance's local fallback while the shared store was down.",
);
const LATENCY: (&str, &str) = (
    "portcullis_state_call_duration_seconds",
    "Time for the shared store to answer a call that got an answer.",
);

/// Registered once; told at each scrape which store the generation in force uses.
pub(super) struct StateCollector {
    descs: Vec<Desc>,
    store: Mutex<Option<Arc<RedisStore>>>,
}

impl StateCollector {
    pub(super) fn new() -> Result<StateCollector, prometheus::Error> {
        let desc = |(name, help): (&str, &str), labels: &[&str]| {
            Desc::new(
                name.into(),
                help.into(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
        };
        Ok(StateCollector {
            descs: vec![
                desc(UP, &["backend"])?,
                desc(MODE, &["concern", "mode"])?,
                desc(CALLS, &["outcome"])?,
                desc(FALLBACKS, &[])?,
                desc(LATENCY, &[])?,
            ],
            store: Mutex::new(None),
        })
    }

    pub(super) fn set(&self, store: Option<&Arc<RedisStore>>) {
        if let Ok(mut slot) = self.store.lock() {
            *slot = store.cloned();
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn family((name, help): (&str, &str), kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn counter(pairs: &[(&str, &str)], v: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let store = self.store.lock().ok().and_then(|s| s.clone());
        let Some(store) = store else {
            // The embedded store is this process: it answers while the process does.
            return vec![family(
                UP,
                MetricType::GAUGE,
                vec![gauge(&[("backend", "embedded")], 1.0)],
            )];
        };
        let s = &store.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_US.len());
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += load(&s.buckets[i]);
            let mut b = Bucket::default();
            b.set_upper_bound(*bound as f64 / 1e6);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        let count = cumulative + load(&s.buckets[LATENCY_BUCKETS_US.len()]);
        let mut h = Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(count);
        h.set_sample_sum(load(&s.latency_sum_us) as f64 / 1e6);
        let mut latency = Metric::default();
        latency.set_histogram(h);
        let settings = store.settings();
        vec![
            family(
                UP,
                MetricType::GAUGE,
                vec![gauge(
                    &[("backend", "redis")],
                    f64::from(u8::from(store.is_up())),
                )],
            ),
            family(
                MODE,
                MetricType::GAUGE,
                [
                    ("rate_limits", settings.rate_limits.label()),
                    ("quotas", settings.quotas.label()),
                    // Issuance, revocation and license changes never answer from stale
                    // state.
                    ("issuer", "fail_closed"),
                    ("licenses", "fail_closed"),
                ]
                .iter()
                .map(|(concern, mode)| gauge(&[("concern", concern), ("mode", mode)], 1.0))
                .collect(),
            ),
            family(
                CALLS,
                MetricType::COUNTER,
                [
                    ("ok", &s.ok),
                    ("error", &s.errors),
                    ("timeout", &s.timeouts),
                    ("skipped", &s.skipped),
                ]
                .into_iter()
                .map(|(outcome, n)| counter(&[("outcome", outcome)], load(n)))
                .collect(),
            ),
            family(
                FALLBACKS,
                MetricType::COUNTER,
                vec![counter(&[], load(&s.fallbacks))],
            ),
            family(LATENCY, MetricType::HISTOGRAM, vec![latency]),
        ]
    }
}
