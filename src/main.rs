//! The `breakwater` command: `run` the proxy, or `validate` a config file
//! (exit code 2 when it is invalid).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use breakwater::app::{App, Signals};
use breakwater::config::{self, AccessLogFormat, Config};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "breakwater", version, about = "A sidecar resilience proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The configuration file. When the default path does not exist, the
        /// embedded default configuration is used.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check a configuration file and print every error found.
    Validate {
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let (cfg, path) = match load(&config) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(cfg.access_log);
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(cfg, path))
        }
    }
}

/// Loads `path`; the default path falls back to the embedded default config.
fn load(path: &Path) -> Result<(Config, Option<PathBuf>), config::Error> {
    if path == Path::new(config::DEFAULT_PATH) && !path.exists() {
        let cfg = config::parse(
            Path::new("<embedded default config>"),
            config::EMBEDDED_DEFAULT,
        )?;
        return Ok((cfg, None));
    }
    Ok((config::load(path)?, Some(path.to_owned())))
}

async fn run(cfg: Config, path: Option<PathBuf>) -> ExitCode {
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = match App::start(cfg, path).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    app.run_until_signal(signals).await;
    ExitCode::SUCCESS
}

/// One worker per core the process may use (CPU affinity and cgroup quota
/// count, as `available_parallelism` reads them). On one core a
/// current-thread runtime saves the work-stealing scheduler's cross-thread
/// bookkeeping — a sidecar is often given exactly one (linkerd2-proxy does
/// the same).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level (info).
fn init_logging(format: AccessLogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == AccessLogFormat::Json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
