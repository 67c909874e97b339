//! What the window calls over Tauri IPC. Errors reach the UI as `{code, message}`, the code
//! stable for the UI to translate (the head's error codes, plus the ones here).

use std::sync::Arc;

use flotilla_agent::enrollment;
use serde::{Deserialize, Serialize};
use tauri::State;
use tauri_plugin_autostart::ManagerExt;

use crate::Desktop;
use crate::status::DesktopStatus;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl CommandError {
    fn new(code: &str, message: impl Into<String>) -> CommandError {
        CommandError {
            code: code.into(),
            message: message.into(),
        }
    }
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
    flotilla_proto::JoinCode::parse(&code)
        .map_err(|e| CommandError::new("bad_code", e.to_string()))?;
    if desktop.enrollment().is_some() {
        return Err(CommandError::new(
            "already_joined",
            "this computer is already in a cluster",
        ));
    }
    let name = name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(flotilla_host::hostname);
    let enrolled = flotilla::join::enroll(&code, name, None)
        .await
        .map_err(|e| CommandError::new("join_failed", format!("{e:#}")))?;
    tracing::info!(node = %enrolled.node_id, "joined the fleet");
    desktop.start_agent(enrolled);
    if let Err(e) = app.autolaunch().enable() {
        tracing::warn!("cannot turn on start at login: {e}");
    }
    Ok(crate::status::read(&desktop).await)
}

/// Sends a pause to this machine's agent: `hour`, `tomorrow` (until 08:00), `indefinite` or
/// `finish` (the running tasks first).
pub async fn pause(desktop: &Desktop, kind: &str) -> Result<()> {
    let req = match kind {
        "hour" => serde_json::json!({"pause": "for", "secs": 3600}),
        "tomorrow" => serde_json::json!({"pause": "until", "at": "08:00"}),
        "indefinite" => serde_json::json!({"pause": "now"}),
        "finish" => serde_json::json!({"pause": "finish"}),
        other => {
            return Err(CommandError::new(
                "bad_request",
                format!("unknown pause {other:?}: expected hour, tomorrow, indefinite or finish"),
            ));
        }
    };
    ask(desktop, req).await
}

pub async fn resume(desktop: &Desktop) -> Result<()> {
    ask(desktop, serde_json::json!({"resume": true})).await
}

async fn ask(desktop: &Desktop, req: serde_json::Value) -> Result<()> {
    let reply = flotilla_agent::control::request(&desktop.dirs.run, &req)
        .await
        .map_err(|e| {
            CommandError::new(
                "agent_unreachable",
                format!("this computer's worker does not answer ({e}); it may still be starting"),
            )
        })?;
    if reply["ok"] == true {
        Ok(())
    } else {
        Err(CommandError::new(
            "refused",
            reply["error"].as_str().unwrap_or("the worker refused"),
        ))
    }
}

#[tauri::command]
pub async fn pause_local(desktop: State<'_, Arc<Desktop>>, kind: String) -> Result<()> {
    pause(&desktop, &kind).await
}

#[tauri::command]
pub async fn resume_local(desktop: State<'_, Arc<Desktop>>) -> Result<()> {
    resume(&desktop).await
}

/// The cluster as its control plane sees it, in the dashboard's form.
#[tauri::command]
pub async fn cluster(desktop: State<'_, Arc<Desktop>>) -> Result<flotilla_head::ClusterSnapshot> {
    let enrolled = desktop
        .enrollment()
        .ok_or_else(|| CommandError::new("not_joined", "this computer is not in a cluster"))?;
    let cached = crate::lock(&desktop.credential).clone();
    let credential = match cached {
        Some(c) => c,
        None => {
            let c = tokio::task::spawn_blocking(|| {
                let (_, _, store) = flotilla::secret_cmd::load_store()?;
                store.get(enrollment::CREDENTIAL_SECRET).map_err(|e| {
                    anyhow::anyhow!(
                        "this computer's node credential is unreadable ({e}): join again"
                    )
                })
            })
            .await
            .map_err(|e| CommandError::new("internal", e.to_string()))?
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SettingsView {
    pub notifications: bool,
    pub language: Option<String>,
    pub start_at_login: bool,
}

#[tauri::command]
pub fn settings(app: tauri::AppHandle, desktop: State<'_, Arc<Desktop>>) -> SettingsView {
    let s = crate::settings::load(&desktop.dirs);
    SettingsView {
        notifications: s.notifications,
        language: s.language,
        start_at_login: app.autolaunch().is_enabled().unwrap_or(false),
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
    Ok(SettingsView {
        start_at_login: autostart.is_enabled().unwrap_or(settings.start_at_login),
        ..settings
    })
}
