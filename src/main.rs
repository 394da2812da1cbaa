//! The `portcullis` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

/// Portcullis: a TLS-terminating API gateway for integration traffic.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log line format: "text" (key=value, logfmt-like) or "json" (one object per line).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
    /// `key=value` pairs (values quoted and escaped where needed), as log shippers such as
    /// Loki and Vector read them.
    Logfmt,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the config until SIGTERM or SIGINT, then drain in-flight requests and exit.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file (certificates and keys included) and print every problem.
    ///
    /// Exits 1 if anything is wrong, 0 with a one-line summary if the file is valid.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the SPKI pin and fingerprint of each certificate in a PEM file, for the
    /// `pins` and `cert_fingerprints` config keys.
    Pin {
        /// A PEM file with one or more certificates.
        cert: PathBuf,
    },
    /// Run on an embedded default: throwaway certificates, a built-in echo upstream, one-way
    /// TLS and mutual TLS on loopback. Prints curl commands that work.
    Demo {
        /// Folder for the generated certificates and config.
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
        /// Address to bind both listeners to.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Port of the one-way TLS listener.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// Port of the mutual TLS listener.
        #[arg(long, default_value_t = 8444)]
        mtls_port: u16,
        /// Port of the admin listener (always on 127.0.0.1).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
    /// Machine licenses: create the signing key, issue licenses, inspect them.
    License {
        #[command(subcommand)]
        command: portcullis::cli::license::LicenseCommand,
    },
    /// The token issuer's clients: add (prints the secret once), list, disable,
    /// rotate-secret. With --config FILE, a running gateway's [admin] API is used when it
    /// answers; otherwise the store ([state] Redis or the [issuer] store file) is opened
    /// directly. --store FILE opens that file.
    Client {
        #[command(subcommand)]
        command: portcullis::cli::issuer::ClientCommand,
    },
    /// The credential vault: init, set (the secret on standard input), list, remove,
    /// rotate-master. A running gateway picks changes up on reload.
    Vault {
        #[command(subcommand)]
        command: portcullis::cli::vault::VaultCommand,
    },
    /// Make the development files config/portcullis.example.toml names (a throwaway CA and
    /// localhost certificate in certs/, license keys in keys/, the var/ store folder), so
    /// `check --config config/portcullis.example.toml` passes on a fresh clone.
    DevPki {
        /// The repository's root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Move the lasting state between the embedded files and a fleet's Redis: import
    /// (files -> the config's [state] Redis) or export (Redis -> files). Gateways stopped.
    State {
        #[command(subcommand)]
        command: portcullis::cli::state::StateCommand,
    },
    /// Machine enrollment (EST): `token` makes a one-time enrollment token (printed once),
    /// `revoke MACHINE` revokes an enrolled machine's license, tokens and record.
    /// Through a running gateway's [admin] API when it answers, else on the [enrollment]
    /// tokens file directly.
    Enroll {
        #[command(subcommand)]
        command: portcullis::cli::enroll::EnrollCommand,
    },
    /// The token issuer's signing keys: rotate. Like `client`: through a running gateway's
    /// [admin] API when it answers, else on the store directly.
    Keys {
        #[command(subcommand)]
        command: portcullis::cli::issuer::KeysCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::License { command } => license(command),
        Command::Client { command } => printed(portcullis::cli::issuer::run_client(
            command,
            SystemTime::now(),
        )),
        Command::Enroll { command } => {
            printed(portcullis::cli::enroll::run(command, SystemTime::now()))
        }
        Command::State { command } => printed(portcullis::cli::state::run(command)),
        Command::DevPki { root } => printed(portcullis::cli::dev::run(&root)),
        Command::Keys { command } => printed(portcullis::cli::issuer::run_keys(
            command,
            SystemTime::now(),
        )),
        Command::Vault { command } => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut stdin = std::io::stdin();
            let input = portcullis::cli::vault::SecretInput::stdin(&mut stdin);
            match portcullis::cli::vault::run(command, input, now) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::Pin { cert } => match portcullis::identity::describe_pem_file(&cert) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => with_runtime(async move {
            let signals = Signals::install();
            let running = portcullis::server::start(&config)
                .await
                .map_err(|e| e.to_string())?;
            serve_until_signal(running, signals).await;
            Ok(())
        }),
        Command::Demo {
            dir,
            bind,
            port,
            mtls_port,
            admin_port,
        } => with_runtime(async move {
            let opts = portcullis::demo::DemoOptions {
                dir,
                bind_ip: bind,
                port,
                mtls_port,
                admin_port,
            };
            let signals = Signals::install();
            let running = portcullis::demo::start(&opts)
                .await
                .map_err(|e| e.to_string())?;
            serve_until_signal(running, signals).await;
            Ok(())
        }),
    }
}

fn init_logging(format: LogFormat) {
    // The access line has its own writer (see `record::line`); it writes what the rest does.
    portcullis::record::line::set_format(match format {
        LogFormat::Text => portcullis::record::line::Format::Text,
        LogFormat::Json => portcullis::record::line::Format::Json,
        LogFormat::Logfmt => portcullis::record::line::Format::Logfmt,
    });
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Lines a client can cause in rustls, h2 or hyper: one per minute each, the rest counted.
    let flood = FloodFilter {
        started: std::time::Instant::now(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_filter(flood),
            )
            .init(),
        // tracing-logfmt (Embark Studios) quotes and escapes values, which the text format's
        // `key=value` does not promise; writing logfmt ourselves would redo that escaping.
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .with_span_name(false)
                    .with_span_path(false)
                    .layer()
                    .with_writer(std::io::stderr)
                    .with_filter(flood),
            )
            .init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr)
                    .with_filter(flood),
            )
            .init(),
    }
}

/// Decides per event (`enabled` may be asked several times for one event, so the stateful
/// decision is in `event_enabled`, which is asked once).
struct FloodFilter {
    started: std::time::Instant,
}

impl<S> tracing_subscriber::layer::Filter<S> for FloodFilter {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        use tracing_log::NormalizeEvent as _;
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // A `log` record (rustls logs through `log`) carries its real target in its fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        portcullis::record::flood::admit(meta.target(), ms.saturating_add(1))
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    match portcullis::config::load_file(config, SystemTime::now()) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let s = &loaded.snapshot;
            println!(
                "{}: OK: {} listener(s), {} route(s), {} warning(s)",
                config.display(),
                s.listeners.len(),
                s.route_count(),
                loaded.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} problem(s) found", config.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn license(command: portcullis::cli::license::LicenseCommand) -> ExitCode {
    match portcullis::cli::license::run(command, SystemTime::now()) {
        Ok(out) => {
            print!("{}", out.stdout);
            match out.failure {
                None => ExitCode::SUCCESS,
                Some(why) => {
                    eprintln!("error: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Print a command's output, or its error (one `error:` line per line) with exit 1.
fn printed(result: Result<String, impl std::fmt::Display>) -> ExitCode {
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: one worker thread per CPU this process may run on, or, with one
/// CPU, tokio's single-threaded scheduler on the main thread. Why: a multi-threaded runtime
/// on one CPU has a single worker anyway, and still pays for work-stealing bookkeeping on
/// every task wake-up (~930 instructions a proxied request, 1.8%: `CALLGRIND=1
/// UPSTREAM=tls benches/profile.sh bare ka` with the gateway on one CPU). Blocking work
/// (config reloads, key files) goes to the blocking pool either way.
fn with_runtime(fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Signal streams, created before the gateway starts: a SIGHUP or SIGTERM that arrives
/// while it is still starting (binding, fetching JWKS) is held, not fatal.
#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let open = |k| {
            signal(k)
                .map_err(|e| tracing::error!(error = %e, "cannot install a signal handler"))
                .ok()
        };
        Signals {
            term: open(SignalKind::terminate()),
            int: open(SignalKind::interrupt()),
            hup: open(SignalKind::hangup()),
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Signals
    }
}

/// Reload on SIGHUP; on SIGTERM or SIGINT shut down gracefully.
#[cfg(unix)]
async fn serve_until_signal(running: portcullis::server::Running, signals: Signals) {
    let Signals { term, int, hup } = signals;
    let handle = running.shutdown_handle();
    tokio::spawn(async move {
        let recv = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = recv(term) => tracing::info!("SIGTERM received"),
            _ = recv(int) => tracing::info!("SIGINT received"),
        }
        handle.trigger();
    });
    if let Some(mut hup) = hup {
        let gateway = running.gateway().clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the config");
                // The outcome is logged and counted by reload itself.
                let _ = gateway.reload().await;
            }
        });
    }
    running.wait().await;
}

#[cfg(not(unix))]
async fn serve_until_signal(running: portcullis::server::Running, _signals: Signals) {
    let handle = running.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.trigger();
    });
    running.wait().await;
}
