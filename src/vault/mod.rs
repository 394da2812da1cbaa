//! The credential vault: a file of named secrets, each sealed with AES-256-GCM under a data
//! key, the data key wrapped by a master key that never sits in the config (a file, an
//! environment variable, or a systemd credential). A record's name and kind are its
//! associated data, so a record moved under another name does not open. Rotating the master
//! key re-wraps the data key; the secrets are not touched. Writes are atomic (a temporary
//! file, fsync, rename, fsync of the folder).
//!
//! AES-256-GCM from aws-lc-rs (rustls' provider already), base64 and JSON: nothing new built.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// What a record holds, which decides how it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A key sent in a header or a query parameter, as is.
    ApiKey,
    /// `user:password`, sent as `Authorization: Basic`.
    Basic,
    /// A token sent as `Authorization: Bearer`.
    Bearer,
    /// An OAuth2 client, `client_id:client_secret`: the gateway runs the client credentials
    /// grant with it and sends the token it gets as `Authorization: Bearer`.
    #[serde(rename = "oauth2")]
    OAuth2,
    /// A PEM private key the gateway signs with (the enrollment CA's): never injected into
    /// a request.
    PrivateKey,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "api_key" => Some(Kind::ApiKey),
            "basic" => Some(Kind::Basic),
            "bearer" => Some(Kind::Bearer),
            "oauth2" => Some(Kind::OAuth2),
            "private_key" => Some(Kind::PrivateKey),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::ApiKey => "api_key",
            Kind::Basic => "basic",
            Kind::Bearer => "bearer",
            Kind::OAuth2 => "oauth2",
            Kind::PrivateKey => "private_key",
        }
    }
}

/// A secret in memory: wiped on drop, never printed.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The master key: 32 bytes.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self, VaultError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| VaultError::Random)?;
        Ok(MasterKey(k))
    }

    /// From its base64 text (a file's content, an environment variable); surrounding
    /// whitespace ignored.
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        let bytes = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| VaultError::BadMasterKey("not base64"))?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::BadMasterKey("not 32 bytes"))?;
        Ok(MasterKey(Zeroizing::new(arr)))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(&self.0[..]))
    }

    /// A short public id (the first 8 bytes of its SHA-256): tells keys apart, reveals
    /// nothing usable.
    pub fn id(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0[..]);
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where the master key comes from: never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSource {
    /// A file holding the key in base64 (mode 0600, outside the config folder's backups).
    File(PathBuf),
    /// An environment variable holding the key in base64.
    Env(String),
    /// A systemd credential (`LoadCredential=NAME:...`): `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

impl MasterSource {
    pub fn load(&self) -> Result<MasterKey, VaultError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map(Zeroizing::new)
                .map_err(|source| VaultError::Read { path, source })
        };
        let text = match self {
            MasterSource::File(p) => read(p.clone())?,
            MasterSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| {
                VaultError::NoMasterKey(format!("environment variable {var} is not set"))
            })?),
            MasterSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    VaultError::NoMasterKey(format!(
                        "systemd credential {name}: CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"
                    ))
                })?;
                read(PathBuf::from(dir).join(name))?
            }
        };
        MasterKey::from_base64(&text)
    }
}

/// Why the vault cannot be read or written. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a vault file: {1}")]
    Format(PathBuf, String),
    #[error("the master key is wrong for this vault (vault key id {expected}, given {given})")]
    WrongMasterKey { expected: String, given: String },
    #[error("no master key: {0}")]
    NoMasterKey(String),
    #[error("the master key is malformed: {0}")]
    BadMasterKey(&'static str),
    #[error("record \"{0}\" does not open: it was altered, or moved from another name")]
    Tampered(String),
    #[error("no record is named \"{0}\"")]
    NoSuchRecord(String),
    #[error("a record name is 1 to 64 characters of A-Z a-z 0-9 _ . -: \"{0}\"")]
    BadName(String),
    #[error("the system random generator failed")]
    Random,
}

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    /// The id of the master key that wraps `data_key`.
    master_key_id: String,
    /// The data key sealed under the master key: base64 of nonce || ciphertext || tag.
    data_key: String,
    records: Vec<Record>,
}

/// One secret as stored: its name, kind and dates in clear, its value sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub name: String,
    pub kind: Kind,
    /// Unix seconds.
    pub created: u64,
    pub rotated: u64,
    /// The data key's id the value is sealed under.
    pub key_id: String,
    sealed: String,
}

/// An open vault: its records and the data key (in memory only while open).
pub struct Vault {
    path: PathBuf,
    file: File,
    data_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("records", &self.file.records.len())
            .finish()
    }
}

const DATA_KEY_AAD: &[u8] = b"portcullis vault v1 data key";

impl Vault {
    /// A new, empty vault at `path` under `master` (not written until [`Vault::save`]).
    pub fn create(path: &Path, master: &MasterKey) -> Result<Self, VaultError> {
        let mut data_key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut data_key[..]).map_err(|_| VaultError::Random)?;
        let wrapped = seal(&master.0, DATA_KEY_AAD, &data_key[..])?;
        Ok(Vault {
            path: path.to_owned(),
            file: File {
                version: 1,
                master_key_id: master.id(),
                data_key: wrapped,
                records: Vec::new(),
            },
            data_key,
        })
    }

    /// Open the vault at `path` with `master`; every record is checked to open, so a
    /// tampered vault is refused whole, naming the record.
    pub fn open(path: &Path, master: &MasterKey) -> Result<Self, VaultError> {
        let text = std::fs::read_to_string(path).map_err(|source| VaultError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::open_text(path, &text, master)
    }

    /// [`Vault::open`] on the file's text, read already (`path` is where it came from, for
    /// errors and a later save). The fuzz target feeds it any bytes.
    pub fn open_text(path: &Path, text: &str, master: &MasterKey) -> Result<Self, VaultError> {
        let file: File = serde_json::from_str(text)
            .map_err(|e| VaultError::Format(path.to_owned(), e.to_string()))?;
        if file.version != 1 {
            return Err(VaultError::Format(
                path.to_owned(),
                format!("version {} is not known", file.version),
            ));
        }
        let wrong = || VaultError::WrongMasterKey {
            expected: file.master_key_id.clone(),
            given: master.id(),
        };
        if file.master_key_id != master.id() {
            return Err(wrong());
        }
        let key = Zeroizing::new(open(&master.0, DATA_KEY_AAD, &file.data_key).ok_or_else(wrong)?);
        let data_key: [u8; 32] = key.as_slice().try_into().map_err(|_| wrong())?;
        let vault = Vault {
            path: path.to_owned(),
            file,
            data_key: Zeroizing::new(data_key),
        };
        for r in &vault.file.records {
            vault.get(&r.name)?;
        }
        Ok(vault)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn records(&self) -> &[Record] {
        &self.file.records
    }

    /// The data key's id (records name it).
    fn key_id(&self) -> String {
        MasterKey(self.data_key.clone()).id()
    }

    /// The secret of record `name`, with its kind.
    pub fn get(&self, name: &str) -> Result<(Kind, Secret), VaultError> {
        let r = self
            .file
            .records
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| VaultError::NoSuchRecord(name.to_owned()))?;
        let value = open(&self.data_key, &record_aad(&r.name, r.kind), &r.sealed)
            .ok_or_else(|| VaultError::Tampered(r.name.clone()))?;
        Ok((r.kind, Secret::new(value)))
    }

    /// The data key, lent to a store that keeps its own secrets sealed under it (the token
    /// issuer's signing keys).
    pub fn sealer(&self) -> Sealer {
        Sealer {
            key: std::sync::Arc::new(self.data_key.clone()),
            id: self.key_id().into(),
        }
    }

    /// Add or replace record `name` at `now` (Unix seconds).
    pub fn set(
        &mut self,
        name: &str,
        kind: Kind,
        secret: &Secret,
        now: u64,
    ) -> Result<(), VaultError> {
        if !valid_name(name) {
            return Err(VaultError::BadName(name.to_owned()));
        }
        let sealed = seal(&self.data_key, &record_aad(name, kind), secret.expose())?;
        let key_id = self.key_id();
        match self.file.records.iter_mut().find(|r| r.name == name) {
            Some(r) => {
                r.kind = kind;
                r.rotated = now;
                r.key_id = key_id;
                r.sealed = sealed;
            }
            None => self.file.records.push(Record {
                name: name.to_owned(),
                kind,
                created: now,
                rotated: now,
                key_id,
                sealed,
            }),
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), VaultError> {
        let before = self.file.records.len();
        self.file.records.retain(|r| r.name != name);
        if self.file.records.len() == before {
            return Err(VaultError::NoSuchRecord(name.to_owned()));
        }
        Ok(())
    }

    /// Wrap the data key under `new` instead: the records stay as they are.
    pub fn rotate_master(&mut self, new: &MasterKey) -> Result<(), VaultError> {
        self.file.data_key = seal(&new.0, DATA_KEY_AAD, &self.data_key[..])?;
        self.file.master_key_id = new.id();
        Ok(())
    }

    /// Write the vault atomically: a temporary file beside it, fsync, rename over it,
    /// fsync of the folder. A crash leaves the old file or the new one, never a mix.
    pub fn save(&self) -> Result<(), VaultError> {
        let err = |source| VaultError::Write {
            path: self.path.clone(),
            source,
        };
        let text =
            serde_json::to_vec_pretty(&self.file).map_err(|e| err(std::io::Error::other(e)))?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        {
            use std::io::Write;
            #[cfg(unix)]
            use std::os::unix::fs::OpenOptionsExt;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts.open(&tmp).map_err(err)?;
            crash_point("created");
            let (first, rest) = text.split_at(text.len() / 2);
            f.write_all(first).map_err(err)?;
            crash_point("half-written");
            f.write_all(rest).map_err(err)?;
            crash_point("written");
            f.sync_all().map_err(err)?;
            crash_point("synced");
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        crash_point("renamed");
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        crash_point("folder-synced");
        Ok(())
    }
}

/// The vault's data key as another store uses it: secrets kept elsewhere (the token issuer's
/// signing keys in its database) are sealed under it, so they are encrypted at rest like the
/// vault's own records and survive a master key rotation untouched (a rotation re-wraps only
/// the data key). Each use binds the value to its own associated data. Debug shows the id.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<Zeroizing<[u8; 32]>>,
    id: std::sync::Arc<str>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", self.id)
    }
}

impl PartialEq for Sealer {
    fn eq(&self, o: &Self) -> bool {
        // The id is a digest of the key.
        self.id == o.id
    }
}

impl Sealer {
    /// The data key's public id, as the vault's records name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `plain` sealed with AES-256-GCM under the data key, bound to `aad`: base64 of
    /// nonce || ciphertext || tag.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<String, VaultError> {
        seal(&self.key, aad, plain)
    }

    /// The value [`seal`](Self::seal) sealed with the same `aad`; `None` if it was sealed
    /// under another key or aad, or has been altered.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Option<Zeroizing<Vec<u8>>> {
        open(&self.key, aad, sealed).map(Zeroizing::new)
    }
}

/// The steps of [`Vault::save`], in order, as the crash-safety test names them.
pub const SAVE_STEPS: [&str; 6] = [
    "created",
    "half-written",
    "written",
    "synced",
    "renamed",
    "folder-synced",
];

/// Debug builds (the tests' binary) only: `PORTCULLIS_VAULT_ABORT_AT=<step>` kills the
/// process right after that step of a save, as a crash or `kill -9` would, so a test can
/// prove every step leaves a vault that opens. Release builds have no such switch.
#[cfg(debug_assertions)]
fn crash_point(step: &str) {
    if std::env::var_os("PORTCULLIS_VAULT_ABORT_AT").is_some_and(|s| s == step) {
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn crash_point(_step: &str) {}

/// 1-64 of `A-Z a-z 0-9 _ . -`.
pub fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A record is bound to its name and kind: sealed under another, it does not open.
fn record_aad(name: &str, kind: Kind) -> Vec<u8> {
    let mut aad = b"portcullis vault v1 record\0".to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(kind.label().as_bytes());
    aad
}

fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<String, VaultError> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| VaultError::Random)?);
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| VaultError::Random)?;
    let mut buf = Zeroizing::new(plain.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut *buf,
    )
    .map_err(|_| VaultError::Random)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(B64.encode(out))
}

fn open(key: &[u8; 32], aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let bytes = B64.decode(sealed).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = ct.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    let out = plain.to_vec();
    zeroize::Zeroize::zeroize(&mut buf);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> (tempfile::TempDir, PathBuf, MasterKey) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        (dir, path, MasterKey::generate().unwrap())
    }

    #[test]
    fn a_secret_round_trips_and_the_file_holds_no_byte_of_it_in_clear() {
        let (_d, path, master) = vault();
        let mut v = Vault::create(&path, &master).unwrap();
        let secret = b"sk_live_7f3a9c1e5b2d4f6a8c0e";
        v.set("erp", Kind::ApiKey, &Secret::new(secret.to_vec()), 100)
            .unwrap();
        v.save().unwrap();
        let text = std::fs::read(&path).unwrap();
        assert!(!text.windows(8).any(|w| secret.windows(8).any(|s| s == w)));
        let v = Vault::open(&path, &master).unwrap();
        let (kind, got) = v.get("erp").unwrap();
        assert_eq!((kind, got.expose()), (Kind::ApiKey, &secret[..]));
        assert_eq!(format!("{got:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn a_flipped_byte_a_moved_record_or_a_wrong_master_key_is_refused_by_name() {
        let (_d, path, master) = vault();
        let mut v = Vault::create(&path, &master).unwrap();
        v.set("a", Kind::Bearer, &Secret::new(b"token-a".to_vec()), 1)
            .unwrap();
        v.set("b", Kind::Bearer, &Secret::new(b"token-b".to_vec()), 1)
            .unwrap();
        v.save().unwrap();
        let good = std::fs::read_to_string(&path).unwrap();

        // A record's sealed value moved under the other name.
        let mut f: File = serde_json::from_str(&good).unwrap();
        let sealed_a = f.records[0].sealed.clone();
        f.records[1].sealed = sealed_a;
        std::fs::write(&path, serde_json::to_string(&f).unwrap()).unwrap();
        let e = Vault::open(&path, &master).unwrap_err();
        assert!(matches!(&e, VaultError::Tampered(n) if n == "b"), "{e}");

        // A flipped byte in a record.
        let mut f: File = serde_json::from_str(&good).unwrap();
        let mut raw = B64.decode(&f.records[0].sealed).unwrap();
        raw[20] ^= 1;
        f.records[0].sealed = B64.encode(raw);
        std::fs::write(&path, serde_json::to_string(&f).unwrap()).unwrap();
        let e = Vault::open(&path, &master).unwrap_err();
        assert!(matches!(&e, VaultError::Tampered(n) if n == "a"), "{e}");

        // The kind changed in clear: the record no longer opens either.
        let mut f: File = serde_json::from_str(&good).unwrap();
        f.records[0].kind = Kind::Basic;
        std::fs::write(&path, serde_json::to_string(&f).unwrap()).unwrap();
        assert!(matches!(
            Vault::open(&path, &master),
            Err(VaultError::Tampered(_))
        ));

        std::fs::write(&path, &good).unwrap();
        let other = MasterKey::generate().unwrap();
        assert!(matches!(
            Vault::open(&path, &other),
            Err(VaultError::WrongMasterKey { .. })
        ));
    }

    #[test]
    fn rotating_the_master_key_keeps_every_secret_and_retires_the_old_key() {
        let (_d, path, master) = vault();
        let mut v = Vault::create(&path, &master).unwrap();
        v.set("k", Kind::Basic, &Secret::new(b"user:pw".to_vec()), 1)
            .unwrap();
        let sealed_before = v.records()[0].sealed.clone();
        let new = MasterKey::generate().unwrap();
        v.rotate_master(&new).unwrap();
        v.save().unwrap();
        let v = Vault::open(&path, &new).unwrap();
        assert_eq!(v.get("k").unwrap().1.expose(), b"user:pw");
        assert_eq!(
            v.records()[0].sealed,
            sealed_before,
            "records not re-sealed"
        );
        assert!(Vault::open(&path, &master).is_err());
    }

    #[test]
    fn a_save_cut_off_before_its_rename_leaves_the_old_vault_whole() {
        let (_d, path, master) = vault();
        let mut v = Vault::create(&path, &master).unwrap();
        v.set("k", Kind::Bearer, &Secret::new(b"old".to_vec()), 1)
            .unwrap();
        v.save().unwrap();
        // A crash at any point before the rename leaves at most a partial temporary file.
        let tmp = path.with_file_name(".vault.json.tmp");
        let next = std::fs::read(&path).unwrap();
        for cut in [0, 1, next.len() / 2, next.len() - 1] {
            std::fs::write(&tmp, &next[..cut]).unwrap();
            let old = Vault::open(&path, &master).unwrap();
            assert_eq!(old.get("k").unwrap().1.expose(), b"old");
        }
        // The next save replaces both.
        v.set("k", Kind::Bearer, &Secret::new(b"new".to_vec()), 2)
            .unwrap();
        v.save().unwrap();
        assert!(!tmp.exists());
        let new = Vault::open(&path, &master).unwrap();
        assert_eq!(new.get("k").unwrap().1.expose(), b"new");
    }

    #[test]
    fn names_are_checked_and_missing_records_named() {
        let (_d, path, master) = vault();
        let mut v = Vault::create(&path, &master).unwrap();
        assert!(
            v.set("a b", Kind::ApiKey, &Secret::new(vec![1]), 0)
                .is_err()
        );
        assert!(matches!(v.get("x"), Err(VaultError::NoSuchRecord(_))));
        assert!(matches!(v.remove("x"), Err(VaultError::NoSuchRecord(_))));
    }

    #[test]
    fn master_keys_parse_from_base64_and_refuse_the_wrong_length() {
        let k = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&format!(" {}\n", &*k.to_base64())).unwrap();
        assert_eq!(k.id(), again.id());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }
}
