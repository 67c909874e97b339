//! The `flotilla` command: argument parsing and output formatting around `flotilla-app`
//! (hosting, joining, the worker, the secret store) and the library crates below it. What the
//! desktop app shares with the command lives in `flotilla-app`, never here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// This crate's `print!`: std's, except that a closed standard output is no panic (see
/// [`output`]). Defined before the modules, so it is the one every module's `print!` names.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::print(format_args!($($arg)*))
    };
}

/// This crate's `println!`: std's, except that a closed standard output is no panic (see
/// [`output`]).
macro_rules! println {
    () => {
        $crate::output::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod output;

pub mod admin;
pub mod alerts_cmd;
pub mod backup_cmd;
pub mod demo;
pub mod doctor;
pub mod env_cmd;
pub mod jobs;
pub mod join;
pub mod pause;
pub mod progress;
pub mod runtime_cmd;
pub mod secret_cmd;
pub mod sense;
pub mod service;
pub mod status;
pub mod submit;
pub mod uninstall;
pub mod up;
pub mod worker;

/// Turn your team's machines into one Ray cluster that nobody notices on their own machine.
///
/// Start here: `flotilla up` runs a one-machine cluster (a Ray head and a local worker) with the
/// cluster API on http://127.0.0.1:7471. Then `flotilla demo` runs a strategy sweep on it and
/// `flotilla status` shows what every node is doing.
#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log more (repeat for even more). Logs go to standard error; FLOTILLA_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// How standard error's log lines look: `text`, `json` (one JSON object a line),
    /// `journald` (the systemd journal's priorities, no timestamps) or `auto` (text on a
    /// terminal, journald under systemd, JSON otherwise).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "auto")]
    log_format: flotilla_app::logs::Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a one-machine cluster: the Ray head (a coordinator with 0 CPUs), a local worker node
    /// and the cluster API. Ctrl-C stops everything.
    Up(up::UpArgs),
    /// Join a fleet with a join code from its head, then run this machine's worker.
    Join(join::JoinArgs),
    /// Run this machine's worker: in the fleet it joined, or (--address) against a head whose
    /// Ray token it holds.
    Worker(worker::WorkerArgs),
    /// On the head: make a join code (and its QR code) for new machines.
    Invite(admin::InviteArgs),
    /// On the head: every node of the fleet with its state and reason.
    Nodes(admin::NodesArgs),
    /// On the head: remove a node from the fleet; its credential stops working at once.
    Revoke(admin::RevokeArgs),
    /// On the head: maintenance (back up and restore the head, rotate the Ray token).
    #[command(subcommand)]
    Head(admin::HeadCommand),
    /// Show the cluster: nodes, CPUs, tasks and jobs.
    Status(status::StatusArgs),
    /// Run the strategy-sweep demo (80 backtests over 297,000 hourly candles) on the cluster.
    Demo(demo::DemoArgs),
    /// Manage the Python + Ray runtimes Flotilla provisions with uv.
    #[command(subcommand)]
    Runtime(runtime_cmd::RuntimeCommand),
    /// Pause this machine's contribution (or another node's, with --node on the head): now
    /// and until resumed, --for a while, --until a time, or --finish the running tasks first.
    Pause(pause::PauseArgs),
    /// Resume this machine's contribution (or another node's, with --node) after a pause.
    Resume(pause::ResumeArgs),
    /// Run a command as a Ray job on the cluster, optionally with stored secrets as its
    /// environment variables, and follow its logs.
    Submit(submit::SubmitArgs),
    /// Create a Python environment that matches the cluster (its Python and Ray) for your own
    /// drivers and packages.
    Env(env_cmd::EnvArgs),
    /// Run a driver on this machine against the cluster (RAY_ADDRESS and the token set), after
    /// checking that its Python and Ray can join it.
    Run(env_cmd::RunArgs),
    /// The cluster's jobs: list them (with why a job failed), print a job's logs, stop one.
    Jobs(jobs::JobsArgs),
    /// Manage secrets (API keys, tokens) in the OS keyring.
    #[command(subcommand)]
    Secret(secret_cmd::SecretCommand),
    /// Check this machine's setup: runtime, secret store, throttle, the head and the fleet,
    /// clock. Exit code 0 = all good, 1 = a warning, 2 = a failure.
    Doctor(doctor::DoctorArgs),
    /// Show what this machine senses: idle time, power, battery, memory, load, each with its
    /// source.
    Sensors(sense::SensorsArgs),
    /// On the head: alerts to webhooks (`[alerts]` in flotilla.toml); `test` sends one to
    /// each target.
    #[command(subcommand)]
    Alerts(alerts_cmd::AlertsCommand),
    /// Understand the politeness policy (settings in `flotilla.toml`, section `[policy]`).
    #[command(subcommand)]
    Policy(sense::PolicyCommand),
    /// Run Flotilla as a service of the OS (systemd, launchd, Windows): install, uninstall,
    /// status.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Remove Flotilla's services, start-at-login entry, runtimes and logs; --purge also its
    /// settings, state and secrets.
    Uninstall(uninstall::UninstallArgs),
}

/// The `flotilla` binary's `main`.
impl Command {
    /// Whether the command runs for long, with connections of its own (a node, a job it follows):
    /// those keep a closed pipe an error to handle rather than the end of the process.
    fn keeps_running(&self) -> bool {
        matches!(
            self,
            Command::Up(_)
                | Command::Join(_)
                | Command::Worker(_)
                | Command::Demo(_)
                | Command::Submit(_)
                | Command::Run(_)
        )
    }

    /// Whether the command runs a head or a worker, whose log is also kept in a file.
    fn logs_to_file(&self) -> bool {
        matches!(self, Command::Up(_) | Command::Join(_) | Command::Worker(_))
    }
}

pub fn main() -> ExitCode {
    flotilla_host::memory::limit_arenas();
    let cli = Cli::parse();
    if !cli.command.keeps_running() {
        output::end_when_closed();
    }
    init_logging(cli.verbose, cli.log_format, cli.command.logs_to_file());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Join(args) => join::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Invite(args) => admin::invite(args).await,
            Command::Nodes(args) => admin::nodes(args).await,
            Command::Revoke(args) => admin::revoke(args).await,
            Command::Head(cmd) => admin::head(cmd).await,
            Command::Status(args) => status::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Runtime(cmd) => runtime_cmd::run(cmd).await,
            Command::Sensors(args) => sense::sensors(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Submit(args) => submit::run(args).await,
            Command::Jobs(args) => jobs::run(args).await,
            Command::Env(args) => env_cmd::env(args).await,
            Command::Run(args) => env_cmd::run(args).await,
            Command::Pause(args) => pause::pause(args).await,
            Command::Resume(args) => pause::resume(args).await,
            Command::Secret(cmd) => secret_cmd::run(cmd).await,
            Command::Policy(cmd) => sense::policy(cmd).await,
            Command::Alerts(cmd) => alerts_cmd::run(cmd).await,
            Command::Service(cmd) => service::run(cmd).await,
            Command::Uninstall(args) => uninstall::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", flotilla_app::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// Standard error gets what `-v` asks for (warnings by default; information under systemd,
/// whose journal always reads it, where a pipe nobody reads would stall the writer); a head's
/// or worker's log is also kept in `flotilla.*.log` in the log dir, information and up as JSON
/// lines, rotated and pruned.
fn init_logging(verbose: u8, format: flotilla_app::logs::Format, to_file: bool) {
    use flotilla_app::logs::{Format, LogFile, LogSetup, Retention};
    let format = format.resolve();
    let stderr_level = match (verbose, format) {
        (0, Format::Journald) | (1, _) => "info",
        (0, _) => "warn",
        _ => "debug",
    };
    let file = to_file.then(|| LogFile {
        dir: flotilla_host::Dirs::from_env().logs,
        name: "flotilla".into(),
        retention: Retention::default(),
    });
    if let Some(warning) = flotilla_app::logs::init(LogSetup {
        format,
        stderr_level: stderr_level.into(),
        file,
    }) {
        eprintln!("warning: {warning}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
