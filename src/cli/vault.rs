//! `portcullis vault init | set | list | remove | rotate-master`: functions that return the
//! text to print or a typed error; `main.rs` only prints. Secrets come from standard input
//! or, when that is a terminal, a prompt that does not echo; never from the command line
//! (where `ps` and shell history would see them); values are never printed.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::vault::{Kind, MasterKey, MasterSource, Secret, Vault, VaultError};

/// The vault file and where its master key comes from (exactly one source).
#[derive(Debug, Args)]
pub struct VaultArgs {
    /// The vault file.
    #[arg(long, value_name = "FILE")]
    pub vault: PathBuf,
    #[command(flatten)]
    pub master: MasterArgs,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct MasterArgs {
    /// A file holding the master key (base64).
    #[arg(long, value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// An environment variable holding the master key (base64).
    #[arg(long, value_name = "VAR")]
    pub master_key_env: Option<String>,
    /// A systemd credential holding the master key: $CREDENTIALS_DIRECTORY/NAME.
    #[arg(long, value_name = "NAME")]
    pub master_key_credential: Option<String>,
}

impl MasterArgs {
    fn source(&self) -> MasterSource {
        match (
            &self.master_key_file,
            &self.master_key_env,
            &self.master_key_credential,
        ) {
            (Some(f), _, _) => MasterSource::File(f.clone()),
            (_, Some(v), _) => MasterSource::Env(v.clone()),
            (_, _, Some(c)) => MasterSource::Credential(c.clone()),
            // clap requires one of the group.
            (None, None, None) => MasterSource::Env("PORTCULLIS_VAULT_KEY".into()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Create an empty vault and a new master key, written to --new-master-key-file (mode
    /// 0600; refused if it exists). Keep that file off the gateway's backups.
    Init {
        /// The vault file to create (refused if it exists).
        #[arg(long, value_name = "FILE")]
        vault: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_master_key_file: PathBuf,
    },
    /// Add or replace a secret, read from standard input (one trailing newline dropped).
    /// basic: `user:password`.
    Set {
        name: String,
        /// api_key, basic, bearer, oauth2, or private_key (a PEM key the gateway signs
        /// with, e.g. [enrollment] ca_key_vault).
        #[arg(long)]
        kind: String,
        #[command(flatten)]
        at: VaultArgs,
    },
    /// Names, kinds and dates; never values.
    List {
        #[command(flatten)]
        at: VaultArgs,
    },
    /// Remove a secret.
    Remove {
        name: String,
        #[command(flatten)]
        at: VaultArgs,
    },
    /// Wrap the vault's data key under a new master key, written to --new-master-key-file;
    /// the secrets are not re-entered. The old key no longer opens the vault.
    RotateMaster {
        #[command(flatten)]
        at: VaultArgs,
        #[arg(long, value_name = "FILE")]
        new_master_key_file: PathBuf,
    },
}

/// Where `set` reads its secret.
pub enum SecretInput<'a> {
    /// Piped in: read to the end (one trailing newline dropped).
    Reader(&'a mut dyn Read),
    /// Typed at the terminal: asked for on `/dev/tty` with echo off (rpassword, which
    /// restores the terminal's mode however the read ends).
    Prompt,
}

impl SecretInput<'_> {
    /// Standard input, or the no-echo prompt when standard input is a terminal (a secret
    /// typed there would otherwise be shown on screen and kept in the scrollback).
    pub fn stdin(stdin: &mut std::io::Stdin) -> SecretInput<'_> {
        if std::io::IsTerminal::is_terminal(&*stdin) {
            SecretInput::Prompt
        } else {
            SecretInput::Reader(stdin)
        }
    }

    fn read(self, name: &str, kind: Kind) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let failed = |source| VaultError::Read {
            path: PathBuf::from("<stdin>"),
            source,
        };
        match self {
            SecretInput::Reader(r) => {
                let mut raw = Zeroizing::new(Vec::new());
                r.read_to_end(&mut raw).map_err(failed)?;
                Ok(raw)
            }
            SecretInput::Prompt => {
                let typed = Zeroizing::new(
                    rpassword::prompt_password(format!(
                        "secret for {name} ({}, not shown): ",
                        kind.label()
                    ))
                    .map_err(failed)?,
                );
                Ok(Zeroizing::new(typed.as_bytes().to_vec()))
            }
        }
    }
}

/// Run `command` at `now` (Unix seconds), reading a secret from `input` when it needs one.
pub fn run(command: VaultCommand, input: SecretInput<'_>, now: u64) -> Result<String, VaultError> {
    match command {
        VaultCommand::Init {
            vault,
            new_master_key_file,
        } => {
            if vault.exists() {
                return Err(VaultError::Write {
                    path: vault,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a vault is there already",
                    ),
                });
            }
            let master = MasterKey::generate()?;
            write_new_key(&new_master_key_file, &master)?;
            let v = Vault::create(&vault, &master)?;
            v.save()?;
            Ok(format!(
                "vault {} created; master key {} written to {}\n",
                vault.display(),
                master.id(),
                new_master_key_file.display()
            ))
        }
        VaultCommand::Set { name, kind, at } => {
            let kind = Kind::parse(&kind).ok_or_else(|| {
                VaultError::Format(
                    at.vault.clone(),
                    format!(
                        "--kind \"{kind}\" is not api_key, basic, bearer, oauth2 or private_key"
                    ),
                )
            })?;
            if !crate::vault::valid_name(&name) {
                // Before asking for the secret, not after it was typed.
                return Err(VaultError::BadName(name));
            }
            let raw = input.read(&name, kind)?;
            let mut len = raw.len();
            if raw[..len].ends_with(b"\n") {
                len -= 1;
            }
            if raw[..len].ends_with(b"\r") {
                len -= 1;
            }
            if len == 0 {
                return Err(VaultError::Format(
                    PathBuf::from("<stdin>"),
                    "the secret is empty: pipe it in (printf %s \"$KEY\" | portcullis vault set ...)".into(),
                ));
            }
            if kind == Kind::Basic && !raw[..len].contains(&b':') {
                return Err(VaultError::Format(
                    PathBuf::from("<stdin>"),
                    "a basic secret is user:password".into(),
                ));
            }
            if kind == Kind::OAuth2 && !raw[..len].contains(&b':') {
                return Err(VaultError::Format(
                    PathBuf::from("<stdin>"),
                    "an oauth2 secret is client_id:client_secret".into(),
                ));
            }
            if kind == Kind::PrivateKey
                && std::str::from_utf8(&raw[..len])
                    .ok()
                    .and_then(|pem| rcgen::KeyPair::from_pem(pem).ok())
                    .is_none()
            {
                return Err(VaultError::Format(
                    PathBuf::from("<stdin>"),
                    "a private_key secret is a PEM private key (PKCS#8) this gateway can sign with"
                        .into(),
                ));
            }
            let master = at.master.source().load()?;
            let mut v = Vault::open(&at.vault, &master)?;
            v.set(&name, kind, &Secret::new(raw[..len].to_vec()), now)?;
            v.save()?;
            Ok(format!(
                "{name} ({}) stored in {}\n",
                kind.label(),
                at.vault.display()
            ))
        }
        VaultCommand::List { at } => {
            let master = at.master.source().load()?;
            let v = Vault::open(&at.vault, &master)?;
            let mut out = String::from("name\tkind\tcreated\trotated\n");
            for r in v.records() {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    r.name,
                    r.kind.label(),
                    crate::license::dates::rfc3339(r.created),
                    crate::license::dates::rfc3339(r.rotated)
                ));
            }
            Ok(out)
        }
        VaultCommand::Remove { name, at } => {
            let master = at.master.source().load()?;
            let mut v = Vault::open(&at.vault, &master)?;
            v.remove(&name)?;
            v.save()?;
            Ok(format!("{name} removed from {}\n", at.vault.display()))
        }
        VaultCommand::RotateMaster {
            at,
            new_master_key_file,
        } => {
            let master = at.master.source().load()?;
            let mut v = Vault::open(&at.vault, &master)?;
            let new = MasterKey::generate()?;
            write_new_key(&new_master_key_file, &new)?;
            v.rotate_master(&new)?;
            v.save()?;
            Ok(format!(
                "vault {} now opens with master key {} ({}); {} no longer does\n",
                at.vault.display(),
                new.id(),
                new_master_key_file.display(),
                master.id()
            ))
        }
    }
}

/// Write a new master key file, mode 0600, refusing to overwrite one.
fn write_new_key(path: &PathBuf, key: &MasterKey) -> Result<(), VaultError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| VaultError::Write {
        path: path.clone(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(key.to_base64().as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)
}
