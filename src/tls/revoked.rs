//! Client certificate keys revoked while the gateway runs (enrolled machines), checked in the
//! handshake of every listener that asks for client certificates.
//!
//! The set is shared by the listeners' verifiers and whoever revokes (the enrollment store
//! fills it), and replaced whole on each change: a handshake reads it with one atomic load,
//! no lock. Each key is refused in a window (`from..=until`, Unix seconds), so a key retired
//! by re-enrollment is refused once its overlap ends without anyone waking up to add it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// When a revoked key is refused: from `from` to `until` (Unix seconds, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: u64,
    pub until: u64,
}

/// SHA-256 of a SubjectPublicKeyInfo.
pub type SpkiHash = [u8; 32];

/// The live set of revoked client keys.
#[derive(Debug, Default)]
pub struct RevokedKeys {
    keys: ArcSwap<HashMap<SpkiHash, Window>>,
}

impl RevokedKeys {
    /// Replace the whole set (after a revocation or a re-enrollment).
    pub fn replace(&self, keys: HashMap<SpkiHash, Window>) {
        self.keys.store(Arc::new(keys));
    }

    /// Whether the key `spki_sha256` is refused at `now` (Unix seconds).
    pub fn is_revoked(&self, spki_sha256: &SpkiHash, now: u64) -> bool {
        self.keys
            .load()
            .get(spki_sha256)
            .is_some_and(|w| w.from <= now && now <= w.until)
    }

    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }
}

/// A client certificate verifier that refuses, after `inner` accepted it, a certificate
/// whose key is in `revoked`.
#[derive(Debug)]
pub struct RevocationChecking {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<RevokedKeys>,
}

impl RevocationChecking {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, revoked: Arc<RevokedKeys>) -> Self {
        RevocationChecking { inner, revoked }
    }
}

impl ClientCertVerifier for RevocationChecking {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        // Nothing revoked (the usual case): no parse.
        if self.revoked.is_empty() {
            return Ok(verified);
        }
        let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let pin = crate::identity::sha256(cert.public_key().raw);
        if self.revoked.is_revoked(&pin, now.as_secs()) {
            return Err(Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_refused_only_inside_its_window() {
        let set = RevokedKeys::default();
        assert!(set.is_empty());
        let mut keys = HashMap::new();
        keys.insert(
            [1; 32],
            Window {
                from: 100,
                until: 200,
            },
        );
        set.replace(keys);
        assert!(!set.is_revoked(&[1; 32], 99));
        assert!(set.is_revoked(&[1; 32], 100));
        assert!(set.is_revoked(&[1; 32], 200));
        assert!(!set.is_revoked(&[1; 32], 201));
        assert!(!set.is_revoked(&[2; 32], 150));
    }
}
