//! `ctxsync agents ...`: the agent-sync subcommands.

use clap::Args;

#[derive(Args)]
pub struct AgentsArgs {}

pub fn run(_args: AgentsArgs) -> std::process::ExitCode {
    std::process::ExitCode::from(2)
}
