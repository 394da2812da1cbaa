//! Unit tests of `metrics.rs`.

use super::*;

fn metrics() -> Metrics {
    Metrics::new(Registry::new()).expect("metrics register")
}

#[test]
fn a_routes_resolved_series_count_into_the_labelled_ones() {
    let m = metrics();
    let series = RouteSeries::default();
    let ms = Duration::from_millis(1);
    m.route_request(&series, "orders", &Method::GET, StatusCode::OK, ms);
    m.route_request(&series, "orders", &Method::GET, StatusCode::OK, ms);
    m.route_request(
        &series,
        "orders",
        &Method::from_bytes(b"PURGE").unwrap(),
        StatusCode::NOT_FOUND,
        ms,
    );
    m.upstream(&series, "orders", ms, Ok(()));
    let get = m
        .requests
        .with_label_values(&["orders", "GET", "2xx"])
        .get();
    let other = m
        .requests
        .with_label_values(&["orders", "OTHER", "4xx"])
        .get();
    assert_eq!((get, other), (2, 1));
    let dur = m.request_duration.with_label_values(&["orders"]);
    assert_eq!(dur.get_sample_count(), 3);
    let up = m.upstream_duration.with_label_values(&["orders"]);
    assert_eq!(up.get_sample_count(), 1);
}

#[test]
fn only_the_method_and_class_pairs_seen_become_series() {
    let m = metrics();
    let series = RouteSeries::default();
    m.route_request(
        &series,
        "r",
        &Method::POST,
        StatusCode::CREATED,
        Duration::ZERO,
    );
    let text = m.render();
    let lines: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("portcullis_requests_total{"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("method=\"POST\"") && lines[0].contains("class=\"2xx\""));
}

#[test]
fn a_reloaded_route_keeps_counting_in_the_same_series() {
    let m = metrics();
    let before = RouteSeries::default();
    m.route_request(&before, "r", &Method::GET, StatusCode::OK, Duration::ZERO);
    // A reload builds the route again, with series not yet resolved.
    let after = RouteSeries::default();
    m.route_request(&after, "r", &Method::GET, StatusCode::OK, Duration::ZERO);
    assert_eq!(m.requests.with_label_values(&["r", "GET", "2xx"]).get(), 2);
}

#[test]
fn goaway_reasons_are_the_h2_code_names_and_unknown_codes_are_other() {
    let m = metrics();
    m.h2_goaway(h2::Reason::ENHANCE_YOUR_CALM);
    m.h2_goaway(h2::Reason::PROTOCOL_ERROR);
    m.h2_goaway(h2::Reason::from(0x77));
    let count = |r: &str| m.h2_goaways.with_label_values(&[r]).get();
    assert_eq!(count("enhance_your_calm"), 1);
    assert_eq!(count("protocol_error"), 1);
    assert_eq!(count("other"), 1);
    assert_eq!(
        h2_reason_label(h2::Reason::HTTP_1_1_REQUIRED),
        "http_1_1_required"
    );
    assert_eq!(h2_reason_label(h2::Reason::NO_ERROR), "no_error");
    // Every code's series exists from the start: 15 labels, no more.
    let series = m
        .render()
        .lines()
        .filter(|l| l.starts_with("portcullis_h2_goaway_total{"))
        .count();
    assert_eq!(series, H2_REASONS.len());
}
