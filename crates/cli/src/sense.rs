//! `flotilla sensors` and `flotilla policy explain`: what this machine reads, and what the
//! politeness policy makes of it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use flotilla_agent::config;
use flotilla_agent::sampler::{Sampler, SensorReport, Shown};
use flotilla_host::Dirs;
use flotilla_host::sensors::Sensors;
use flotilla_policy::{Lang, Manual, Pause, Policy};

/// How long the first CPU-load sample spans.
const FIRST_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct SensorsArgs {
    /// Print the readings as JSON (one object; one per line with --watch).
    #[arg(long)]
    json: bool,
    /// Keep reading, once a second, until Ctrl-C.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show what this machine would lend to the cluster right now, and every rule's verdict.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Print the decision and the verdicts as JSON.
    #[arg(long)]
    json: bool,
    /// Language of the reasons.
    #[arg(long, value_enum, default_value_t = LangArg::En)]
    lang: LangArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LangArg {
    En,
    Es,
}

impl From<LangArg> for Lang {
    fn from(l: LangArg) -> Lang {
        match l {
            LangArg::En => Lang::En,
            LangArg::Es => Lang::Es,
        }
    }
}

/// Two samples a second apart, so the CPU load covers a real interval.
async fn first_reading(sampler: &mut Sampler) -> (flotilla_policy::Readings, SensorReport) {
    sampler.sample(Instant::now(), &[]);
    tokio::time::sleep(FIRST_WINDOW).await;
    sampler.sample(Instant::now(), &[])
}

pub async fn sensors(args: SensorsArgs) -> anyhow::Result<ExitCode> {
    let mut sampler = Sampler::new(Sensors::new(), Default::default());
    let (_, mut report) = first_reading(&mut sampler).await;
    loop {
        if args.json {
            let json = if args.watch {
                serde_json::to_string(&report)?
            } else {
                serde_json::to_string_pretty(&report)?
            };
            println!("{json}");
        } else {
            print!("{}", render(&report));
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        report = sampler.sample(Instant::now(), &[]).1;
        if !args.json {
            println!();
        }
    }
}

fn shown<T>(s: &Shown<T>, f: impl Fn(&T) -> String) -> String {
    let v = s.value.as_ref().map_or_else(|| "unknown".to_string(), f);
    format!("{v:<14} ({})", s.from)
}

fn render(r: &SensorReport) -> String {
    let pct = |v: &f64| format!("{:.0}%", v * 100.0);
    [
        ("Idle", shown(&r.idle_secs, |v| format!("{v:.1} s"))),
        ("Power", shown(&r.power, |v| v.clone())),
        ("Battery", shown(&r.battery_percent, |v| format!("{v}%"))),
        ("Free memory", shown(&r.available_memory_fraction, pct)),
        ("Machine load", shown(&r.machine_load, pct)),
        ("Owner load", shown(&r.owner_load, pct)),
        (
            "Temperature",
            shown(&r.temperature_c, |v| format!("{v:.0} °C")),
        ),
        ("Programs", shown(&r.running_programs, |v| v.to_string())),
        ("CPUs", r.total_cpus.to_string()),
        ("Local time", r.local_time.clone()),
    ]
    .iter()
    .map(|(k, v)| format!("{k:<13} {v}\n"))
    .collect()
}

pub async fn policy(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let PolicyCommand::Explain(args) = cmd;
    let lang = Lang::from(args.lang);
    let dirs = Dirs::from_env();
    let path = dirs.config.join(config::FILE_NAME);
    let settings = config::load(&path)?.policy;
    let mut sampler = Sampler::new(Sensors::new(), Default::default());
    let (readings, report) = first_reading(&mut sampler).await;
    let policy = Policy::new(settings);
    let explanation = policy.explain(&readings, &Manual::None, Duration::ZERO);
    if args.json {
        let verdicts: Vec<serde_json::Value> = explanation
            .verdicts
            .iter()
            .map(|v| {
                serde_json::json!({
                    "rule": v.rule.name(),
                    "fired": v.fired,
                    "target_cpus": v.target_cpus,
                    "pause": v.pause,
                    "detail": v.detail.get(lang),
                })
            })
            .collect();
        let out = serde_json::json!({
            "config": path,
            "decision": explanation.decision,
            "reason": explanation.decision.reason.text(lang),
            "verdicts": verdicts,
            "sensors": report,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let d = &explanation.decision;
    let (head, cpus, pause, rules) = match lang {
        Lang::En => (
            "Decision",
            "CPUs",
            "pause",
            "Rules (in order of precedence)",
        ),
        Lang::Es => (
            "Decisión",
            "CPU",
            "pausa",
            "Reglas (por orden de precedencia)",
        ),
    };
    let pause_word = match (lang, d.pause) {
        (Lang::En, Pause::None) => "none",
        (Lang::En, Pause::Finish) => "after the current tasks",
        (Lang::En, Pause::Now) => "now",
        (Lang::Es, Pause::None) => "ninguna",
        (Lang::Es, Pause::Finish) => "al terminar las tareas en curso",
        (Lang::Es, Pause::Now) => "inmediata",
    };
    println!("{head}: {} {cpus}, {pause}: {pause_word}", d.target_cpus);
    println!("  {}", d.reason.text(lang));
    println!();
    println!("{rules}:");
    for v in &explanation.verdicts {
        let mark = if v.fired { "*" } else { " " };
        println!(" {mark} {:<14} {}", v.rule.name(), v.detail.get(lang));
    }
    Ok(ExitCode::SUCCESS)
}
