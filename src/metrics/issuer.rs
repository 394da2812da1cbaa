//! `portcullis_issuer_events_total{event}`: the token endpoint's own counts (tokens issued,
//! refreshes, reuse detected, revocations, failed and throttled client authentications),
//! read from the issuer in force when scraped. A reload that builds a new issuer starts
//! them over, which Prometheus reads as a counter reset.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use crate::issuer::events::Events;

const NAME: &str = "portcullis_issuer_events_total";
const HELP: &str = "What the gateway's token endpoint did, by event: issued, refreshed, refresh_refused, reuse_detected, revoked, auth_failed, throttled.";

pub(super) struct IssuerCollector {
    desc: Desc,
    events: ArcSwapOption<Events>,
}

impl IssuerCollector {
    pub(super) fn new() -> Result<IssuerCollector, prometheus::Error> {
        Ok(IssuerCollector {
            desc: Desc::new(
                NAME.into(),
                HELP.into(),
                vec!["event".into()],
                HashMap::new(),
            )?,
            events: ArcSwapOption::empty(),
        })
    }

    /// The issuer whose counts the next scrape reads (`None`: no issuer runs).
    pub(super) fn set(&self, events: Option<&Arc<Events>>) {
        self.events.store(events.cloned());
    }
}

impl Collector for IssuerCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(events) = self.events.load_full() else {
            return Vec::new();
        };
        vec![super::logs::counter_family(
            NAME,
            HELP,
            "event",
            events.snapshot().map(|(e, n)| (e.label(), n)),
        )]
    }
}
