//! The fuzz targets' way in (`fuzz/`): the hand-written parsers that are private to their
//! floors, each driven on arbitrary input the way the gateway drives it. Not an API: it
//! changes with the targets. Parsers that are public already (the framing scanner, the
//! forwarding headers, the path, config loading) are called by the targets directly.
//!
//! Floor 6 (an entry point, like `cli`): it only calls down.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use crate::ip_filter::proxy_protocol::{self, ProxyHeaderError};
use crate::license::{License, LicenseError};
use crate::token::Claims;
use crate::vault::{MasterKey, Vault, VaultError};

/// Read a PROXY header from `input` as a connection would: `(answer, bytes consumed)`.
/// A byte slice is always ready, so the read finishes on the first poll.
pub fn proxy_header(input: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, usize) {
    let mut reader = input;
    let result = {
        let mut fut = std::pin::pin!(proxy_protocol::read_header(&mut reader));
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => r,
            // Cannot happen on a slice; say so rather than spin.
            Poll::Pending => Err(ProxyHeaderError::Io(std::io::ErrorKind::WouldBlock.into())),
        }
    };
    (result, input.len() - reader.len())
}

/// The canonical form of a Host value: `(name, port, unchanged)`.
pub fn host(raw: &str) -> Result<(String, Option<String>, bool), String> {
    crate::routing::host::canonical(raw)
        .map(|h| (h.name.into_owned(), h.port.map(str::to_owned), h.unchanged))
        .map_err(|e| e.to_string())
}

/// The token endpoint's `application/x-www-form-urlencoded` body parser.
pub fn form(body: &[u8]) -> Option<Vec<(String, String)>> {
    crate::issuer::request::parse_form(body)
}

/// A compact JWS split into its segments, as the token stage splits it.
#[derive(Debug)]
pub struct JwtParts {
    pub header: String,
    pub payload: String,
    pub signature: String,
    /// The header's `alg` and `kid`, and the claims as checked (no signature check: a fuzzer
    /// cannot sign, and the claim checks are what follows a good signature).
    pub decoded: Result<(&'static str, Option<String>, Claims), String>,
}

/// What [`jwt`] checks claims against.
pub const JWT_ISSUER: &str = "fuzz";
pub const JWT_AUDIENCE: &str = "portcullis";
pub const JWT_LEEWAY: Duration = Duration::from_secs(60);
pub const JWT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Split `token`, decode its header and claims, and check the claims at `now`.
pub fn jwt(token: &[u8], now: SystemTime) -> Result<JwtParts, String> {
    use crate::token::verify;
    let seg = verify::split(token).map_err(|e| e.to_string())?;
    let decoded = (|| {
        let mut buf = (Vec::new(), Vec::new());
        let parsed = verify::parse(&seg, &mut buf)?;
        let kid = parsed.kid.as_deref().map(str::to_owned);
        let issuer: Arc<str> = JWT_ISSUER.into();
        let audiences: [Box<str>; 1] = [JWT_AUDIENCE.into()];
        let window = verify::check_claims(
            parsed.claims,
            &verify::Expect {
                issuer: &issuer,
                issuer_value: &HeaderValue::from_static(JWT_ISSUER),
                audiences: &audiences,
                leeway: JWT_LEEWAY,
                max_lifetime: JWT_MAX_LIFETIME,
                now,
            },
        )?;
        Ok((parsed.alg.name(), kid, window.claims))
    })()
    .map_err(|e: verify::Reject| e.to_string());
    Ok(JwtParts {
        header: seg.header.to_owned(),
        payload: seg.payload.to_owned(),
        signature: seg.signature.to_owned(),
        decoded,
    })
}

/// A license text opened and its payload checked, without the signature: `(signed part,
/// signature, what the payload says)`. A fuzzer cannot sign; what follows a good signature is
/// what it should reach.
pub fn license_unsigned(text: &str) -> Result<(String, [u8; 64], License), LicenseError> {
    use crate::license::format;
    let env = format::open_envelope(text)?;
    let payload = format::parse_payload(&env.payload)?;
    let signed = env.signed.to_owned();
    Ok((signed, env.signature, License::from_payload(payload)?))
}

/// The `PCL1.<payload>.<signature>` text for `payload` and `signature` (the inverse).
pub fn license_text(license: &License, signature: &[u8; 64]) -> Result<String, LicenseError> {
    use crate::license::format;
    Ok(format::join(
        &format::signed_part(&license.payload)?,
        signature,
    ))
}

/// Open a vault file's text under `master`: every record name, kind and secret.
pub fn vault(text: &str, master: &MasterKey) -> Result<Vec<(String, String, Vec<u8>)>, VaultError> {
    let v = Vault::open_text(Path::new("fuzz.vault"), text, master)?;
    v.records()
        .iter()
        .map(|r| {
            let (kind, secret) = v.get(&r.name)?;
            Ok((
                r.name.clone(),
                kind.label().to_owned(),
                secret.expose().to_vec(),
            ))
        })
        .collect()
}
