//! The operator's licensing keys: Ed25519, a private key that signs (PKCS#8 PEM, mode 0600)
//! and public keys the gateway trusts (SubjectPublicKeyInfo PEM, the `openssl pkey -pubout`
//! form). A key is named by its key id, the first 8 bytes of SHA-256 of the raw 32-byte public
//! key in hex; each license carries the id of the key that signed it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

use super::format::{self, License, LicenseError, Payload};
use crate::identity::sha256;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a key file could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file could not be written (or its folder created).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `keygen` never overwrites a key.
    #[error(
        "{} already exists: keygen never overwrites a key (choose another --out folder or --name)",
        path.display()
    )]
    Exists { path: PathBuf },
    /// Not a PEM Ed25519 public key.
    #[error("{} is not an Ed25519 public key: {reason}", path.display())]
    NotPublicKey { path: PathBuf, reason: String },
    /// Not a PEM PKCS#8 Ed25519 private key.
    #[error("{} is not an Ed25519 private key: {reason}", path.display())]
    NotPrivateKey { path: PathBuf, reason: String },
    /// The system random generator failed.
    #[error("cannot generate a key: the system random generator failed")]
    Random,
}

// === PublicKey ===

/// An Ed25519 public key that verifies licenses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
    kid: String,
}

impl PublicKey {
    pub fn from_raw(raw: [u8; 32]) -> Self {
        let kid = sha256(&raw)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        PublicKey { raw, kid }
    }

    /// Parse a `-----BEGIN PUBLIC KEY-----` PEM block. The error is the reason, for a message.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| format!("expected a \"-----BEGIN PUBLIC KEY-----\" PEM block ({e})"))?;
        der.strip_prefix(&ED25519_SPKI_PREFIX[..])
            .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
            .map(Self::from_raw)
            .ok_or_else(|| "the PEM block holds a key of another type".to_owned())
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|reason| KeyError::NotPublicKey {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn to_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        pem("PUBLIC KEY", &der)
    }

    /// The key id: 16 hex digits of SHA-256 of the raw key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifies(&self, signed: &[u8], signature: &[u8; 64]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(signed, signature)
            .is_ok()
    }
}

// === SigningKey ===

/// The private key that issues licenses.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public.kid)
    }
}

impl SigningKey {
    /// A new random key, in memory only (tests and benches; `keygen` writes files).
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Random)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|e| e.to_string())?;
        let raw = <[u8; 32]>::try_from(pair.public_key().as_ref())
            .map_err(|_| "the public half is not 32 bytes".to_owned())?;
        Ok(SigningKey {
            pair,
            public: PublicKey::from_raw(raw),
        })
    }

    /// Read a `-----BEGIN PRIVATE KEY-----` PKCS#8 Ed25519 key (v1 as from `openssl genpkey
    /// -algorithm ed25519`, or v2 as from `keygen`).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let not_key = |reason: String| KeyError::NotPrivateKey {
            path: path.to_path_buf(),
            reason,
        };
        let pem = fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| {
            not_key(format!(
                "expected a \"-----BEGIN PRIVATE KEY-----\" PEM block ({e})"
            ))
        })?;
        Self::from_pkcs8(der.secret_pkcs8_der()).map_err(not_key)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Sign `payload` (its `kid` is set to this key's) and return the license text.
    pub fn issue(&self, payload: &Payload) -> Result<String, LicenseError> {
        let mut payload = payload.clone();
        payload.kid = self.public.kid.clone();
        let signed = format::signed_part(&payload)?;
        Ok(format::join(&signed, &self.sign(signed.as_bytes())))
    }

    /// Sign arbitrary bytes (tests forge licenses with this).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

// === TrustedKeys ===

/// The issuer public keys a gateway accepts. Several at once, so keys can be rotated: issue
/// with the new key while licenses signed by the old one are still in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    /// The set of `keys`; a key given twice counts once.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut out: Vec<PublicKey> = Vec::new();
        for k in keys {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        TrustedKeys { keys: out }
    }

    /// The key with id `kid`. Linear: there are a handful of keys, and this is the admin path.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Decode `text` and verify its signature, in this order, so the error says what is
    /// wrong: envelope (version, truncation, re-encoding), payload JSON, signing key,
    /// signature, then what the payload says.
    pub fn verify(&self, text: &str) -> Result<Verified, LicenseError> {
        let env = format::open_envelope(text)?;
        let payload = match format::parse_payload(&env.payload) {
            Ok(p) => p,
            // An unreadable payload under a signature no trusted key made was changed after
            // signing; under a valid one, the issuer itself wrote it.
            Err(e @ LicenseError::Malformed(_)) => {
                let signed_by_us = self
                    .keys
                    .iter()
                    .any(|k| k.verifies(env.signed.as_bytes(), &env.signature));
                return Err(if signed_by_us {
                    e
                } else {
                    LicenseError::Tampered
                });
            }
            Err(e) => return Err(e),
        };
        let key = self
            .get(&payload.kid)
            .ok_or_else(|| LicenseError::UnknownKey {
                kid: printable_kid(&payload.kid),
            })?;
        if !key.verifies(env.signed.as_bytes(), &env.signature) {
            return Err(LicenseError::Tampered);
        }
        Ok(Verified {
            text: env.text.to_owned(),
            license: License::from_payload(payload)?,
        })
    }
}

/// A key id as found in an unverified payload, safe to print.
fn printable_kid(kid: &str) -> String {
    if kid.len() <= 16 && kid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        kid.to_owned()
    } else {
        "(not a key id)".to_owned()
    }
}

/// A license whose signature a trusted key verified. Only [`TrustedKeys::verify`] makes one,
/// so the book cannot be handed an unverified license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    text: String,
    license: License,
}

impl Verified {
    /// The license text as activated (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }
    pub fn license(&self) -> &License {
        &self.license
    }
    pub fn payload(&self) -> &Payload {
        &self.license.payload
    }
}

// === keygen ===

/// Where `keygen` wrote a key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    pub private: PathBuf,
    pub public: PathBuf,
    pub kid: String,
}

/// Write a new key pair to `dir/<name>.key` (mode 0600) and `dir/<name>.pub`. Never
/// overwrites: if either file exists, nothing is written. Each file appears whole or not at
/// all (written to a temporary name, synced, then hard-linked into place, which fails rather
/// than replace an existing file).
pub fn keygen(dir: &Path, name: &str) -> Result<KeyFiles, KeyError> {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    for p in [&private, &public] {
        if p.exists() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    create_dir_private(dir)?;
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
    let key = SigningKey::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Random)?;
    write_new(&private, pem("PRIVATE KEY", doc.as_ref()).as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, key.public.to_pem().as_bytes(), 0o644) {
        // Leave no half pair behind.
        let _ = fs::remove_file(&private);
        return Err(e);
    }
    Ok(KeyFiles {
        private,
        public,
        kid: key.public.kid,
    })
}

fn create_dir_private(dir: &Path) -> Result<(), KeyError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|source| KeyError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Create `path` with `contents` atomically and without replacing anything.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::SecureRandom::fill(&SystemRandom::new(), &mut nonce)
        .map_err(|_| KeyError::Random)?;
    let tmp = dir.join(format!(".portcullis-keygen-{}.tmp", hex(&nonce)));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(err(e)),
    }
    // The new name is durable once the folder is synced.
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
