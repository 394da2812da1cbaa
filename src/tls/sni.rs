//! Choosing a server certificate by SNI, and by key type when several fit.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::LoadedCert;

/// Exact names first, then `*.` wildcards one label deep, then the default (first) cert.
/// Where several certificates carry a name (an RSA and an ECDSA one), the first whose key
/// can sign with a scheme the client offers is chosen.
#[derive(Debug)]
pub struct SniResolver {
    default: Vec<Arc<CertifiedKey>>,
    by_name: HashMap<String, Vec<Arc<CertifiedKey>>>,
}

impl SniResolver {
    /// `None` when `certs` is empty.
    pub fn new(certs: Vec<LoadedCert>) -> Option<Self> {
        let first_names = certs.first()?.names.clone();
        let mut by_name: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut default = Vec::new();
        for c in certs {
            for n in &c.names {
                by_name.entry(n.clone()).or_default().push(c.key.clone());
            }
            // A certificate for the same names as the first (an RSA twin of an ECDSA
            // certificate, say) is an alternative for clients that send no usable SNI.
            if c.names == first_names {
                default.push(c.key);
            }
        }
        Some(SniResolver { default, by_name })
    }

    fn candidates(&self, sni: Option<&str>) -> &[Arc<CertifiedKey>] {
        let Some(name) = sni else {
            return &self.default;
        };
        // rustls hands us the SNI already lower-cased and validated as a DNS name.
        if let Some(c) = self.by_name.get(name) {
            return c;
        }
        if let Some((_, parent)) = name.split_once('.') {
            let mut wildcard = String::with_capacity(parent.len() + 2);
            wildcard.push_str("*.");
            wildcard.push_str(parent);
            if let Some(c) = self.by_name.get(&wildcard) {
                return c;
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let candidates = self.candidates(hello.server_name());
        let schemes = hello.signature_schemes();
        candidates
            .iter()
            .find(|c| c.key.choose_scheme(schemes).is_some())
            .or_else(|| candidates.first())
            .cloned()
    }
}
