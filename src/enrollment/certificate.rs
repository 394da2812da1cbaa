//! The certificate the gateway signs for an enrolled machine. Everything in it comes from
//! the gateway (the token's machine name, the configured lifetime, the enrollment CA); only
//! the public key comes from the CSR.
//!
//! - subject `CN=<machine>`, and a URI SAN `urn:portcullis:machine:<machine>` (machine names
//!   are not DNS names: `_` is allowed);
//! - a random 128-bit serial;
//! - valid from 5 minutes before `now` (clock skew between the gateway and its peers) to
//!   `now + cert_lifetime`;
//! - key usage digitalSignature, extended key usage clientAuth, not a CA, with the CA's
//!   authority key identifier.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
    SerialNumber,
};

use crate::config::enrollment::CaIssuer;

/// How far back `not_before` is set, so a peer whose clock is a little behind accepts it.
pub const BACKDATE: Duration = Duration::from_secs(300);

/// The URI SAN of `machine`'s certificate.
pub fn machine_uri(machine: &str) -> String {
    format!("urn:portcullis:machine:{machine}")
}

/// Why no certificate was made (the CSR's key was checked already: a bug or the CA's key).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the machine's certificate: {0}")]
pub struct SignError(#[from] rcgen::Error);

/// A signed certificate: its DER and its serial (what the CRL names it by).
#[derive(Debug, Clone)]
pub struct Signed {
    pub der: Vec<u8>,
    pub serial: Vec<u8>,
}

/// Sign a certificate for `machine` on the key `spki_der` (DER SubjectPublicKeyInfo).
pub fn issue(
    ca: &CaIssuer,
    spki_der: &[u8],
    machine: &str,
    lifetime: Duration,
    now: SystemTime,
) -> Result<Signed, SignError> {
    let key = rcgen::SubjectPublicKeyInfo::from_der(spki_der)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, machine);
    params.subject_alt_names = vec![SanType::URI(machine_uri(machine).try_into()?)];
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    // Positive and without a leading zero byte (RFC 5280 4.1.2.2: at most 20 octets).
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(Signed {
        der: params.signed_by(&key, ca)?.der().to_vec(),
        serial: serial.to_vec(),
    })
}
