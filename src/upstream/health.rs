//! Active health checks: every `interval`, a `GET path` to each target over the same pool,
//! protocol and TLS as its traffic; `healthy_threshold` passes in a row bring a target
//! back, `unhealthy_threshold` failures in a row take it out. One task per running
//! upstream, holding it weakly: the task ends when a reload drops the upstream.

use std::sync::{Arc, Weak};

use http::{Request, header};
use http_body_util::BodyExt;

use super::{Upstream, body::RequestBody, pool};
use crate::config::upstream::HealthCheck;

/// Start checking `upstream`'s targets, if it has a `health_check` and a runtime runs.
pub fn spawn(upstream: &Arc<Upstream>) {
    let Some(hc) = upstream.settings.health_check.clone() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    rt.spawn(async move {
        loop {
            let Some(up) = weak.upgrade() else {
                return;
            };
            // All targets at once: a hanging one does not delay the others' verdicts.
            let mut checks = tokio::task::JoinSet::new();
            for i in 0..up.targets.len() {
                let (up, hc) = (Arc::clone(&up), hc.clone());
                checks.spawn(async move { (i, check(&up, i, &hc).await) });
            }
            while let Some(Ok((i, passed))) = checks.join_next().await {
                let target = &up.targets[i];
                if let Some(now_healthy) = target.check_result(passed, &hc) {
                    tracing::warn!(
                        upstream = &*up.name,
                        target = target.authority.as_str(),
                        healthy = now_healthy,
                        "health check changed the target's state"
                    );
                }
            }
            drop(up);
            tokio::time::sleep(hc.interval).await;
        }
    });
}

/// One check of target `i`: a response with an expected status within `timeout`.
async fn check(up: &Upstream, i: usize, hc: &HealthCheck) -> bool {
    let target = &up.targets[i];
    let mut req = Request::new(RequestBody::empty());
    *req.uri_mut() = http::Uri::from(hc.path.clone());
    req.headers_mut().insert(header::HOST, target.host.clone());
    req.headers_mut().insert(
        header::USER_AGENT,
        http::HeaderValue::from_static("portcullis-health-check"),
    );
    let to = pool::Target {
        authority: &target.authority,
        tls: target.tls.as_ref(),
        protocol: up.settings.protocol,
    };
    let exchange = async {
        let (resp, lease, _) = pool::send(
            &target.pool,
            &to,
            up.settings.connect_timeout,
            req,
            target.pool.busy(),
        )
        .await
        .ok()?;
        let passed = hc.passes(resp.status().as_u16());
        // Read the (small) body to its end so the connection can serve traffic again.
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
        if body.collect().await.is_ok() {
            lease.checkin();
        }
        Some(passed)
    };
    matches!(
        tokio::time::timeout(hc.timeout, exchange).await,
        Ok(Some(true))
    )
}
