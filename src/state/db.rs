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

/// Run `f` on `table` in one write transaction; commit only if it returns Ok (redb's
/// copy-on-write commit: a crash leaves the old state or the new one, never a mix).
pub(crate) fn in_write<K, V, T, E>(
    db: &Database,
    table: redb::TableDefinition<'_, K, V>,
    f: impl FnOnce(&mut redb::Table<'_, K, V>) -> Result<T, E>,
) -> Result<T, E>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    E: From<redb::Error>,
{
    let txn = db.begin_write().map_err(|e| E::from(e.into()))?;
    let out = {
        let mut t = txn.open_table(table).map_err(|e| E::from(e.into()))?;
        f(&mut t)?
    };
    txn.commit().map_err(|e| E::from(e.into()))?;
    Ok(out)
}
