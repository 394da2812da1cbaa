//! Full verification of one compact JWS: shape, header, issuer, key, signature, then claims.
//! Everything read before the signature check only selects (issuer, key); nothing from an
//! unverified token is trusted or reported.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde::Deserialize;

use super::alg::Alg;
use super::keys::{VerifyingKey, b64url_decode};
use super::scopes::ScopeSet;

/// Longest `kid` looked up; real kids are short, and a long one is not worth hashing.
const MAX_KID: usize = 256;

/// What a verified token says, as the rest of the gateway sees it. Never holds the token.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The configured name of the issuer that signed it (not the `iss` URL).
    pub issuer: Arc<str>,
    pub sub: Option<String>,
    /// `client_id` (RFC 9068), else `azp`.
    pub client_id: Option<String>,
    /// `scope` (space-separated) and `scp` (array or string), merged.
    pub scopes: ScopeSet,
    pub exp: SystemTime,
    pub nbf: Option<SystemTime>,
    pub iat: Option<SystemTime>,
    pub jti: Option<String>,
    /// SHA-256 of the certificate the token is bound to (RFC 8705 `cnf.x5t#S256`): it
    /// passes only on a connection presenting that certificate.
    pub cert_sha256: Option<[u8; 32]>,
    /// Header values for the upstream, built once per token rather than once per request.
    pub(crate) values: ClaimValues,
}

#[derive(Debug, Clone)]
pub(crate) struct ClaimValues {
    pub subject: Option<HeaderValue>,
    pub client_id: Option<HeaderValue>,
    pub scopes: HeaderValue,
    pub issuer: HeaderValue,
}

/// Why a token was refused: for the debug log and the denial. Never carries token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Reject {
    #[error("not a compact JWS (three base64url segments)")]
    Malformed,
    #[error("header or claims are not the JSON we accept")]
    BadJson,
    #[error("alg is none or not supported")]
    Algorithm,
    #[error("crit header present (no extension is understood)")]
    Crit,
    #[error("iss is missing or names no configured issuer")]
    UnknownIssuer,
    #[error("the route does not accept this issuer")]
    IssuerNotAllowed,
    #[error("no key of the issuer fits the kid and alg")]
    UnknownKey,
    #[error("signature does not verify")]
    Signature,
    #[error("exp is missing")]
    MissingExp,
    #[error("expired")]
    Expired,
    #[error("exp lies further ahead than the issuer's max_lifetime")]
    TooLong,
    #[error("nbf is in the future")]
    NotYetValid,
    #[error("iat is in the future")]
    IssuedInFuture,
    #[error("aud names none of the issuer's audiences")]
    Audience,
    #[error(
        "a claim cannot be passed on or checked (control characters, malformed scope, unknown cnf)"
    )]
    BadClaim,
    #[error("revoked")]
    Revoked,
}

/// The three segments of a compact JWS.
pub(crate) struct Segments<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

/// Split `h.p.s`: exactly three non-empty base64url segments. A stripped signature (`h.p.`),
/// a JWE (five segments) or stray characters fail here.
pub(crate) fn split(token: &[u8]) -> Result<Segments<'_>, Reject> {
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_' || *b == b'.';
    if !token.iter().all(base64url) {
        return Err(Reject::Malformed);
    }
    // Only ASCII is left, so this cannot fail.
    let token = std::str::from_utf8(token).map_err(|_| Reject::Malformed)?;
    let (signing_input, signature) = token.rsplit_once('.').ok_or(Reject::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(Reject::Malformed)?;
    if header.is_empty() || payload.is_empty() || signature.is_empty() || payload.contains('.') {
        return Err(Reject::Malformed);
    }
    Ok(Segments {
        signing_input,
        header,
        payload,
        signature,
    })
}

/// The JOSE header fields we read. Others (`jku`, `x5u`, `x5c`, `jwk`, `typ`...) are ignored:
/// keys come only from configuration, never from the token.
#[derive(Deserialize)]
pub(crate) struct Header<'a> {
    #[serde(borrow)]
    pub alg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub kid: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    pub crit: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

pub(crate) struct Parsed<'a> {
    pub alg: Alg,
    pub kid: Option<Cow<'a, str>>,
    pub claims: RawClaims<'a>,
}

/// Decode header and claims. `buf` holds the decoded JSON the result borrows from.
pub(crate) fn parse<'a>(
    seg: &Segments<'_>,
    buf: &'a mut (Vec<u8>, Vec<u8>),
) -> Result<Parsed<'a>, Reject> {
    buf.0 = b64url_decode(seg.header).ok_or(Reject::Malformed)?;
    buf.1 = b64url_decode(seg.payload).ok_or(Reject::Malformed)?;
    let header: Header<'a> = serde_json::from_slice(&buf.0).map_err(|_| Reject::BadJson)?;
    if header.crit {
        return Err(Reject::Crit);
    }
    let alg = Alg::parse(&header.alg).ok_or(Reject::Algorithm)?;
    if header.kid.as_ref().is_some_and(|k| k.len() > MAX_KID) {
        return Err(Reject::UnknownKey);
    }
    let claims: RawClaims<'a> = serde_json::from_slice(&buf.1).map_err(|_| Reject::BadJson)?;
    Ok(Parsed {
        alg,
        kid: header.kid,
        claims,
    })
}

/// The registered and scope claims. A claim of the wrong type (a string `exp`, a number
/// `sub`) or a duplicated claim fails the whole token.
#[derive(Deserialize)]
pub(crate) struct RawClaims<'a> {
    #[serde(borrow, default)]
    pub iss: Option<Cow<'a, str>>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(borrow, default)]
    aud: Option<OneOrMany<'a>>,
    #[serde(default)]
    exp: Option<NumericDate>,
    #[serde(default)]
    nbf: Option<NumericDate>,
    #[serde(default)]
    iat: Option<NumericDate>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(borrow, default)]
    scope: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    scp: Option<OneOrMany<'a>>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    cnf: Option<Confirmation>,
}

/// RFC 7800 `cnf`. Only RFC 8705's certificate thumbprint is understood; a token confirmed
/// by anything else (a DPoP key, `jkt`) cannot be checked here, so it is refused.
#[derive(Deserialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256", default)]
    x5t_s256: Option<String>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl OneOrMany<'_> {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            OneOrMany::One(s) => (Some(&**s), &[][..]),
            OneOrMany::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().map(|s| &**s))
    }
}

/// Seconds since the epoch (RFC 7519 NumericDate): an integer or a fraction, never negative.
struct NumericDate(u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(u) = n.as_u64() {
            return Ok(NumericDate(u));
        }
        match n.as_f64() {
            // Fractions round down; u64::MAX as f64 rounds up, hence the strict bound.
            Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Ok(NumericDate(f as u64))
            }
            _ => Err(serde::de::Error::custom("not a NumericDate")),
        }
    }
}

/// A NumericDate as a time; `None` past what `SystemTime` holds (such a token is refused).
fn at(n: &NumericDate) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(n.0))
}

/// The validity window of a verified token, leeway applied.
pub(crate) struct Window {
    pub claims: Claims,
    /// `exp + leeway`: refused at or after this instant.
    pub expires_at: SystemTime,
    /// `nbf - leeway`: refused before this instant.
    pub valid_from: SystemTime,
}

/// What a verified token is checked against.
pub(crate) struct Expect<'a> {
    pub issuer: &'a Arc<str>,
    pub issuer_value: &'a HeaderValue,
    pub audiences: &'a [Box<str>],
    pub leeway: Duration,
    pub max_lifetime: Duration,
    pub now: SystemTime,
}

/// Check the claims of a token whose signature verified, and build its `Claims`.
pub(crate) fn check_claims(raw: RawClaims<'_>, e: &Expect<'_>) -> Result<Window, Reject> {
    let exp = raw.exp.as_ref().ok_or(Reject::MissingExp)?;
    let exp = at(exp).ok_or(Reject::BadJson)?;
    let expires_at = exp.checked_add(e.leeway).ok_or(Reject::BadJson)?;
    if e.now >= expires_at {
        return Err(Reject::Expired);
    }
    // A token that claims to live for millions of years is forged or mis-issued; either
    // way it must not be accepted (nor cached) for longer than the issuer ever issues.
    if e.now
        .checked_add(e.max_lifetime)
        .and_then(|t| t.checked_add(e.leeway))
        .is_none_or(|latest| exp > latest)
    {
        return Err(Reject::TooLong);
    }
    let nbf = raw
        .nbf
        .as_ref()
        .map(|n| at(n).ok_or(Reject::BadJson))
        .transpose()?;
    let valid_from = nbf
        .and_then(|n| n.checked_sub(e.leeway))
        .unwrap_or(UNIX_EPOCH);
    if e.now < valid_from {
        return Err(Reject::NotYetValid);
    }
    let iat = raw
        .iat
        .as_ref()
        .map(|n| at(n).ok_or(Reject::BadJson))
        .transpose()?;
    if iat.is_some_and(|iat| iat > e.now + e.leeway) {
        return Err(Reject::IssuedInFuture);
    }
    let aud_ok = raw
        .aud
        .as_ref()
        .is_some_and(|aud| aud.iter().any(|a| e.audiences.iter().any(|x| **x == *a)));
    if !aud_ok {
        return Err(Reject::Audience);
    }

    // Space-separated strings split on spaces only; array elements are taken whole, so
    // `scp: ["a b"]` is a malformed scope (refused), not two scopes.
    let mut granted: Vec<&str> = raw
        .scope
        .as_deref()
        .map(spaced)
        .into_iter()
        .flatten()
        .collect();
    match &raw.scp {
        Some(OneOrMany::One(s)) => granted.extend(spaced(s)),
        Some(OneOrMany::Many(v)) => granted.extend(v.iter().map(|s| &**s)),
        None => {}
    }
    let scopes = ScopeSet::new(granted).ok_or(Reject::BadClaim)?;

    let cert_sha256 = match raw.cnf {
        None => None,
        Some(Confirmation {
            x5t_s256: Some(t),
            other,
        }) if other.is_empty() => {
            let hash = b64url_decode(&t).and_then(|h| <[u8; 32]>::try_from(h).ok());
            Some(hash.ok_or(Reject::BadClaim)?)
        }
        Some(_) => return Err(Reject::BadClaim),
    };
    let client_id = raw.client_id.or(raw.azp);
    let value = |s: &Option<String>| {
        s.as_deref()
            .map(|s| HeaderValue::from_str(s).map_err(|_| Reject::BadClaim))
            .transpose()
    };
    let values = ClaimValues {
        subject: value(&raw.sub)?,
        client_id: value(&client_id)?,
        scopes: HeaderValue::from_str(&scopes.joined()).map_err(|_| Reject::BadClaim)?,
        issuer: e.issuer_value.clone(),
    };
    Ok(Window {
        claims: Claims {
            issuer: e.issuer.clone(),
            sub: raw.sub,
            client_id,
            scopes,
            exp,
            nbf,
            iat,
            jti: raw.jti,
            cert_sha256,
            values,
        },
        expires_at,
        valid_from,
    })
}

fn spaced(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|w| !w.is_empty())
}

/// The first candidate key whose signature check passes.
pub(crate) fn verify_signature<'k>(
    candidates: impl Iterator<Item = &'k Arc<VerifyingKey>>,
    alg: Alg,
    seg: &Segments<'_>,
) -> Result<Arc<VerifyingKey>, Reject> {
    let mut tried = false;
    for key in candidates {
        tried = true;
        if key.verify(alg, seg.signing_input.as_bytes(), seg.signature) {
            return Ok(key.clone());
        }
    }
    Err(if tried {
        Reject::Signature
    } else {
        Reject::UnknownKey
    })
}
