//! The `inlet` binary: parses the command line, loads configuration, sets up logging and signal
//! handling, and hands over to the stage that was asked for.

#![forbid(unsafe_code)]

mod bench;
mod cli;
mod replay;
mod run_update;
mod send;
mod stages;
mod tail;
mod webhooks;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use inlet_core::CancellationToken;

use crate::cli::{Cli, Command};

/// mimalloc for every allocation in the process: Rust's through this, C's (librdkafka's message
/// copies, buffers and request sets) through the crate's `override` feature, which replaces
/// `malloc` and `free`. glibc's allocator was 18 % of ingest's CPU under load, much of it
/// consolidating free lists; with mimalloc ingest spends about 17 % less CPU per webhook
/// (docs/BENCHMARKS.md, "Edge CPU").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process unless `MIMALLOC_ALLOW_THP` is set, which
/// leaves the choice to mimalloc (`=1` allows them; `=0` turns them off in mimalloc itself). mimalloc reserves its arenas with `MADV_HUGEPAGE`, so on
/// a kernel whose THP mode is `madvise` (or `always`) every touched 2 MiB of heap became resident
/// whole: a stage holding 100,000 stacks kept 127 MiB in huge pages and 145-177 MiB resident, 113-133
/// MiB without them, and an empty stage 48 MiB against 20 MiB (docs/BENCHMARKS.md, "Registry
/// scale"). The flag is the process's (`PR_SET_THP_DISABLE`), inherited by child processes.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // A kernel without the flag (before 3.15) answers EINVAL and nothing changes.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let config = match cli::config(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("inlet: {err:#}");
            return ExitCode::from(2);
        }
    };
    inlet_core::telemetry::init(&config.log);

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(
        shutdown.clone(),
        Duration::from_secs(config.shutdown_timeout_secs + 5),
    ));

    let result = match cli.command {
        Command::Dev(args) => {
            stages::dev(
                config,
                stages::DevOptions {
                    ready_file: args.kafka.ready_file.as_deref(),
                    only_broker: args.only_broker,
                    ..stages::DevOptions::default()
                },
                shutdown,
            )
            .await
        }
        Command::Ingest(args) => {
            stages::ingest(config, args.kafka.ready_file.as_deref(), shutdown).await
        }
        Command::Router(args) => stages::router(config, &args, shutdown).await,
        Command::Workers(args) => stages::workers(config, &args, shutdown).await,
        Command::Reporter(args) => stages::reporter(config, &args, shutdown).await,
        Command::Bench(args) => bench::run(config, args).await,
        Command::Replay(args) => replay::run(config, args).await,
        Command::Send(args) => send::run(args).await,
        Command::Tail(args) => tail::run(config, args).await,
        Command::RunUpdate(args) => run_update::run(config, args).await,
        Command::Webhooks(args) => webhooks::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("inlet: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM; a second signal, or a drain that overruns `grace`,
/// exits at once.
async fn cancel_on_signal(shutdown: CancellationToken, grace: Duration) {
    wait_for_signal().await;
    tracing::info!("shutting down: stop accepting, finish in-flight work, flush, commit");
    shutdown.cancel();
    tokio::select! {
        _ = wait_for_signal() => tracing::warn!("second signal: exiting now"),
        _ = tokio::time::sleep(grace) => tracing::warn!("drain took too long: exiting now"),
    }
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
