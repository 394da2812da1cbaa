//! `portcullis_log_lines_suppressed_total{source}`: dependency log lines a client caused that
//! the flood limit kept out of the log (`record::flood`), read when scraped.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};

const NAME: &str = "portcullis_log_lines_suppressed_total";
const HELP: &str = "Log lines from rustls, h2 or hyper (which a client can cause) left out of the log: one per source per minute is written.";

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
        let metrics = crate::record::flood::suppressed()
            .map(|(source, n)| {
                let mut label = LabelPair::default();
                label.set_name("source".into());
                label.set_value(source.into());
                let mut c = Counter::default();
                c.set_value(n as f64);
                let mut m = Metric::default();
                m.set_label(vec![label]);
                m.set_counter(c);
                m
            })
            .collect();
        let mut f = MetricFamily::default();
        f.set_name(NAME.into());
        f.set_help(HELP.into());
        f.set_field_type(MetricType::COUNTER);
        f.set_metric(metrics);
        vec![f]
    }
}
