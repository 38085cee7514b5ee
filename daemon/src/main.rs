//! `tandem`: parse flags, then either run the node or one admin command.

use std::process::ExitCode;

use tandem::ui::cli::{self, Cmd};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Cmd::Daemon { log_format } = &cli.cmd else {
        return cli::run_admin(&cli);
    };
    let cfg = match tandem::config::NodeConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tandem: config {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    tandem::app::logging::init(log_format.unwrap_or(cfg.log_format), cfg.node_id);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received; shutting down");
            s.cancel();
        });
        match tandem::app::run(cfg, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("tandem: {e}");
                ExitCode::from(1)
            }
        }
    })
}
