//! The agent's folder: the pair it holds, read for its validity, and a new pair put in place
//! so that a crash at any point leaves a working pair (the old or the new), never a mix.

use std::path::{Path, PathBuf};

use super::AgentError;
use super::schedule::Validity;

pub const KEY: &str = "machine.key";
pub const CERT: &str = "machine.pem";
pub const LICENSE: &str = "machine.license";
/// Each new file is written beside its final name with this suffix first.
const STAGED: &str = "next";

fn staged(out: &Path, name: &str) -> PathBuf {
    out.join(format!("{name}.{STAGED}"))
}

fn failed(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    move |source| AgentError::File { path, source }
}

/// Put a new key, certificate and license in place: all three are written and synced beside
/// the old ones first, then renamed key, certificate, license (see [`finish`]).
pub fn install(out: &Path, key: &[u8], cert: &[u8], license: &[u8]) -> Result<(), AgentError> {
    std::fs::create_dir_all(out).map_err(failed(out))?;
    for (name, contents, private) in [
        (KEY, key, true),
        (CERT, cert, false),
        (LICENSE, license, false),
    ] {
        stage(&staged(out, name), contents, private)?;
    }
    for name in [KEY, CERT, LICENSE] {
        let to = out.join(name);
        std::fs::rename(staged(out, name), &to).map_err(failed(&to))?;
    }
    sync_dir(out);
    Ok(())
}

/// After a crash: while the staged key is there no rename happened, so the old pair stands
/// and the staged files go; once it is gone the key was renamed, so the rest follows it.
pub fn finish(out: &Path) -> Result<(), AgentError> {
    if staged(out, KEY).exists() {
        for name in [KEY, CERT, LICENSE] {
            let p = staged(out, name);
            if p.exists() {
                std::fs::remove_file(&p).map_err(failed(&p))?;
            }
        }
        return Ok(());
    }
    for name in [CERT, LICENSE] {
        let p = staged(out, name);
        if p.exists() {
            let to = out.join(name);
            std::fs::rename(&p, &to).map_err(failed(&to))?;
        }
    }
    Ok(())
}

/// The validity of the certificate in `out`; `None` when there is no pair to renew with.
pub fn held(out: &Path) -> Result<Option<Validity>, AgentError> {
    finish(out)?;
    let (cert, key) = (out.join(CERT), out.join(KEY));
    if !cert.exists() || !key.exists() {
        return Ok(None);
    }
    let pem = std::fs::read(&cert).map_err(failed(&cert))?;
    validity(&pem).map(Some).ok_or_else(|| {
        AgentError::Usage(format!(
            "{} is not a PEM certificate: remove it to enroll anew",
            cert.display()
        ))
    })
}

/// The validity of the first certificate of `pem`, in Unix seconds.
pub fn validity(pem: &[u8]) -> Option<Validity> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem).ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    let secs = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    Some(Validity {
        not_before: secs(c.validity().not_before),
        not_after: secs(c.validity().not_after),
    })
}

/// Write and sync `path`; a private key is created mode 0600.
fn stage(path: &Path, contents: &[u8], private: bool) -> Result<(), AgentError> {
    let mut opts = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(failed(path))?;
    std::io::Write::write_all(&mut f, contents).map_err(failed(path))?;
    f.sync_all().map_err(failed(path))
}

/// So the renames survive a power cut; best effort (not every platform syncs a folder).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_before_any_rename_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        install(out, b"old key", b"old cert", b"old lic").unwrap();
        std::fs::write(staged(out, KEY), b"new key").unwrap();
        std::fs::write(staged(out, CERT), b"new cert").unwrap();
        finish(out).unwrap();
        assert_eq!(std::fs::read(out.join(KEY)).unwrap(), b"old key");
        assert_eq!(std::fs::read(out.join(CERT)).unwrap(), b"old cert");
        assert!(!staged(out, CERT).exists());
    }

    #[test]
    fn a_crash_after_the_key_was_renamed_completes_the_new_pair() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        install(out, b"old key", b"old cert", b"old lic").unwrap();
        std::fs::write(out.join(KEY), b"new key").unwrap();
        std::fs::write(staged(out, CERT), b"new cert").unwrap();
        std::fs::write(staged(out, LICENSE), b"new lic").unwrap();
        finish(out).unwrap();
        assert_eq!(std::fs::read(out.join(CERT)).unwrap(), b"new cert");
        assert_eq!(std::fs::read(out.join(LICENSE)).unwrap(), b"new lic");
    }

    #[cfg(unix)]
    #[test]
    fn the_key_is_private_and_no_staged_file_is_left() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), b"k", b"c", b"l").unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
