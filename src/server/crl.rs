//! Keeps the enrollment CRL fresh: rebuilt when half its lifetime has passed or a retired
//! certificate falls due, so `/.well-known/est/crl` and `crl_file` never serve one past its
//! `next_update`. Revocations rebuild it themselves, at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;

/// How often the CRL's age is looked at (a load and two comparisons).
const TICK: Duration = Duration::from_secs(10);

pub(super) fn spawn(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let Some(enrollment) = shared.generation.load().enrollment.clone() else {
                continue;
            };
            let now = shared.clock.now();
            if !enrollment.crl_due(now) {
                continue;
            }
            // redb and a signature: off the async workers.
            let done = tokio::task::spawn_blocking(move || enrollment.refresh_crl(now)).await;
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "enrollment CRL not refreshed; retrying");
            }
        }
    });
}
