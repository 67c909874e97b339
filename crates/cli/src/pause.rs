//! `flotilla pause` and `flotilla resume`: the tray's pause menu, from a terminal.

use std::process::ExitCode;

use clap::Args;
use flotilla_agent::control::{AskError, Client, PauseKind, Request};
use flotilla_host::Dirs;

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Let the running tasks finish first (Ray moves nothing; no new task starts here).
    #[arg(long, conflicts_with_all = ["for", "until"])]
    finish: bool,
    /// Pause for this long, e.g. `1h`, `30m`, `90s` (a minute to a week).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "until")]
    r#for: Option<u64>,
    /// Pause until the clock next shows this time, e.g. `08:00`.
    #[arg(long, value_name = "HH:MM", conflicts_with = "node")]
    until: Option<String>,
    /// Pause another node of the fleet, by name or id (on the head's machine; see
    /// `flotilla nodes`).
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Resume another node of the fleet, by name or id (on the head's machine).
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
}

/// `90s`, `30m`, `1h`, `2d` -> seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, like 1h or 30m"))?;
    let mult = match unit {
        "s" => 1,
        "m" | "" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?}: that is longer than any duration Flotilla takes"))
}

async fn send(req: Request) -> anyhow::Result<ExitCode> {
    match Client::of(&Dirs::from_env()).done(&req).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(AskError::Unreachable(e)) => Err(anyhow::Error::from(e).context(
            "no Flotilla agent is running on this machine (start one with `flotilla up`)",
        )),
        Err(e) => anyhow::bail!("the agent refused: {e}"),
    }
}

pub async fn pause(args: PauseArgs) -> anyhow::Result<ExitCode> {
    if let Some(node) = args.node {
        use flotilla_app::admin::NodeCommand;
        let until = args.r#for.map_or(0, |secs| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            now + secs * 1000
        });
        return crate::admin::command(
            node,
            NodeCommand::Pause {
                finish: args.finish,
                until_unix_ms: until,
            },
        )
        .await;
    }
    let req = if args.finish {
        Request::pause(PauseKind::Finish)
    } else if let Some(secs) = args.r#for {
        Request::pause_for(secs)
    } else if let Some(at) = &args.until {
        Request::pause_until(at)
    } else {
        Request::pause(PauseKind::Now)
    };
    let code = send(req).await?;
    eprintln!(
        "{}",
        if args.finish {
            "Pausing once the running tasks finish; `flotilla resume` to undo."
        } else {
            "Paused; `flotilla resume` to undo."
        }
    );
    Ok(code)
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    if let Some(node) = args.node {
        return crate::admin::command(node, flotilla_app::admin::NodeCommand::Resume).await;
    }
    let code = send(Request::Resume { resume: true }).await?;
    eprintln!("Resumed.");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("5"), Ok(300));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
