//! What the tray and the window show: the app's phase and, once the agent runs, its state and
//! reason as the agent decided them (`{"get": "decision"}` on its control channel).

use serde::Serialize;

use crate::Desktop;
use flotilla_agent::control::DecisionView;

/// Where the app is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not in a fleet yet: the window asks to join.
    #[default]
    FirstRun,
    /// Joined; the runtime is being provisioned or the node is starting.
    Starting,
    /// The agent answers.
    Running,
    /// The agent stopped by itself (see `error`).
    Error,
}

/// What this computer is to its cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not in a cluster.
    #[default]
    None,
    /// A worker in a cluster it joined with a code.
    Worker,
    /// The cluster's head, with its own worker.
    Host,
}

/// The state as the tray draws it (one icon per variant).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TrayState {
    Contributing,
    Throttled,
    Paused,
    #[default]
    Offline,
    Error,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct DesktopStatus {
    pub phase: Phase,
    pub role: Role,
    pub tray: TrayState,
    /// The agent's enforcement state: `full`, `cap`, `draining`, `paused`, or empty.
    pub state: String,
    pub reason_code: String,
    pub reason_en: String,
    pub reason_es: String,
    /// CPUs Ray may use on this machine now, and the most it may.
    pub cpus_advertised: Option<f64>,
    pub cpus_total: Option<f64>,
    /// Whether the control plane's session is up.
    pub connected: bool,
    /// `connected`, `connecting`, `offline` or `refused`, and its description.
    pub link: String,
    pub link_text: String,
    pub node_name: String,
    pub error: Option<String>,
    /// While starting: how far provisioning the runtime (then starting the node) is.
    pub progress: Option<crate::progress::ProvisionView>,
    /// After the machine last woke: "Back after 12 min asleep", and when (Unix ms).
    pub back_en: String,
    pub back_es: String,
    pub back_at_ms: Option<u64>,
}

/// The status now.
pub async fn read(desktop: &Desktop) -> DesktopStatus {
    let role = desktop.role();
    if let Some(error) = crate::lock(&desktop.agent_error).clone() {
        return DesktopStatus {
            phase: Phase::Error,
            role,
            tray: TrayState::Error,
            error: Some(error),
            ..Default::default()
        };
    }
    let node_name = match role {
        Role::None => return DesktopStatus::default(),
        Role::Worker => desktop
            .enrollment()
            .map(|e| e.node_name)
            .unwrap_or_default(),
        Role::Host => desktop.host_worker_name(),
    };
    let decision = flotilla_agent::control::Client::new(desktop.dirs.agent_socket())
        .decision()
        .await
        .ok()
        .flatten();
    let mut status = match decision {
        Some(d) => of_decision(&d),
        None => DesktopStatus {
            phase: Phase::Starting,
            progress: crate::lock(&desktop.progress).clone(),
            ..Default::default()
        },
    };
    status.role = role;
    status.node_name = node_name;
    status
}

/// The status of one decision, as the control channel serves it.
pub fn of_decision(d: &DecisionView) -> DesktopStatus {
    use flotilla_agent::enforce::EnforcementState as State;
    use flotilla_agent::session::Link;
    let p = &d.published;
    let e = p.enforcement.clone().unwrap_or_default();
    let link = match &d.session {
        None => "",
        Some(Link::Connecting { .. }) => "connecting",
        Some(Link::Connected { .. }) => "connected",
        Some(Link::Offline { .. }) => "offline",
        Some(Link::Refused { .. }) => "refused",
    };
    let connected = link == "connected";
    let tray = if link == "refused" {
        TrayState::Error
    } else if !connected {
        TrayState::Offline
    } else {
        match e.state {
            State::Error => TrayState::Error,
            State::Paused | State::Draining => TrayState::Paused,
            State::Cap => TrayState::Throttled,
            State::Full | State::Unset => TrayState::Contributing,
        }
    };
    // Ray's reason, while it cannot run the node, comes before the politeness decision's.
    let (reason_code, reason_en, reason_es) = match (&e.failure, e.state) {
        (Some(f), State::Error) => (
            f.kind.code().to_string(),
            format!("Ray cannot run this node: {}", f.reason),
            format!("Ray no puede ejecutar este nodo: {}", f.reason),
        ),
        _ => (
            p.decision.reason.code().to_string(),
            p.reason_en.clone(),
            p.reason_es.clone(),
        ),
    };
    let back = p.sleep.back.as_ref();
    DesktopStatus {
        phase: Phase::Running,
        role: Role::None,
        tray,
        state: e.state.as_str().to_string(),
        reason_code,
        reason_en,
        reason_es,
        cpus_advertised: e
            .advertised_cpus
            .or(Some(f64::from(p.decision.target_cpus))),
        cpus_total: p.enforcement.as_ref().map(|e| f64::from(e.node_cpus)),
        connected,
        link: link.to_string(),
        link_text: d.session_text.clone().unwrap_or_default(),
        node_name: String::new(),
        error: None,
        progress: None,
        back_en: back.map(|b| b.text_en.clone()).unwrap_or_default(),
        back_es: back.map(|b| b.text_es.clone()).unwrap_or_default(),
        back_at_ms: back.map(|b| b.at_unix_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run with `FLOTILLA_WRITE_BINDINGS=1` to rewrite `ui/src/lib/generated/desktop/`.
    #[test]
    fn the_committed_typescript_declarations_are_current() {
        use ts_rs::{Config, TS};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ui/src/lib/generated/desktop");
        let fresh = tempfile::tempdir().unwrap();
        let cfg = Config::new()
            .with_large_int("number")
            .with_out_dir(fresh.path());
        DesktopStatus::export_all(&cfg).unwrap();
        crate::commands::SettingsView::export_all(&cfg).unwrap();
        crate::commands::CommandError::export_all(&cfg).unwrap();
        crate::commands::ComputerView::export_all(&cfg).unwrap();
        crate::commands::SecretView::export_all(&cfg).unwrap();
        crate::commands::PolicySaved::export_all(&cfg).unwrap();
        crate::policy::PolicyView::export_all(&cfg).unwrap();
        crate::logs::LogLine::export_all(&cfg).unwrap();
        let read = |d: &std::path::Path| -> std::collections::BTreeMap<String, String> {
            std::fs::read_dir(d)
                .map(|es| {
                    es.flatten()
                        .map(|e| {
                            let text = std::fs::read_to_string(e.path()).unwrap();
                            (e.file_name().to_string_lossy().into_owned(), text)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let want = read(fresh.path());
        if std::env::var_os("FLOTILLA_WRITE_BINDINGS").is_some() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &want {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        assert!(
            read(&dir) == want,
            "ui/src/lib/generated/desktop/ is stale: regenerate it with \
             `FLOTILLA_WRITE_BINDINGS=1 cargo test -p flotilla-desktop --lib typescript` and commit \
             the result"
        );
    }

    /// A decision as the control channel serves it, in its JSON.
    fn decision_json(state: &str, link: &str, code: &str) -> serde_json::Value {
        let session = match link {
            "connected" => {
                serde_json::json!({"link": link, "head": "10.0.0.1:7470", "since_unix_ms": 1})
            }
            "offline" => serde_json::json!({"link": link, "error": "no route", "retry_in_ms": 5}),
            "refused" => serde_json::json!({"link": link, "error": "revoked"}),
            other => panic!("no link {other}"),
        };
        serde_json::json!({
            "decision": {"target_cpus": 2, "pause": "none", "reason": {"code": code}},
            "reason_en": "You're using this computer",
            "reason_es": "Estás usando este ordenador",
            "enforcement": {"state": state, "advertised_cpus": 2.0, "node_cpus": 8},
            "session": session,
            "session_text": "connected to the head at 10.0.0.1:7470",
        })
    }

    fn view(v: serde_json::Value) -> DecisionView {
        serde_json::from_value(v).unwrap()
    }

    fn decision(state: &str, link: &str, code: &str) -> DecisionView {
        view(decision_json(state, link, code))
    }

    #[test]
    fn a_node_ray_cannot_run_shows_rays_reason() {
        let mut d = decision_json("error", "connected", "owner_active");
        d["enforcement"]["failure"] = serde_json::json!({
            "kind": "ray_version_mismatch",
            "reason": "Ray refuses this node's versions: it has Python 3.11.2 (the cluster runs 3.11.7)",
        });
        let s = of_decision(&view(d));
        assert_eq!(s.tray, TrayState::Error);
        assert_eq!(s.reason_code, "ray_version_mismatch");
        assert!(
            s.reason_en.ends_with("(the cluster runs 3.11.7)"),
            "{}",
            s.reason_en
        );
        assert!(s.reason_es.starts_with("Ray no puede"), "{}", s.reason_es);
    }

    #[test]
    fn the_tray_follows_the_enforcement_and_the_link() {
        let s = of_decision(&decision("cap", "connected", "owner_active"));
        assert_eq!(s.tray, TrayState::Throttled);
        assert_eq!(s.reason_code, "owner_active");
        assert_eq!(s.cpus_advertised, Some(2.0));
        assert_eq!(s.cpus_total, Some(8.0));
        assert!(s.connected);
        assert_eq!(
            of_decision(&decision("full", "connected", "owner_active")).tray,
            TrayState::Contributing
        );
        assert_eq!(
            of_decision(&decision("paused", "connected", "paused_indefinitely")).tray,
            TrayState::Paused
        );
        assert_eq!(
            of_decision(&decision("draining", "connected", "finishing")).tray,
            TrayState::Paused
        );
        // Whatever the node does, a machine cut off from its head shows offline...
        assert_eq!(
            of_decision(&decision("full", "offline", "owner_active")).tray,
            TrayState::Offline
        );
        // ...and one the head refuses, an error.
        assert_eq!(
            of_decision(&decision("full", "refused", "owner_active")).tray,
            TrayState::Error
        );
    }
}
