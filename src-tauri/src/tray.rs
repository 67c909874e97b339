//! The tray icon: one icon per state, a tooltip with the reason, and the menu (a status line,
//! the pauses, Resume, Open dashboard, Quit).

use std::sync::Arc;

use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager};

use crate::status::{DesktopStatus, Phase, TrayState};
use crate::{Desktop, commands};

const TRAY_ID: &str = "flotilla";

/// The menu's entries, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayItem {
    Status,
    PauseHour,
    PauseTomorrow,
    PauseIndefinitely,
    Resume,
    Open,
    Quit,
}

impl TrayItem {
    const ALL: [TrayItem; 7] = [
        TrayItem::Status,
        TrayItem::PauseHour,
        TrayItem::PauseTomorrow,
        TrayItem::PauseIndefinitely,
        TrayItem::Resume,
        TrayItem::Open,
        TrayItem::Quit,
    ];

    pub fn id(self) -> &'static str {
        match self {
            TrayItem::Status => "status",
            TrayItem::PauseHour => "pause-hour",
            TrayItem::PauseTomorrow => "pause-tomorrow",
            TrayItem::PauseIndefinitely => "pause-indefinitely",
            TrayItem::Resume => "resume",
            TrayItem::Open => "open",
            TrayItem::Quit => "quit",
        }
    }

    fn of_id(id: &str) -> Option<TrayItem> {
        Self::ALL.into_iter().find(|i| i.id() == id)
    }

    fn label(self, lang: &str) -> &'static str {
        let es = lang == "es";
        match self {
            TrayItem::Status => "Flotilla",
            TrayItem::PauseHour if es => "Pausar 1 hora",
            TrayItem::PauseHour => "Pause for 1 hour",
            TrayItem::PauseTomorrow if es => "Pausar hasta mañana",
            TrayItem::PauseTomorrow => "Pause until tomorrow",
            TrayItem::PauseIndefinitely if es => "Pausar hasta que reanude",
            TrayItem::PauseIndefinitely => "Pause until I resume",
            TrayItem::Resume if es => "Reanudar",
            TrayItem::Resume => "Resume",
            TrayItem::Open if es => "Abrir el panel",
            TrayItem::Open => "Open dashboard",
            TrayItem::Quit if es => "Salir",
            TrayItem::Quit => "Quit",
        }
    }
}

/// The menu items whose text or state changes.
struct Items(Vec<(TrayItem, MenuItem<tauri::Wry>)>);

impl Items {
    fn get(&self, which: TrayItem) -> Option<&MenuItem<tauri::Wry>> {
        self.0.iter().find(|(i, _)| *i == which).map(|(_, m)| m)
    }
}

fn icon(state: TrayState) -> Image<'static> {
    let bytes: &'static [u8] = match state {
        TrayState::Contributing => include_bytes!("../../icons/tray/contributing.png"),
        TrayState::Throttled => include_bytes!("../../icons/tray/throttled.png"),
        TrayState::Paused => include_bytes!("../../icons/tray/paused.png"),
        TrayState::Offline => include_bytes!("../../icons/tray/offline.png"),
        TrayState::Error => include_bytes!("../../icons/tray/error.png"),
    };
    Image::from_bytes(bytes).expect("the tray icons are valid PNG files")
}

fn lang(app: &AppHandle) -> &'static str {
    let desktop = app.state::<Arc<Desktop>>();
    crate::settings::language(&crate::settings::load(&desktop.dirs))
}

fn cpus(n: Option<f64>) -> String {
    match n {
        Some(n) if n.fract() == 0.0 => format!("{n:.0}"),
        Some(n) => format!("{n:.1}"),
        None => "?".into(),
    }
}

/// The menu's first line: what the machine does, and why when it is not everything.
pub fn status_line(s: &DesktopStatus, lang: &str) -> String {
    let es = lang == "es";
    let reason = if es { &s.reason_es } else { &s.reason_en };
    match s.phase {
        Phase::FirstRun if es => "Aún no está en un clúster".into(),
        Phase::FirstRun => "Not in a cluster yet".into(),
        Phase::Starting if es => "Preparando este ordenador…".into(),
        Phase::Starting => "Getting this computer ready…".into(),
        Phase::Error => {
            let e = s.error.as_deref().unwrap_or("");
            if es {
                format!("Detenido: {e}")
            } else {
                format!("Stopped: {e}")
            }
        }
        Phase::Running if !s.connected => {
            if es {
                format!("Sin conexión: {}", s.link_text)
            } else {
                format!("Offline: {}", s.link_text)
            }
        }
        Phase::Running => match s.tray {
            TrayState::Paused if es => format!("En pausa: {reason}"),
            TrayState::Paused => format!("Paused: {reason}"),
            TrayState::Throttled => format!("{} CPUs: {reason}", cpus(s.cpus_advertised)),
            _ if es => format!("Aportando {} CPUs", cpus(s.cpus_advertised)),
            _ => format!("Contributing {} CPUs", cpus(s.cpus_advertised)),
        },
    }
}

/// Creates the tray icon and its menu.
pub fn create(app: &AppHandle) -> tauri::Result<()> {
    let lang = lang(app);
    let mut items = Vec::new();
    let mut item = |which: TrayItem, enabled: bool| -> tauri::Result<MenuItem<tauri::Wry>> {
        let m = MenuItem::with_id(app, which.id(), which.label(lang), enabled, None::<&str>)?;
        items.push((which, m.clone()));
        Ok(m)
    };
    let status = item(TrayItem::Status, false)?;
    let hour = item(TrayItem::PauseHour, false)?;
    let tomorrow = item(TrayItem::PauseTomorrow, false)?;
    let indefinitely = item(TrayItem::PauseIndefinitely, false)?;
    let resume = item(TrayItem::Resume, false)?;
    let open = item(TrayItem::Open, true)?;
    let quit = item(TrayItem::Quit, true)?;
    let menu = Menu::with_items(
        app,
        &[
            &status,
            &PredefinedMenuItem::separator(app)?,
            &hour,
            &tomorrow,
            &indefinitely,
            &resume,
            &PredefinedMenuItem::separator(app)?,
            &open,
            &quit,
        ],
    )?;
    app.manage(Items(items));
    TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(TrayState::Offline))
        .tooltip("Flotilla")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| on_menu(app, event.id().as_ref()))
        .build(app)?;
    Ok(())
}

fn on_menu(app: &AppHandle, id: &str) {
    let Some(which) = TrayItem::of_id(id) else {
        return;
    };
    tracing::info!(item = which.id(), "tray menu");
    let pause = |kind: &'static str| {
        let app = app.clone();
        tauri::async_runtime::spawn(async move {
            let desktop = app.state::<Arc<Desktop>>().inner().clone();
            if let Err(e) = commands::pause(&desktop.dirs, kind).await {
                tracing::warn!("pause from the tray: {}", e.message);
            }
        });
    };
    match which {
        TrayItem::Status => {}
        TrayItem::PauseHour => pause("hour"),
        TrayItem::PauseTomorrow => pause("tomorrow"),
        TrayItem::PauseIndefinitely => pause("indefinite"),
        TrayItem::Resume => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                let desktop = app.state::<Arc<Desktop>>().inner().clone();
                if let Err(e) = commands::resume(&desktop.dirs).await {
                    tracing::warn!("resume from the tray: {}", e.message);
                }
            });
        }
        TrayItem::Open => crate::show_window(app),
        TrayItem::Quit => crate::quit(app),
    }
}

/// Words the menu again in the language now chosen (after a change in the settings).
pub fn relabel(app: &AppHandle) {
    let lang = lang(app);
    if let Some(items) = app.try_state::<Items>() {
        for (which, m) in &items.0 {
            if *which != TrayItem::Status {
                let _ = m.set_text(which.label(lang));
            }
        }
    }
    let desktop = app.state::<Arc<Desktop>>();
    let status = crate::lock(&desktop.status).clone();
    show(app, &status);
}

/// Brings the icon, tooltip and menu up to date with `s`.
pub fn show(app: &AppHandle, s: &DesktopStatus) {
    let lang = lang(app);
    let line = status_line(s, lang);
    if let Some(tray) = app.tray_by_id(TRAY_ID) {
        let _ = tray.set_icon(Some(icon(s.tray)));
        let _ = tray.set_tooltip(Some(format!("Flotilla: {line}")));
    }
    let Some(items) = app.try_state::<Items>() else {
        return;
    };
    if let Some(m) = items.get(TrayItem::Status) {
        let _ = m.set_text(&line);
    }
    let running = s.phase == Phase::Running;
    let paused = matches!(s.state.as_str(), "paused" | "draining");
    for which in [
        TrayItem::PauseHour,
        TrayItem::PauseTomorrow,
        TrayItem::PauseIndefinitely,
    ] {
        if let Some(m) = items.get(which) {
            let _ = m.set_enabled(running && !paused);
        }
    }
    if let Some(m) = items.get(TrayItem::Resume) {
        let _ = m.set_enabled(running && paused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_what_and_why() {
        let d = serde_json::from_value(serde_json::json!({
            "decision": {"target_cpus": 2, "pause": "none", "reason": {"code": "owner_active"}},
            "reason_en": "You're using this computer",
            "reason_es": "Estás usando este ordenador",
            "enforcement": {"state": "cap", "advertised_cpus": 2.0, "node_cpus": 8},
            "session": {"link": "connected", "head": "10.0.0.1:7470", "since_unix_ms": 1},
        }))
        .unwrap();
        let mut s = crate::status::of_decision(&d);
        assert_eq!(status_line(&s, "en"), "2 CPUs: You're using this computer");
        assert_eq!(status_line(&s, "es"), "2 CPUs: Estás usando este ordenador");
        s.tray = TrayState::Contributing;
        s.cpus_advertised = Some(8.0);
        assert_eq!(status_line(&s, "en"), "Contributing 8 CPUs");
        s.connected = false;
        s.link_text = "offline (no route); retrying in 4 s".into();
        assert_eq!(
            status_line(&s, "en"),
            "Offline: offline (no route); retrying in 4 s"
        );
        assert_eq!(
            status_line(&DesktopStatus::default(), "en"),
            "Not in a cluster yet"
        );
    }

    #[test]
    fn every_menu_id_maps_back_to_its_item() {
        for item in TrayItem::ALL {
            assert_eq!(TrayItem::of_id(item.id()), Some(item));
            assert!(!item.label("en").is_empty() && !item.label("es").is_empty());
        }
        assert_eq!(TrayItem::of_id("nonsense"), None);
    }
}
