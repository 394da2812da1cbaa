//! `POST /.well-known/est/simplereenroll`: a machine renews over mutual TLS with its current
//! certificate.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};

use super::Retiring;
use super::audit::Note;
use super::endpoints::{BoxError, Est, Refusal, Resp, blocking, read_csr};
use super::issued::{issue, retire, revoke, store_machine};
use crate::identity::ClientIdentity;
use crate::license::LicenseState;
use crate::state::enrollment_certs::Which;

/// Re-enrollment over mutual TLS with the machine's current certificate: a new certificate
/// for a new key, the same machine and template; the license moves to the new key's pin and
/// the old license stops granting `overlap` later.
pub(super) async fn simplereenroll<B>(
    est: Est<'_>,
    req: Request<B>,
    identity: Option<&ClientIdentity>,
    note: &mut Note,
) -> Result<Resp, Refusal>
where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>>,
{
    let (enrollment, licensing, now) = (est.enrollment, est.licensing, est.now);
    let at = crate::license::dates::unix(now);
    let refused = |reason: &'static str, message: &str| {
        Refusal(StatusCode::UNAUTHORIZED, reason, Some(message.to_owned()))
    };
    let Some(identity) = identity else {
        return Err(refused(
            "client_certificate_required",
            "re-enroll over mutual TLS with the machine's current certificate",
        ));
    };
    let machine = identity.common_name.clone().unwrap_or_default();
    // The certificate's subject names the machine the entry is about.
    note.machine = identity.common_name.clone();
    let tokens = Arc::clone(&enrollment.tokens);
    let name = machine.clone();
    let current = blocking(move || tokens.machine(&name)).await?;
    let licensing = licensing.ok_or_else(|| Refusal::internal("licenses_not_configured"))?;
    let not_current = "this certificate is not the machine's current enrolled certificate";
    let Some(current) = current.filter(|c| c.pin == identity.spki_pin()) else {
        tracing::info!(machine = %machine, "re-enrollment refused: not the current certificate");
        return Err(refused("certificate_not_current", not_current));
    };
    if now > identity.not_after {
        return Err(refused(
            "certificate_expired",
            "the certificate has expired: enroll with a new token",
        ));
    }
    let licensed = licensing
        .service
        .book()
        .get(&current.license_id, now)
        .is_some_and(|l| matches!(l.state, LicenseState::Active | LicenseState::InGrace));
    if !licensed {
        tracing::info!(machine = %machine, license = %current.license_id, "re-enrollment refused: license revoked or expired");
        return Err(refused(
            "machine_not_licensed",
            "the machine's license is revoked or expired",
        ));
    }
    let csr = read_csr(enrollment, req, &machine).await?;
    if crate::identity::sha256(&csr.spki_der) == identity.spki_sha256 {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "csr_same_key",
            Some("re-enrollment needs a new key".into()),
        ));
    }
    let issued = issue(
        enrollment,
        licensing,
        &machine,
        &current.template,
        &csr,
        now,
    )
    .await?;
    note.issued(&issued.serial, &issued.pin);
    // The old license grants for `overlap` more (the machine switches over, requests in
    // flight finish), scheduled in the book and kept in the machine's record. On a fleet's
    // store the other instances would not see an in-memory schedule: revoked at once there.
    let overlap = enrollment.settings.overlap.as_secs();
    let retiring = (overlap > 0 && licensing.shared.is_none()).then(|| Retiring {
        license_id: current.license_id.clone(),
        pin: current.pin.clone(),
        revoke_at: at.saturating_add(overlap),
    });
    let stored = store_machine(
        enrollment,
        &machine,
        &current.template,
        &issued,
        Some(&current.pin),
        retiring.clone(),
        at,
    );
    if !stored.await? {
        // Another re-enrollment with this certificate won: this one's license and
        // certificate go.
        revoke(licensing, &issued.license_id, now).await;
        retire(
            enrollment,
            vec![(Which::Serial(issued.serial.clone()), at)],
            now,
        )
        .await?;
        return Err(Refusal(StatusCode::CONFLICT, "reenrollment_conflict", None));
    }
    // The old certificates are refused, listed in the CRL, when the old license stops; one
    // replaced twice (its license revoked below) at once.
    let mut changes = Vec::new();
    if let Some(r) = &current.retiring {
        let key = Which::Key {
            machine: machine.clone(),
            pin: r.pin.clone(),
        };
        changes.push((key, at));
    }
    let others = Which::Machine {
        machine: machine.clone(),
        keep: Some(issued.serial.clone()),
    };
    changes.push((others, retiring.as_ref().map_or(at, |r| r.revoke_at)));
    retire(enrollment, changes, now).await?;
    // A license replaced twice is done with.
    if let Some(r) = &current.retiring {
        revoke(licensing, &r.license_id, now).await;
    }
    match retiring {
        Some(r) => {
            licensing
                .service
                .book()
                .revoke_from(&r.license_id, r.revoke_at);
        }
        None => revoke(licensing, &current.license_id, now).await,
    }
    tracing::info!(
        machine = %machine,
        license = %issued.license_id,
        replaced = %current.license_id,
        key_type = csr.key_type.as_str(),
        "machine re-enrolled"
    );
    Ok(issued.response())
}
