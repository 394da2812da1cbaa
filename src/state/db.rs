//! The embedded database files (redb) behind machine licenses and the token issuer.

use std::fs::OpenOptions;
use std::path::Path;

use redb::Database;

/// Open the redb file at `path`, creating it first with mode 0600, so it is never readable by
/// others, not even briefly (redb would create it with the umask's mode). The folder must
/// exist. A damaged file is an error on open, never trusted. redb locks the file: a second
/// opener, in this process or another, gets `redb::Error::DatabaseAlreadyOpen`.
pub(crate) fn open_private(path: &Path, cache_bytes: usize) -> Result<Database, redb::Error> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(redb::Error::Io(e)),
    }
    Database::builder()
        .set_cache_size(cache_bytes)
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(redb::Error::from)
}
