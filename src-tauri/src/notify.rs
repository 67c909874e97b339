//! Which changes of the status become desktop notifications: joined, connection lost (after
//! [`LOST_AFTER`] down, as the agent counts it) and restored, paused and resumed with the
//! reason, back after the machine slept (instead of "resumed"; a pause because the machine is
//! going to sleep says nothing, since nobody would see it before the wake). At most one of a kind per [`SAME_KIND_EVERY`]; none when the owner silenced them.
//! Every notification is also logged, since the OS may drop it silently.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tauri::{AppHandle, Manager};
use tauri_plugin_notification::NotificationExt;

use crate::Desktop;
use crate::status::{DesktopStatus, Phase};

pub const LOST_AFTER: Duration = flotilla_agent::session::LOST_AFTER;
pub const SAME_KIND_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Joined,
    Lost,
    Restored,
    Paused,
    Resumed,
    /// Ray cannot run the node (its reason is the body).
    RayFailed,
    /// The machine woke and the node is back ("Back after 12 min asleep").
    Back,
}

/// What to say, in the app's language.
pub fn text(kind: Kind, s: &DesktopStatus, lang: &str) -> (String, String) {
    let es = lang == "es";
    let reason = if es { &s.reason_es } else { &s.reason_en };
    let (title, body): (&str, String) = match kind {
        Kind::Joined if es => (
            "Flotilla: en el clúster",
            format!("{} aporta sus CPUs libres.", s.node_name),
        ),
        Kind::Joined => (
            "Flotilla: joined the cluster",
            format!("{} lends its idle CPUs.", s.node_name),
        ),
        Kind::Lost if es => ("Flotilla: conexión perdida", s.link_text.clone()),
        Kind::Lost => ("Flotilla: connection lost", s.link_text.clone()),
        Kind::Restored if es => (
            "Flotilla: conexión recuperada",
            "De nuevo en el clúster.".into(),
        ),
        Kind::Restored => (
            "Flotilla: connection restored",
            "Back in the cluster.".into(),
        ),
        Kind::Paused if es => ("Flotilla: en pausa", reason.clone()),
        Kind::Paused => ("Flotilla: paused", reason.clone()),
        Kind::Resumed if es => ("Flotilla: reanudado", reason.clone()),
        Kind::Resumed => ("Flotilla: resumed", reason.clone()),
        Kind::RayFailed if es => ("Flotilla: Ray no arranca", reason.clone()),
        Kind::RayFailed => ("Flotilla: Ray cannot start", reason.clone()),
        Kind::Back if es => (
            "Flotilla: de vuelta",
            format!("{}; de nuevo en el clúster.", s.back_es),
        ),
        Kind::Back => (
            "Flotilla: back",
            format!("{}; back in the cluster.", s.back_en),
        ),
    };
    (title.to_string(), body)
}

#[derive(Debug, Default)]
pub struct Notifier {
    last: HashMap<Kind, Instant>,
    down_since: Option<Instant>,
    lost_told: bool,
    joined_told: bool,
}

fn paused(s: &DesktopStatus) -> bool {
    s.phase == Phase::Running && matches!(s.state.as_str(), "paused" | "draining")
}

impl Notifier {
    /// The notifications due after going from `old` to `new` (call every tick: the lost
    /// notice waits for the link to stay down).
    pub fn due(&mut self, old: &DesktopStatus, new: &DesktopStatus, now: Instant) -> Vec<Kind> {
        let mut out = Vec::new();
        let running = new.phase == Phase::Running;
        if running && new.connected && !self.joined_told && old.phase != Phase::Running {
            self.joined_told = true;
            out.push(Kind::Joined);
        }
        if running && !new.connected {
            let since = *self.down_since.get_or_insert(now);
            if !self.lost_told && now.duration_since(since) >= LOST_AFTER {
                self.lost_told = true;
                out.push(Kind::Lost);
            }
        } else if new.connected {
            self.down_since = None;
            if std::mem::take(&mut self.lost_told) {
                out.push(Kind::Restored);
            }
        }
        if running
            && new.state == "error"
            && (old.state != "error" || old.reason_en != new.reason_en)
        {
            out.push(Kind::RayFailed);
        }
        let leaving = |s: &DesktopStatus| {
            matches!(s.reason_code.as_str(), "going_to_sleep" | "shutting_down")
        };
        let back = running && new.back_at_ms.is_some() && new.back_at_ms != old.back_at_ms;
        if back {
            out.push(Kind::Back);
        }
        if paused(new) && !paused(old) && old.phase == Phase::Running && !leaving(new) {
            out.push(Kind::Paused);
        } else if paused(old) && !paused(new) && running && !back && !leaving(old) {
            out.push(Kind::Resumed);
        }
        out.retain(|k| match self.last.get(k) {
            Some(t) if now.duration_since(*t) < SAME_KIND_EVERY => false,
            _ => {
                self.last.insert(*k, now);
                true
            }
        });
        out
    }

    pub fn on_tick(&mut self, app: &AppHandle, old: &DesktopStatus, new: &DesktopStatus) {
        let kinds = self.due(old, new, Instant::now());
        if kinds.is_empty() {
            return;
        }
        let desktop = app.state::<Arc<Desktop>>();
        let settings = crate::settings::load(&desktop.dirs);
        let lang = crate::settings::language(&settings);
        for kind in kinds {
            let (title, body) = text(kind, new, lang);
            if !settings.notifications {
                tracing::info!(%title, %body, "notification silenced");
                continue;
            }
            tracing::info!(%title, %body, "notification");
            if let Err(e) = app
                .notification()
                .builder()
                .title(&title)
                .body(&body)
                .show()
            {
                tracing::warn!("cannot show a notification: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(state: &str, connected: bool) -> DesktopStatus {
        DesktopStatus {
            phase: Phase::Running,
            state: state.into(),
            connected,
            reason_en: "Paused by you for 1 hour".into(),
            ..Default::default()
        }
    }

    #[test]
    fn notices_follow_the_changes_that_matter_once_each() {
        let mut n = Notifier::default();
        let t0 = Instant::now();
        let starting = DesktopStatus {
            phase: Phase::Starting,
            ..Default::default()
        };
        let full = running("full", true);
        assert_eq!(n.due(&starting, &full, t0), vec![Kind::Joined]);
        assert_eq!(n.due(&full, &full, t0), vec![]);

        let paused = running("paused", true);
        assert_eq!(n.due(&full, &paused, t0), vec![Kind::Paused]);
        assert_eq!(n.due(&paused, &full, t0), vec![Kind::Resumed]);
        // The same kind again within SAME_KIND_EVERY stays quiet.
        assert_eq!(n.due(&full, &paused, t0 + Duration::from_secs(1)), vec![]);

        // A blip shorter than LOST_AFTER says nothing; a longer cut says lost, then restored.
        let down = running("full", false);
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(n.due(&full, &down, t1), vec![]);
        assert_eq!(n.due(&down, &full, t1 + Duration::from_secs(3)), vec![]);
        assert_eq!(n.due(&full, &down, t1 + Duration::from_secs(10)), vec![]);
        assert_eq!(
            n.due(&down, &down, t1 + Duration::from_secs(10) + LOST_AFTER),
            vec![Kind::Lost]
        );
        assert_eq!(
            n.due(&down, &full, t1 + Duration::from_secs(40)),
            vec![Kind::Restored]
        );

        // Ray refusing the node is said once per reason.
        let mut failed = running("error", true);
        failed.reason_en = "Ray cannot run this node: Ray refuses this node's versions".into();
        let t2 = t1 + Duration::from_secs(100);
        assert_eq!(n.due(&full, &failed, t2), vec![Kind::RayFailed]);
        assert_eq!(
            n.due(&failed, &failed, t2 + Duration::from_secs(60)),
            vec![]
        );
    }

    #[test]
    fn a_sleep_says_nothing_before_and_back_after() {
        let mut n = Notifier::default();
        let t0 = Instant::now();
        let full = running("full", true);
        let mut sleeping = running("paused", true);
        sleeping.reason_code = "going_to_sleep".into();
        assert_eq!(n.due(&full, &sleeping, t0), vec![]);
        let mut woke = running("full", true);
        woke.back_en = "Back after 12 min asleep".into();
        woke.back_at_ms = Some(1);
        assert_eq!(n.due(&sleeping, &woke, t0), vec![Kind::Back]);
        assert_eq!(
            text(Kind::Back, &woke, "en").1,
            "Back after 12 min asleep; back in the cluster."
        );
        // Still the same wake on the next tick: nothing more.
        assert_eq!(n.due(&woke, &woke, t0 + Duration::from_secs(1)), vec![]);
        // A node still paused when the machine woke says it is back when it resumes.
        let mut still = sleeping.clone();
        still.back_at_ms = Some(2);
        still.reason_code = "paused_indefinitely".into();
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(n.due(&sleeping, &still, t1), vec![Kind::Back]);
        let resumed = DesktopStatus {
            back_at_ms: Some(2),
            ..running("full", true)
        };
        assert_eq!(
            n.due(&still, &resumed, t1 + Duration::from_secs(60)),
            vec![Kind::Resumed]
        );
    }

    #[test]
    fn notices_speak_both_languages() {
        let s = running("paused", true);
        assert_eq!(text(Kind::Paused, &s, "en").0, "Flotilla: paused");
        assert_eq!(text(Kind::Paused, &s, "es").0, "Flotilla: en pausa");
        assert_eq!(text(Kind::Paused, &s, "en").1, "Paused by you for 1 hour");
    }
}
