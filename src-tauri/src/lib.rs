//! Flotilla's desktop app: this machine's worker agent, a tray icon that says what it is doing
//! and why, notifications, start at login, and the dashboard in a window.
//!
//! The shell is thin. The agent is the same code `flotilla worker` runs
//! ([`flotilla::worker::run_enrolled_until`]), in this process; the tray and the window read
//! it through its local control channel ([`flotilla_agent::control`]), as `flotilla status` and
//! `flotilla pause` do, so the app, the command line and a service all see one agent. Joining
//! is [`flotilla::join::enroll`]; the cluster view is the control plane's snapshot read with
//! this node's credential ([`flotilla_agent::enrollment::Enrollment::cluster`]).
//!
//! - [`status`]: the status the tray and the window show, from the agent's decision.
//! - [`tray`]: the icon, its tooltip and menu.
//! - [`commands`]: what the window calls (Tauri IPC).
//! - [`notify`]: which changes become notifications, rate-limited.
//! - [`settings`]: the app's own settings (start at login, notifications, language).

pub mod commands;
pub mod notify;
pub mod settings;
pub mod status;
pub mod tray;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_agent::enrollment::Enrollment;
use flotilla_host::Dirs;
use tauri::{AppHandle, Emitter, Manager};
use tokio_util::sync::CancellationToken;

use crate::status::{DesktopStatus, Phase};

/// What the app holds: the agent it runs, and the last status it showed.
#[derive(Debug)]
pub struct Desktop {
    pub dirs: Dirs,
    agent: Mutex<Option<RunningAgent>>,
    pub status: Mutex<DesktopStatus>,
    /// Set when the agent stopped by itself (refused, removed, failed to start).
    pub agent_error: Mutex<Option<String>>,
    /// Cancelled on Quit.
    pub quit: CancellationToken,
    /// The node credential, read from the secret store once.
    pub credential: Mutex<Option<Arc<flotilla_secrets::Secret>>>,
}

#[derive(Debug)]
struct RunningAgent {
    shutdown: CancellationToken,
    task: tauri::async_runtime::JoinHandle<()>,
}

impl Desktop {
    fn new() -> Desktop {
        Desktop {
            dirs: Dirs::from_env(),
            agent: Mutex::new(None),
            status: Mutex::new(DesktopStatus::default()),
            agent_error: Mutex::new(None),
            quit: CancellationToken::new(),
            credential: Mutex::new(None),
        }
    }

    pub fn enrollment(&self) -> Option<Enrollment> {
        Enrollment::load(&self.dirs).ok().flatten()
    }

    /// Starts this machine's worker in the fleet it joined (no-op when it runs already).
    pub fn start_agent(self: &Arc<Self>, enrolled: Enrollment) {
        let mut agent = lock(&self.agent);
        if agent
            .as_ref()
            .is_some_and(|a| !a.task.inner().is_finished())
        {
            return;
        }
        *lock(&self.agent_error) = None;
        let shutdown = self.quit.child_token();
        let (me, stop) = (self.clone(), shutdown.clone());
        let task = tauri::async_runtime::spawn(async move {
            let node = flotilla::worker::NodeArgs::default();
            let ended =
                flotilla::worker::run_enrolled_until(enrolled, node, stop.clone(), None).await;
            if stop.is_cancelled() {
                return;
            }
            let why = match ended {
                Ok(code) if code == std::process::ExitCode::SUCCESS => {
                    "the worker stopped: this machine left the fleet".to_string()
                }
                Ok(_) => "the head refused this machine: join again with a new code".to_string(),
                Err(e) => format!("{e:#}"),
            };
            tracing::warn!("{why}");
            *lock(&me.agent_error) = Some(why);
        });
        *agent = Some(RunningAgent { shutdown, task });
    }

    /// Stops the worker (its Ray node stops gracefully) and waits for it.
    pub async fn stop_agent(&self) {
        let running = lock(&self.agent).take();
        if let Some(a) = running {
            a.shutdown.cancel();
            let _ = a.task.await;
        }
    }

    pub fn agent_started(&self) -> bool {
        lock(&self.agent).is_some()
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the agent every second and brings the tray, the window and notifications up to date.
async fn follow(app: AppHandle, desktop: Arc<Desktop>) {
    let mut notifier = notify::Notifier::default();
    loop {
        let status = status::read(&desktop).await;
        let old = std::mem::replace(&mut *lock(&desktop.status), status.clone());
        notifier.on_tick(&app, &old, &status);
        let changed = old != status;
        if changed {
            tray::show(&app, &status);
            let _ = app.emit("flotilla://status", &status);
        }
        tokio::select! {
            _ = desktop.quit.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Shows and focuses the main window, creating it when it is closed: a closed window is gone,
/// webview and all, so the app in the tray holds no WebKit processes.
pub fn show_window(app: &AppHandle) {
    let window = match app.get_webview_window("main") {
        Some(w) => w,
        None => {
            let Some(config) = app.config().app.windows.iter().find(|w| w.label == "main") else {
                return;
            };
            match tauri::WebviewWindowBuilder::from_config(app, config).and_then(|b| b.build()) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("cannot open the window: {e}");
                    return;
                }
            }
        }
    };
    let _ = window.show();
    let _ = window.unminimize();
    let _ = window.set_focus();
}

/// Stops the agent, then the app.
pub fn quit(app: &AppHandle) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let desktop = app.state::<Arc<Desktop>>().inner().clone();
        desktop.stop_agent().await;
        desktop.quit.cancel();
        app.exit(0);
    });
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The app's `main`.
pub fn run() {
    init_logging();
    let desktop = Arc::new(Desktop::new());
    let minimized = std::env::args().any(|a| a == "--minimized");
    let result = tauri::Builder::default()
        // A second launch shows the running app's window instead.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            show_window(app);
        }))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--minimized"]),
        ))
        .manage(desktop.clone())
        .invoke_handler(tauri::generate_handler![
            commands::desktop_status,
            commands::join,
            commands::pause_local,
            commands::resume_local,
            commands::cluster,
            commands::settings,
            commands::set_settings,
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            tray::create(&handle)?;
            let enrolled = desktop.enrollment();
            match enrolled {
                Some(e) => desktop.start_agent(e),
                // First run: the window asks to join.
                None => show_window(&handle),
            }
            if desktop.agent_started() && !minimized {
                show_window(&handle);
            }
            tauri::async_runtime::spawn(follow(handle.clone(), desktop.clone()));
            // Logging out (SIGTERM) or Ctrl-C in a terminal quits as the menu's Quit does:
            // the worker's Ray node stops first.
            tauri::async_runtime::spawn(async move {
                flotilla::up::shutdown_signal().cancelled().await;
                quit(&handle);
            });
            Ok(())
        })
        .build(tauri::generate_context!());
    match result {
        // Closing the window destroys it (the tray stays): the last window closing is not a
        // reason to quit, only Quit (an exit code) is.
        Ok(app) => app.run(|_, event| {
            if let tauri::RunEvent::ExitRequested { api, code, .. } = event
                && code.is_none()
            {
                api.prevent_exit();
            }
        }),
        Err(e) => {
            eprintln!("error: cannot start the Flotilla app: {e}");
            std::process::exit(1);
        }
    }
}

/// Phase helpers for the modules.
impl DesktopStatus {
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }
}
