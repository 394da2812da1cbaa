//! The certificates the enrollment CA signed, in the enrollment store: table
//! `enrolled_certs_v1` of `serial -> record` (JSON: machine, key pin, expiry, and when it was
//! superseded or revoked), what the CRL and the listeners' revoked keys are built from; and
//! table `enrollment_meta_v1` holding the last CRL number, so numbers keep increasing across
//! restarts (RFC 5280 5.2.3).

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::enrollment::{EnrollmentTokens, Failure, StoreError};

const CERTS: TableDefinition<&[u8], &str> = TableDefinition::new("enrolled_certs_v1");
const META: TableDefinition<&str, u64> = TableDefinition::new("enrollment_meta_v1");
const CRL_NUMBER: &str = "crl_number";

/// One certificate the gateway signed for a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub machine: String,
    /// `sha256/<base64>` of its key.
    pub pin: String,
    /// Unix seconds.
    pub not_after: u64,
    /// When a newer certificate replaced it (after re-enrollment's overlap): refused from
    /// then on. May be in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_at: Option<u64>,
    /// When its machine was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

impl IssuedCert {
    /// From when it is refused, if it is ever (the earlier of superseded and revoked).
    pub fn refused_from(&self) -> Option<u64> {
        match (self.superseded_at, self.revoked_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Which certificates a change applies to.
#[derive(Debug, Clone)]
pub enum Which {
    /// Every certificate of the machine but `keep` (its newest).
    Machine {
        machine: String,
        keep: Option<Vec<u8>>,
    },
    /// One certificate, by serial.
    Serial(Vec<u8>),
    /// The machine's certificates for one key (`sha256/<base64>`).
    Key { machine: String, pin: String },
}

/// What happens to them.
#[derive(Debug, Clone, Copy)]
pub enum Retire {
    /// Replaced: refused from `at` (an earlier date already set wins).
    Superseded { at: u64 },
    /// The machine was revoked at `at`.
    Revoked { at: u64 },
}

impl EnrollmentTokens {
    pub(super) fn create_cert_tables(&self) -> Result<(), StoreError> {
        crate::state::db::in_write(&self.db, CERTS, |_| Ok::<_, Failure>(()))
            .and_then(|()| crate::state::db::in_write(&self.db, META, |_| Ok(())))
            .map_err(|f| self.failed(f))
    }

    /// Record a certificate just signed.
    pub fn record_cert(&self, serial: &[u8], cert: &IssuedCert) -> Result<(), StoreError> {
        let json = serde_json::to_string(cert)
            .map_err(|e| self.failed(Failure::Corrupt(e.to_string())))?;
        crate::state::db::in_write(&self.db, CERTS, |t| {
            t.insert(serial, json.as_str())?;
            Ok(())
        })
        .map_err(|f| self.failed(f))
    }

    /// Supersede or revoke the certificates `which` selects; how many changed.
    pub fn retire_certs(&self, which: &Which, how: Retire) -> Result<usize, StoreError> {
        crate::state::db::in_write(&self.db, CERTS, |t| {
            let mut changed = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let serial = k.value();
                let selected = match which {
                    Which::Machine { keep, .. } => keep.as_deref() != Some(serial),
                    Which::Serial(s) => s == serial,
                    Which::Key { .. } => true,
                };
                if !selected {
                    continue;
                }
                let mut cert: IssuedCert =
                    serde_json::from_str(v.value()).map_err(|e| Failure::Corrupt(e.to_string()))?;
                let matches = match which {
                    Which::Machine { machine, .. } => cert.machine == *machine,
                    Which::Serial(_) => true,
                    Which::Key { machine, pin } => cert.machine == *machine && cert.pin == *pin,
                };
                if !matches {
                    continue;
                }
                let before = cert.clone();
                match how {
                    Retire::Superseded { at } => {
                        cert.superseded_at = Some(cert.superseded_at.map_or(at, |s| s.min(at)));
                    }
                    Retire::Revoked { at } => {
                        cert.revoked_at.get_or_insert(at);
                    }
                }
                if cert != before {
                    let json = serde_json::to_string(&cert)
                        .map_err(|e| Failure::Corrupt(e.to_string()))?;
                    changed.push((serial.to_vec(), json));
                }
            }
            for (serial, json) in &changed {
                t.insert(serial.as_slice(), json.as_str())?;
            }
            Ok(changed.len())
        })
        .map_err(|f| self.failed(f))
    }

    /// Every certificate recorded, by serial.
    pub fn issued_certs(&self) -> Result<Vec<(Vec<u8>, IssuedCert)>, StoreError> {
        let read = || -> Result<Vec<(Vec<u8>, IssuedCert)>, Failure> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(CERTS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                let cert =
                    serde_json::from_str(v.value()).map_err(|e| Failure::Corrupt(e.to_string()))?;
                out.push((k.value().to_vec(), cert));
            }
            Ok(out)
        };
        read().map_err(|f| self.failed(f))
    }

    /// Forget certificates expired before `now` (a CRL no longer lists them); how many.
    pub fn prune_certs(&self, now: u64) -> Result<usize, StoreError> {
        crate::state::db::in_write(&self.db, CERTS, |t| {
            let mut expired = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let cert: IssuedCert =
                    serde_json::from_str(v.value()).map_err(|e| Failure::Corrupt(e.to_string()))?;
                if cert.not_after < now {
                    expired.push(k.value().to_vec());
                }
            }
            for serial in &expired {
                t.remove(serial.as_slice())?;
            }
            Ok(expired.len())
        })
        .map_err(|f| self.failed(f))
    }

    /// The next CRL number (one more than the last handed out, from 1).
    pub fn next_crl_number(&self) -> Result<u64, StoreError> {
        crate::state::db::in_write(&self.db, META, |t| {
            let next = t
                .get(CRL_NUMBER)?
                .map_or(0, |v| v.value())
                .saturating_add(1);
            t.insert(CRL_NUMBER, next)?;
            Ok(next)
        })
        .map_err(|f| self.failed(f))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cert(machine: &str) -> IssuedCert {
        IssuedCert {
            machine: machine.into(),
            pin: format!("sha256/{machine}"),
            not_after: 1000,
            superseded_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn certificates_are_superseded_revoked_pruned_and_crl_numbers_increase() {
        let dir = tempfile::tempdir().unwrap();
        let store = EnrollmentTokens::open(&dir.path().join("t.redb")).unwrap();
        store.record_cert(b"a", &cert("m1")).unwrap();
        store.record_cert(b"b", &cert("m1")).unwrap();
        store.record_cert(b"c", &cert("m10")).unwrap();
        let m1 = |keep: Option<&[u8]>| Which::Machine {
            machine: "m1".into(),
            keep: keep.map(<[u8]>::to_vec),
        };
        let n = store.retire_certs(&m1(Some(b"b")), Retire::Superseded { at: 50 });
        assert_eq!(n.unwrap(), 1, "a only: b kept, m10 is another machine");
        let n = store.retire_certs(&m1(None), Retire::Revoked { at: 60 });
        assert_eq!(n.unwrap(), 2);
        let key = Which::Key {
            machine: "m10".into(),
            pin: "sha256/m1".into(),
        };
        assert_eq!(
            store
                .retire_certs(&key, Retire::Superseded { at: 70 })
                .unwrap(),
            0
        );
        let all = store.issued_certs().unwrap();
        let a = &all.iter().find(|(s, _)| s == b"a").unwrap().1;
        assert_eq!((a.superseded_at, a.revoked_at), (Some(50), Some(60)));
        assert_eq!(a.refused_from(), Some(50));
        assert!(
            all.iter()
                .any(|(s, c)| s == b"c" && c.refused_from().is_none())
        );
        assert_eq!(store.prune_certs(1001).unwrap(), 3);
        assert_eq!(store.next_crl_number().unwrap(), 1);
        assert_eq!(store.next_crl_number().unwrap(), 2);
    }
}
