//! What an enrollment or re-enrollment hands out, and how: the certificate signed, the
//! license issued and activated, the machine's record kept.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, StatusCode};

use super::endpoints::{LICENSE_HEADER, Refusal, Resp, blocking, pkcs7_response};
use super::{Enrollment, MachineRecord, Retiring};
use crate::state::enrollment_certs::{IssuedCert, Retire, Which};
use crate::state::licenses::Licensing;

/// What an enrollment hands out.
pub(super) struct Issued {
    pub cert: Vec<u8>,
    /// The certificate's serial (recorded in the store, named by the CRL).
    pub serial: Vec<u8>,
    pub pin: String,
    pub license_id: String,
    pub license: String,
}

impl Issued {
    pub(super) fn response(&self) -> Resp {
        let mut resp = pkcs7_response(
            "application/pkcs7-mime; smime-type=certs-only",
            &super::pkcs7::certs_only(&[&self.cert]),
        );
        if let Ok(v) = HeaderValue::from_str(&self.license) {
            resp.headers_mut().insert(LICENSE_HEADER, v);
        }
        resp
    }
}

/// Sign the certificate and issue and activate the license for `machine`.
pub(super) async fn issue(
    enrollment: &Arc<Enrollment>,
    licensing: &Arc<Licensing>,
    machine: &str,
    template: &str,
    csr: &super::csr::CheckedCsr,
    now: SystemTime,
) -> Result<Issued, Refusal> {
    let settings = &enrollment.settings;
    let Some(template) = settings.template(template) else {
        // A reload removed the template after the token or the enrollment.
        tracing::warn!(
            machine,
            template,
            "enrollment template no longer configured"
        );
        return Err(Refusal(
            StatusCode::CONFLICT,
            "enrollment_template_gone",
            None,
        ));
    };
    let signed = super::certificate::issue(
        &settings.ca,
        &csr.spki_der,
        machine,
        settings.cert_lifetime,
        now,
    )
    .map_err(|e| {
        tracing::error!(machine, error = %e, "enrollment certificate not signed");
        Refusal::internal("certificate_not_signed")
    })?;
    let pin = crate::identity::format_spki_pin(&crate::identity::sha256(&csr.spki_der));
    let at = crate::license::dates::unix(now);
    // Recorded before it is handed out: every certificate signed can be listed in the CRL.
    let record = IssuedCert {
        machine: machine.to_owned(),
        pin: pin.clone(),
        not_after: at.saturating_add(settings.cert_lifetime.as_secs()),
        superseded_at: None,
        revoked_at: None,
    };
    let (tokens, serial) = (Arc::clone(&enrollment.tokens), signed.serial.clone());
    blocking(move || tokens.record_cert(&serial, &record)).await?;
    let (license_id, license) =
        super::license::issue(&settings.license_key, template, machine, pin.clone(), at).map_err(
            |e| {
                tracing::error!(machine, error = %e, "enrollment license not issued");
                Refusal::internal("license_not_issued")
            },
        )?;
    let activated = {
        let (licensing, text) = (Arc::clone(licensing), license.clone());
        blocking(move || Ok(licensing.service.activate(&text, now))).await?
    };
    if let Err(e) = activated {
        tracing::error!(machine, license = %license_id, error = %e, "enrollment license not activated");
        return Err(Refusal::internal("license_not_activated"));
    }
    Ok(Issued {
        cert: signed.der,
        serial: signed.serial,
        pin,
        license_id,
        license,
    })
}

/// Record what `machine` holds now (if its pin is still `expected`, when given).
pub(super) async fn store_machine(
    enrollment: &Enrollment,
    machine: &str,
    template: &str,
    issued: &Issued,
    expected: Option<&str>,
    retiring: Option<Retiring>,
    at: u64,
) -> Result<bool, Refusal> {
    let record = MachineRecord {
        template: template.to_owned(),
        license_id: issued.license_id.clone(),
        pin: issued.pin.clone(),
        enrolled_at: at,
        retiring,
    };
    let (tokens, machine, expected) = (
        Arc::clone(&enrollment.tokens),
        machine.to_owned(),
        expected.map(str::to_owned),
    );
    blocking(move || tokens.set_machine(&machine, &record, expected.as_deref())).await
}

/// Retire the certificates each `(which, at)` selects from `at` (Unix seconds; an earlier
/// date already set wins), then refresh the revoked keys and the CRL once.
pub(super) async fn retire(
    enrollment: &Arc<Enrollment>,
    changes: Vec<(Which, u64)>,
    now: SystemTime,
) -> Result<(), Refusal> {
    let e = Arc::clone(enrollment);
    blocking(move || {
        for (which, at) in &changes {
            e.tokens
                .retire_certs(which, Retire::Superseded { at: *at })?;
        }
        e.refresh_revoked(now)
    })
    .await
}

/// Revoke every license `record` holds (its current one and one still retiring).
pub(super) async fn revoke_held(
    licensing: &Arc<Licensing>,
    record: &MachineRecord,
    now: SystemTime,
) {
    revoke(licensing, &record.license_id, now).await;
    if let Some(r) = &record.retiring {
        revoke(licensing, &r.license_id, now).await;
    }
}

/// Revoke license `id` (a replaced one); a failure is logged: the license expires anyway.
pub(super) async fn revoke(licensing: &Arc<Licensing>, id: &str, now: SystemTime) {
    let (l, license) = (Arc::clone(licensing), id.to_owned());
    match tokio::task::spawn_blocking(move || l.service.revoke(&license, now)).await {
        Ok(Ok(_)) => tracing::info!(license = %id, "replaced enrollment license revoked"),
        Ok(Err(e)) => {
            tracing::warn!(license = %id, error = %e, "replaced enrollment license not revoked")
        }
        Err(_) => tracing::warn!(license = %id, "replaced enrollment license not revoked"),
    }
}
