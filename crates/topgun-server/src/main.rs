//! `topgun-server`: parses the configuration (exit status 2 on any error, naming it), sets up
//! logging, serves until SIGINT or SIGTERM, then drains and exits 0.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use topgun_server::Server;
use topgun_server::config::{AuthEnv, Cli, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("topgun-server: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("topgun-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let file = match &cli.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("config file {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Config::resolve(
        cli,
        file.as_deref(),
        &AuthEnv::from_process(),
    )?)
}

/// `RUST_LOG` filters (default `info`); `TOPGUN_LOG_FORMAT=json` writes JSON lines.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("TOPGUN_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config.clone())
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let addr = server.local_addr()?;
        // Part of the command-line contract: scripts read the port from stdout.
        #[allow(clippy::print_stdout)]
        {
            println!("PORT={}", addr.port());
        }
        tracing::info!(%addr, node = %config.node_id, auth = ?auth_name(config), "listening");
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

fn auth_name(config: &Config) -> &'static str {
    match config.auth {
        topgun_server::config::AuthMode::Disabled => "disabled",
        topgun_server::config::AuthMode::Jwt(_) => "jwt",
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
