//! The enrollment CA's certificate revocation list, and the revoked keys the gateway's own
//! listeners refuse, both built from the certificates the store recorded.
//!
//! Listed: every unexpired certificate of a revoked machine, and a certificate replaced by
//! re-enrollment once its overlap has passed (reason `superseded`). An expired certificate
//! drops out (RFC 5280 3.3: a CRL need not list what has expired). `this_update` is the
//! build time, `next_update` one `crl_lifetime` later; the CRL number comes from the store,
//! so it increases across restarts. The CRL is signed by rcgen (its DER writer, not ours),
//! rebuilt on every change, and when half its lifetime has passed or a retired certificate
//! falls due; `crl_file` gets the PEM through a temporary file and a rename, so a reader
//! never sees half of one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams};

use super::{Enrollment, StoreError};
use crate::config::enrollment::CaIssuer;
use crate::license::dates::unix;
use crate::state::enrollment_certs::IssuedCert;
use crate::tls::{SpkiHash, Window};

/// A signed CRL, as served and written.
#[derive(Debug, Clone)]
pub struct Crl {
    pub der: Vec<u8>,
    pub pem: String,
    pub number: u64,
    /// Unix seconds.
    pub this_update: u64,
    pub next_update: u64,
    /// When a retired certificate becomes listed, if one will before `next_update`.
    pub next_change: Option<u64>,
}

impl Crl {
    /// Whether it should be rebuilt at `now`: half its lifetime gone, or a change due.
    pub fn is_due(&self, now: u64) -> bool {
        let half = self.next_update.saturating_sub(self.this_update) / 2;
        now >= self.this_update.saturating_add(half) || self.next_change.is_some_and(|c| now >= c)
    }
}

/// Why no CRL was published.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("cannot sign the CRL: {0}")]
    Sign(#[from] rcgen::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the CRL to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// When `cert` is listed at `now`: the date it was refused from, if that has come and the
/// certificate has not expired.
pub fn listed_since(cert: &IssuedCert, now: u64) -> Option<u64> {
    cert.refused_from()
        .filter(|&from| from <= now && now <= cert.not_after)
}

/// Sign the CRL of `certs` (serial, record) at `now`.
pub fn build(
    ca: &CaIssuer,
    certs: &[(Vec<u8>, IssuedCert)],
    number: u64,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Crl, CrlError> {
    let at = unix(now);
    let revoked_certs = certs
        .iter()
        .filter_map(|(serial, cert)| {
            let since = listed_since(cert, at)?;
            // Superseded only when re-enrollment, not a revocation, came first.
            let superseded = cert
                .superseded_at
                .is_some_and(|s| cert.revoked_at.is_none_or(|r| s <= r));
            Some(RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(serial),
                revocation_time: (SystemTime::UNIX_EPOCH + Duration::from_secs(since)).into(),
                reason_code: superseded.then_some(RevocationReason::Superseded),
                invalidity_date: None,
            })
        })
        .collect();
    let next_change = certs
        .iter()
        .filter_map(|(_, c)| c.refused_from().filter(|&f| f > at && f <= c.not_after))
        .min();
    let params = CertificateRevocationListParams {
        this_update: now.into(),
        next_update: (now + lifetime).into(),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(ca)?;
    Ok(Crl {
        der: crl.der().to_vec(),
        pem: crl.pem()?,
        number,
        this_update: at,
        next_update: at.saturating_add(lifetime.as_secs()),
        next_change,
    })
}

/// The keys the listeners refuse: each retired or revoked certificate's key, from when it
/// was refused until it expires, and keys revoked before certificates were recorded.
pub fn revoked_keys(
    certs: &[(Vec<u8>, IssuedCert)],
    pins: &[(SpkiHash, u64)],
    now: u64,
) -> HashMap<SpkiHash, Window> {
    let mut out: HashMap<SpkiHash, Window> = HashMap::new();
    let windows = certs.iter().filter_map(|(_, c)| {
        let from = c.refused_from().filter(|_| c.not_after >= now)?;
        let pin = crate::identity::parse_spki_pin(&c.pin).ok()?;
        Some((
            pin,
            Window {
                from,
                until: c.not_after,
            },
        ))
    });
    let legacy = pins
        .iter()
        .map(|&(pin, until)| (pin, Window { from: 0, until }));
    for (pin, w) in windows.chain(legacy) {
        out.entry(pin)
            .and_modify(|o| {
                o.from = o.from.min(w.from);
                o.until = o.until.max(w.until);
            })
            .or_insert(w);
    }
    out
}

impl Enrollment {
    /// Re-read what is revoked at `now`: the listeners' keys at once, then a new CRL (a
    /// CRL that cannot be made is logged: the listeners refuse the keys anyway).
    pub fn refresh_revoked(&self, now: SystemTime) -> Result<(), StoreError> {
        let at = unix(now);
        let certs = self.tokens.issued_certs()?;
        let pins = self.tokens.revoked_pins(at)?;
        self.settings
            .revoked
            .replace(revoked_keys(&certs, &pins, at));
        if let Err(e) = self.publish_crl(&certs, now) {
            tracing::error!(error = %e, "enrollment CRL not published");
        }
        Ok(())
    }

    /// Build, keep and write a new CRL from `certs` (nothing when the CA cannot sign one).
    fn publish_crl(
        &self,
        certs: &[(Vec<u8>, IssuedCert)],
        now: SystemTime,
    ) -> Result<Option<Arc<Crl>>, CrlError> {
        let settings = &self.settings.crl;
        if !settings.signed {
            return Ok(None);
        }
        let number = self.tokens.next_crl_number()?;
        let crl = Arc::new(build(
            &self.settings.ca,
            certs,
            number,
            now,
            settings.lifetime,
        )?);
        if let Some(path) = &settings.file {
            write_atomically(path, crl.pem.as_bytes())?;
        }
        self.crl.store(Some(Arc::clone(&crl)));
        tracing::info!(
            number,
            listed = crl_len(certs, unix(now)),
            "enrollment CRL published"
        );
        Ok(Some(crl))
    }

    /// The CRL to serve at `now`: the one kept, or a new one if none is or it has expired.
    /// Only the latter touches the store and signs, on the caller's thread: rare, since
    /// revocations and the server's periodic check keep it fresh.
    pub fn crl(&self, now: SystemTime) -> Result<Option<Arc<Crl>>, CrlError> {
        match self.crl.load_full() {
            Some(c) if unix(now) < c.next_update => Ok(Some(c)),
            _ => self.publish_crl(&self.tokens.issued_certs()?, now),
        }
    }

    /// Whether the CRL should be rebuilt at `now` (see [`Crl::is_due`]).
    pub fn crl_due(&self, now: SystemTime) -> bool {
        self.settings.crl.signed && self.crl.load().as_ref().is_none_or(|c| c.is_due(unix(now)))
    }

    /// Rebuild what a due CRL covers, dropping certificates expired long enough ago (more
    /// than a CRL lifetime: no CRL in force lists them).
    pub fn refresh_crl(&self, now: SystemTime) -> Result<(), StoreError> {
        let at = unix(now);
        let horizon = at.saturating_sub(self.settings.crl.lifetime.as_secs());
        self.tokens.prune_certs(horizon)?;
        self.refresh_revoked(now)
    }
}

fn crl_len(certs: &[(Vec<u8>, IssuedCert)], now: u64) -> usize {
    certs
        .iter()
        .filter(|(_, c)| listed_since(c, now).is_some())
        .count()
}

/// Write `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CrlError> {
    let failed = |source| CrlError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    fn ca() -> CaIssuer {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        rcgen::Issuer::from_ca_cert_der(cert.der(), key).unwrap()
    }

    fn cert(pin_byte: u8, not_after: u64) -> IssuedCert {
        IssuedCert {
            machine: "m1".into(),
            pin: crate::identity::format_spki_pin(&[pin_byte; 32]),
            not_after,
            superseded_at: None,
            revoked_at: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The serials the CRL lists, its number and its dates.
    fn read(crl: &Crl) -> (Vec<Vec<u8>>, u64, i64, i64) {
        let (_, parsed) = x509_parser::parse_x509_crl(&crl.der).unwrap();
        let serials = parsed
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        let number = parsed.crl_number().unwrap().to_u64_digits();
        let next = parsed.next_update().unwrap().timestamp();
        (
            serials,
            number.first().copied().unwrap_or(0),
            parsed.last_update().timestamp(),
            next,
        )
    }

    #[test]
    fn a_superseded_certificate_is_listed_once_its_overlap_has_passed_and_drops_out_at_expiry() {
        let ca = ca();
        let t0 = 1_800_000_000;
        let (old, new) = (vec![0x41; 16], vec![0x42; 16]);
        let mut retired = cert(1, t0 + 7 * 86_400);
        // Re-enrolled at t0 with an overlap of one hour.
        retired.superseded_at = Some(t0 + 3600);
        let certs = vec![
            (old.clone(), retired),
            (new.clone(), cert(2, t0 + 8 * 86_400)),
        ];
        let hour = Duration::from_secs(3600);

        let during = build(&ca, &certs, 1, at(t0 + 60), hour).unwrap();
        assert!(read(&during).0.is_empty(), "within the overlap");
        assert_eq!(
            during.next_change,
            Some(t0 + 3600),
            "rebuilt when it falls due"
        );
        assert!(during.is_due(t0 + 3600) && !during.is_due(t0 + 61));

        let after = build(&ca, &certs, 2, at(t0 + 3601), hour).unwrap();
        let (serials, number, this, next) = read(&after);
        assert_eq!(serials, vec![old], "the old serial, not the new one");
        assert_eq!(number, 2);
        assert_eq!(
            (this, next),
            ((t0 + 3601) as i64, (t0 + 3601 + 3600) as i64)
        );
        assert!(after.is_due(t0 + 3601 + 1800) && !after.is_due(t0 + 3601 + 1799));

        let expired = build(&ca, &certs, 3, at(t0 + 7 * 86_400 + 1), hour).unwrap();
        assert!(read(&expired).0.is_empty(), "expired: no longer listed");
        assert!(after.pem.starts_with("-----BEGIN X509 CRL-----"));
    }

    #[test]
    fn revoked_keys_are_refused_from_revocation_or_supersession_until_expiry() {
        let t0 = 1_800_000_000;
        let mut revoked = cert(1, t0 + 100);
        revoked.revoked_at = Some(t0);
        let mut superseded = cert(2, t0 + 100);
        superseded.superseded_at = Some(t0 + 50);
        let certs = vec![
            (vec![1], revoked),
            (vec![2], superseded),
            (vec![3], cert(3, t0 + 100)),
        ];
        let keys = revoked_keys(&certs, &[([9; 32], t0 + 10)], t0);
        assert_eq!(keys.len(), 3);
        assert_eq!(
            keys[&[1; 32]],
            Window {
                from: t0,
                until: t0 + 100
            }
        );
        assert_eq!(keys[&[2; 32]].from, t0 + 50);
        assert_eq!(keys[&[9; 32]].until, t0 + 10);
        assert!(revoked_keys(&certs, &[], t0 + 101).is_empty(), "expired");
    }
}
