//! Verification keys: each key says which algorithms it may check, so the algorithm comes from
//! the key and the token header can only pick among those. Keys come from PEM files, a JWKS
//! document, a shared secret, or code in this process (the gateway's own issuer).

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{DecodingKey, DecodingKeyKind};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::alg::{Alg, AlgSet, KeyKind};

/// Smaller RSA keys are factorable with public effort; aws-lc refuses them at verification too.
const MIN_RSA_BITS: usize = 2048;
/// RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
const MIN_HS256_SECRET: usize = 32;

/// Why a key could not be used. Names keys by kid, never prints key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The file has no `PUBLIC KEY` PEM block, or the block is not a SubjectPublicKeyInfo.
    #[error("not a PEM public key (SubjectPublicKeyInfo, \"BEGIN PUBLIC KEY\"): {0}")]
    Pem(String),
    /// A key type other than RSA, EC P-256/P-384 or Ed25519 (or `oct` outside a shared secret).
    #[error("unsupported key type: {0} (use RSA, EC P-256, EC P-384 or Ed25519)")]
    Unsupported(String),
    /// The key's numbers are not a valid key of its type.
    #[error("malformed {0} key")]
    Malformed(&'static str),
    /// An RSA modulus under 2048 bits.
    #[error("RSA key of {0} bits: at least 2048 are required")]
    RsaTooSmall(usize),
    /// A shared secret under 32 bytes.
    #[error("HS256 secret of {0} bytes: at least 32 are required")]
    SecretTooShort(usize),
    /// None of the algorithms given fits the key (ES256 for an RSA key...).
    #[error("{algs} cannot be used with a{} {kind} key", if kind.starts_with(['E', 'R']) { "n" } else { "" })]
    AlgorithmMismatch { algs: String, kind: &'static str },
    /// A JWK's `alg` fits the key but is not one of the issuer's algorithms.
    #[error("alg {0} is not among the issuer's algorithms")]
    NotAllowed(&'static str),
    /// A JWK with `use` other than `sig` or `key_ops` without `verify`.
    #[error("not a signature verification key (use/key_ops)")]
    NotForSignature,
    /// Symmetric keys are only taken from an explicit `hs256_secret_file`.
    #[error("symmetric (oct) keys are never taken from a JWKS")]
    Symmetric,
    /// Two keys of one set share a kid.
    #[error("kid \"{0}\" is used by two keys")]
    DuplicateKid(String),
    /// The document is not a JWKS (`{"keys": [...]}`).
    #[error("not a JWKS document: {0}")]
    Json(String),
    /// A JWKS with no key we can use.
    #[error("no usable key in the JWKS{0}")]
    Empty(String),
}

/// One key and the algorithms it may check.
pub struct VerifyingKey {
    kid: Option<Box<str>>,
    kind: KeyKind,
    algorithms: AlgSet,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A key from a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), for those of `algorithms` that
    /// fit it (at least one must). A private key or a certificate is refused.
    pub fn from_spki_pem(
        pem: &[u8],
        kid: Option<&str>,
        algorithms: AlgSet,
    ) -> Result<Self, KeyError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        let (_, spki) =
            SubjectPublicKeyInfo::from_der(&der).map_err(|e| KeyError::Pem(e.to_string()))?;
        let oid = &spki.algorithm.algorithm;
        let bits: &[u8] = &spki.subject_public_key.data;
        let (kind, key) = if *oid == OID_PKCS1_RSAENCRYPTION {
            match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                    rsa_size_ok(rsa.key_size())?;
                    (KeyKind::Rsa, DecodingKey::from_rsa_der(bits))
                }
                _ => return Err(KeyError::Malformed("RSA")),
            }
        } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let kind = match curve {
                Some(c) if c == OID_EC_P256 => KeyKind::P256,
                Some(c) if c == OID_NIST_EC_P384 => KeyKind::P384,
                Some(c) => return Err(KeyError::Unsupported(format!("EC curve {c}"))),
                None => return Err(KeyError::Malformed("EC")),
            };
            ec_point_ok(kind, bits)?;
            (kind, DecodingKey::from_ec_der(bits))
        } else if *oid == OID_SIG_ED25519 {
            if bits.len() != 32 {
                return Err(KeyError::Malformed("Ed25519"));
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(bits))
        } else {
            return Err(KeyError::Unsupported(format!("algorithm {oid}")));
        };
        VerifyingKey::new(kid, kind, key, algorithms)
    }

    /// A key from one JWK. `allowed` are the issuer's algorithms; a JWK `alg` must be one of
    /// them and fit the key type, otherwise every allowed algorithm that fits is used.
    pub fn from_jwk(jwk: &Jwk, allowed: AlgSet) -> Result<Self, KeyError> {
        let common = &jwk.common;
        if matches!(common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return Err(KeyError::NotForSignature);
        }
        if let Some(ops) = &common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err(KeyError::NotForSignature);
        }
        let malformed = |kind: &'static str| move |_| KeyError::Malformed(kind);
        let (kind, key) = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                let key = DecodingKey::from_rsa_components(&p.n, &p.e).map_err(malformed("RSA"))?;
                let bits = match key.kind() {
                    DecodingKeyKind::RsaModulusExponent { n, .. } => modulus_bits(n),
                    DecodingKeyKind::SecretOrDer(_) => 0,
                };
                rsa_size_ok(bits)?;
                (KeyKind::Rsa, key)
            }
            AlgorithmParameters::EllipticCurve(p) => {
                let kind = match p.curve {
                    EllipticCurve::P256 => KeyKind::P256,
                    EllipticCurve::P384 => KeyKind::P384,
                    ref c => return Err(KeyError::Unsupported(format!("EC curve {c:?}"))),
                };
                let key = DecodingKey::from_ec_components(&p.x, &p.y).map_err(malformed("EC"))?;
                ec_point_ok(kind, key.try_get_as_bytes().unwrap_or_default())?;
                (kind, key)
            }
            AlgorithmParameters::OctetKeyPair(p) => {
                if p.curve != EllipticCurve::Ed25519 {
                    return Err(KeyError::Unsupported(format!("OKP curve {:?}", p.curve)));
                }
                let key = DecodingKey::from_ed_components(&p.x).map_err(malformed("Ed25519"))?;
                if key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0) != 32 {
                    return Err(KeyError::Malformed("Ed25519"));
                }
                (KeyKind::Ed25519, key)
            }
            AlgorithmParameters::OctetKey(_) => return Err(KeyError::Symmetric),
            AlgorithmParameters::Other(p) => {
                let kty = p.fields.get("kty").and_then(|v| v.as_str()).unwrap_or("?");
                return Err(KeyError::Unsupported(format!("kty {kty:.16}")));
            }
            // The crate may add key types; until we know them they are not ours to accept.
            _ => return Err(KeyError::Unsupported("key type".to_owned())),
        };
        let fits = allowed.intersect(kind.algorithms());
        let algorithms = match common.key_algorithm {
            None => fits,
            Some(ka) => match Alg::parse(&ka.to_string()) {
                Some(a) if fits.contains(a) => AlgSet::of(&[a]),
                Some(a) if kind.algorithms().contains(a) => {
                    return Err(KeyError::NotAllowed(a.name()));
                }
                Some(a) => {
                    return Err(KeyError::AlgorithmMismatch {
                        algs: a.name().to_owned(),
                        kind: kind.label(),
                    });
                }
                None => return Err(KeyError::Unsupported(format!("alg {ka}"))),
            },
        };
        VerifyingKey::new(common.key_id.as_deref(), kind, key, algorithms)
    }

    /// An HS256 shared secret (at least 32 bytes).
    pub fn hs256(secret: &[u8], kid: Option<&str>) -> Result<Self, KeyError> {
        if secret.len() < MIN_HS256_SECRET {
            return Err(KeyError::SecretTooShort(secret.len()));
        }
        VerifyingKey::new(
            kid,
            KeyKind::Hmac,
            DecodingKey::from_secret(secret),
            AlgSet::of(&[Alg::HS256]),
        )
    }

    /// An Ed25519 public key (the raw 32 bytes), for keys this process makes itself.
    pub fn ed25519(public: &[u8; 32], kid: Option<&str>) -> Result<Self, KeyError> {
        VerifyingKey::new(
            kid,
            KeyKind::Ed25519,
            DecodingKey::from_ed_der(public),
            AlgSet::of(&[Alg::EdDSA]),
        )
    }

    fn new(
        kid: Option<&str>,
        kind: KeyKind,
        key: DecodingKey,
        algorithms: AlgSet,
    ) -> Result<Self, KeyError> {
        let fitting = algorithms.intersect(kind.algorithms());
        if fitting.is_empty() {
            return Err(KeyError::AlgorithmMismatch {
                algs: algorithms.names(),
                kind: kind.label(),
            });
        }
        let algorithms = fitting;
        Ok(VerifyingKey {
            kid: kid.map(Box::from),
            kind,
            algorithms,
            key,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    pub fn kind(&self) -> KeyKind {
        self.kind
    }
    pub fn algorithms(&self) -> AlgSet {
        self.algorithms
    }

    /// Check `signature` (base64url) over `message` with `alg`, which must be one of this
    /// key's algorithms: the token header never chooses a use the key was not given.
    pub(crate) fn verify(&self, alg: Alg, message: &[u8], signature: &str) -> bool {
        self.algorithms.contains(alg)
            && jsonwebtoken::crypto::verify(signature, message, &self.key, alg.jwt())
                .unwrap_or(false)
    }

    /// Same kid, algorithms and key material: a refreshed key set keeps the old `Arc` for
    /// such a key, so tokens cached under it stay cached.
    pub(crate) fn same_as(&self, other: &VerifyingKey) -> bool {
        self.kid == other.kid
            && self.algorithms == other.algorithms
            && match (self.key.kind(), other.key.kind()) {
                (DecodingKeyKind::SecretOrDer(a), DecodingKeyKind::SecretOrDer(b)) => a == b,
                (
                    DecodingKeyKind::RsaModulusExponent { n, e },
                    DecodingKeyKind::RsaModulusExponent { n: n2, e: e2 },
                ) => n == n2 && e == e2,
                (DecodingKeyKind::SecretOrDer(_), DecodingKeyKind::RsaModulusExponent { .. })
                | (DecodingKeyKind::RsaModulusExponent { .. }, DecodingKeyKind::SecretOrDer(_)) => {
                    false
                }
            }
    }
}

fn rsa_size_ok(bits: usize) -> Result<(), KeyError> {
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall(bits));
    }
    Ok(())
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// An uncompressed point of the right length for the curve.
fn ec_point_ok(kind: KeyKind, point: &[u8]) -> Result<(), KeyError> {
    let len = match kind {
        KeyKind::P256 => 65,
        KeyKind::P384 => 97,
        KeyKind::Hmac | KeyKind::Rsa | KeyKind::Ed25519 => 0,
    };
    if point.len() != len || point.first() != Some(&4) {
        return Err(KeyError::Malformed(kind.label()));
    }
    Ok(())
}

/// Base64url without padding, as JOSE writes it (RFC 7515 section 2).
pub(crate) fn b64url() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Decode base64url (no padding, canonical trailing bits).
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    b64url().decode(s).ok()
}
