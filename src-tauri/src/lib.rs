//! Flotilla's desktop app: this machine's worker agent, a tray icon that says what it is doing
//! and why, notifications, start at login, and the dashboard in a window.
//!
//! The shell is thin: it draws, and `flotilla-app` does the work, as it does for the command
//! line. The agent is the same code `flotilla worker` runs ([`flotilla_app::worker::run_enrolled`]),
//! in this process; a computer that hosts the cluster runs what `flotilla up` runs instead
//! ([`flotilla_app::host::start`]: the head and its own worker). The tray and the window read
//! the agent through its local control channel ([`flotilla_agent::control`]), as `flotilla
//! status` and `flotilla pause` do, so the app, the command line and a service all see one
//! agent. Joining is [`flotilla_app::join::enroll`]; the cluster view is the control plane's snapshot, read with this node's credential
//! ([`flotilla_agent::enrollment::Enrollment::cluster`]) or, on the host, from the control
//! plane in this process.
//!
//! - [`status`]: the status the tray and the window show, from the agent's decision.
//! - [`progress`]: the runtime's provisioning, for the window's progress bar.
//! - [`tray`]: the icon, its tooltip and menu.
//! - [`commands`]: what the window calls (Tauri IPC).
//! - [`notify`]: which changes become notifications, rate-limited.
//! - [`settings`]: the app's own settings (start at login, notifications, language, the price
//!   of a vCPU-hour, whether it hosts).
//! - [`policy`]: the politeness settings of `flotilla.toml`, validated and written back.
//! - [`logs`]: the app's log file and its tail.

pub mod commands;
pub mod logs;
pub mod notify;
pub mod policy;
pub mod progress;
pub mod settings;
pub mod status;
pub mod tray;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_agent::enrollment::Enrollment;
use flotilla_host::Dirs;
use tauri::{AppHandle, Emitter, Manager};
use tokio_util::sync::CancellationToken;

use crate::status::{DesktopStatus, Phase, Role};

/// What the app holds: the agent (or the hosted cluster) it runs, and the last status it
/// showed.
#[derive(Debug)]
pub struct Desktop {
    pub dirs: Dirs,
    /// The worker's task, or the hosted cluster's.
    agent: Mutex<Option<RunningAgent>>,
    /// The cluster this computer hosts, once it runs.
    pub hosted: Mutex<Option<Hosted>>,
    /// The latest join code made for the hosted cluster.
    pub invite: Mutex<Option<flotilla_head::dto::InviteReply>>,
    /// The runtime's provisioning, while the agent starts.
    pub progress: Mutex<Option<progress::ProvisionView>>,
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

/// What the window needs of a cluster this computer hosts.
#[derive(Debug, Clone)]
pub struct Hosted {
    pub fleet: flotilla_head::fleet::ControlPlane,
    pub info: flotilla_head::HeadInfo,
    /// The fleet's `[policy]` defaults, as the head read them at start.
    pub fleet_policy: String,
}

/// What a hosted cluster's join codes allow.
pub const INVITE_USES: u32 = 10;
pub const INVITE_TTL: Duration = Duration::from_secs(24 * 3600);

impl Desktop {
    fn new() -> Desktop {
        Desktop {
            dirs: Dirs::from_env(),
            agent: Mutex::new(None),
            hosted: Mutex::new(None),
            invite: Mutex::new(None),
            progress: Mutex::new(None),
            status: Mutex::new(DesktopStatus::default()),
            agent_error: Mutex::new(None),
            quit: CancellationToken::new(),
            credential: Mutex::new(None),
        }
    }

    pub fn enrollment(&self) -> Option<Enrollment> {
        Enrollment::load(&self.dirs).ok().flatten()
    }

    /// What this computer is to its cluster: the host (remembered in the settings), a worker
    /// (it joined), or neither yet.
    pub fn role(&self) -> Role {
        if settings::load(&self.dirs).hosting {
            Role::Host
        } else if self.enrollment().is_some() {
            Role::Worker
        } else {
            Role::None
        }
    }

    /// The name of the hosting computer's own worker.
    pub fn host_worker_name(&self) -> String {
        flotilla_app::host::HostOptions::from_env().worker_name()
    }

    /// The fleet's policy defaults this computer's agent merges its own settings under.
    pub fn fleet_policy(&self) -> String {
        match self.role() {
            Role::Host => lock(&self.hosted)
                .as_ref()
                .map(|h| h.fleet_policy.clone())
                .unwrap_or_default(),
            _ => self.enrollment().map(|e| e.policy_toml).unwrap_or_default(),
        }
    }

    fn running(&self) -> bool {
        lock(&self.agent)
            .as_ref()
            .is_some_and(|a| !a.task.inner().is_finished())
    }

    /// Starts this machine's worker in the fleet it joined (no-op when it runs already).
    pub fn start_agent(self: &Arc<Self>, app: &AppHandle, enrolled: Enrollment) {
        if self.running() {
            return;
        }
        let mut agent = lock(&self.agent);
        *lock(&self.agent_error) = None;
        let shutdown = self.quit.child_token();
        let (me, stop) = (self.clone(), shutdown.clone());
        let runtime = (
            enrolled.ray_version.clone(),
            enrolled.python_version.clone(),
        );
        let events = events(progress::sink(app.clone(), self.clone(), runtime));
        let task = tauri::async_runtime::spawn(async move {
            let node = flotilla_app::worker::NodeOptions::from_env();
            let ended =
                flotilla_app::worker::run_enrolled(enrolled, node, stop.clone(), events).await;
            if stop.is_cancelled() {
                return;
            }
            use flotilla_app::worker::WorkerEnd;
            let why = match ended {
                Ok(WorkerEnd::Shutdown | WorkerEnd::Left(_)) => {
                    "the worker stopped: this machine left the fleet".to_string()
                }
                Ok(WorkerEnd::Refused(_)) => {
                    "the head refused this machine: join again with a new code".to_string()
                }
                Err(e) => format!("{e:#}"),
            };
            tracing::warn!("{why}");
            *lock(&me.agent_error) = Some(why);
        });
        *agent = Some(RunningAgent { shutdown, task });
    }

    /// Hosts the cluster on this computer, as `flotilla up` does: the Ray head, the control
    /// plane, the cluster API and this computer's own worker, in this process (no-op when it
    /// runs already). Ports and sizes are `flotilla up`'s defaults, with their `FLOTILLA_*`
    /// environment variables.
    pub fn start_host(self: &Arc<Self>, app: &AppHandle) {
        if self.running() {
            return;
        }
        let mut agent = lock(&self.agent);
        *lock(&self.agent_error) = None;
        let shutdown = self.quit.child_token();
        let (me, stop) = (self.clone(), shutdown.clone());
        let spec = flotilla_ray::RuntimeSpec::default();
        let runtime = (spec.ray.clone(), spec.python.clone());
        let events = events(progress::sink(app.clone(), self.clone(), runtime));
        let task = tauri::async_runtime::spawn(async move {
            let options = flotilla_app::host::HostOptions::from_env();
            let running = tokio::select! {
                _ = stop.cancelled() => return,
                r = flotilla_app::host::start(&options, &events) => r,
            };
            let running = match running {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("cannot host the cluster: {e:#}");
                    tracing::warn!("{why}");
                    *lock(&me.agent_error) = Some(why);
                    return;
                }
            };
            tracing::info!(api = %running.info().api_url, ray = %running.info().ray_address, "hosting the cluster");
            *lock(&me.hosted) = Some(Hosted {
                fleet: running.head().fleet().clone(),
                info: running.info().clone(),
                fleet_policy: running.fleet_policy().to_string(),
            });
            running.watch(&stop, &events).await;
            *lock(&me.hosted) = None;
            *lock(&me.invite) = None;
            running.stop().await;
            tracing::info!("the hosted cluster stopped");
        });
        *agent = Some(RunningAgent { shutdown, task });
    }

    /// A join code for the hosted cluster: the last one made while it is valid for an hour
    /// more, else (or with `fresh`) a new one.
    pub async fn host_invite(
        &self,
        fresh: bool,
    ) -> Result<flotilla_head::dto::InviteReply, String> {
        let fleet = lock(&self.hosted)
            .as_ref()
            .map(|h| h.fleet.clone())
            .ok_or("the cluster is not running yet")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if !fresh
            && let Some(kept) = lock(&self.invite)
                .as_ref()
                .filter(|i| i.expires_unix > now + 3600)
        {
            return Ok(kept.clone());
        }
        let made = fleet
            .invite(INVITE_USES, INVITE_TTL)
            .await
            .map_err(|s| s.message().to_string())?;
        // The code is a password: it goes to the window, never to the log.
        tracing::info!(expires_unix = made.expires_unix, "made a join code");
        let reply = flotilla_head::dto::InviteReply {
            qr_svg: flotilla_head::qr_svg(&made.code),
            code: made.code,
            id: made.id.to_string(),
            expires_unix: made.expires_unix,
            uses: made.uses,
        };
        *lock(&self.invite) = Some(reply.clone());
        Ok(reply)
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

    /// Starts what this computer runs: the hosted cluster, or the worker of the fleet it
    /// joined; nothing on the first run.
    pub fn start_role(self: &Arc<Self>, app: &AppHandle) {
        match self.role() {
            Role::Host => self.start_host(app),
            Role::Worker => {
                if let Some(e) = self.enrollment() {
                    self.start_agent(app, e);
                }
            }
            Role::None => {}
        }
    }
}

/// Where the app hears what hosting and the worker say: the runtime's provisioning goes to the
/// window's progress bar (`progress`), everything else to the log.
pub(crate) fn events(progress: flotilla_ray::runtime::ProgressFn) -> flotilla_app::Events {
    use flotilla_app::Event;
    Arc::new(move |event| match event {
        Event::Runtime(p) => progress(p),
        Event::Waiting(line) | Event::Info(line) => tracing::info!("{line}"),
        Event::Warning(line) | Event::Problem(line) => tracing::warn!("{line}"),
        Event::WaitOver => {}
    })
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
        if old != status {
            // The provisioning's progress moves the window's bar, not the tray.
            let strip = |s: &DesktopStatus| DesktopStatus {
                progress: None,
                ..s.clone()
            };
            if strip(&old) != strip(&status) {
                tray::show(&app, &status);
            }
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

/// The app's `main`.
pub fn run() {
    let desktop = Arc::new(Desktop::new());
    logs::init(&desktop.dirs.logs);
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
            commands::host,
            commands::host_invite,
            commands::computer,
            commands::policy,
            commands::set_policy,
            commands::secrets,
            commands::add_secret,
            commands::remove_secret,
            commands::logs,
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            tray::create(&handle)?;
            desktop.start_role(&handle);
            // First run: the window asks to join or host.
            if desktop.role() == Role::None {
                show_window(&handle);
            }
            if desktop.agent_started() && !minimized {
                show_window(&handle);
            }
            tauri::async_runtime::spawn(follow(handle.clone(), desktop.clone()));
            // Logging out (SIGTERM) or Ctrl-C in a terminal quits as the menu's Quit does:
            // the worker's Ray node stops first.
            tauri::async_runtime::spawn(async move {
                flotilla_app::shutdown_signal().cancelled().await;
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
