//! Machine licenses for the tests: a license bound to a machine's certificate pin.

use std::time::{SystemTime, UNIX_EPOCH};

use portcullis::identity::ClientIdentity;
use portcullis::license::{Match, Payload};

use super::pki::Identity;

/// License `id` for `machine` (bound to its SPKI pin), valid from an hour ago for 30 days,
/// on every licensed route.
pub fn pin_license(id: &str, machine: &Identity) -> Payload {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    Payload {
        id: id.to_owned(),
        kid: String::new(),
        customer: "Acme".to_owned(),
        machine_id: format!("machine-{id}"),
        binding: Match::Pin,
        pins: vec![
            ClientIdentity::from_der(machine.cert().as_ref())
                .expect("the test certificate parses")
                .spki_pin(),
        ],
        ips: Vec::new(),
        routes: Vec::new(),
        scopes: Vec::new(),
        issued_at: now - 3600,
        not_before: now - 3600,
        expires_at: now + 30 * 86400,
        quota: None,
    }
}
