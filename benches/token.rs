//! The token stage on the request path: a full verification per algorithm (cache off), and a
//! cache hit (hash, lookup, expiry/denylist/key re-checks, scope check).
//!
//! `cargo bench --bench token -- --warm-up-time 1 --measurement-time 3`

// Bench set-up may panic: it is measurement code, never run on input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::token::{
    Alg, AlgSet, IssuerSettings, KeySet, KeySource, NoRevocations, RouteAuth, TokenVerifier,
    VerifyingKey,
};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};

const ISS: &str = "https://id.example.com/";

struct Signer {
    alg: Algorithm,
    kid: &'static str,
    enc: EncodingKey,
    public_pem: String,
}

fn signer(alg: Algorithm, kid: &'static str) -> Signer {
    let kp = match alg {
        Algorithm::ES256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        Algorithm::EdDSA => KeyPair::generate_for(&PKCS_ED25519),
        _ => KeyPair::generate_for(&PKCS_RSA_SHA256),
    }
    .expect("key");
    let pem = kp.serialize_pem();
    let enc = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("encoding key");
    Signer {
        alg,
        kid,
        enc,
        public_pem: kp.public_key_pem(),
    }
}

/// A realistic access token: issuer, audience, subject, client, a few scopes.
fn headers(s: &Signer, now: SystemTime) -> HeaderMap {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = serde_json::json!({
        "iss": ISS, "aud": "portcullis", "sub": "agent-7f3a9c", "client_id": "billing-sync",
        "scope": "orders:read orders:write invoices:read", "iat": now, "exp": now + 3600,
        "jti": "8f14e45f-ceea-467f-a0f8-1b9e2c6d5a10",
    });
    let mut header = Header::new(s.alg);
    header.kid = Some(s.kid.to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &s.enc).expect("token");
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

fn verifier(signers: &[&Signer], cache: usize) -> TokenVerifier {
    let all = AlgSet::of(&Alg::ALL);
    let keys = signers.iter().map(|s| {
        VerifyingKey::from_spki_pem(s.public_pem.as_bytes(), Some(s.kid), all).expect("key")
    });
    let issuer = IssuerSettings {
        name: "corp".into(),
        issuer: ISS.to_owned(),
        audiences: vec!["portcullis".to_owned()],
        leeway: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(24 * 3600),
        keys: KeySource::Static(Arc::new(KeySet::new(keys).expect("set"))),
    };
    TokenVerifier::new(vec![issuer], Arc::new(NoRevocations)).with_cache_max_entries(cache)
}

fn bench(c: &mut Criterion) {
    let es = signer(Algorithm::ES256, "es256");
    let rs = signer(Algorithm::RS256, "rs256");
    let ed = signer(Algorithm::EdDSA, "ed");
    let now = SystemTime::now();
    let route = RouteAuth::Bearer {
        issuers: Some(vec!["corp".into()]),
        all_of: vec!["orders:read".to_owned()],
        any_of: vec![],
    };

    let uncached = verifier(&[&es, &rs, &ed], 0);
    for (name, s) in [("ES256", &es), ("RS256", &rs), ("EdDSA", &ed)] {
        let h = headers(s, now);
        assert!(matches!(uncached.authorize(&h, &route, now), Ok(Some(_))));
        c.bench_function(&format!("token/full_verification/{name}"), |b| {
            b.iter(|| uncached.authorize(black_box(&h), &route, black_box(now)))
        });
    }

    let cached = verifier(&[&es, &rs, &ed], 100_000);
    for (name, s) in [("ES256", &es), ("RS256", &rs)] {
        let h = headers(s, now);
        assert!(matches!(cached.authorize(&h, &route, now), Ok(Some(_))));
        // A hit is mostly the SHA-256 of the token, so its size matters.
        eprintln!(
            "{name} token: {} bytes",
            h[AUTHORIZATION].len() - "Bearer ".len()
        );
        c.bench_function(&format!("token/cache_hit/{name}"), |b| {
            b.iter(|| cached.authorize(black_box(&h), &route, black_box(now)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
