//! kmsd binary: parses flags/env/file and runs the daemon until SIGINT or SIGTERM.

use clap::Parser;
use kmsd::cli::Args;

fn main() -> anyhow::Result<()> {
    kmsd::owner_only_files();
    let args = Args::parse();
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kmsd: {e}");
            std::process::exit(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        builder.worker_threads(cfg.worker_threads);
    }
    let rt = builder.enable_all().build()?;
    let result = rt.block_on(run_main(args, cfg));
    // Everything is flushed by now. Blocking work still running (a name lookup of a peer
    // cut off from the network can take several seconds) must not hold the exit up to the
    // supervisor's kill timeout.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

async fn run_main(args: Args, cfg: kmsd::config::Config) -> anyhow::Result<()> {
    if args.print_config {
        // Checked as a start would check it: the product catalog and the licensed groups.
        if let Err(e) = kmsd::load_catalog(&cfg).and_then(|c| kmsd::policy_from(&cfg, &c)) {
            eprintln!("kmsd: {e}");
            std::process::exit(2);
        }
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    if args.rollback_membership {
        std::process::exit(rollback_membership(&cfg, args.yes).await);
    }
    let traces = cfg
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| kmsd::telemetry::TraceExport {
            endpoint: endpoint.clone(),
            sample_ratio: cfg.trace_sample_ratio,
            instance: cfg.node_id.to_string(),
        });
    let mut telemetry = match kmsd::telemetry::init(
        cfg.log_format,
        &cfg.log_level,
        cfg.repeat_limit(),
        traces.as_ref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kmsd: {e}");
            std::process::exit(2);
        }
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    // SIGHUP: re-read file, environment and flags; the daemon applies what can change at
    // runtime and keeps the running configuration when the new one is invalid.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let next = args.resolve().map_err(|e| e.to_string());
            if reload_tx.send(next).is_err() {
                return;
            }
        }
    });
    let control = kmsd::Control {
        reloads: Some(reload_rx),
        set_log_level: telemetry.log_level_switch(),
    };
    let data_dir = cfg.data_dir.clone();
    let result = kmsd::run_with(cfg, shutdown, control, |_| {}).await;
    telemetry.shutdown().await;
    if let Err(e) = result {
        eprintln!("kmsd: {e}");
        if let Some(advice) = e.advice(&data_dir) {
            eprintln!("kmsd: {advice}");
        }
        std::process::exit(1);
    }
    Ok(())
}

/// `kmsd --rollback-membership [--yes]`: shows (or, with --yes, applies) the roll-back of the
/// uncommitted membership change at the end of this stopped node's log; the exit code.
async fn rollback_membership(cfg: &kmsd::config::Config, apply: bool) -> i32 {
    use kms_cluster::recover::{rollback_membership, RecoverError};
    match rollback_membership(&cfg.data_dir, cfg.node_id, apply).await {
        Ok(plan) => {
            println!(
                "node {}: membership now {}; committed up to index {}",
                cfg.node_id,
                plan.current,
                plan.committed.map_or("-".to_string(), |i| i.to_string())
            );
            println!(
                "roll back: cut the log from index {} to {} ({} uncommitted entries), back to \
                 voters {:?}",
                plan.truncate_from,
                plan.last_index,
                plan.dropped(),
                plan.committed_voters
            );
            if apply {
                println!(
                    "done: start kmsd again; it leads alone, replays its outbox, and \
                     `kmsctl cluster remove --id N` removes the learner that never appeared"
                );
            } else {
                println!("nothing changed: run again with --yes to do it");
            }
            0
        }
        Err(e @ RecoverError::NothingPending(_)) => {
            eprintln!("kmsd: {e}");
            0
        }
        Err(e) => {
            eprintln!("kmsd: {e}");
            1
        }
    }
}
