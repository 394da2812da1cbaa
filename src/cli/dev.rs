//! `portcullis dev-pki [--root DIR]`: the files `config/portcullis.example.toml` names, made
//! for a development machine, so `portcullis check --config config/portcullis.example.toml`
//! passes on a fresh clone: a throwaway CA and a localhost server certificate in `certs/`
//! (the CA doubles as the agents' CA), two license signing keys in `keys/`, and the `var/`
//! folder the stores go in. Nothing made here belongs in production or in git (`certs/` and
//! `keys/` ignore them).

use std::path::{Path, PathBuf};

/// Why the files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] crate::demo::DemoError),
    #[error(transparent)]
    Key(#[from] crate::license::keys::KeyError),
    /// Files from an earlier run are kept: nothing is overwritten.
    #[error("{} already exists: dev-pki never overwrites (remove certs/ and keys/ to start again)", path.display())]
    Exists { path: PathBuf },
}

/// Make the files under `root` (the repository's root); the text to print.
pub fn run(root: &Path) -> Result<String, DevError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevError::Io { path, source }
    };
    let certs = root.join("certs");
    let keys = root.join("keys");
    let var = root.join("var");
    for d in [&certs, &keys, &var] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let server = certs.join("server.pem");
    if server.exists() {
        return Err(DevError::Exists { path: server });
    }
    // The demo's generator: a CA, a localhost server certificate and a client certificate.
    let pki = crate::demo::generate_pki(&certs)?;
    let agents_ca = certs.join("agents-ca.pem");
    std::fs::copy(&pki.ca, &agents_ca).map_err(io(&agents_ca))?;
    for name in ["license-2026", "license-2027"] {
        crate::license::keys::keygen(&keys, name)?;
    }
    Ok(format!(
        "development files made (throwaway: never for production):\n  {}  (server certificate and key for localhost, the CA, a client certificate)\n  {}  (license signing keys license-2026, license-2027)\n  {}  (the stores)\nnow: portcullis check --config config/portcullis.example.toml\n",
        certs.display(),
        keys.display(),
        var.display()
    ))
}
