//! `topgun-bench`: see `topgun-bench --help` and docs/benchmarks.md.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use topgun_bench::cli::{CeilingArgs, Cli, Scenario};
use topgun_bench::client::Target;
use topgun_bench::report::Report;
use topgun_bench::scenario::{self, BenchError};

/// mimalloc: per-message allocations dominate; see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = Target::new(&cli.common);
    let common = &cli.common;
    let report: Result<Report, BenchError> = match &cli.scenario {
        Scenario::Ceiling(args) => return ceiling(args).await,
        Scenario::Write(args) => scenario::write::run(&target, common, args).await,
        Scenario::Fanout(args) => scenario::fanout::run(&target, common, args).await,
        Scenario::Conns(args) => scenario::conns::run(&target, common, args).await,
        Scenario::Sync(args) => scenario::sync::run(&target, common, args).await,
        Scenario::Query(args) => scenario::query::run(&target, common, args).await,
    };
    let mut out = std::io::stdout().lock();
    report?.print(&mut out, common.json)?;
    out.flush()?;
    Ok(())
}

/// Serves the ceiling until SIGINT or SIGTERM; prints `PORT=<n>` once listening.
async fn ceiling(args: &CeilingArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    let port = listener.local_addr()?.port();
    // Watched before the port is announced: a SIGTERM sent the moment a script reads it
    // must not meet the default action.
    let shutdown = shutdown_signal();
    let mut out = std::io::stdout().lock();
    writeln!(out, "PORT={port}")?;
    out.flush()?;
    drop(out);
    topgun_bench::ceiling::serve(listener, shutdown).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM; the handlers are registered when this is called.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
