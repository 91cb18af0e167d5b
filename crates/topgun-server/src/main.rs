//! `topgun-server`: parses the configuration (exit status 2 on any error, naming it), sets up
//! logging, serves until SIGINT or SIGTERM, then drains and exits 0.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use topgun_server::Server;
use topgun_server::config::{Cli, Command, Config, Env, LogFormat};
use topgun_server::http::admin::settings::LogControl;
use topgun_server::security::access::Policies;
use topgun_server::storage::backup;

/// mimalloc: per-message allocations dominate; see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_process();
    if let Some(command) = cli.command.clone() {
        return match admin(&cli, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("topgun-server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("topgun-server: {e:#}");
            return ExitCode::from(2);
        }
    };
    let log = init_logging(config.log_format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if !config.unused_env.is_empty() {
        tracing::info!(
            "not used by this server: {} (accepted for compatibility; no effect)",
            config.unused_env.join(", ")
        );
    }
    match run(&cli, &config, log) {
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
    Ok(Config::resolve(cli, file.as_deref(), &Env::from_process())?)
}

/// `RUST_LOG` filters (default [`DEFAULT_FILTER`]); `TOPGUN_LOG_FORMAT=json` writes JSON lines. Logs go
/// to stderr (stdout carries only the `PORT=` line), in colour only when stderr is a
/// terminal and `NO_COLOR` is unset or empty (no-color.org): a file or a pipe gets plain text.
/// The filter sits behind a reload handle: the returned control lets `PUT
/// /api/admin/settings` replace it while the server runs.
/// openraft logs every vote change at `INFO` and each failed heartbeat to a dead peer at
/// `WARN`, four a second until the member is removed; the cluster module's own lines say what
/// an operator needs (a member silent, marked down, joined).
const DEFAULT_FILTER: &str = "info,openraft=error";

fn init_logging(format: LogFormat) -> LogControl {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, fmt, reload};
    let text = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok());
    let current = text.unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&current));
    let colour = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let lines = fmt::layer().with_ansi(colour).with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Json => lines.json().boxed(),
        LogFormat::Text => lines.boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .init();
    LogControl::new(current, move |text: &str| {
        let filter = EnvFilter::try_new(text).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Colour only on a terminal, and only while `NO_COLOR` is unset or empty.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

fn run(cli: &Cli, config: &Config, log: LogControl) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Its errors say what failed (the data directory, the store, the address).
        let server = Server::bind(config.clone()).await?;
        server.set_log_control(log);
        let addr = server.local_addr()?;
        // Signals are watched before the port is announced: a SIGTERM or SIGHUP sent the
        // moment a script reads the port must not meet the default action (exit).
        let shutdown = shutdown_signal();
        tokio::spawn(reload_policies_on_sighup(cli.clone(), server.policies()));
        // Part of the command-line contract: scripts read the port from stdout, and it is
        // the only line written there (logs go to stderr: a launcher stops reading stdout
        // after this line, and more output would fill the pipe and block the server).
        announce_port(addr.port())?;
        tracing::info!(%addr, node = %config.node_id, auth = ?auth_name(config), "listening");
        server.run(shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Writes `PORT=<port>` to stdout and flushes it, whatever kind of file stdout is.
fn announce_port(port: u16) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "PORT={port}")
        .and_then(|()| stdout.flush())
        .context("writing PORT=<n> to stdout")
}

fn auth_name(config: &Config) -> &'static str {
    match config.auth {
        topgun_server::config::AuthMode::Disabled => "disabled",
        topgun_server::config::AuthMode::Jwt(_) => "jwt",
    }
}

/// `backup` and `restore`, which talk to a server or its data directory instead of serving.
/// On a terminal they show a progress bar on stderr; in a script, only the closing line.
fn admin(cli: &Cli, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            Command::Backup { out, url, token } => {
                let bytes = fetch_backup(&url, token.as_deref()).await?;
                let entries = backup::decode(&bytes).context("the server's backup")?;
                let partial = out.with_extension("partial");
                std::fs::write(&partial, &bytes)
                    .with_context(|| format!("writing {}", partial.display()))?;
                std::fs::rename(&partial, &out)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!(
                    "backup: {} records, {} bytes, written to {}",
                    entries.len(),
                    bytes.len(),
                    out.display()
                );
            }
            Command::Restore { file, force } => {
                let paths = cli.store_paths();
                let bar = progress_bar("restore", "{pos}/{len} records");
                let mut progress = |done: usize, total: usize| {
                    if let Some(bar) = &bar {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    }
                };
                let restored = backup::restore(&file, &paths, force, &mut progress).await;
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                let store = paths.store.display();
                let count = restored
                    .with_context(|| format!("restoring {} into {store}", file.display()))?;
                eprintln!("restore: {count} records into {store}");
            }
        }
        Ok(())
    })
}

/// A progress bar on stderr, or `None` when stderr is not a terminal (a script's log gets
/// no redrawn lines). `counts` is the bar's figures: `{pos}/{len} records`, bytes and so on.
fn progress_bar(label: &'static str, counts: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let template = format!("{{prefix}}: [{{bar:30}}] {counts} ({{eta}})");
    let style = indicatif::ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let bar = indicatif::ProgressBar::new(0)
        .with_style(style.progress_chars("=> "))
        .with_prefix(label);
    Some(bar)
}

/// The longest HTTP response head accepted from the server.
const RESPONSE_HEAD_MAX: usize = 64 * 1024;

/// `GET /api/admin/backup` over plain HTTP/1.1 (the server answers with a sized body). The
/// API path, not the old `/admin/backup`: that one is the dashboard's once
/// `TOPGUN_ADMIN_DIR` serves one.
async fn fetch_backup(url: &str, token: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let host = url
        .strip_prefix("http://")
        .context("--url must be http://host:port")?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET /api/admin/backup HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut stream = tokio::io::BufReader::new(stream);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let read = stream.read_until(b'\n', &mut head).await?;
        if read == 0 || head.len() > RESPONSE_HEAD_MAX {
            bail!("the server's answer has no HTTP header");
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<u64>().ok())?
    });
    let bar = progress_bar("backup", "{bytes}/{total_bytes}");
    if let (Some(bar), Some(length)) = (&bar, length) {
        bar.set_length(length);
    }
    let mut body = Vec::with_capacity(usize::try_from(length.unwrap_or(0)).unwrap_or(0));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
        if let Some(bar) = &bar {
            bar.inc(read as u64);
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if status != "200" {
        bail!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// On every SIGHUP, reads the configuration again and puts its policies in force; a file
/// that does not load (a bad policy, say) is reported and the policies in force are kept.
fn reload_policies_on_sighup(
    cli: Cli,
    policies: std::sync::Arc<Policies>,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered now, not when first polled.
        let hangup = signal(SignalKind::hangup());
        async move {
            let Ok(mut hangup) = hangup else {
                tracing::warn!("cannot watch SIGHUP; policies will not be reloaded");
                return;
            };
            while hangup.recv().await.is_some() {
                match load(&cli) {
                    Ok(config) => {
                        let count = config.policies.len();
                        policies.replace(config.policies);
                        tracing::info!(policies = count, "policies reloaded");
                    }
                    Err(e) => tracing::error!("policies not reloaded, the old ones stay: {e:#}"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (cli, policies);
        async {}
    }
}

/// Completes on SIGINT or SIGTERM; the handlers are registered when this is called, not
/// when the future is first polled.
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(super::colour(true, None));
        assert!(
            super::colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR"
        );
        assert!(!super::colour(true, Some(OsStr::new("1"))));
        assert!(!super::colour(false, None), "a file or a pipe");
    }
}
