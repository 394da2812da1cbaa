//! `portcullis state import | export --config FILE`: move a gateway's lasting state from the
//! embedded files its config names (`[issuer] store`, `[licenses] store`) into the config's
//! `[state]` Redis, for an operator who outgrows one machine, and back. Run with the gateways
//! stopped: the files have one opener, and a gateway writing meanwhile would be missed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use clap::Subcommand;

use crate::state::issuer::{Embedded, IssuerState};
use crate::state::licenses::{EmbeddedLicenses, LicenseStore};
use crate::state::redis::RedisStore;
use crate::state::transfer::{Moved, TransferError, copy_issuer, copy_licenses};

/// `portcullis state ...`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy the embedded files' state (issuer clients, keys, refresh families, revocations;
    /// licenses) into the config's [state] Redis, which must hold none of it yet.
    Import {
        /// The gateway's config: its [state] (a redis backend) and its store files.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Copy the config's [state] Redis into its embedded store files, which must be new or
    /// empty.
    Export {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Why a move failed (printed as `error: ...`, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StateCliError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Transfer(#[from] Box<TransferError>),
}

/// One kind of state on both sides: (Redis, file).
type Pair<T> = Option<(Box<T>, Box<T>)>;

/// Both sides of a move, open.
struct Sides {
    issuer: Pair<dyn IssuerState>,
    licenses: Pair<dyn LicenseStore>,
    /// The Redis connections are set up inside it.
    _runtime: tokio::runtime::Runtime,
}

fn open(config: &std::path::Path) -> Result<Sides, StateCliError> {
    let loaded = crate::config::load_file(config, SystemTime::now())
        .map_err(|e| StateCliError::Config(e.to_string()))?;
    let snap = loaded.snapshot;
    let Some(settings) = snap.shared_state.clone() else {
        return Err(StateCliError::Config(format!(
            "{}: [state] backend = \"redis\" is needed: it names the Redis to move to or from",
            config.display()
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StateCliError::Config(format!("cannot start the async runtime: {e}")))?;
    let shared = {
        let _in = runtime.enter();
        Arc::new(RedisStore::connect(settings).map_err(|e| StateCliError::Config(e.to_string()))?)
    };
    let store_error = |e: crate::state::issuer::StoreError| StateCliError::Config(e.to_string());
    let license_error =
        |e: crate::state::licenses::StoreError| StateCliError::Config(e.to_string());
    let issuer: Pair<dyn IssuerState> = match &snap.issuer {
        Some(i) => Some((
            Box::new(crate::state::redis::issuer::RedisIssuerState::new(
                Arc::clone(&shared),
            )),
            Box::new(Embedded::open(&i.store).map_err(store_error)?),
        )),
        None => None,
    };
    let licenses: Pair<dyn LicenseStore> = match &snap.licenses {
        Some(l) => Some((
            Box::new(crate::state::redis::licenses::RedisLicenses::new(
                Arc::clone(&shared),
            )),
            Box::new(EmbeddedLicenses::open(&l.store).map_err(license_error)?),
        )),
        None => None,
    };
    Ok(Sides {
        issuer,
        licenses,
        _runtime: runtime,
    })
}

/// (from, to) of a pair, by direction.
fn ends<'a, T: ?Sized>(to_redis: bool, redis: &'a T, file: &'a T) -> (&'a T, &'a T) {
    if to_redis {
        (file, redis)
    } else {
        (redis, file)
    }
}

/// Run one `state` command; the text to print.
pub fn run(cmd: StateCommand) -> Result<String, StateCliError> {
    let mut moved = Moved::default();
    let (config, to_redis) = match &cmd {
        StateCommand::Import { config } => (config, true),
        StateCommand::Export { config } => (config, false),
    };
    let sides = open(config)?;
    if let Some((redis, file)) = &sides.issuer {
        let (from, to) = ends(to_redis, &**redis, &**file);
        copy_issuer(from, to, &mut moved).map_err(Box::new)?;
    }
    if let Some((redis, file)) = &sides.licenses {
        let (from, to) = ends(to_redis, &**redis, &**file);
        copy_licenses(from, to, &mut moved).map_err(Box::new)?;
    }
    Ok(format!(
        "{}: {moved}\n(rate-limit state and the current window's quota counts are not moved)\n",
        if to_redis {
            "imported into Redis"
        } else {
            "exported to the files"
        }
    ))
}
