//! `portcullis_log_lines_suppressed_total{source}`: dependency log lines a client caused that
//! the flood limit kept out of the log (`record::flood`), read when scraped.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};

const NAME: &str = "portcullis_log_lines_suppressed_total";
const HELP: &str = "Log lines a client can cause left out of the log: from rustls, h2 or hyper one per source per minute is written, of refused connections 100 a second.";

pub(super) struct LogFloodCollector {
    desc: Desc,
}

impl LogFloodCollector {
    pub(super) fn new() -> Result<LogFloodCollector, prometheus::Error> {
        Ok(LogFloodCollector {
            desc: Desc::new(
                NAME.into(),
                HELP.into(),
                vec!["source".into()],
                HashMap::new(),
            )?,
        })
    }
}

impl Collector for LogFloodCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![counter_family(
            NAME,
            HELP,
            "source",
            crate::record::flood::suppressed(),
        )]
    }
}

/// A counter family with one label, from `(label value, count)` pairs read at scrape time.
pub(super) fn counter_family<'a>(
    name: &str,
    help: &str,
    label: &str,
    counts: impl Iterator<Item = (&'a str, u64)>,
) -> MetricFamily {
    let metrics = counts
        .map(|(value, n)| {
            let mut pair = LabelPair::default();
            pair.set_name(label.into());
            pair.set_value(value.into());
            let mut c = Counter::default();
            c.set_value(n as f64);
            let mut m = Metric::default();
            m.set_label(vec![pair]);
            m.set_counter(c);
            m
        })
        .collect();
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(MetricType::COUNTER);
    f.set_metric(metrics);
    f
}
