//! `portcullis enroll token`: a one-time enrollment token for a machine, printed once.
//!
//! Like `client add`: with `--config FILE` whose plain-HTTP `[admin]` listener answers, the
//! running gateway makes it (`POST /enrollment/tokens`); otherwise the gateway is stopped
//! and the command opens the `[enrollment] tokens` file itself (redb allows one opener).

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
}

/// Run one `enroll` command as of `now`; the text to print.
pub fn run(cmd: EnrollCommand, now: SystemTime) -> Result<String, EnrollCliError> {
    let EnrollCommand::Token {
        config,
        machine,
        template,
        expires,
    } = cmd;
    let body = serde_json::json!({"machine": machine, "template": template, "expires": expires});
    if let Some(target) = super::admin_api::target(&config)?
        && let Some((status, v)) =
            target.call(http::Method::POST, "/enrollment/tokens", Some(body))?
    {
        if status != http::StatusCode::CREATED {
            let why = v["message"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or("refused");
            return Err(EnrollCliError::Config(format!(
                "the gateway's admin API at {} refused: {status} {why}",
                target.addr
            )));
        }
        return Ok(printed(&v));
    }
    let text = std::fs::read_to_string(&config)
        .map_err(|e| EnrollCliError::Config(format!("cannot read {}: {e}", config.display())))?;
    let loaded = crate::config::load_str(&config, &text, now)
        .map_err(|e| EnrollCliError::Config(e.to_string()))?;
    let Some(settings) = loaded.snapshot.enrollment.as_ref() else {
        return Err(EnrollCliError::Config(format!(
            "{}: no [enrollment] section",
            config.display()
        )));
    };
    let store = crate::enrollment::EnrollmentTokens::open(&settings.tokens)?;
    let minted = crate::enrollment::mint(
        settings,
        &store,
        &machine,
        &template,
        &expires,
        crate::license::dates::unix(now),
    )?;
    Ok(printed(&minted.to_json()))
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
