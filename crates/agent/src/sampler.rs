//! Turning sensor readings into the policy's [`Readings`], with their sources.
//!
//! Two readings need memory across ticks: the owner's CPU load is the machine's load minus
//! Flotilla's own tree over a 10 s window, and the list of running programs is rescanned only
//! every few seconds (it walks the whole process table). The owner's idle time comes from the
//! desktop session when it feeds one ([`IdleFeed`]): a background service cannot see the
//! session's input. An input event the agent heard itself ([`InputFeed`]) makes the idle time
//! zero at that instant, whatever the slower sources say.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_host::sensors::{CpuTimes, PowerSource, Sensors, owner_busy_fraction};
use flotilla_policy::{LocalTime, Power, Readings, Weekday};
use serde::Serialize;

/// How far back the owner's CPU load looks.
pub const LOAD_WINDOW: Duration = Duration::from_secs(10);
/// How often the running programs are rescanned.
pub const APPS_EVERY: Duration = Duration::from_secs(5);
/// How often the power source, memory and CPU load are read (between reads, the last reading
/// stands): a second is soon enough for a plug pulled or an application opened, the load is
/// averaged over [`LOAD_WINDOW`] anyway, and it is a quarter of the work of reading them every
/// tick. The idle time is read every tick.
pub const SLOW_EVERY: Duration = Duration::from_secs(1);
/// How long a fed idle reading stays valid without a new one.
pub const FEED_FRESH_FOR: Duration = Duration::from_secs(5);

/// The last idle reading the desktop session sent.
#[derive(Debug, Clone)]
pub struct FedIdle {
    pub idle: Duration,
    pub at: Instant,
    pub source: String,
}

/// Shared slot for the session's idle readings (written by the control channel).
pub type IdleFeed = Arc<Mutex<Option<FedIdle>>>;

/// The owner's input as the OS reports it, event by event ([`flotilla_host::input`]): the
/// instant of the last event, and a wake-up for the politeness loop.
#[derive(Debug, Default)]
pub struct InputFeed {
    last: Mutex<Option<(Instant, String)>>,
    /// Notified on each (coalesced) event; a wake-up that finds nobody waiting is kept for the
    /// loop's next wait.
    pub woke: tokio::sync::Notify,
}

impl InputFeed {
    /// Records owner input now, heard from `source` (e.g. `"xinput2::0"`), and wakes the loop.
    pub fn input(&self, source: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_mut() {
            Some((at, s)) if s == source => *at = Instant::now(),
            _ => *last = Some((Instant::now(), source.to_owned())),
        }
        drop(last);
        self.woke.notify_one();
    }

    /// When the last event came, and from where.
    pub fn last(&self) -> Option<(Instant, String)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where Flotilla's own CPU time comes from.
#[derive(Debug, Clone, Copy)]
pub enum Own<'a> {
    /// The pids of its processes, read from `/proc` one by one.
    Pids(&'a [u32]),
    /// The total so far, as the node's throttle counts it (one cgroup file).
    CpuTime(Duration),
}

/// A pause or resume asked for by the owner (tray, CLI), waiting for the next tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualRequest {
    /// Finish the running tasks, then pause until resumed.
    Finish,
    /// Pause at once until resumed.
    Indefinite,
    /// Pause at once for this long.
    For(Duration),
    /// Pause at once until the next time the clock shows hour:minute.
    UntilNext {
        hour: u8,
        minute: u8,
    },
    Resume,
}

/// Shared slot for the owner's latest pause or resume request.
pub type ManualFeed = Arc<Mutex<Option<ManualRequest>>>;

/// New politeness settings for the loop (the fleet's defaults merged with the machine's own),
/// taken at the next tick.
pub type PolicyFeed = Arc<Mutex<Option<flotilla_policy::Settings>>>;

/// One reading as shown to people: a value (or null when unknown) and where it came from.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Shown<T> {
    pub value: Option<T>,
    pub from: String,
}

/// What `flotilla sensors` prints.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct SensorReport {
    pub idle_secs: Shown<f64>,
    /// `ac`, `battery` or `unknown`.
    pub power: Shown<String>,
    pub battery_percent: Shown<u8>,
    pub available_memory_fraction: Shown<f64>,
    /// The whole machine's CPU load over the window, 0..1.
    pub machine_load: Shown<f64>,
    /// The machine's load minus Flotilla's own processes, 0..1.
    pub owner_load: Shown<f64>,
    pub load_window_secs: f64,
    pub temperature_c: Shown<f64>,
    pub running_programs: Shown<usize>,
    pub total_cpus: u32,
    pub local_time: String,
}

/// Keeps what sampling needs between ticks.
#[derive(Debug)]
pub struct Sampler {
    sensors: Sensors,
    feed: IdleFeed,
    input: Option<Arc<InputFeed>>,
    cpu: VecDeque<(Instant, CpuTimes, u64)>,
    apps: Option<(Instant, Option<Vec<String>>, String)>,
    slow: Option<Slow>,
    total_cpus: u32,
    /// Cores Flotilla's own tree used between the last two slow readings.
    own_cores: Option<f64>,
    /// Whether the running programs are read (walking the process table); only the exclusive
    /// apps rule needs them.
    read_apps: bool,
}

/// The `from` of the running programs while no exclusive apps are configured.
pub const APPS_NOT_READ: &str = "not read: no exclusive apps are configured";

/// The readings taken every [`SLOW_EVERY`] rather than every tick.
#[derive(Debug, Clone)]
struct Slow {
    at: Instant,
    power: flotilla_host::sensors::PowerReading,
    memory: flotilla_host::sensors::MemoryReading,
    machine: Option<f64>,
    owner: Option<f64>,
    machine_from: String,
    owner_from: String,
}

impl Sampler {
    pub fn new(sensors: Sensors, feed: IdleFeed) -> Sampler {
        Sampler {
            sensors,
            feed,
            input: None,
            cpu: VecDeque::new(),
            apps: None,
            slow: None,
            total_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            own_cores: None,
            read_apps: true,
        }
    }

    /// Takes the owner's input events into the idle time: an event makes it zero at that
    /// instant.
    pub fn set_input(&mut self, input: Arc<InputFeed>) {
        self.input = Some(input);
    }

    /// Whether to read the running programs (on by default). Off, the process table is not
    /// walked, and the readings list no programs.
    pub fn set_read_apps(&mut self, read: bool) {
        if read != self.read_apps {
            self.read_apps = read;
            self.apps = None;
        }
    }

    /// The machine's memory as last read (every [`SLOW_EVERY`]), for the node's memory ceiling.
    pub fn memory(&self) -> Option<&flotilla_host::sensors::MemoryReading> {
        self.slow.as_ref().map(|s| &s.memory)
    }

    /// How many cores Flotilla's own tree (the node) used over the last second or so; `None`
    /// until two readings were taken.
    pub fn own_cores(&self) -> Option<f64> {
        self.own_cores
    }

    /// Takes one set of readings. `own` are the pids of Flotilla's own processes (the Ray tree),
    /// whose CPU time is not the owner's.
    pub fn sample(&mut self, now: Instant, own: &[u32]) -> (Readings, SensorReport) {
        self.sample_own(now, || Own::Pids(own))
    }

    /// [`Sampler::sample`], with Flotilla's own CPU time given either way (asked for only when
    /// the load is read).
    pub fn sample_own<'o>(
        &mut self,
        now: Instant,
        own: impl FnOnce() -> Own<'o>,
    ) -> (Readings, SensorReport) {
        let idle = self.idle(now);
        if self
            .slow
            .as_ref()
            .is_none_or(|slow| now.duration_since(slow.at) >= SLOW_EVERY)
        {
            self.slow = Some(self.read_slow(now, own()));
        }
        let slow = self.slow.clone().expect("just filled");
        let window = self
            .cpu
            .front()
            .map_or(0.0, |(t, _, _)| now.duration_since(*t).as_secs_f64());
        let (apps, apps_from) = self.running_apps(now);
        let (local_time, local_text) = local_time_now();
        let power = &slow.power;
        let readings = Readings {
            total_cpus: self.total_cpus,
            // The machine's; the politeness loop adds the node's own count.
            node_cpus: None,
            idle: idle.value.map(Duration::from_secs_f64),
            power: match power.source {
                PowerSource::Ac => Power::Ac,
                PowerSource::Battery => Power::Battery {
                    percent: power.battery_percent,
                },
                PowerSource::Unknown => Power::Unknown,
            },
            owner_cpu_load: slow.owner,
            available_memory_fraction: slow.memory.available_fraction(),
            temperature_c: None,
            running_apps: apps.clone().unwrap_or_default(),
            local_time,
        };
        let report = SensorReport {
            idle_secs: idle,
            power: Shown {
                value: match power.source {
                    PowerSource::Ac => Some("ac".into()),
                    PowerSource::Battery => Some("battery".into()),
                    PowerSource::Unknown => None,
                },
                from: power.from.clone(),
            },
            battery_percent: Shown {
                value: power.battery_percent,
                from: power.from.clone(),
            },
            available_memory_fraction: Shown {
                value: slow.memory.available_fraction(),
                from: slow.memory.from.clone(),
            },
            machine_load: Shown {
                value: slow.machine,
                from: slow.machine_from,
            },
            owner_load: Shown {
                value: slow.owner,
                from: slow.owner_from,
            },
            load_window_secs: window,
            temperature_c: Shown {
                value: None,
                from: "not measured yet".into(),
            },
            running_programs: Shown {
                value: apps.map(|a| a.len()),
                from: apps_from,
            },
            total_cpus: self.total_cpus,
            local_time: local_text,
        };
        (readings, report)
    }

    /// The readings taken every [`SLOW_EVERY`]: power, memory, and the machine's and the
    /// owner's load over the window (against the oldest sample still inside it).
    fn read_slow(&mut self, now: Instant, own: Own<'_>) -> Slow {
        let s = &self.sensors;
        let (power, memory, cpu) = (s.power(), s.memory(), s.cpu_times());
        let own_ticks = match own {
            Own::Pids(pids) => s.processes_cpu(pids.iter().copied()).ticks.unwrap_or(0),
            // Clock ticks are 1/100 s, as /proc counts them.
            Own::CpuTime(t) => (t.as_secs_f64() * 100.0) as u64,
        };
        let (mut machine, mut owner) = (None, None);
        if let Some(times) = cpu.times {
            while self
                .cpu
                .front()
                .is_some_and(|(t, _, _)| now.duration_since(*t) > LOAD_WINDOW)
            {
                self.cpu.pop_front();
            }
            if let Some((at, _, last_own)) = self.cpu.back() {
                let secs = now.duration_since(*at).as_secs_f64();
                self.own_cores =
                    (secs > 0.0).then(|| own_ticks.saturating_sub(*last_own) as f64 / 100.0 / secs);
            }
            if let Some((_, first, first_own)) = self.cpu.front() {
                machine = flotilla_host::sensors::busy_fraction(first, &times);
                owner = owner_busy_fraction(first, &times, *first_own, own_ticks);
            }
            self.cpu.push_back((now, times, own_ticks));
        }
        let owner_from = match own {
            Own::Pids(pids) => format!("{} minus {} Flotilla processes", cpu.from, pids.len()),
            Own::CpuTime(_) => format!("{} minus Flotilla's node (its cgroup)", cpu.from),
        };
        Slow {
            at: now,
            power,
            memory,
            machine,
            owner,
            machine_from: cpu.from,
            owner_from,
        }
    }

    /// The running programs' names (read every [`APPS_EVERY`], when the settings need them),
    /// and where they came from.
    fn running_apps(&mut self, now: Instant) -> (Option<Vec<String>>, String) {
        if !self.read_apps {
            if self.apps.is_none() {
                self.apps = Some((now, None, APPS_NOT_READ.to_owned()));
            }
        } else if self
            .apps
            .as_ref()
            .is_none_or(|(t, _, _)| now.duration_since(*t) >= APPS_EVERY)
        {
            let a = self.sensors.running_apps();
            self.apps = Some((now, a.names, a.from));
        }
        let (_, apps, from) = self.apps.clone().expect("just filled");
        (apps, from)
    }

    fn idle(&self, now: Instant) -> Shown<f64> {
        let read = self.read_idle(now);
        match self.input.as_ref().and_then(|i| i.last()) {
            Some((at, source)) => {
                with_input_event(read, now.saturating_duration_since(at), &source)
            }
            None => read,
        }
    }

    fn read_idle(&self, now: Instant) -> Shown<f64> {
        let fed = self.feed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(f) = fed
            && now.saturating_duration_since(f.at) <= FEED_FRESH_FOR
        {
            return Shown {
                value: Some((f.idle + now.saturating_duration_since(f.at)).as_secs_f64()),
                from: format!("desktop session ({})", f.source),
            };
        }
        let r = self.sensors.idle();
        Shown {
            value: r.idle.map(|d| d.as_secs_f64()),
            from: r.from,
        }
    }
}

/// The idle time with an input event `since` ago taken in: the smaller of the two, named after
/// the input event's source when that is the smaller.
fn with_input_event(read: Shown<f64>, since: Duration, source: &str) -> Shown<f64> {
    let since = since.as_secs_f64();
    if read.value.is_some_and(|v| v <= since) {
        return read;
    }
    Shown {
        value: Some(since),
        from: format!("input event ({source})"),
    }
}

/// The local weekday and time of day, for the policy and as the report shows it.
fn local_time_now() -> (LocalTime, String) {
    let clock = flotilla_host::clock::local_now();
    let local_time = LocalTime::new(
        Weekday::from_index(u32::from(clock.weekday)),
        clock.hour,
        clock.minute,
        clock.second,
    )
    .expect("the clock is in range");
    let text = format!(
        "{:?} {:02}:{:02}:{:02}",
        local_time.weekday(),
        clock.hour,
        clock.minute,
        clock.second
    );
    (local_time, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_running_programs_are_read_only_while_asked_for() {
        let mut s = Sampler::new(Sensors::new(), Arc::default());
        let t0 = Instant::now();
        s.set_read_apps(false);
        let (r, rep) = s.sample(t0, &[]);
        assert!(r.running_apps.is_empty());
        assert_eq!(rep.running_programs.value, None);
        assert_eq!(rep.running_programs.from, APPS_NOT_READ);
        // Asked for again, they are read at once, not after the usual interval.
        s.set_read_apps(true);
        let (r, rep) = s.sample(t0 + Duration::from_millis(250), &[]);
        assert!(!r.running_apps.is_empty());
        assert_eq!(rep.running_programs.value, Some(r.running_apps.len()));
        s.set_read_apps(false);
        let (r, _) = s.sample(t0 + Duration::from_millis(500), &[]);
        assert!(r.running_apps.is_empty());
    }

    #[test]
    fn a_fresh_fed_idle_reading_wins_and_ages_with_time() {
        let feed: IdleFeed = Arc::default();
        let mut s = Sampler::new(Sensors::new(), feed.clone());
        let t0 = Instant::now();
        *feed.lock().unwrap() = Some(FedIdle {
            idle: Duration::from_secs(7),
            at: t0,
            source: "test".into(),
        });
        let (r, rep) = s.sample(t0 + Duration::from_secs(2), &[]);
        assert_eq!(r.idle, Some(Duration::from_secs(9)));
        assert_eq!(rep.idle_secs.from, "desktop session (test)");
        // A stale reading is ignored in favour of the machine's own sensor.
        let (_, rep) = s.sample(t0 + FEED_FRESH_FOR + Duration::from_secs(1), &[]);
        assert!(
            !rep.idle_secs.from.starts_with("desktop session"),
            "{rep:?}"
        );
    }

    #[test]
    fn an_input_event_makes_the_idle_time_zero_at_that_instant() {
        let read = |v: Option<f64>| Shown {
            value: v,
            from: "x11-screensaver::0".to_owned(),
        };
        let ms = Duration::from_millis;
        // The event is more recent than the reading: it wins.
        let s = with_input_event(read(Some(600.0)), ms(0), "xinput2::0");
        assert_eq!(s.value, Some(0.0));
        assert_eq!(s.from, "input event (xinput2::0)");
        // An unknown reading is replaced too.
        assert_eq!(
            with_input_event(read(None), ms(1500), "xinput2::0").value,
            Some(1.5)
        );
        // A reading more recent than the last event stands.
        assert_eq!(
            with_input_event(read(Some(0.2)), ms(3000), "xinput2::0"),
            read(Some(0.2))
        );
    }

    #[tokio::test]
    async fn the_sampler_takes_the_last_input_event_and_the_loop_is_woken() {
        let feed: IdleFeed = Arc::default();
        let input = Arc::new(InputFeed::default());
        let mut s = Sampler::new(Sensors::new(), feed.clone());
        s.set_input(input.clone());
        let t0 = Instant::now();
        *feed.lock().unwrap() = Some(FedIdle {
            idle: Duration::from_secs(600),
            at: t0,
            source: "test".into(),
        });
        let (r, _) = s.sample(t0, &[]);
        assert_eq!(r.idle, Some(Duration::from_secs(600)));
        input.input("xinput2::0");
        // The wake-up was kept for the next wait.
        input.woke.notified().await;
        let at = input.last().unwrap().0;
        let (r, rep) = s.sample(at + Duration::from_millis(40), &[]);
        assert_eq!(r.idle, Some(Duration::from_millis(40)));
        assert_eq!(rep.idle_secs.from, "input event (xinput2::0)");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn load_needs_two_samples_and_then_is_a_fraction() {
        let mut s = Sampler::new(Sensors::new(), Arc::default());
        let t0 = Instant::now();
        let (r, _) = s.sample(t0, &[]);
        assert_eq!(r.owner_cpu_load, None);
        // Burn some CPU so the machine's counters move, past the next load reading.
        let end = Instant::now() + SLOW_EVERY + Duration::from_millis(100);
        let mut x = 0u64;
        while Instant::now() < end {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let (r, rep) = s.sample(Instant::now(), &[std::process::id()]);
        let owner = r.owner_cpu_load.expect("a load after two samples");
        let machine = rep.machine_load.value.unwrap();
        assert!(
            (0.0..=1.0).contains(&owner) && owner <= machine,
            "{owner} {machine}"
        );
        assert!(rep.load_window_secs >= SLOW_EVERY.as_secs_f64());
        // Within a second, the load reading stands.
        let (again, _) = s.sample(Instant::now(), &[std::process::id()]);
        assert_eq!(again.owner_cpu_load, Some(owner));
        assert!(r.available_memory_fraction.is_some());
        assert!(!r.running_apps.is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_nodes_own_cores_come_from_its_cpu_time_between_slow_readings() {
        let mut s = Sampler::new(Sensors::new(), Arc::default());
        let t0 = Instant::now();
        let cpu = |secs: f64| move || Own::CpuTime(Duration::from_secs_f64(secs));
        s.sample_own(t0, cpu(10.0));
        assert_eq!(s.own_cores(), None, "one reading tells no rate");
        // Between slow readings the figure stands.
        s.sample_own(t0 + SLOW_EVERY / 2, cpu(99.0));
        assert_eq!(s.own_cores(), None);
        s.sample_own(t0 + Duration::from_secs(2), cpu(11.0));
        let cores = s.own_cores().unwrap();
        assert!((cores - 0.5).abs() < 1e-9, "{cores}");
        // A counter that went back (the node restarted) reads as idle, not negative.
        s.sample_own(t0 + Duration::from_secs(4), cpu(1.0));
        assert_eq!(s.own_cores(), Some(0.0));
    }
}
