//! Proves that the Grafana dashboard and the Prometheus alerts in contrib/ only use metrics
//! the gateway exports, so a renamed metric cannot silently empty a panel or an alert, and that
//! the alert rules pass `promtool check rules` and their unit tests (`promtool test rules`).

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{Gateway, Pki, Upstream, closed_port_url, get, listener, route, send_one};

/// Metric names (`portcullis_...`) mentioned in a text, histogram suffixes removed.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("portcullis_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_alerts_is_exported() {
    // A real gateway with traffic, so every labelled family has a series to render.
    let pki = Pki::generate();
    let up = Upstream::echo("a").await;
    let toml = format!(
        "{}{}{}{}",
        listener("public", ""),
        route("ok", "/", &[&up.url()], ""),
        route("down", "/down", &[&closed_port_url()], ""),
        route(
            "limited",
            "/limited",
            &[&up.url()],
            "limits = [{ key = \"route\", rate = \"1/min\", burst = 1 }]"
        )
    );
    let gw = Gateway::start(pki.dir(), &toml).await;
    assert_eq!(
        send_one(&pki, gw.addr(), get("/")).await.status.as_u16(),
        200
    );
    assert_eq!(
        send_one(&pki, gw.addr(), get("/down"))
            .await
            .status
            .as_u16(),
        502
    );
    for expected in [200, 429] {
        assert_eq!(
            send_one(&pki, gw.addr(), get("/limited"))
                .await
                .status
                .as_u16(),
            expected
        );
    }
    let exported = names_in(&gw.shared().metrics.render());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    for file in ["grafana-dashboard.json", "portcullis-alerts.yml"] {
        let text = std::fs::read_to_string(root.join(file)).expect("contrib file");
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} names no metric");
        for name in &used {
            assert!(
                exported.contains(name),
                "{file} uses {name}, which the gateway does not export; exported: {exported:?}"
            );
        }
    }
}

#[test]
fn the_dashboard_is_valid_json() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana-dashboard.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("json");
    assert!(v["panels"].as_array().is_some_and(|p| !p.is_empty()));
}

/// Runs `promtool ARGS` in contrib/ and fails with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(&root)
        .output()
        .expect("run promtool (Debian: apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_fire_on_the_series_that_should_raise_them() {
    promtool(&["check", "rules", "portcullis-alerts.yml"]);
    promtool(&["test", "rules", "portcullis-alerts.test.yml"]);
}
