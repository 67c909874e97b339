//! Wall-clock types small enough to avoid a date-time dependency.
//!
//! The policy only ever needs "which weekday, what time of day" (for the
//! schedule and for labels such as "until 14:00"); it never needs dates,
//! time zones or calendars, because the caller converts the system clock
//! to local time and every deadline is kept on the monotonic clock.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::reason::Lang;

pub(crate) const SECS_PER_DAY: u32 = 86_400;
const MINUTES_PER_DAY: u16 = 1_440;

/// A day of the week. In settings it is written in lowercase, in full
/// (`"monday"`) or abbreviated (`"mon"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    #[serde(alias = "mon")]
    Monday,
    #[serde(alias = "tue")]
    Tuesday,
    #[serde(alias = "wed")]
    Wednesday,
    #[serde(alias = "thu")]
    Thursday,
    #[serde(alias = "fri")]
    Friday,
    #[serde(alias = "sat")]
    Saturday,
    #[serde(alias = "sun")]
    Sunday,
}

impl Weekday {
    /// Monday first, as ISO 8601 counts.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// 0 for Monday up to 6 for Sunday.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The weekday with this [`index`](Self::index), counting on past Sunday.
    pub fn from_index(index: u32) -> Weekday {
        Weekday::ALL[(index % 7) as usize]
    }

    /// The weekday `days` after this one.
    pub fn plus_days(self, days: u32) -> Weekday {
        Weekday::from_index(u32::from(self.index()) + days % 7)
    }

    /// The day before.
    pub fn previous(self) -> Weekday {
        self.plus_days(6)
    }

    pub(crate) fn name(self, lang: Lang) -> &'static str {
        const EN: [&str; 7] = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        const ES: [&str; 7] = [
            "lunes",
            "martes",
            "miércoles",
            "jueves",
            "viernes",
            "sábado",
            "domingo",
        ];
        match lang {
            Lang::En => EN[self as usize],
            Lang::Es => ES[self as usize],
        }
    }
}

/// A time of day to the minute, `00:00` to `23:59`. Serialised as `"HH:MM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime {
    hour: u8,
    minute: u8,
}

impl ClockTime {
    /// `None` unless `hour < 24` and `minute < 60`.
    pub const fn new(hour: u8, minute: u8) -> Option<ClockTime> {
        if hour < 24 && minute < 60 {
            Some(ClockTime { hour, minute })
        } else {
            None
        }
    }

    pub fn hour(self) -> u8 {
        self.hour
    }

    pub fn minute(self) -> u8 {
        self.minute
    }

    fn from_minutes(minutes: u16) -> ClockTime {
        let minutes = minutes % MINUTES_PER_DAY;
        ClockTime {
            hour: (minutes / 60) as u8,
            minute: (minutes % 60) as u8,
        }
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl FromStr for ClockTime {
    type Err = String;

    /// `"HH:MM"`, `00:00` to `23:59`.
    fn from_str(text: &str) -> Result<ClockTime, String> {
        match parse_minutes(text.trim()) {
            Some(m) if m < MINUTES_PER_DAY => Ok(ClockTime::from_minutes(m)),
            _ => Err(format!(
                "{text:?} is not a time of day: expected \"HH:MM\" from 00:00 to 23:59"
            )),
        }
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ClockTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Local wall-clock time: weekday and time of day to the second.
///
/// The caller derives it from the system clock and the user's time zone;
/// the policy uses it for the schedule and for the labels it shows, never
/// to measure how long something lasted (that is what the monotonic `now`
/// is for, so clock changes and daylight-saving jumps cannot stretch a
/// pause or a ramp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LocalTime {
    weekday: Weekday,
    seconds_of_day: u32,
}

impl LocalTime {
    /// `None` unless the time of day is valid (`hour < 24`, `minute < 60`,
    /// `second < 60`; leap seconds are folded into `59` by the caller).
    pub fn new(weekday: Weekday, hour: u8, minute: u8, second: u8) -> Option<LocalTime> {
        if hour < 24 && minute < 60 && second < 60 {
            let seconds_of_day =
                u32::from(hour) * 3600 + u32::from(minute) * 60 + u32::from(second);
            Some(LocalTime {
                weekday,
                seconds_of_day,
            })
        } else {
            None
        }
    }

    /// Midnight plus `seconds_of_day`; `None` if that is 24 h or more.
    pub fn from_seconds(weekday: Weekday, seconds_of_day: u32) -> Option<LocalTime> {
        (seconds_of_day < SECS_PER_DAY).then_some(LocalTime {
            weekday,
            seconds_of_day,
        })
    }

    pub fn weekday(self) -> Weekday {
        self.weekday
    }

    pub fn seconds_of_day(self) -> u32 {
        self.seconds_of_day
    }

    /// The time of day with the seconds dropped.
    pub fn clock(self) -> ClockTime {
        ClockTime::from_minutes((self.seconds_of_day / 60) as u16)
    }

    /// The wall-clock time `elapsed` later, wrapping round the week.
    pub fn plus(self, elapsed: Duration) -> LocalTime {
        let day = u64::from(SECS_PER_DAY);
        let total = u64::from(self.seconds_of_day) + elapsed.as_secs() % (7 * day);
        LocalTime {
            weekday: self.weekday.plus_days((total / day) as u32),
            seconds_of_day: (total % day) as u32,
        }
    }
}

/// A moment shown to the user, as in "until 14:00" or "until Monday 08:00".
///
/// The weekday is present only when the moment is 24 hours or more away:
/// within a day "14:00" can only mean the next 14:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Until {
    pub at: ClockTime,
    pub weekday: Option<Weekday>,
}

impl Until {
    pub(crate) fn new(at: LocalTime, secs_away: u64) -> Until {
        Until {
            at: at.clock(),
            weekday: (secs_away >= u64::from(SECS_PER_DAY)).then_some(at.weekday),
        }
    }

    /// "14:00", "Monday 08:00"; in Spanish with the article the phrase
    /// needs after "hasta": "las 14:00", "la 01:30", "el lunes a las 08:00".
    pub fn text(&self, lang: Lang) -> String {
        match (lang, self.weekday) {
            (Lang::En, None) => self.at.to_string(),
            (Lang::En, Some(day)) => format!("{} {}", day.name(lang), self.at),
            (Lang::Es, None) => format!("{} {}", es_article(self.at), self.at),
            (Lang::Es, Some(day)) => {
                format!(
                    "el {} a {} {}",
                    day.name(lang),
                    es_article(self.at),
                    self.at
                )
            }
        }
    }
}

/// Spanish says "la una" but "las dos", so 01:xx takes the singular article.
fn es_article(at: ClockTime) -> &'static str {
    if at.hour == 1 { "la" } else { "las" }
}

/// One allowed stretch of a day, written `"HH:MM-HH:MM"`.
///
/// The end may be `24:00`. An end earlier than the start wraps past
/// midnight: `"22:00-06:00"` listed under Monday allows Monday 22:00 to
/// Tuesday 06:00. Start and end may not be equal (write `"00:00-24:00"`
/// for a whole day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeWindow {
    start: u16,
    end: u16,
}

impl TimeWindow {
    /// The window's start, also the moment the schedule reopens.
    pub fn start(self) -> ClockTime {
        ClockTime::from_minutes(self.start)
    }

    fn wraps(self) -> bool {
        self.end < self.start
    }

    fn start_secs(self) -> u32 {
        u32::from(self.start) * 60
    }

    fn end_secs(self) -> u32 {
        u32::from(self.end) * 60
    }
}

impl FromStr for TimeWindow {
    type Err = String;

    fn from_str(text: &str) -> Result<TimeWindow, String> {
        let bad = || {
            format!(
                "{text:?} is not a time window: expected \"HH:MM-HH:MM\", such as \"09:00-17:30\" or \"22:00-06:00\""
            )
        };
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let start = parse_minutes(start.trim()).ok_or_else(bad)?;
        let end = parse_minutes(end.trim()).ok_or_else(bad)?;
        if start == MINUTES_PER_DAY {
            return Err(format!(
                "{text:?}: a window cannot start at 24:00; start it at 00:00"
            ));
        }
        if start == end {
            return Err(format!(
                "{text:?} is empty: start and end are the same; use \"00:00-24:00\" for the whole day"
            ));
        }
        Ok(TimeWindow { start, end })
    }
}

/// "HH:MM" as minutes since midnight, allowing "24:00" for an end.
fn parse_minutes(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.is_empty() || hours.len() > 2 || minutes.len() != 2 {
        return None;
    }
    if !hours
        .bytes()
        .chain(minutes.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let hours: u16 = hours.parse().ok()?;
    let minutes: u16 = minutes.parse().ok()?;
    match (hours, minutes) {
        (24, 0) => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(hours * 60 + minutes),
        _ => None,
    }
}

impl TryFrom<String> for TimeWindow {
    type Error = String;

    fn try_from(text: String) -> Result<TimeWindow, String> {
        text.parse()
    }
}

impl From<TimeWindow> for String {
    fn from(window: TimeWindow) -> String {
        window.to_string()
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.end == MINUTES_PER_DAY {
            "24:00".to_owned()
        } else {
            ClockTime::from_minutes(self.end).to_string()
        };
        write!(f, "{}-{end}", self.start())
    }
}

/// Allowed hours per weekday.
///
/// A weekday missing from the map has no allowed hours of its own (a
/// window from the day before may still reach into it past midnight).
/// Having no schedule at all, which is the default, allows every hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schedule {
    pub days: BTreeMap<Weekday, Vec<TimeWindow>>,
}

impl Schedule {
    fn windows(&self, day: Weekday) -> &[TimeWindow] {
        self.days.get(&day).map_or(&[], Vec::as_slice)
    }

    /// Whether `now` falls inside one of the windows.
    pub fn allows(&self, now: LocalTime) -> bool {
        let secs = now.seconds_of_day;
        let today = self.windows(now.weekday).iter().any(|w| {
            if w.wraps() {
                secs >= w.start_secs()
            } else {
                (w.start_secs()..w.end_secs()).contains(&secs)
            }
        });
        let from_yesterday = self
            .windows(now.weekday.previous())
            .iter()
            .any(|w| w.wraps() && secs < w.end_secs());
        today || from_yesterday
    }

    /// The next moment a window opens, after `now`, with how many seconds
    /// away it is; `None` if the schedule has no windows at all.
    pub fn next_start(&self, now: LocalTime) -> Option<(LocalTime, u64)> {
        let now_secs = i64::from(now.seconds_of_day);
        (0..=7u32)
            .flat_map(|offset| {
                let day = now.weekday.plus_days(offset);
                self.windows(day).iter().filter_map(move |w| {
                    let away = i64::from(offset) * i64::from(SECS_PER_DAY)
                        + i64::from(w.start_secs())
                        - now_secs;
                    let at = LocalTime::from_seconds(day, w.start_secs())?;
                    (away > 0).then_some((at, away as u64))
                })
            })
            .min_by_key(|&(_, away)| away)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: Weekday, hour: u8, minute: u8) -> LocalTime {
        LocalTime::new(day, hour, minute, 0).unwrap()
    }

    fn schedule(entries: &[(Weekday, &[&str])]) -> Schedule {
        Schedule {
            days: entries
                .iter()
                .map(|(day, windows)| (*day, windows.iter().map(|w| w.parse().unwrap()).collect()))
                .collect(),
        }
    }

    #[test]
    fn windows_parse_and_print_back() {
        for text in ["09:00-17:30", "22:00-06:00", "00:00-24:00", "7:05-08:00"] {
            let window: TimeWindow = text.parse().unwrap();
            let again: TimeWindow = window.to_string().parse().unwrap();
            assert_eq!(window, again, "{text}");
        }
        assert_eq!(
            "7:05-08:00".parse::<TimeWindow>().unwrap().to_string(),
            "07:05-08:00"
        );
        assert_eq!(
            " 09:00 - 17:00 "
                .trim()
                .parse::<TimeWindow>()
                .unwrap()
                .to_string(),
            "09:00-17:00"
        );
    }

    #[test]
    fn bad_windows_are_rejected_with_the_accepted_form() {
        for text in [
            "",
            "9-17",
            "09:00",
            "09:00-",
            "25:00-26:00",
            "09:60-10:00",
            "24:00-06:00",
            "10:00-10:00",
            "+9:00-10:00",
            "09:00-17:00-18:00",
            "009:00-10:00",
        ] {
            let error = text.parse::<TimeWindow>().unwrap_err();
            assert!(error.contains(&format!("{text:?}")), "{text}: {error}");
        }
        assert!(
            "10:00-10:00"
                .parse::<TimeWindow>()
                .unwrap_err()
                .contains("00:00-24:00")
        );
    }

    #[test]
    fn plain_window_allows_its_span_only() {
        let s = schedule(&[(Weekday::Monday, &["09:00-17:00"])]);
        assert!(!s.allows(at(Weekday::Monday, 8, 59)));
        assert!(s.allows(at(Weekday::Monday, 9, 0)));
        assert!(s.allows(at(Weekday::Monday, 16, 59)));
        assert!(!s.allows(at(Weekday::Monday, 17, 0)));
        assert!(!s.allows(at(Weekday::Tuesday, 10, 0)));
    }

    #[test]
    fn wrapping_window_reaches_into_the_next_day() {
        let s = schedule(&[(Weekday::Sunday, &["22:00-06:00"])]);
        assert!(s.allows(at(Weekday::Sunday, 23, 0)));
        assert!(s.allows(at(Weekday::Monday, 5, 59)));
        assert!(!s.allows(at(Weekday::Monday, 6, 0)));
        assert!(!s.allows(at(Weekday::Sunday, 5, 0)));
        assert!(!s.allows(at(Weekday::Sunday, 21, 59)));
    }

    #[test]
    fn whole_day_window() {
        let s = schedule(&[(Weekday::Saturday, &["00:00-24:00"])]);
        assert!(s.allows(at(Weekday::Saturday, 0, 0)));
        assert!(s.allows(LocalTime::new(Weekday::Saturday, 23, 59, 59).unwrap()));
        assert!(!s.allows(at(Weekday::Sunday, 0, 0)));
    }

    #[test]
    fn next_start_is_the_earliest_opening_after_now() {
        let s = schedule(&[
            (Weekday::Monday, &["08:00-12:00", "13:00-17:00"]),
            (Weekday::Friday, &["08:00-12:00"]),
        ]);
        let (when, away) = s.next_start(at(Weekday::Monday, 12, 30)).unwrap();
        assert_eq!((when, away), (at(Weekday::Monday, 13, 0), 30 * 60));
        let (when, _) = s.next_start(at(Weekday::Monday, 18, 0)).unwrap();
        assert_eq!(when, at(Weekday::Friday, 8, 0));
        let (when, away) = s.next_start(at(Weekday::Friday, 12, 0)).unwrap();
        assert_eq!(when, at(Weekday::Monday, 8, 0));
        assert_eq!(away, 2 * 86_400 + 20 * 3600);
        // Same weekday, a week on, when today's only window has passed.
        let only_monday = schedule(&[(Weekday::Monday, &["08:00-09:00"])]);
        let (when, away) = only_monday.next_start(at(Weekday::Monday, 10, 0)).unwrap();
        assert_eq!(when, at(Weekday::Monday, 8, 0));
        assert_eq!(away, 7 * 86_400 - 2 * 3600);
        assert_eq!(
            Schedule::default().next_start(at(Weekday::Monday, 10, 0)),
            None
        );
    }

    #[test]
    fn local_time_wraps_round_the_week() {
        let late_sunday = LocalTime::new(Weekday::Sunday, 23, 30, 0).unwrap();
        assert_eq!(
            late_sunday.plus(Duration::from_secs(3600)),
            LocalTime::new(Weekday::Monday, 0, 30, 0).unwrap()
        );
        assert_eq!(
            late_sunday.plus(Duration::from_secs(7 * 86_400)),
            late_sunday
        );
        assert!(late_sunday.plus(Duration::MAX).weekday().index() < 7);
        assert_eq!(LocalTime::new(Weekday::Monday, 24, 0, 0), None);
        assert_eq!(LocalTime::from_seconds(Weekday::Monday, 86_400), None);
    }

    #[test]
    fn until_labels() {
        let soon = Until::new(at(Weekday::Monday, 14, 0), 3600);
        assert_eq!(soon.text(Lang::En), "14:00");
        assert_eq!(soon.text(Lang::Es), "las 14:00");
        let one = Until::new(at(Weekday::Monday, 1, 30), 3600);
        assert_eq!(one.text(Lang::Es), "la 01:30");
        let far = Until::new(at(Weekday::Wednesday, 8, 0), 2 * 86_400);
        assert_eq!(far.text(Lang::En), "Wednesday 08:00");
        assert_eq!(far.text(Lang::Es), "el miércoles a las 08:00");
    }

    #[test]
    fn weekdays_deserialize_in_full_or_abbreviated() {
        let s: Schedule =
            serde_json::from_str(r#"{"monday": ["09:00-17:00"], "sat": ["10:00-12:00"]}"#).unwrap();
        assert_eq!(s.days.len(), 2);
        assert!(s.allows(at(Weekday::Saturday, 11, 0)));
        assert!(serde_json::from_str::<Schedule>(r#"{"funday": []}"#).is_err());
        let error = serde_json::from_str::<Schedule>(r#"{"monday": ["9-5"]}"#).unwrap_err();
        assert!(error.to_string().contains("HH:MM-HH:MM"), "{error}");
    }

    #[test]
    fn clock_times_parse_from_text() {
        assert_eq!(
            "08:00".parse::<ClockTime>(),
            Ok(ClockTime::new(8, 0).unwrap())
        );
        assert_eq!(
            " 23:59".parse::<ClockTime>(),
            Ok(ClockTime::new(23, 59).unwrap())
        );
        for bad in ["24:00", "25:00", "8", "08:60", "ab:cd"] {
            assert!(bad.parse::<ClockTime>().is_err(), "{bad}");
        }
    }
}
