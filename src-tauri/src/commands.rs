//! What the window calls over Tauri IPC. Errors reach the UI as `{code, message}`, the code
//! stable for the UI to translate (the head's error codes, plus the ones here).

use std::sync::Arc;

use flotilla_agent::enrollment;
use flotilla_host::Dirs;
use serde::{Deserialize, Serialize};
use tauri::State;
use tauri_plugin_autostart::ManagerExt;

use crate::logs::LogLine;
use crate::policy::{FieldProblem, PolicyView};
use crate::status::{DesktopStatus, Role};
use crate::{Desktop, tray};

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct CommandError {
    pub code: String,
    pub message: String,
    /// For `invalid` settings: each refused field with what it accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub problems: Option<Vec<FieldProblem>>,
}

impl CommandError {
    fn new(code: &str, message: impl Into<String>) -> CommandError {
        CommandError {
            code: code.into(),
            message: message.into(),
            problems: None,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> CommandError {
    CommandError::new("internal", e.to_string())
}

type Result<T> = std::result::Result<T, CommandError>;

#[tauri::command]
pub async fn desktop_status(desktop: State<'_, Arc<Desktop>>) -> Result<DesktopStatus> {
    Ok(crate::status::read(&desktop).await)
}

/// Joins the fleet of `code` (as `name`, default the hostname), starts the worker and turns on
/// start at login.
#[tauri::command]
pub async fn join(
    app: tauri::AppHandle,
    desktop: State<'_, Arc<Desktop>>,
    code: String,
    name: Option<String>,
) -> Result<DesktopStatus> {
    let code = code.trim().to_string();
    // A malformed code is told apart from a head that refuses a good one.
    flotilla_proto::JoinCode::find(&code)
        .map_err(|e| CommandError::new("bad_code", e.to_string()))?;
    if desktop.role() != Role::None {
        return Err(CommandError::new(
            "already_joined",
            "this computer is already in a cluster",
        ));
    }
    let name = name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(flotilla_app::join::default_name);
    let log = crate::events(flotilla_ray::runtime::no_progress());
    let enrolled = flotilla_app::join::enroll(&code, name, None, &log)
        .await
        .map_err(|e| CommandError::new("join_failed", flotilla_app::describe(&e)))?;
    tracing::info!(node = %enrolled.node_id, "joined the fleet");
    desktop.start_agent(&app, enrolled);
    if let Err(e) = app.autolaunch().enable() {
        tracing::warn!("cannot turn on start at login: {e}");
    }
    Ok(crate::status::read(&desktop).await)
}

/// Sends a pause to the agent of the home `dirs` describes (this machine's): `hour`,
/// `tomorrow` (until 08:00), `indefinite` or `finish` (the running tasks first).
pub async fn pause(dirs: &Dirs, kind: &str) -> Result<()> {
    use flotilla_agent::control::{PauseKind, Request};
    let req = match kind {
        "hour" => Request::pause_for(3600),
        "tomorrow" => Request::pause_until("08:00"),
        "indefinite" => Request::pause(PauseKind::Now),
        "finish" => Request::pause(PauseKind::Finish),
        other => {
            return Err(CommandError::new(
                "bad_request",
                format!("unknown pause {other:?}: expected hour, tomorrow, indefinite or finish"),
            ));
        }
    };
    ask(dirs, req).await
}

/// Ends a pause of the agent of the home `dirs` describes.
pub async fn resume(dirs: &Dirs) -> Result<()> {
    ask(
        dirs,
        flotilla_agent::control::Request::Resume { resume: true },
    )
    .await
}

fn agent(dirs: &Dirs) -> flotilla_agent::control::Client {
    flotilla_agent::control::Client::of(dirs)
}

/// The error the window shows when the agent does not answer or refuses.
fn agent_error(e: flotilla_agent::control::AskError) -> CommandError {
    use flotilla_agent::control::AskError;
    match e {
        AskError::Unreachable(e) => CommandError::new(
            "agent_unreachable",
            format!("this computer's worker does not answer ({e}); it may still be starting"),
        ),
        other => CommandError::new("refused", other.to_string()),
    }
}

async fn ask(dirs: &Dirs, req: flotilla_agent::control::Request) -> Result<()> {
    agent(dirs).done(&req).await.map_err(agent_error)
}

#[tauri::command]
pub async fn pause_local(desktop: State<'_, Arc<Desktop>>, kind: String) -> Result<()> {
    pause(&desktop.dirs, &kind).await
}

#[tauri::command]
pub async fn resume_local(desktop: State<'_, Arc<Desktop>>) -> Result<()> {
    resume(&desktop.dirs).await
}

/// The cluster as its control plane sees it, in the dashboard's form: in this process on the
/// host, else over the network with this node's credential.
#[tauri::command]
pub async fn cluster(desktop: State<'_, Arc<Desktop>>) -> Result<flotilla_head::ClusterSnapshot> {
    if desktop.role() == Role::Host {
        let fleet = crate::lock(&desktop.hosted)
            .as_ref()
            .map(|h| h.fleet.clone());
        return match fleet {
            Some(f) => Ok(flotilla_head::ClusterSnapshot::of_fleet(&f.snapshot())),
            None => Err(CommandError::new(
                "unreachable",
                "the cluster this computer hosts is starting",
            )),
        };
    }
    let enrolled = desktop
        .enrollment()
        .ok_or_else(|| CommandError::new("not_joined", "this computer is not in a cluster"))?;
    let cached = crate::lock(&desktop.credential).clone();
    let credential = match cached {
        Some(c) => c,
        None => {
            let c = tokio::task::spawn_blocking(|| {
                let (_, _, store) = flotilla_app::secrets::load_store()?;
                store.get(enrollment::CREDENTIAL_SECRET).map_err(|e| {
                    anyhow::anyhow!(
                        "this computer's node credential is unreadable ({e}): join again"
                    )
                })
            })
            .await
            .map_err(internal)?
            .map_err(|e| CommandError::new("secrets", format!("{e:#}")))?;
            let c = Arc::new(c);
            *crate::lock(&desktop.credential) = Some(c.clone());
            c
        }
    };
    let snapshot = enrolled
        .cluster(&credential)
        .await
        .map_err(|e| CommandError::new("unreachable", e))?;
    Ok(flotilla_head::ClusterSnapshot::of_fleet(&snapshot))
}

/// Hosts the cluster on this computer (the head and this computer's worker, in the app),
/// remembers it (the app hosts again at its next start) and turns on start at login.
#[tauri::command]
pub async fn host(
    app: tauri::AppHandle,
    desktop: State<'_, Arc<Desktop>>,
) -> Result<DesktopStatus> {
    match desktop.role() {
        Role::Worker => {
            return Err(CommandError::new(
                "already_joined",
                "this computer is already in a cluster",
            ));
        }
        Role::Host => {}
        Role::None => {
            let mut s = crate::settings::load(&desktop.dirs);
            s.hosting = true;
            crate::settings::save(&desktop.dirs, &s)
                .map_err(|e| CommandError::new("bad_settings", e.to_string()))?;
            tracing::info!("this computer hosts the cluster");
            if let Err(e) = app.autolaunch().enable() {
                tracing::warn!("cannot turn on start at login: {e}");
            }
        }
    }
    desktop.start_host(&app);
    Ok(crate::status::read(&desktop).await)
}

/// A join code for the cluster this computer hosts, with its QR code: the current one, or a
/// new one with `fresh`.
#[tauri::command]
pub async fn host_invite(
    desktop: State<'_, Arc<Desktop>>,
    fresh: bool,
) -> Result<flotilla_head::dto::InviteReply> {
    if desktop.role() != Role::Host {
        return Err(CommandError::new(
            "not_host",
            "this computer does not host the cluster",
        ));
    }
    desktop
        .host_invite(fresh)
        .await
        .map_err(|e| CommandError::new("unreachable", e))
}

/// What this computer's sensors read now, as the agent used them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SensorsView {
    /// Seconds since the owner's last input, and where that came from.
    pub idle_secs: Option<f64>,
    pub idle_from: String,
    /// `ac`, `battery` or `unknown`.
    pub power: String,
    pub battery_percent: Option<f64>,
    /// Memory available, 0 to 1.
    pub memory_free: Option<f64>,
    /// The whole machine's CPU load, and the owner's own (without Flotilla's), 0 to 1.
    pub machine_load: Option<f64>,
    pub owner_load: Option<f64>,
    pub temperature_c: Option<f64>,
    pub running_programs: Option<f64>,
    pub total_cpus: f64,
    pub local_time: String,
}

impl SensorsView {
    /// The agent's sensor report (`sensors` of its decision).
    pub fn of(r: &flotilla_agent::sampler::SensorReport) -> SensorsView {
        SensorsView {
            idle_secs: r.idle_secs.value,
            idle_from: r.idle_secs.from.clone(),
            power: r.power.value.clone().unwrap_or_else(|| "unknown".into()),
            battery_percent: r.battery_percent.value.map(f64::from),
            memory_free: r.available_memory_fraction.value,
            machine_load: r.machine_load.value,
            owner_load: r.owner_load.value,
            temperature_c: r.temperature_c.value,
            running_programs: r.running_programs.value.map(|n| n as f64),
            total_cpus: f64::from(r.total_cpus),
            local_time: r.local_time.clone(),
        }
    }
}

/// What this computer gave the cluster, in CPU-hours and what a cloud would have charged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ContributionView {
    pub today_cpu_hours: f64,
    pub week_cpu_hours: f64,
    pub total_cpu_hours: f64,
    /// The first hour counted (Unix seconds).
    pub since_unix: Option<i64>,
    /// US dollars per vCPU-hour (a setting).
    pub price_per_vcpu_hour: f64,
    pub today_cost: f64,
    pub week_cost: f64,
    pub total_cost: f64,
}

impl ContributionView {
    /// The agent's tally at `price` dollars a vCPU-hour.
    pub fn of(c: &flotilla_agent::outbox::Contribution, price: f64) -> ContributionView {
        let hours = |secs: f64| secs / 3600.0;
        let (today, week, total) = (
            hours(c.today_cpu_seconds),
            hours(c.week_cpu_seconds),
            hours(c.total_cpu_seconds),
        );
        ContributionView {
            today_cpu_hours: today,
            week_cpu_hours: week,
            total_cpu_hours: total,
            since_unix: c.since_unix,
            price_per_vcpu_hour: price,
            today_cost: today * price,
            week_cost: week * price,
            total_cost: total * price,
        }
    }
}

/// This computer in detail: its sensors and what it contributed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ComputerView {
    pub sensors: Option<SensorsView>,
    pub contribution: Option<ContributionView>,
}

#[tauri::command]
pub async fn computer(desktop: State<'_, Arc<Desktop>>) -> Result<ComputerView> {
    let agent = agent(&desktop.dirs);
    let (decision, contribution) = tokio::join!(agent.decision(), agent.contribution());
    let decision = decision.map_err(agent_error)?;
    let price = crate::settings::load(&desktop.dirs).price_per_vcpu_hour;
    Ok(ComputerView {
        sensors: decision.map(|d| SensorsView::of(&d.published.sensors)),
        contribution: contribution.ok().map(|c| ContributionView::of(&c, price)),
    })
}

/// The politeness settings in force on this computer.
#[tauri::command]
pub async fn policy(desktop: State<'_, Arc<Desktop>>) -> Result<PolicyView> {
    let (fleet, path) = (desktop.fleet_policy(), crate::policy::file(&desktop.dirs));
    tokio::task::spawn_blocking(move || crate::policy::effective(&fleet, &path))
        .await
        .map_err(internal)?
        .map_err(|e| CommandError::new("bad_settings", e.message))
}

/// Settings saved, and whether the running agent took them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PolicySaved {
    pub policy: PolicyView,
    /// False when no worker runs yet: it reads them when it starts.
    pub applied: bool,
}

/// Checks and writes the politeness settings to `flotilla.toml`, then has the agent read them
/// again; nothing is written when a field is refused (`invalid`, with `problems`).
#[tauri::command]
pub async fn set_policy(
    desktop: State<'_, Arc<Desktop>>,
    policy: PolicyView,
) -> Result<PolicySaved> {
    let (fleet, path) = (desktop.fleet_policy(), crate::policy::file(&desktop.dirs));
    let saved = tokio::task::spawn_blocking(move || crate::policy::save(&fleet, &path, &policy))
        .await
        .map_err(internal)?
        .map_err(|e| CommandError {
            code: "invalid".into(),
            message: e.message,
            problems: Some(e.problems),
        })?;
    tracing::info!("politeness settings saved to flotilla.toml");
    use flotilla_agent::control::AskError;
    let applied = match agent(&desktop.dirs).reload_policy().await {
        Ok(_) => true,
        Err(AskError::Unreachable(_)) => false,
        Err(e) => return Err(CommandError::new("refused", e.to_string())),
    };
    Ok(PolicySaved {
        policy: saved,
        applied,
    })
}

/// One stored secret: its name and dates, never its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SecretView {
    pub name: String,
    pub created_unix: u64,
    pub updated_unix: u64,
    /// `keyring` or `file`.
    pub backend: String,
    /// Flotilla's own (`flotilla.*`): shown, never removed or replaced from here.
    pub protected: bool,
}

fn secret_views(store: &flotilla_secrets::SecretStore) -> anyhow::Result<Vec<SecretView>> {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let mut list: Vec<SecretView> = store
        .list()?
        .into_iter()
        .map(|i| SecretView {
            protected: flotilla_app::secrets::is_protected(&i.name),
            created_unix: unix(i.created),
            updated_unix: unix(i.updated),
            backend: i.backend.as_str().into(),
            name: i.name,
        })
        .collect();
    list.sort_by(|a, b| (a.protected, &a.name).cmp(&(b.protected, &b.name)));
    Ok(list)
}

/// Runs `f` on the secret store `flotilla secret` uses (keyring calls block on D-Bus).
async fn with_store<T: Send + 'static>(
    f: impl FnOnce(&flotilla_secrets::SecretStore) -> anyhow::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let (_, _, store) = flotilla_app::secrets::load_store()?;
        f(&store)
    })
    .await
    .map_err(internal)?
    .map_err(|e| CommandError::new("secrets", format!("{e:#}")))
}

/// Flotilla's own secrets are refused (`protected`), by the rule `flotilla secret` follows too.
fn check_change(name: &str, change: flotilla_app::secrets::Change) -> Result<()> {
    flotilla_app::secrets::check_change(name, change)
        .map_err(|e| CommandError::new("protected", e.to_string()))
}

/// The stored secrets, by name (Flotilla's own last).
#[tauri::command]
pub async fn secrets() -> Result<Vec<SecretView>> {
    with_store(secret_views).await
}

/// Stores a secret (the value never comes back, and is never logged).
#[tauri::command]
pub async fn add_secret(name: String, value: String) -> Result<Vec<SecretView>> {
    flotilla_secrets::validate_name(&name)
        .map_err(|e| CommandError::new("bad_name", e.to_string()))?;
    check_change(&name, flotilla_app::secrets::Change::Set)?;
    if value.is_empty() {
        return Err(CommandError::new(
            "empty_value",
            "the value is empty: nothing was stored",
        ));
    }
    let secret = flotilla_secrets::Secret::from(value);
    let list = with_store(move |store| {
        store.set(&name, &secret)?;
        tracing::info!(name, "secret stored");
        secret_views(store)
    })
    .await?;
    Ok(list)
}

/// Removes a secret; Flotilla's own are refused (`protected`).
#[tauri::command]
pub async fn remove_secret(name: String) -> Result<Vec<SecretView>> {
    check_change(&name, flotilla_app::secrets::Change::Remove)?;
    let missing = name.clone();
    let (removed, list) = with_store(move |store| {
        let removed = store.remove(&name)?;
        if removed {
            tracing::info!(name, "secret removed");
        }
        Ok((removed, secret_views(store)?))
    })
    .await?;
    if !removed {
        return Err(CommandError::new(
            "no_secret",
            format!("no secret named {missing:?} is stored"),
        ));
    }
    Ok(list)
}

/// The last `lines` lines of the app's log (200 by default).
#[tauri::command]
pub async fn logs(desktop: State<'_, Arc<Desktop>>, lines: Option<u32>) -> Result<Vec<LogLine>> {
    let dir = desktop.dirs.logs.clone();
    let n = lines.unwrap_or(200) as usize;
    tokio::task::spawn_blocking(move || crate::logs::tail(&dir, n))
        .await
        .map_err(internal)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SettingsView {
    pub notifications: bool,
    pub language: Option<String>,
    pub start_at_login: bool,
    /// US dollars per vCPU-hour, for the contribution's equivalent cloud cost.
    pub price_per_vcpu_hour: f64,
}

#[tauri::command]
pub fn settings(app: tauri::AppHandle, desktop: State<'_, Arc<Desktop>>) -> SettingsView {
    let s = crate::settings::load(&desktop.dirs);
    SettingsView {
        notifications: s.notifications,
        language: s.language,
        start_at_login: app.autolaunch().is_enabled().unwrap_or(false),
        price_per_vcpu_hour: s.price_per_vcpu_hour,
    }
}

#[tauri::command]
pub fn set_settings(
    app: tauri::AppHandle,
    desktop: State<'_, Arc<Desktop>>,
    settings: SettingsView,
) -> Result<SettingsView> {
    let s = crate::settings::Settings {
        notifications: settings.notifications,
        language: settings.language.clone(),
        price_per_vcpu_hour: settings.price_per_vcpu_hour,
        // The rest is not the window's to change.
        ..crate::settings::load(&desktop.dirs)
    };
    crate::settings::save(&desktop.dirs, &s)
        .map_err(|e| CommandError::new("bad_settings", e.to_string()))?;
    let autostart = app.autolaunch();
    let done = if settings.start_at_login {
        autostart.enable()
    } else {
        autostart.disable()
    };
    done.map_err(|e| CommandError::new("autostart", e.to_string()))?;
    tray::relabel(&app);
    Ok(SettingsView {
        start_at_login: autostart.is_enabled().unwrap_or(settings.start_at_login),
        ..settings
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensors_and_contribution_read_from_the_agents_answers() {
        let s = SensorsView::of(
            &serde_json::from_value(serde_json::json!({
                "idle_secs": {"value": 12.5, "from": "desktop"},
                "power": {"value": "battery", "from": "sysfs"},
                "battery_percent": {"value": 80, "from": "sysfs"},
                "available_memory_fraction": {"value": 0.4, "from": "proc"},
                "machine_load": {"value": 0.3, "from": "proc"},
                "owner_load": {"value": null, "from": "proc"},
                "temperature_c": {"value": null, "from": "unknown"},
                "running_programs": {"value": 120, "from": "proc"},
                "total_cpus": 8, "local_time": "Monday 10:00", "load_window_secs": 10.0,
            }))
            .unwrap(),
        );
        assert_eq!((s.idle_secs, s.idle_from.as_str()), (Some(12.5), "desktop"));
        assert_eq!(
            (s.power.as_str(), s.battery_percent),
            ("battery", Some(80.0))
        );
        assert_eq!((s.owner_load, s.total_cpus), (None, 8.0));
        let c = ContributionView::of(
            &flotilla_agent::outbox::Contribution {
                today_cpu_seconds: 7200.0,
                week_cpu_seconds: 36000.0,
                total_cpu_seconds: 360000.0,
                since_unix: Some(1000),
            },
            0.04,
        );
        assert_eq!(
            (c.today_cpu_hours, c.week_cpu_hours, c.total_cpu_hours),
            (2.0, 10.0, 100.0)
        );
        assert!((c.total_cost - 4.0).abs() < 1e-9 && (c.today_cost - 0.08).abs() < 1e-9);
        assert_eq!(c.since_unix, Some(1000));
    }

    #[test]
    fn flotillas_own_secrets_are_protected() {
        // Refused before the store is opened, with the message `flotilla secret` gives.
        use tauri::async_runtime::block_on;
        for name in ["flotilla.ray-token", "flotilla.node-credential"] {
            let removed = block_on(remove_secret(name.into())).unwrap_err();
            let added = block_on(add_secret(name.into(), "x".into())).unwrap_err();
            for (e, change) in [
                (removed, flotilla_app::secrets::Change::Remove),
                (added, flotilla_app::secrets::Change::Set),
            ] {
                assert_eq!(e.code, "protected");
                let rule = flotilla_app::secrets::check_change(name, change).unwrap_err();
                assert_eq!(e.message, rule.to_string());
            }
        }
        assert!(check_change("binance-api-key", flotilla_app::secrets::Change::Remove).is_ok());
    }
}
