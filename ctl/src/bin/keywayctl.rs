//! `keywayctl`: the command-line client of keyway-ctld.

use std::process::ExitCode;

use clap::Parser;
use keyway_ctl::cli::{run, Command};

/// Manage keyway clusters through keyway-ctld's API: human tables by default,
/// `--json` for scripts; a failure prints one line and exits non-zero.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// keyway-ctld's API address.
    #[arg(
        long,
        env = "KEYWAY_API",
        default_value = "127.0.0.1:7700",
        global = true
    )]
    api: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.command, &args.api, args.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keywayctl: {e}");
            ExitCode::FAILURE
        }
    }
}
