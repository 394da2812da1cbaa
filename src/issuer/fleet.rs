//! An issuer on the fleet's shared store keeps its in-memory copies (the key ring it signs
//! and publishes with, the denylist the token stage reads) in step with the other instances:
//! a revocation or key rotation made anywhere is announced on the fleet's channel and applied
//! on every instance at once, and every [`RESYNC_EVERY`] (and after each resubscription)
//! each instance reads both again, so a lost message cannot keep a revoked token alive or an
//! old key current for longer than that.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Issuer;
use crate::state::redis::Heard;

pub use crate::state::redis::RESYNC_EVERY;

/// Revoked access tokens: `revoke JTI EXP [JTI EXP]...`.
const REVOKE: &str = "revoke";
/// The signing keys changed: `keys`.
const KEYS: &str = "keys";

impl Issuer {
    /// Listen on the fleet's channel (no-op on the embedded store). Ends when the issuer is
    /// dropped.
    pub(super) fn join_fleet(&self) {
        let Some(store) = &self.inner.shared else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        store.listen(RESYNC_EVERY, move |heard| {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let issuer = Issuer { inner };
            match heard {
                Heard::Message(m) => issuer.heard(m),
                Heard::Resync => issuer.resync_in_background(),
            }
            true
        });
    }

    /// Access tokens revoked here: refused by this instance's token stage from now on, and
    /// announced to the fleet.
    pub(crate) fn revoked(&self, entries: &[(String, u64)]) {
        let revocations = self.settings().link.revocations().clone();
        for (jti, exp) in entries {
            revocations.insert(jti, *exp);
        }
        if let Some(store) = &self.inner.shared
            && !entries.is_empty()
        {
            let mut m = String::from(REVOKE);
            for (jti, exp) in entries {
                m.push(' ');
                m.push_str(jti);
                m.push(' ');
                m.push_str(&exp.to_string());
            }
            store.announce(m);
        }
    }

    /// The signing keys changed here: the others reload theirs.
    pub(super) fn keys_changed(&self) {
        if let Some(store) = &self.inner.shared {
            store.announce(KEYS.to_owned());
        }
    }

    fn heard(&self, message: &str) {
        let mut words = message.split(' ');
        match words.next() {
            Some(REVOKE) => {
                let revocations = self.settings().link.revocations().clone();
                while let (Some(jti), Some(exp)) = (words.next(), words.next()) {
                    if let Ok(exp) = exp.parse::<u64>() {
                        revocations.insert(jti, exp);
                    }
                }
            }
            Some(KEYS) => self.resync_in_background(),
            _ => tracing::debug!("fleet channel: a message this version does not know"),
        }
    }

    /// Read the keys and revocations again on the blocking pool; one at a time.
    fn resync_in_background(&self) {
        if self.inner.resyncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let issuer = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = issuer.resync() {
                tracing::warn!(error = %e, "issuer: cannot read the fleet's keys and revocations; retrying at the next resync");
            }
            issuer.inner.resyncing.store(false, Ordering::Release);
        });
    }

    fn resync(&self) -> Result<(), super::IssuerError> {
        let _keys = self.keys_lock();
        let current = self
            .inner
            .store
            .read(|rx| rx.meta(crate::state::issuer::META_CURRENT_KID))?;
        if current.is_some() {
            return self.reload_ring();
        }
        // A store that lost everything (a Redis without persistence, restarted): make a key
        // again so the fleet keeps issuing; tokens signed before cannot be verified by an
        // instance that restarts, which is what losing the store means.
        tracing::warn!("issuer: the shared store holds no signing key; making one");
        let settings = self.settings();
        let ring = super::prepare(
            &*self.inner.store,
            &settings,
            super::unix(std::time::SystemTime::now()),
        )?;
        self.inner.ring.store(Arc::new(ring));
        self.publish()?;
        self.keys_changed();
        Ok(())
    }
}
