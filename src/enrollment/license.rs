//! The machine license an enrollment issues: from the token's template, bound to the new
//! certificate's SPKI pin, signed with `[enrollment] license_key`.

use super::Template;
use crate::license::{Match, Payload, SigningKey};

/// A license id for `machine`: `enr-<machine>-<8 hex>` (random: one machine enrolls
/// again and again, and ids must stay unique in the book).
pub fn license_id(machine: &str) -> String {
    let mut suffix = [0u8; 4];
    // Uniqueness, not secrecy: a failed draw is caught as a duplicate id on activation.
    let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut suffix);
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("enr-{machine}-{hex}")
}

/// The signed license text for `machine` with key pin `pin` (`sha256/...`), valid from
/// `now` for the template's lifetime.
pub fn issue(
    key: &SigningKey,
    template: &Template,
    machine: &str,
    pin: String,
    now: u64,
) -> Result<(String, String), crate::license::LicenseError> {
    let id = license_id(machine);
    let payload = Payload {
        id: id.clone(),
        kid: String::new(),
        customer: template.customer.clone(),
        machine_id: machine.to_owned(),
        binding: Match::Pin,
        pins: vec![pin],
        ips: Vec::new(),
        routes: template.routes.clone(),
        scopes: Vec::new(),
        issued_at: now,
        not_before: now,
        expires_at: now.saturating_add(template.license_lifetime.as_secs()),
        quota: template.quota.clone(),
    };
    Ok((id, key.issue(&payload)?))
}
