#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bench;
mod chart;
mod check;
mod cli;
mod error;
mod facts;
mod fleet;
mod format;
mod http_check;
mod monitor;
mod simulate;
mod size;
mod subject;
mod warnings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // reqwest (the plain client `bench http` compares against) is built without a crypto
    // provider of its own when poolkit-http's `reqwest` feature is on; use ring, as the
    // rest of poolkit does. An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if simulate::is_member() {
        return simulate::member_main();
    }
    let cli = Cli::parse();
    // Without -v only errors are logged: a check's warnings and failures are in its report,
    // and a connect failure is said there once, not again as a log line.
    let level = match cli.verbose {
        0 => tracing::Level::ERROR,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolctl: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Check(args) => check::command(args).await,
            Command::Size(args) => size::command(args).await,
            Command::Bench(args) => bench::command(args).await,
            Command::Fleet(cli::FleetCommand::Simulate(args)) => simulate::command(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poolctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
