//! `flotilla doctor`: prints [`flotilla_app::doctor`]'s checks of this machine, each failing
//! one with how to fix it.
//!
//! Exit code: 0 when every check passes (or does not apply), 1 when one warns, 2 when one fails.

use std::process::ExitCode;

use clap::Args;
use flotilla_app::doctor::Status;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON (`checks`, `worst`) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = flotilla_app::doctor::run().await?;
    let worst = flotilla_app::doctor::worst(&checks);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"checks": checks, "worst": worst}))?
        );
    } else {
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
                Status::Skip => "--  ",
            };
            println!("{mark} {:<14} {}", c.name, c.detail);
            if let (Some(fix), Status::Warn | Status::Fail | Status::Skip) = (&c.fix, c.status) {
                println!("     {:<14} fix: {fix}", "");
            }
        }
    }
    Ok(ExitCode::from(match worst {
        Status::Ok | Status::Skip => 0,
        Status::Warn => 1,
        Status::Fail => 2,
    }))
}
