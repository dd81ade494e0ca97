//! `keywayctl`: the command-line client of keyway-ctld.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keyway_ctl::auth::Token;
use keyway_ctl::cli::{run, Command};

/// Manage keyway clusters through keyway-ctld's API: human tables by default,
/// `--json` for scripts; a failure prints one line and exits non-zero.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// keyway-ctld's API address, or several separated by commas (ctlds on
    /// etcd: the active one is found by trying each).
    #[arg(
        long,
        env = "KEYWAY_API",
        default_value = "127.0.0.1:7700",
        global = true
    )]
    api: String,
    /// A file holding the token keyway-ctld was started with (else the
    /// token in $KEYWAY_TOKEN, if set).
    #[arg(long, value_name = "PATH", global = true)]
    token_file: Option<PathBuf>,
    /// Speak HTTPS to keyway-ctld (started with `--tls-cert`), trusting
    /// only the CA certificates in this PEM file.
    #[arg(long, env = "KEYWAY_CA", value_name = "PATH", global = true)]
    ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The token to send: `--token-file`, else `$KEYWAY_TOKEN`.
fn token(args: &Args) -> anyhow::Result<Option<Token>> {
    if let Some(path) = &args.token_file {
        let (token, warning) = Token::read_file(path)?;
        if let Some(w) = warning {
            eprintln!("keywayctl: warning: {w}");
        }
        return Ok(Some(token));
    }
    match std::env::var("KEYWAY_TOKEN") {
        Ok(t) => Ok(Some(Token::new(&t, "KEYWAY_TOKEN")?)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("KEYWAY_TOKEN: the token must be printable ASCII")
        }
    }
}

fn main() -> ExitCode {
    // Output piped into `head` and the like: end quietly when the reader
    // goes away, as other command-line tools do, instead of panicking on
    // the broken pipe.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    let result = token(&args).and_then(|t| {
        Ok(run(
            args.command,
            &args.api,
            t.as_ref(),
            args.ca.as_deref(),
            args.json,
        )?)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keywayctl: {e}");
            ExitCode::FAILURE
        }
    }
}
