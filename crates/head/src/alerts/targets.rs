//! Where alerts go and the shape each receiver expects: a plain JSON document for a generic
//! webhook, Slack's `{"text"}`, Discord's `{"content"}`, and Telegram's bot API
//! (`sendMessage` with `chat_id` and `text`).

use flotilla_secrets::Secret;
use serde_json::{Value, json};

use super::{Alert, AlertState};

/// The kind of receiver, which decides the body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any HTTP endpoint: the alert as a JSON document.
    Json,
    /// A Slack incoming webhook (and what speaks its shape: Mattermost, Rocket.Chat).
    Slack,
    /// A Discord webhook.
    Discord,
    /// Telegram's bot API: the URL is `https://api.telegram.org/bot<token>/sendMessage`.
    Telegram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Slack => "slack",
            Kind::Discord => "discord",
            Kind::Telegram => "telegram",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Json, Kind::Slack, Kind::Discord, Kind::Telegram]
            .into_iter()
            .find(|k| k.as_str() == s.trim())
    }
}

/// A target ready to send to: its URL (a secret: Slack's, Discord's and Telegram's carry a
/// token, and it is never logged) and its shape.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    pub url: Secret,
    pub chat_id: Option<String>,
}

impl Target {
    /// The URL to post to.
    pub fn url(&self) -> Option<&str> {
        self.url.expose_str().map(str::trim)
    }

    /// The JSON body this target expects for `alert` from the fleet whose head is `fleet`.
    pub fn body(&self, alert: &Alert, fleet: &str) -> Value {
        body(self.kind, self.chat_id.as_deref(), alert, fleet)
    }
}

/// The body of one alert in `kind`'s shape.
pub fn body(kind: Kind, chat_id: Option<&str>, alert: &Alert, fleet: &str) -> Value {
    match kind {
        Kind::Json => json!({
            "alert": alert.rule.as_str(),
            "state": alert.state.as_str(),
            "one_shot": alert.one_shot,
            "node": alert.node,
            "summary": alert.summary,
            "at": rfc3339(alert.at_ms),
            "since": alert.since_ms.map(rfc3339),
            "fleet": fleet,
        }),
        Kind::Slack => json!({ "text": line(alert, fleet) }),
        Kind::Discord => {
            json!({ "content": line(alert, fleet), "allowed_mentions": { "parse": [] } })
        }
        Kind::Telegram => json!({
            "chat_id": chat_id.unwrap_or_default(),
            "text": line(alert, fleet),
            "disable_web_page_preview": true,
        }),
    }
}

/// The alert as one line of chat: state, what, where, and the summary.
pub fn line(alert: &Alert, fleet: &str) -> String {
    let mark = match (alert.state, alert.one_shot) {
        (AlertState::Firing, false) => "[FIRING]",
        (AlertState::Firing, true) => "[EVENT]",
        (AlertState::Cleared, _) => "[CLEARED]",
    };
    format!(
        "{mark} Flotilla ({fleet}): {} at {}",
        alert.summary,
        rfc3339(alert.at_ms)
    )
}

/// Milliseconds since the epoch as an RFC 3339 time in UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01, by 400-year eras (146,097
/// days each) with years starting on the 1st of March, so that the leap day ends a year.
fn civil(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::super::Rule;
    use super::*;

    fn offline(state: AlertState) -> Alert {
        Alert {
            rule: Rule::NodeOffline,
            state,
            one_shot: false,
            node: Some("laptop-7".into()),
            summary: "laptop-7 has been offline for 10 min".into(),
            at_ms: 1_796_647_200_000, // 2026-12-07T12:40:00Z
            since_ms: Some(1_796_646_600_000),
        }
    }

    #[test]
    fn the_generic_shape_carries_every_field() {
        let v = body(Kind::Json, None, &offline(AlertState::Firing), "studio");
        assert_eq!(
            v,
            json!({
                "alert": "node_offline",
                "state": "firing",
                "one_shot": false,
                "node": "laptop-7",
                "summary": "laptop-7 has been offline for 10 min",
                "at": "2026-12-07T12:40:00Z",
                "since": "2026-12-07T12:30:00Z",
                "fleet": "studio",
            })
        );
        let v = body(Kind::Json, None, &offline(AlertState::Cleared), "studio");
        assert_eq!(v["state"], "cleared");
    }

    #[test]
    fn chat_shapes_carry_one_line() {
        let a = offline(AlertState::Firing);
        let text = "[FIRING] Flotilla (studio): laptop-7 has been offline for 10 min at \
                    2026-12-07T12:40:00Z";
        assert_eq!(
            body(Kind::Slack, None, &a, "studio"),
            json!({ "text": text })
        );
        assert_eq!(
            body(Kind::Discord, None, &a, "studio"),
            json!({ "content": text, "allowed_mentions": { "parse": [] } })
        );
        assert_eq!(
            body(Kind::Telegram, Some("-1001234"), &a, "studio"),
            json!({ "chat_id": "-1001234", "text": text, "disable_web_page_preview": true })
        );
        let cleared = line(&offline(AlertState::Cleared), "studio");
        assert!(cleared.starts_with("[CLEARED] "), "{cleared}");
        let mut event = offline(AlertState::Firing);
        event.one_shot = true;
        assert!(line(&event, "studio").starts_with("[EVENT] "));
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn kinds_read_back() {
        for k in [Kind::Json, Kind::Slack, Kind::Discord, Kind::Telegram] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("pagerduty"), None);
    }
}
