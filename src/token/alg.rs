//! The signature algorithms we accept, and which kind of key can check which.

use jsonwebtoken::Algorithm;

/// The signature algorithms accepted; anything else (including `none`) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    RS256,
    PS256,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 6] = [
        Alg::HS256,
        Alg::RS256,
        Alg::PS256,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JOSE name (RFC 7518), case-sensitive.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Parse a JOSE name exactly: `hs256` or `none` are not algorithms we accept.
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == s)
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::RS256 => Algorithm::RS256,
            Alg::PS256 => Algorithm::PS256,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Alg::HS256 => 1,
            Alg::RS256 => 2,
            Alg::PS256 => 4,
            Alg::ES256 => 8,
            Alg::ES384 => 16,
            Alg::EdDSA => 32,
        }
    }
}

/// A small set of algorithms (a bit set: checked on every verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u8);

impl AlgSet {
    pub fn of(algs: &[Alg]) -> AlgSet {
        AlgSet(algs.iter().fold(0, |acc, a| acc | a.bit()))
    }
    pub fn contains(self, a: Alg) -> bool {
        self.0 & a.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }
    pub fn iter(self) -> impl Iterator<Item = Alg> {
        Alg::ALL.into_iter().filter(move |a| self.contains(*a))
    }
    /// "RS256, PS256", or "no algorithm", for messages.
    pub fn names(self) -> String {
        if self.is_empty() {
            return "no algorithm".to_owned();
        }
        self.iter().map(Alg::name).collect::<Vec<_>>().join(", ")
    }
}

/// What the key material is, as read from the key itself (never from a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// The algorithms this kind of key can check at all.
    pub fn algorithms(self) -> AlgSet {
        match self {
            KeyKind::Hmac => AlgSet::of(&[Alg::HS256]),
            KeyKind::Rsa => AlgSet::of(&[Alg::RS256, Alg::PS256]),
            KeyKind::P256 => AlgSet::of(&[Alg::ES256]),
            KeyKind::P384 => AlgSet::of(&[Alg::ES384]),
            KeyKind::Ed25519 => AlgSet::of(&[Alg::EdDSA]),
        }
    }

    /// For messages: "RSA", "EC P-256"...
    pub fn label(self) -> &'static str {
        match self {
            KeyKind::Hmac => "HMAC secret",
            KeyKind::Rsa => "RSA",
            KeyKind::P256 => "EC P-256",
            KeyKind::P384 => "EC P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}
