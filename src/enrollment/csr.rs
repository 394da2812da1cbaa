//! The PKCS#10 CSR a machine sends: parsed, its key type checked against `key_types`, its
//! signature verified (proof that the sender holds the key). Only its public key is used:
//! the subject, SANs and requested extensions are ignored, the gateway sets its own.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;

use super::KeyType;

/// Why a CSR is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrRefusal {
    #[error("the body is not a base64 DER PKCS#10 certification request")]
    Malformed,
    /// The key's type, as far as it is known (`rsa-1024`, `ecdsa-p521`, `unknown`).
    #[error("the key type {0} is not accepted here")]
    KeyType(String),
    #[error("the request's signature does not verify with its own key")]
    Signature,
}

impl CsrRefusal {
    /// The stable `error` of the JSON refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            CsrRefusal::Malformed => "csr_malformed",
            CsrRefusal::KeyType(_) => "csr_key_type_refused",
            CsrRefusal::Signature => "csr_signature_invalid",
        }
    }
}

/// A CSR that passed: its SubjectPublicKeyInfo (DER) and key type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCsr {
    pub spki_der: Vec<u8>,
    pub key_type: KeyType,
}

/// Check `der` (one PKCS#10 request, nothing after it) against the accepted key types.
pub fn check(der: &[u8], accepted: &[KeyType]) -> Result<CheckedCsr, CsrRefusal> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|_| CsrRefusal::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrRefusal::Malformed);
    }
    let spki = &csr.certification_request_info.subject_pki;
    let key_type = key_type(spki)?;
    if !accepted.contains(&key_type) {
        return Err(CsrRefusal::KeyType(key_type.as_str().to_owned()));
    }
    // Before any certificate: the sender proves it holds the private key.
    csr.verify_signature().map_err(|_| CsrRefusal::Signature)?;
    Ok(CheckedCsr {
        spki_der: spki.raw.to_vec(),
        key_type,
    })
}

/// The key type of `spki`; RSA only at 2048, 3072 or 4096 bits.
fn key_type(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyType, CsrRefusal> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_SIG_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyType::EcdsaP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyType::EcdsaP384),
            Some(c) => Err(CsrRefusal::KeyType(format!("ecdsa ({c})"))),
            None => Err(CsrRefusal::KeyType("ecdsa (no named curve)".into())),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => return Err(CsrRefusal::Malformed),
        };
        return match bits {
            2048 => Ok(KeyType::Rsa2048),
            3072 => Ok(KeyType::Rsa3072),
            4096 => Ok(KeyType::Rsa4096),
            other => Err(CsrRefusal::KeyType(format!("rsa-{other}"))),
        };
    }
    Err(CsrRefusal::KeyType(format!("unknown ({alg})")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn csr(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["forged.example".to_owned()]).unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn each_default_key_type_is_named_and_its_signature_verified() {
        let all = KeyType::DEFAULT;
        for (alg, kt) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyType::EcdsaP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyType::EcdsaP384),
            (&rcgen::PKCS_ED25519, KeyType::Ed25519),
        ] {
            assert_eq!(check(&csr(alg), &all).unwrap().key_type, kt);
        }
    }

    #[test]
    fn a_flipped_signature_bit_a_refused_type_and_garbage_are_refused() {
        let mut der = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
        let last = der.len() - 1;
        der[last] ^= 1;
        assert_eq!(check(&der, &KeyType::DEFAULT), Err(CsrRefusal::Signature));
        let ed = csr(&rcgen::PKCS_ED25519);
        assert_eq!(
            check(&ed, &[KeyType::EcdsaP256]),
            Err(CsrRefusal::KeyType("ed25519".into()))
        );
        assert_eq!(
            check(b"not a csr", &KeyType::DEFAULT),
            Err(CsrRefusal::Malformed)
        );
    }
}
