//! `portcullis license keygen | issue | inspect`: functions that return the text to print or
//! a typed error; `main.rs` only prints and sets the exit status.
//!
//! Dates ([`parse_date`]) are `YYYY-MM-DD` or RFC 3339 (`2027-12-31T18:00:00+01:00`). A bare date means the
//! whole day in UTC: `--not-before 2027-01-01` starts at 00:00:00Z, `--expires 2027-12-31`
//! ends at 23:59:59Z (a license is valid up to and including its `expires_at` second).

use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use ipnet::IpNet;

use crate::identity::{format_spki_pin, parse_spki_pin};
use crate::license::dates::{self, parse_date};
use crate::license::format::{self, License, LicenseError, Match, Payload};
use crate::license::keys::{self, KeyError, PublicKey, SigningKey, TrustedKeys};

/// `portcullis license ...`
#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Create a licensing key pair: DIR/NAME.key (private, mode 0600) and DIR/NAME.pub.
    ///
    /// Never overwrites an existing key. Keep the private key off the gateways; add the
    /// public key to `trusted_keys` in the config's `[licenses]` section.
    Keygen {
        /// Folder for the two files (created, mode 0700, if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// File name stem: NAME.key and NAME.pub.
        #[arg(long, default_value = "license")]
        name: String,
    },
    /// Sign a license for one machine and print it (one line, `PCL1.`...).
    Issue(Box<IssueArgs>),
    /// Activate a license into the store named by a config file, with the gateway stopped
    /// (a running gateway takes licenses at POST /licenses on its admin listener).
    Activate {
        /// The gateway's config file (its [licenses] section names the store and keys).
        #[arg(long)]
        config: PathBuf,
        /// The license text, or `-` to read it from standard input.
        license: String,
    },
    /// Decode a license, verify it and print every field, whether it is valid now and why not.
    ///
    /// Exits 1 if the license cannot be decoded, fails verification against --pubkey, or is
    /// not valid now.
    Inspect {
        /// The license text, or `-` to read it from standard input.
        license: String,
        /// Issuer public key to verify the signature with (repeatable). Without it the
        /// signature is not checked.
        #[arg(long = "pubkey", value_name = "KEY")]
        pubkeys: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The issuer's private key (from `keygen`).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Customer name, shown in listings.
    #[arg(long)]
    pub customer: String,
    /// Machine id, shown in listings and passed to later stages.
    #[arg(long, value_name = "M")]
    pub machine_id: String,
    /// SPKI pin of the machine's client certificate key, `sha256/<base64>` (repeatable).
    #[arg(long = "pin", value_name = "PIN")]
    pub pins: Vec<String>,
    /// Address or CIDR network the machine calls from (repeatable).
    #[arg(long = "ip", value_name = "CIDR")]
    pub ips: Vec<String>,
    /// What must match: pin, ip or pin_and_ip. Default: what was given (both: pin_and_ip).
    #[arg(long = "match", value_name = "MATCH", value_parser = parse_match)]
    pub binding: Option<Match>,
    /// Route names the license covers, comma-separated. Default: every licensed route.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub routes: Vec<String>,
    /// Scopes granted to the machine, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub scopes: Vec<String>,
    /// First valid moment: YYYY-MM-DD (00:00:00Z) or RFC 3339. Default: now.
    #[arg(long, value_name = "DATE")]
    pub not_before: Option<String>,
    /// Last valid moment: YYYY-MM-DD (through 23:59:59Z) or RFC 3339.
    #[arg(long, value_name = "DATE")]
    pub expires: String,
    /// License id (A-Z a-z 0-9 . _ -, at most 64). Default: random.
    #[arg(long)]
    pub id: Option<String>,
    /// The machine's plan: requests per calendar window (UTC), such as 100000/day or
    /// 2000000/month (window hour, day or month), across every route. Default: none.
    #[arg(long, value_name = "N/WINDOW")]
    pub quota: Option<String>,
}

fn parse_match(s: &str) -> Result<Match, String> {
    Match::parse(s).ok_or_else(|| "expected pin, ip or pin_and_ip".to_owned())
}

/// Why a license command failed (printed as `error: ...`, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    License(#[from] LicenseError),
    /// A flag's value is unusable.
    #[error("{flag}: {message}")]
    Arg { flag: &'static str, message: String },
    #[error("cannot read the license from standard input: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    Provision(#[from] Box<crate::cli::provision::ProvisionError>),
}

fn arg(flag: &'static str, message: impl Into<String>) -> CliError {
    CliError::Arg {
        flag,
        message: message.into(),
    }
}

/// What to print: `stdout`, and on failure a reason for stderr (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub failure: Option<String>,
}

/// The license text from an argument, or standard input for `-`.
fn license_arg(license: String) -> Result<String, CliError> {
    if license != "-" {
        return Ok(license);
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(CliError::Stdin)?;
    Ok(s)
}

/// Run one `license` command as of `now`.
pub fn run(cmd: LicenseCommand, now: SystemTime) -> Result<Output, CliError> {
    let ok = |stdout| Output {
        stdout,
        failure: None,
    };
    match cmd {
        LicenseCommand::Keygen { out, name } => keygen(&out, &name).map(ok),
        LicenseCommand::Issue(args) => issue(&args, now).map(ok),
        LicenseCommand::Activate { config, license } => {
            let text = license_arg(license)?;
            Ok(ok(crate::cli::provision::activate_offline(
                &config, &text, now,
            )
            .map_err(Box::new)?))
        }
        LicenseCommand::Inspect { license, pubkeys } => {
            let text = license_arg(license)?;
            let keys = pubkeys
                .iter()
                .map(|p| PublicKey::load(p).map(|k| (p.clone(), k)))
                .collect::<Result<Vec<_>, _>>()?;
            inspect(&text, &keys, now)
        }
    }
}

pub fn keygen(out: &std::path::Path, name: &str) -> Result<String, CliError> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(arg("--name", "must be a plain file name stem"));
    }
    let files = keys::keygen(out, name)?;
    Ok(format!(
        "private key: {} (mode 0600: keep it secret and off the gateways)\n\
         public key:  {} (list it in [licenses] trusted_keys)\n\
         key id:      {}\n",
        files.private.display(),
        files.public.display(),
        files.kid
    ))
}

/// Sign the license `args` describe; the text ends with a newline.
pub fn issue(args: &IssueArgs, now: SystemTime) -> Result<String, CliError> {
    let key = SigningKey::load(&args.key)?;
    let mut pins = Vec::new();
    for p in &args.pins {
        let h = parse_spki_pin(p).map_err(|e| arg("--pin", format!("\"{p}\" {e}")))?;
        push_new(&mut pins, format_spki_pin(&h));
    }
    let mut ips = Vec::new();
    for s in &args.ips {
        push_new(&mut ips, parse_network(s)?.to_string());
    }
    let binding = match (args.binding, pins.is_empty(), ips.is_empty()) {
        (_, true, true) => return Err(arg("--pin/--ip", "give at least one --pin or --ip")),
        (None, false, false) => Match::PinAndIp,
        (None, false, true) => Match::Pin,
        (None, true, false) => Match::Ip,
        (Some(m), no_pins, no_ips) => {
            if m.needs_pin() == no_pins || m.needs_ip() == no_ips {
                return Err(arg(
                    "--match",
                    format!(
                        "{} needs {}",
                        m.as_str(),
                        match m {
                            Match::Pin => "--pin and no --ip",
                            Match::Ip => "--ip and no --pin",
                            Match::PinAndIp => "both --pin and --ip",
                        }
                    ),
                ));
            }
            m
        }
    };
    let issued_at = dates::unix(now);
    let not_before = match &args.not_before {
        Some(d) => parse_date(d, false).map_err(|m| arg("--not-before", m))?,
        None => issued_at,
    };
    let expires_at = parse_date(&args.expires, true).map_err(|m| arg("--expires", m))?;
    if expires_at < issued_at {
        return Err(arg(
            "--expires",
            "is in the past: the license would be expired already",
        ));
    }
    if not_before > expires_at {
        return Err(arg("--not-before", "is after --expires"));
    }
    let id = match &args.id {
        Some(id) if format::is_id(id) => id.clone(),
        Some(_) => return Err(arg("--id", "must be 1 to 64 of A-Z a-z 0-9 . _ -")),
        None => random_id()?,
    };
    let clean = |list: &[String]| {
        let mut out = Vec::new();
        for s in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            push_new(&mut out, s.to_owned());
        }
        out
    };
    let quota = match args.quota.as_deref().map(str::trim) {
        None => None,
        Some(q) => match crate::limits::Quota::parse(q) {
            Ok(q) => Some(q.to_text()),
            Err(why) => return Err(arg("--quota", format!("\"{q}\" {why}"))),
        },
    };
    let payload = Payload {
        id,
        kid: key.public_key().kid().to_owned(),
        customer: args.customer.clone(),
        machine_id: args.machine_id.clone(),
        binding,
        pins,
        ips,
        routes: clean(&args.routes),
        scopes: clean(&args.scopes),
        issued_at,
        not_before,
        expires_at,
        quota,
    };
    // Refuse here what a gateway would refuse at activation.
    License::from_payload(payload.clone())?;
    Ok(format!("{}\n", key.issue(&payload)?))
}

fn push_new(list: &mut Vec<String>, s: String) {
    if !list.contains(&s) {
        list.push(s);
    }
}

/// An address (one host) or a CIDR network with host bits clear, IPv4-mapped IPv6 as IPv4.
fn parse_network(s: &str) -> Result<IpNet, CliError> {
    let net = match (s.parse::<IpNet>(), s.parse::<IpAddr>()) {
        (Ok(n), _) => n,
        (Err(_), Ok(a)) => IpNet::from(a),
        (Err(_), Err(_)) => {
            return Err(arg(
                "--ip",
                format!("\"{s}\" is not an address or CIDR network"),
            ));
        }
    };
    if net.trunc() != net {
        return Err(arg(
            "--ip",
            format!("\"{s}\" has host bits set: did you mean {}?", net.trunc()),
        ));
    }
    Ok(format::normalize_net(net))
}

fn random_id() -> Result<String, CliError> {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b)
        .map_err(|_| CliError::Key(KeyError::Random))?;
    Ok(format!("lic-{}", keys::hex(&b)))
}

/// Decode `text`, verify it with `keys` (if any) and describe it. A license that cannot be
/// decoded is an error; one that decodes but is not valid is described, with `failure` set.
pub fn inspect(
    text: &str,
    keys: &[(PathBuf, PublicKey)],
    now: SystemTime,
) -> Result<Output, CliError> {
    let trusted = TrustedKeys::new(keys.iter().map(|(_, k)| k.clone()));
    let env = format::open_envelope(text)?;
    let p = match format::parse_payload(&env.payload) {
        Ok(p) => p,
        Err(e) if keys.is_empty() => return Err(e.into()),
        Err(e) => return Err(trusted.verify(text).err().unwrap_or(e).into()),
    };
    let none = |l: &[String], empty: &str| {
        if l.is_empty() {
            empty.to_owned()
        } else {
            l.join(", ")
        }
    };
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<12} {v}\n"));
    line("format:", format::VERSION);
    line("id:", &p.id);
    line("customer:", &p.customer);
    line("machine id:", &p.machine_id);
    line("key id:", &p.kid);
    line("match:", p.binding.as_str());
    line("pins:", &none(&p.pins, "(none)"));
    line("ips:", &none(&p.ips, "(none)"));
    line("routes:", &none(&p.routes, "(every licensed route)"));
    line("scopes:", &none(&p.scopes, "(none)"));
    line("quota:", p.quota.as_deref().unwrap_or("(none)"));
    line("issued at:", &dates::rfc3339(p.issued_at));
    line("not before:", &dates::rfc3339(p.not_before));
    line("expires at:", &dates::rfc3339(p.expires_at));
    let mut failure = License::from_payload(p.clone())
        .err()
        .map(|e| e.to_string());
    if keys.is_empty() {
        line("signature:", "not checked (give --pubkey KEY to verify it)");
    } else {
        match trusted.verify(text) {
            Ok(_) => {
                let path = keys
                    .iter()
                    .find(|(_, k)| k.kid() == p.kid)
                    .map(|(f, _)| f.display().to_string());
                line(
                    "signature:",
                    &format!("valid, by key {} ({})", p.kid, path.unwrap_or_default()),
                );
            }
            Err(e) => {
                line("signature:", &format!("NOT VALID: {e}"));
                failure = failure.or(Some(e.to_string()));
            }
        }
    }
    let now = dates::unix(now);
    let dates = if now < p.not_before {
        Err(format!(
            "not valid before {} (in {})",
            dates::rfc3339(p.not_before),
            span(p.not_before - now)
        ))
    } else if now > p.expires_at {
        Err(format!(
            "expired at {} ({} ago)",
            dates::rfc3339(p.expires_at),
            span(now - p.expires_at)
        ))
    } else {
        Ok(format!(
            "until {} ({} left)",
            dates::rfc3339(p.expires_at),
            span(p.expires_at - now)
        ))
    };
    match (&failure, dates) {
        (None, Ok(until)) => line("valid now:", &format!("yes, {until}")),
        (Some(why), _) => line("valid now:", &format!("no: {why}")),
        (None, Err(why)) => {
            line("valid now:", &format!("no: {why}"));
            failure = Some(format!("the license is {why}"));
        }
    }
    Ok(Output {
        stdout: out,
        failure,
    })
}

/// A duration, coarsely, for people: "45s", "17m", "5h", "12 days".
fn span(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}
