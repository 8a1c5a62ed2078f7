//! `hoard`: runs a node (`hoard serve`) and drives one from the command
//! line. Admin commands talk to a running node over its HTTP admin API
//! (`--url`, default: the local node); `fsck` and `token create` on a
//! stopped node open the data dir directly.

mod accounts;
mod audit;
mod backup;
mod cert;
mod cli;
mod demo;
mod devpi;
mod export;
mod export_npm;
mod import;
mod import_offline;
mod log_writer;
mod prefetch;
mod progress;
mod promotion;
mod settings;
mod status;
mod transfer;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything builds a TLS configuration: with two providers in
    // the dependency graph, rustls would otherwise panic (design §8).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(args));
    log_writer::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
