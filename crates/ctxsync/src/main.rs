//! The `ctxsync` binary: parses arguments and wires the library crates together.
#![forbid(unsafe_code)]

mod agents_cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ctxsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Agent library -> VS Code custom agents and prompt files.
    Agents(agents_cli::AgentsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agents(args) => agents_cli::run(args),
    }
}
