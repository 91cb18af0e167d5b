//! `conns`: opens idle authenticated connections in steps up to N and, given the server's
//! PID, reads its resident memory after each step: what one idle connection costs.
//! The connections heartbeat as the TS client does; any the server drops are counted.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{BenchError, Count, open_many};
use crate::cli::{Common, ConnsArgs};
use crate::client::Conn;
use crate::client::Target;
use crate::progress::Progress;
use crate::report::{Report, round3};

/// Resident memory of process `pid`, in bytes (Linux: `VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| BenchError::Invalid(format!("cannot read {path} (--server-pid): {e}")))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| BenchError::Invalid(format!("no VmRSS line in {path}")))
}

pub async fn run(target: &Target, common: &Common, args: &ConnsArgs) -> Result<Report, BenchError> {
    if args.connections == 0 || args.step == 0 {
        return Err(BenchError::Invalid(
            "--connections and --step must be at least 1".into(),
        ));
    }
    let mut progress = Progress::new("conns");
    let baseline = args.server_pid.map(rss_bytes).transpose()?;
    let lost = std::sync::Arc::new(Count::default());
    let (stop, stopped) = watch::channel(false);
    let mut holders: Vec<JoinHandle<()>> = Vec::with_capacity(args.connections);
    let mut report = Report::new("conns");
    let mut failure = None;
    while holders.len() < args.connections {
        let from = holders.len();
        let count = args.step.min(args.connections - from);
        let began = Instant::now();
        let opened = open_many(
            target,
            count,
            args.concurrency,
            |i| format!("bench-idle-{}", from + i),
            &mut progress,
        )
        .await;
        let conns = match opened {
            Ok(conns) => conns,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        let connect_secs = began.elapsed().as_secs_f64();
        for conn in conns {
            holders.push(tokio::spawn(hold(conn, stopped.clone(), lost.clone())));
        }
        tokio::time::sleep(args.settle).await;
        let row = step_row(args, baseline, holders.len(), count, connect_secs, &lost)?;
        progress.note(&row.to_string());
        report.step(row);
    }
    // Hold them all for the measured duration: an idle connection must not be dropped.
    let hold_end = Instant::now() + common.duration;
    while Instant::now() < hold_end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        progress.update(format!(
            "holding {} connections, {} lost",
            holders.len(),
            lost.get()
        ));
    }
    let final_row = step_row(args, baseline, holders.len(), 0, 0.0, &lost)?;
    let _ = stop.send(true);
    for holder in holders.drain(..) {
        let _ = holder.await;
    }
    progress.finish();
    summarize(&mut report, &final_row, lost.get(), failure);
    Ok(report)
}

fn step_row(
    args: &ConnsArgs,
    baseline: Option<u64>,
    connections: usize,
    added: usize,
    connect_secs: f64,
    lost: &Count,
) -> Result<serde_json::Value, BenchError> {
    let mut row = serde_json::json!({
        "connections": connections,
        "lost": lost.get(),
    });
    if added > 0 {
        row["connects_per_sec"] = round3(added as f64 / connect_secs.max(1e-9)).into();
    }
    if let (Some(pid), Some(baseline)) = (args.server_pid, baseline) {
        let rss = rss_bytes(pid)?;
        row["server_rss_mb"] = round3(rss as f64 / 1_048_576.0).into();
        let per_conn = rss.saturating_sub(baseline) as f64 / connections.max(1) as f64;
        row["server_bytes_per_conn"] = per_conn.round().into();
    }
    Ok(row)
}

fn summarize(
    report: &mut Report,
    final_row: &serde_json::Value,
    lost: u64,
    failure: Option<String>,
) {
    report
        .set("connections", final_row["connections"].clone())
        .set("lost", lost);
    if !final_row["server_bytes_per_conn"].is_null() {
        report
            .set("server_rss_mb", final_row["server_rss_mb"].clone())
            .set(
                "server_bytes_per_conn",
                final_row["server_bytes_per_conn"].clone(),
            );
    }
    if let Some(error) = failure {
        report.set("error", error);
    }
}

/// Keeps one connection open and quiet until told to stop, answering nothing but sending
/// the heartbeat.
async fn hold(mut conn: Conn, mut stopped: watch::Receiver<bool>, lost: std::sync::Arc<Count>) {
    let mut heartbeat = tokio::time::interval(super::HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = conn.recv() => {
                if message.is_err() {
                    lost.add(1);
                    return;
                }
            }
            _ = stopped.changed() => break,
            _ = heartbeat.tick() => {
                if conn.send(&super::ping()).await.is_err() {
                    lost.add(1);
                    return;
                }
            }
        }
    }
    conn.close().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_rss() {
        let rss = super::rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(super::rss_bytes(u32::MAX).is_err());
    }
}
