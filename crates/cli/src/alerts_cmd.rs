//! `flotilla alerts test`: one test alert to each target of this machine's `[alerts]` (the
//! head's `flotilla.toml`), with each target's outcome in the receiver's words.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send one test alert to each target of `[alerts]` in this machine's flotilla.toml (URLs
    /// from the secret store) and say which received it. Exit code 1 when one did not.
    Test {
        /// Only this target (its `name` in flotilla.toml).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Print the outcomes as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: AlertsCommand) -> anyhow::Result<ExitCode> {
    let AlertsCommand::Test { target, json } = cmd;
    let outcomes = flotilla_app::alerts::test(target).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).expect("plain values")
        );
    } else {
        for o in &outcomes {
            match &o.reason {
                None => println!("{} ({}): sent", o.target, o.kind),
                Some(why) => println!("{} ({}): failed: {why}", o.target, o.kind),
            }
        }
    }
    Ok(if outcomes.iter().all(|o| o.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
