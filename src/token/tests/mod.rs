//! Token stage tests. Keys are generated once per test run; `now` is a fixed instant passed
//! in, so nothing sleeps to see a token expire.

mod accept;
mod attacks;
mod binding;
mod cache;
mod config;
mod jwks_server;
mod split;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::{
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
};
use serde_json::{Value, json};

use super::{
    AlgSet, Claims, IssuerSettings, KeySet, KeySource, NoRevocations, RouteAuth, TokenDenial,
    TokenVerifier, VerifyingKey,
};

pub(super) const NOW: u64 = 1_800_000_000;
pub(super) const ISS: &str = "https://id.example.com/";
pub(super) const PARTNER_ISS: &str = "https://partner.example.net";
pub(super) const AUD: &str = "portcullis";

pub(super) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// A signing key and its public half.
pub(super) struct TestKey {
    pub alg: Algorithm,
    pub kid: &'static str,
    pub enc: EncodingKey,
    pub public_pem: String,
    /// The raw public key (for Ed25519: the 32 bytes a JWK carries).
    pub public_raw: Vec<u8>,
}

impl TestKey {
    fn generate(kid: &'static str, alg: Algorithm) -> TestKey {
        let sig = match alg {
            Algorithm::ES256 => &PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDSA => &PKCS_ED25519,
            _ => &PKCS_RSA_SHA256,
        };
        let kp = KeyPair::generate_for(sig).expect("key generation");
        let pem = kp.serialize_pem();
        let enc = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .expect("encoding key");
        TestKey {
            alg,
            kid,
            enc,
            public_pem: kp.public_key_pem(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    /// The verifying key as configured: from the PEM, for this key's algorithm(s).
    pub fn verifying(&self, algs: AlgSet) -> VerifyingKey {
        VerifyingKey::from_spki_pem(self.public_pem.as_bytes(), Some(self.kid), algs)
            .expect("verifying key")
    }

    /// The public key as a JWK with this kid and `alg`.
    pub fn jwk(&self) -> Value {
        if self.alg == Algorithm::EdDSA {
            // jsonwebtoken cannot read rcgen's Ed25519 PKCS#8 back: write the JWK directly.
            let x = b64(&self.public_raw);
            return json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "kid": self.kid });
        }
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.enc, self.alg).expect("jwk");
        let mut v = serde_json::to_value(jwk).expect("json");
        v["kid"] = json!(self.kid);
        v
    }

    /// A token with the usual header (`alg`, `kid`, `typ`).
    pub fn token(&self, claims: &Value) -> String {
        self.token_as(self.alg, claims)
    }

    /// A token signed with this key but claiming another RSA algorithm (RS256 vs PS256).
    pub fn token_as(&self, alg: Algorithm, claims: &Value) -> String {
        let header = json!({ "alg": alg_name(alg), "kid": self.kid, "typ": "JWT" });
        sign(&header, claims, &self.enc, alg)
    }
}

pub(super) struct Keys {
    pub es256: TestKey,
    pub es384: TestKey,
    pub rsa: TestKey,
    pub ed: TestKey,
    /// Nobody trusts this one.
    pub rogue: TestKey,
    /// The partner issuer's key.
    pub partner: TestKey,
}

/// Generated once: RSA generation is slow.
pub(super) static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    es256: TestKey::generate("es256", Algorithm::ES256),
    es384: TestKey::generate("es384", Algorithm::ES384),
    rsa: TestKey::generate("rsa", Algorithm::RS256),
    ed: TestKey::generate("ed", Algorithm::EdDSA),
    rogue: TestKey::generate("es256", Algorithm::ES256),
    partner: TestKey::generate("p1", Algorithm::ES256),
});

pub(super) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::PS256 => "PS256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unused",
    }
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with exactly this header and these claims.
pub(super) fn sign(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let h = b64(&serde_json::to_vec(header).expect("json"));
    let p = b64(&serde_json::to_vec(claims).expect("json"));
    let msg = format!("{h}.{p}");
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).expect("sign");
    format!("{msg}.{sig}")
}

/// Claims that pass: our issuer and audience, valid for ten minutes around `NOW`.
pub(super) fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "client_id": "billing-agent",
        "scope": "orders:read invoices:read",
        "iat": NOW - 10,
        "exp": NOW + 600,
        "jti": "t-1",
    })
}

/// `claims()` with some fields replaced (a `null` removes the field).
pub(super) fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    if let (Some(map), Some(changes)) = (c.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

pub(super) fn issuer(name: &str, iss: &str, keys: KeySource) -> IssuerSettings {
    IssuerSettings {
        name: name.into(),
        issuer: iss.to_owned(),
        audiences: vec![AUD.to_owned(), "other-audience".to_owned()],
        leeway: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(24 * 3600),
        keys,
    }
}

/// The keys of issuer "corp": every test key but the rogue, RSA for RS256 and PS256.
pub(super) fn corp_keys() -> KeySet {
    let k = &*KEYS;
    let all = AlgSet::of(&super::Alg::ALL);
    KeySet::new([
        k.es256.verifying(all),
        k.es384.verifying(all),
        k.rsa.verifying(all),
        k.ed.verifying(all),
    ])
    .expect("key set")
}

/// Issuers "corp" and "partner", with static keys.
pub(super) fn verifier() -> TokenVerifier {
    let all = AlgSet::of(&super::Alg::ALL);
    let partner = KeySet::new([KEYS.partner.verifying(all)]).expect("key set");
    TokenVerifier::new(
        vec![
            issuer("corp", ISS, KeySource::Static(Arc::new(corp_keys()))),
            issuer("partner", PARTNER_ISS, KeySource::Static(Arc::new(partner))),
        ],
        Arc::new(NoRevocations),
    )
}

pub(super) fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

pub(super) fn any_token() -> RouteAuth {
    RouteAuth::any_token()
}

pub(super) fn route(all_of: &[&str], any_of: &[&str], issuers: Option<&[&str]>) -> RouteAuth {
    RouteAuth::Bearer {
        issuers: issuers.map(|l| l.iter().map(|s| Arc::<str>::from(*s)).collect()),
        all_of: all_of.iter().map(|s| s.to_string()).collect(),
        any_of: any_of.iter().map(|s| s.to_string()).collect(),
    }
}

/// Authorize `token` on a route that takes any valid token, at `NOW`.
pub(super) fn check(v: &TokenVerifier, token: &str) -> Result<Arc<Claims>, TokenDenial> {
    check_at(v, token, &any_token(), now())
}

pub(super) fn check_at(
    v: &TokenVerifier,
    token: &str,
    auth: &RouteAuth,
    at: SystemTime,
) -> Result<Arc<Claims>, TokenDenial> {
    v.authorize(&bearer(token), auth, at)
        .map(|c| c.expect("a bearer route yields claims"))
}
