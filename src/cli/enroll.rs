//! `portcullis enroll token`: a one-time enrollment token for a machine, printed once;
//! `portcullis enroll revoke MACHINE`: its license, unspent tokens and record revoked.
//!
//! Like `client add`: with `--config FILE` whose plain-HTTP `[admin]` listener answers, the
//! running gateway does it (`POST /enrollment/tokens`, `DELETE /enrollment/machines/{m}`);
//! otherwise the gateway is stopped and the command opens the `[enrollment] tokens` file
//! (and for `revoke` the `[licenses] store`) itself (redb allows one opener), and appends
//! the change to `[admin] audit_log` as the admin API would have (source `cli`).

use std::path::PathBuf;
use std::time::SystemTime;

use clap::Subcommand;

/// `portcullis enroll ...`.
#[derive(Debug, Subcommand)]
pub enum EnrollCommand {
    /// Make a one-time enrollment token and print it (this once: only its hash is stored).
    /// The machine spends it on `POST /.well-known/est/simpleenroll`.
    Token {
        /// The gateway's config file (its [admin] and [enrollment] sections).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The machine's name: its certificate's CN and its license's machine_id.
        #[arg(long)]
        machine: String,
        /// The [[enrollment.templates]] its license is made from.
        #[arg(long = "license-template", value_name = "T")]
        template: String,
        /// How long the token can wait to be spent (1m to 30d).
        #[arg(long, default_value = "24h")]
        expires: String,
    },
    /// A reference EST client: make a key and a CSR here, enroll with a token, write
    /// machine.key, machine.pem and machine.license into --out, then keep running and
    /// re-enroll at two thirds of each certificate's lifetime (--once: one step and exit).
    Agent(super::agent::AgentArgs),
    /// Revoke an enrolled machine: its license (refused at once on licensed routes), its
    /// unspent tokens, and its record (its certificate cannot re-enroll).
    Revoke {
        /// The gateway's config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The machine's name.
        machine: String,
    },
}

/// Why a command failed (printed as `error: ...`, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum EnrollCliError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Admin(#[from] super::admin_api::AdminCallError),
    #[error(transparent)]
    Mint(#[from] crate::enrollment::MintError),
    #[error(transparent)]
    Store(#[from] crate::enrollment::StoreError),
    #[error(transparent)]
    Agent(#[from] super::agent::AgentError),
    /// Boxed: a rare, large error.
    #[error(transparent)]
    Revoke(Box<crate::enrollment::RevokeMachineError>),
}

/// Run one `enroll` command as of `now`; the text to print.
pub fn run(cmd: EnrollCommand, now: SystemTime) -> Result<String, EnrollCliError> {
    match cmd {
        EnrollCommand::Token {
            config,
            machine,
            template,
            expires,
        } => {
            let body =
                serde_json::json!({"machine": machine, "template": template, "expires": expires});
            if let Some(v) = through_admin(
                &config,
                http::Method::POST,
                "/enrollment/tokens",
                Some(body),
            )? {
                return Ok(printed(&v));
            }
            let loaded = load(&config, now)?;
            let settings = enrollment_of(&config, &loaded)?;
            let store = crate::enrollment::EnrollmentTokens::open(&settings.tokens)?;
            let at = crate::license::dates::unix(now);
            let minted =
                crate::enrollment::mint(settings, &store, &machine, &template, &expires, at);
            let result = match &minted {
                Ok(_) => "ok",
                Err(e) if e.is_bad_request() => "bad_request",
                Err(_) => "enrollment_store_failed",
            };
            let warning = audit(settings, "enrollment.token", &machine, result, now);
            Ok(printed(&minted?.to_json()) + &warning)
        }
        EnrollCommand::Agent(args) => Ok(super::agent::run(args)?),
        EnrollCommand::Revoke { config, machine } => {
            let path = format!("/enrollment/machines/{machine}");
            if let Some(v) = through_admin(&config, http::Method::DELETE, &path, None)? {
                return Ok(format!("revoked {v}\n"));
            }
            let loaded = load(&config, now)?;
            let settings = enrollment_of(&config, &loaded)?;
            let snapshot = &loaded.snapshot;
            let (Some(l), None) = (&snapshot.licenses, &snapshot.shared_state) else {
                return Err(EnrollCliError::Config(
                    "the licenses are on the fleet's Redis: revoke through a running gateway's admin API".into(),
                ));
            };
            let tokens = crate::enrollment::EnrollmentTokens::open(&settings.tokens)?;
            let licensing = crate::state::licenses::Licensing::open(
                l,
                snapshot.limit_keys,
                crate::license::dates::unix(now),
            )
            .map_err(|e| EnrollCliError::Config(e.to_string()))?;
            let done =
                crate::enrollment::revoke_machine(&tokens, &licensing.service, &machine, now);
            let result = match &done {
                Ok(d) if d.is_unknown() => "machine_not_found",
                Ok(_) => "ok",
                Err(_) => "enrollment_store_failed",
            };
            let warning = audit(settings, "enrollment.revoke", &machine, result, now);
            let done = done.map_err(|e| EnrollCliError::Revoke(Box::new(e)))?;
            if done.is_unknown() {
                return Err(EnrollCliError::Config(format!(
                    "no enrolled machine or token is named \"{machine}\""
                )));
            }
            Ok(format!("revoked {}\n", done.to_json()) + &warning)
        }
    }
}

/// The running gateway's answer (2xx), or `None` when no admin API answers.
fn through_admin(
    config: &std::path::Path,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, EnrollCliError> {
    let Some(target) = super::admin_api::target(config)? else {
        return Ok(None);
    };
    let Some((status, v)) = target.call(method, path, body)? else {
        return Ok(None);
    };
    if !status.is_success() {
        let why = v["message"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or("refused");
        return Err(EnrollCliError::Config(format!(
            "the gateway's admin API at {} refused: {status} {why}",
            target.addr
        )));
    }
    Ok(Some(v))
}

fn load(
    config: &std::path::Path,
    now: SystemTime,
) -> Result<crate::config::Loaded, EnrollCliError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| EnrollCliError::Config(format!("cannot read {}: {e}", config.display())))?;
    crate::config::load_str(config, &text, now).map_err(|e| EnrollCliError::Config(e.to_string()))
}

fn enrollment_of<'a>(
    config: &std::path::Path,
    loaded: &'a crate::config::Loaded,
) -> Result<&'a crate::enrollment::EnrollmentSettings, EnrollCliError> {
    loaded.snapshot.enrollment.as_ref().ok_or_else(|| {
        EnrollCliError::Config(format!("{}: no [enrollment] section", config.display()))
    })
}

/// Append an offline change to the audit trail; a warning line to print when the file did
/// not take it (the change is made: failing the command would hide that).
fn audit(
    settings: &crate::enrollment::EnrollmentSettings,
    action: &'static str,
    machine: &str,
    result: &str,
    now: SystemTime,
) -> String {
    use crate::record::audit::{Entry, Source, bounded, record_blocking};
    // Who ran it, as far as the environment says: a hint for the trail, not an authentication.
    let identity = match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) => format!("cli:{user}"),
        Err(_) => "cli".to_owned(),
    };
    let id = crate::request_id::RequestId::next();
    let entry = Entry {
        time: Entry::time(now),
        source: Source::Cli,
        identity: Some(bounded(&identity)),
        role: None,
        action,
        target: Some(bounded(machine)),
        result,
        status: None,
        request_id: id.as_str(),
        peer: "local".to_owned(),
        serial: None,
        pin: None,
    };
    match record_blocking(settings.audit_log.as_deref(), &entry) {
        Ok(()) => String::new(),
        Err(e) => format!("# warning: the audit_log file did not take this change: {e}\n"),
    }
}

/// The token alone on the first line (for scripts), then what it is for.
fn printed(v: &serde_json::Value) -> String {
    format!(
        "{}\n# machine {}, template {}, spendable once until {}; shown this once\n",
        v["token"].as_str().unwrap_or(""),
        v["machine"],
        v["template"],
        v["expires_at"].as_str().unwrap_or("?"),
    )
}
