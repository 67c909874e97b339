//! Table tests: each rule alone, then rules in combination, then the
//! memory that keeps decisions steady across ticks.

use std::time::Duration;

use flotilla_policy::{
    BatteryMode, ClockTime, Decision, Lang, Leaving, LocalTime, Manual, OnSleep, Pause, Policy,
    Power, Readings, Reason, Rule, Schedule, Settings, Weekday, keeps_awake,
};

const TOTAL: u32 = 10;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn monday(hour: u8, minute: u8) -> LocalTime {
    LocalTime::new(Weekday::Monday, hour, minute, 0).unwrap()
}

/// An idle desktop on mains power with nothing to worry about.
fn calm() -> Readings {
    Readings {
        total_cpus: TOTAL,
        node_cpus: None,
        idle: Some(secs(3600)),
        power: Power::Ac,
        owner_cpu_load: Some(0.05),
        available_memory_fraction: Some(0.6),
        temperature_c: Some(55.0),
        running_apps: vec!["bash".into(), "firefox".into()],
        local_time: monday(10, 0),
    }
}

fn schedule(json: &str) -> Option<Schedule> {
    Some(serde_json::from_str(json).unwrap())
}

/// One tick on a fresh policy.
fn once(settings: Settings, readings: &Readings, manual: &Manual) -> Decision {
    Policy::new(settings).decide(readings, manual, secs(1000))
}

fn once_default(readings: &Readings) -> Decision {
    once(Settings::default(), readings, &Manual::None)
}

fn expect(decision: &Decision, target: u32, pause: Pause, code: &str) {
    assert_eq!(
        (decision.target_cpus, decision.pause, decision.reason.code()),
        (target, pause, code),
        "{decision:?}"
    );
}

#[test]
fn idle_machine_contributes_everything() {
    let d = once_default(&calm());
    expect(&d, 10, Pause::None, "contributing");
    assert_eq!(d.reason.text(Lang::En), "Contributing all 10 CPUs");
}

#[test]
fn kept_cpus_are_never_offered() {
    let settings = Settings {
        keep_cpus_for_owner: 4,
        ..Settings::default()
    };
    let d = once(settings, &calm(), &Manual::None);
    expect(&d, 6, Pause::None, "contributing");
    assert_eq!(
        d.reason.text(Lang::En),
        "Contributing 6 of 10 CPUs (keeping 4 for you)"
    );
    assert_eq!(
        d.reason.text(Lang::Es),
        "Aportando 6 de 10 CPU (4 reservadas para ti)"
    );
}

#[test]
fn owner_activity_table() {
    // (idle, expected target, expected code)
    let cases = [
        (Some(0), 2, "owner_active"),
        (Some(59), 2, "owner_active"),
        (None, 2, "owner_active"),
        (Some(60), 2, "ramping_up"),
        (Some(179), 2, "ramping_up"),
        (Some(180), 10, "contributing"),
        (Some(86_400), 10, "contributing"),
    ];
    for (idle, target, code) in cases {
        let readings = Readings {
            idle: idle.map(secs),
            ..calm()
        };
        let d = once_default(&readings);
        assert_eq!(
            (d.target_cpus, d.pause, d.reason.code()),
            (target, Pause::None, code),
            "idle {idle:?}"
        );
    }
}

#[test]
fn ramp_up_says_when_everything_will_be_offered() {
    let readings = Readings {
        idle: Some(secs(65)),
        ..calm()
    };
    let d = once_default(&readings);
    assert_eq!(
        d.reason,
        Reason::RampingUp {
            idle_secs: 65,
            full_in_secs: 115,
            cpus: 10,
            total: 10,
            machine: 10
        }
    );
    assert_eq!(
        d.reason.text(Lang::En),
        "Idle for 1 min, contributing all 10 CPUs in 2 min"
    );
}

#[test]
fn active_level_never_exceeds_what_is_on_offer() {
    let two_cores = Readings {
        total_cpus: 2,
        idle: Some(secs(90)),
        ..calm()
    };
    let settings = Settings {
        active_cpus: 4,
        ..Settings::default()
    };
    // Nothing to ramp up when the active level is already everything.
    expect(
        &once(settings, &two_cores, &Manual::None),
        2,
        Pause::None,
        "contributing",
    );
}

#[test]
fn battery_modes_table() {
    let on_battery = Readings {
        power: Power::Battery { percent: Some(42) },
        ..calm()
    };
    let cases = [
        (BatteryMode::Finish, 0, Pause::Finish, "on_battery"),
        (BatteryMode::PauseNow, 0, Pause::Now, "on_battery"),
        (BatteryMode::Keep, 3, Pause::None, "on_battery"),
        (BatteryMode::Ignore, 10, Pause::None, "contributing"),
    ];
    for (mode, target, pause, code) in cases {
        let settings = Settings {
            on_battery: mode,
            battery_cpus: 3,
            ..Settings::default()
        };
        let d = once(settings, &on_battery, &Manual::None);
        assert_eq!(
            (d.target_cpus, d.pause, d.reason.code()),
            (target, pause, code),
            "{mode:?}"
        );
    }
    let d = once_default(&on_battery);
    assert_eq!(d.reason.text(Lang::En), "On battery (42%)");
    assert_eq!(d.reason.text(Lang::Es), "Con batería (42 %)");
}

#[test]
fn low_battery_pauses_now_in_every_mode() {
    for mode in [
        BatteryMode::Finish,
        BatteryMode::PauseNow,
        BatteryMode::Keep,
        BatteryMode::Ignore,
    ] {
        let settings = Settings {
            on_battery: mode,
            ..Settings::default()
        };
        let readings = Readings {
            power: Power::Battery { percent: Some(19) },
            ..calm()
        };
        let d = once(settings, &readings, &Manual::None);
        expect(&d, 0, Pause::Now, "battery_low");
        assert_eq!(d.reason.text(Lang::En), "Battery low (19%)");
    }
    // At the threshold is not below it; a zero threshold never fires.
    let at_threshold = Readings {
        power: Power::Battery { percent: Some(20) },
        ..calm()
    };
    expect(&once_default(&at_threshold), 0, Pause::Finish, "on_battery");
    let never = Settings {
        pause_below_battery_percent: 0,
        on_battery: BatteryMode::Ignore,
        ..Settings::default()
    };
    let empty = Readings {
        power: Power::Battery { percent: Some(0) },
        ..calm()
    };
    expect(
        &once(never, &empty, &Manual::None),
        10,
        Pause::None,
        "contributing",
    );
}

#[test]
fn unknown_power_and_unknown_charge() {
    let unknown = Readings {
        power: Power::Unknown,
        ..calm()
    };
    expect(&once_default(&unknown), 10, Pause::None, "contributing");
    let no_percent = Readings {
        power: Power::Battery { percent: None },
        ..calm()
    };
    let d = once_default(&no_percent);
    expect(&d, 0, Pause::Finish, "on_battery");
    assert_eq!(d.reason.text(Lang::En), "On battery");
}

#[test]
fn temperature_table() {
    let cases = [
        (Some(90.0), Some(95.0), 0, "too_hot"),
        (Some(90.0), Some(90.0), 10, "contributing"),
        (Some(90.0), None, 10, "contributing"),
        (Some(90.0), Some(f64::NAN), 10, "contributing"),
        (None, Some(150.0), 10, "contributing"),
    ];
    for (limit, reading, target, code) in cases {
        let settings = Settings {
            max_temperature_c: limit,
            ..Settings::default()
        };
        let readings = Readings {
            temperature_c: reading,
            ..calm()
        };
        let d = once(settings, &readings, &Manual::None);
        assert_eq!(
            (d.target_cpus, d.pause, d.reason.code()),
            (target, Pause::None, code),
            "{limit:?} {reading:?}"
        );
    }
    let hot = Readings {
        temperature_c: Some(94.6),
        ..calm()
    };
    assert_eq!(once_default(&hot).reason.text(Lang::En), "Too hot (95 °C)");
}

#[test]
fn memory_table() {
    let cases = [
        (Some(0.10), 0, "low_memory"),
        (Some(0.149), 0, "low_memory"),
        (Some(0.15), 10, "contributing"),
        (None, 10, "contributing"),
        (Some(f64::INFINITY), 10, "contributing"),
    ];
    for (free, target, code) in cases {
        let readings = Readings {
            available_memory_fraction: free,
            ..calm()
        };
        let d = once_default(&readings);
        assert_eq!(
            (d.target_cpus, d.pause, d.reason.code()),
            (target, Pause::None, code),
            "{free:?}"
        );
    }
    let low = Readings {
        available_memory_fraction: Some(0.08),
        ..calm()
    };
    assert_eq!(
        once_default(&low).reason.text(Lang::En),
        "Low memory (8% free)"
    );
}

#[test]
fn schedule_table() {
    let settings = Settings {
        schedule: schedule(
            r#"{"monday": ["08:00-17:00"], "friday": ["08:00-12:00", "22:00-06:00"]}"#,
        ),
        ..Settings::default()
    };
    let at = |day, hour, minute| LocalTime::new(day, hour, minute, 0).unwrap();
    let cases = [
        (
            at(Weekday::Monday, 7, 0),
            Pause::Finish,
            "Outside allowed hours until 08:00",
        ),
        (
            at(Weekday::Monday, 8, 0),
            Pause::None,
            "Contributing all 10 CPUs",
        ),
        (
            at(Weekday::Monday, 17, 0),
            Pause::Finish,
            "Outside allowed hours until Friday 08:00",
        ),
        (
            at(Weekday::Friday, 12, 30),
            Pause::Finish,
            "Outside allowed hours until 22:00",
        ),
        (
            at(Weekday::Friday, 23, 0),
            Pause::None,
            "Contributing all 10 CPUs",
        ),
        (
            at(Weekday::Saturday, 5, 59),
            Pause::None,
            "Contributing all 10 CPUs",
        ),
        (
            at(Weekday::Saturday, 6, 0),
            Pause::Finish,
            "Outside allowed hours until Monday 08:00",
        ),
    ];
    for (local_time, pause, text) in cases {
        let readings = Readings {
            local_time,
            ..calm()
        };
        let d = once(settings.clone(), &readings, &Manual::None);
        assert_eq!(d.pause, pause, "{local_time:?}");
        assert_eq!(d.reason.text(Lang::En), text, "{local_time:?}");
        if pause == Pause::Finish {
            assert_eq!(d.target_cpus, 0);
            assert_eq!(d.reason.code(), "outside_hours");
        }
    }
    let es = once(
        settings,
        &Readings {
            local_time: at(Weekday::Monday, 7, 0),
            ..calm()
        },
        &Manual::None,
    );
    assert_eq!(
        es.reason.text(Lang::Es),
        "Fuera del horario permitido hasta las 08:00"
    );

    let never = Settings {
        schedule: schedule("{}"),
        ..Settings::default()
    };
    let d = once(never, &calm(), &Manual::None);
    expect(&d, 0, Pause::Finish, "outside_hours");
    assert_eq!(d.reason.text(Lang::En), "Outside allowed hours");
}

#[test]
fn exclusive_apps_table() {
    let settings = Settings {
        exclusive_apps: vec!["zoom".into(), "Teams".into()],
        ..Settings::default()
    };
    let cases: [(&[&str], Option<&str>); 6] = [
        (&["zoom"], Some("zoom")),
        (&["Zoom.exe"], Some("zoom")),
        (&["ZOOM"], Some("zoom")),
        (&["teams.EXE", "zoom"], Some("zoom")),
        (&["ms-teams", "zoomer", "zoom.us"], None),
        (&[], None),
    ];
    for (running, app) in cases {
        let readings = Readings {
            running_apps: running.iter().map(|s| (*s).to_owned()).collect(),
            ..calm()
        };
        let d = once(settings.clone(), &readings, &Manual::None);
        match app {
            Some(app) => {
                expect(&d, 0, Pause::Finish, "exclusive_app");
                assert_eq!(d.reason.text(Lang::En), format!("{app} is running"));
            }
            None => expect(&d, 10, Pause::None, "contributing"),
        }
    }
    let teams = Readings {
        running_apps: vec!["teams".into()],
        ..calm()
    };
    let d = once(settings, &teams, &Manual::None);
    assert_eq!(d.reason.text(Lang::Es), "Teams está en ejecución");
}

#[test]
fn manual_pauses_table() {
    let now = secs(1000);
    let local = monday(13, 0);
    let hour = Manual::for_duration(now, local, secs(3600));
    let tomorrow = Manual::until_next(now, local, ClockTime::new(8, 0).unwrap());
    let cases = [
        (hour, Pause::Now, "Paused by you until 14:00"),
        (tomorrow, Pause::Now, "Paused by you until 08:00"),
        (
            Manual::indefinite(),
            Pause::Now,
            "Paused by you until you resume",
        ),
        (
            Manual::finish_then_pause(),
            Pause::Finish,
            "Finishing current tasks, then pausing",
        ),
    ];
    for (manual, pause, text) in cases {
        let readings = Readings {
            local_time: local,
            ..calm()
        };
        let d = Policy::new(Settings::default()).decide(&readings, &manual, now);
        assert_eq!((d.target_cpus, d.pause), (0, pause), "{manual:?}");
        assert_eq!(d.reason.text(Lang::En), text);
    }
    let es = Policy::new(Settings::default()).decide(&calm(), &hour, now);
    assert_eq!(es.reason.text(Lang::Es), "Pausado por ti hasta las 14:00");
}

#[test]
fn timed_pause_ends_by_itself_and_indefinite_does_not() {
    let now = secs(1000);
    let hour = Manual::for_duration(now, monday(13, 0), secs(3600));
    let mut policy = Policy::new(Settings::default());
    expect(
        &policy.decide(&calm(), &hour, now + secs(3599)),
        0,
        Pause::Now,
        "paused_until",
    );
    expect(
        &policy.decide(&calm(), &hour, now + secs(3600)),
        10,
        Pause::None,
        "contributing",
    );

    let mut policy = Policy::new(Settings::default());
    let years = secs(10 * 365 * 86_400);
    expect(
        &policy.decide(&calm(), &Manual::indefinite(), years),
        0,
        Pause::Now,
        "paused_indefinitely",
    );
}

#[test]
fn pause_more_than_a_day_away_names_the_weekday() {
    let now = secs(0);
    let manual = Manual::for_duration(now, monday(9, 0), secs(2 * 86_400));
    let d = once(Settings::default(), &calm(), &manual);
    assert_eq!(
        d.reason.text(Lang::En),
        "Paused by you until Wednesday 09:00"
    );
    assert_eq!(
        d.reason.text(Lang::Es),
        "Pausado por ti hasta el miércoles a las 09:00"
    );
}

#[test]
fn owner_load_triggers_after_ten_seconds_and_releases_after_twenty() {
    let mut policy = Policy::new(Settings::default());
    let load = |l: f64| Readings {
        owner_cpu_load: Some(l),
        ..calm()
    };
    // (time, load, expected target, expected code)
    let script = [
        (0, 0.8, 10, "contributing"),
        (5, 0.8, 10, "contributing"),
        (9, 0.9, 10, "contributing"),
        (10, 0.51, 2, "owner_busy"),
        (12, 0.5, 2, "owner_busy"),
        (20, 0.2, 2, "owner_busy"),
        (31, 0.9, 2, "owner_busy"),
        (32, 0.1, 2, "owner_busy"),
        (51, 0.1, 2, "owner_busy"),
        (52, 0.1, 10, "contributing"),
        // Busy again: it drops at once...
        (60, 0.9, 10, "contributing"),
        (70, 0.9, 2, "owner_busy"),
        (71, 0.0, 2, "owner_busy"),
        // ...but once released it waits for the ramp-up period since the
        // last increase (at 52) before rising again.
        (91, 0.0, 2, "settling"),
        (231, 0.0, 2, "settling"),
        (232, 0.0, 10, "contributing"),
    ];
    for (t, l, target, code) in script {
        let d = policy.decide(&load(l), &Manual::None, secs(t));
        assert_eq!((d.target_cpus, d.reason.code()), (target, code), "t={t}");
    }
    let busy = policy.explain(&load(0.9), &Manual::None, secs(232));
    assert_eq!(
        busy.decision.target_cpus, 10,
        "one tick above is not ten seconds"
    );
}

#[test]
fn unknown_owner_load_is_not_busy() {
    let mut policy = Policy::new(Settings::default());
    for t in [0, 20, 40] {
        let readings = Readings {
            owner_cpu_load: None,
            ..calm()
        };
        expect(
            &policy.decide(&readings, &Manual::None, secs(t)),
            10,
            Pause::None,
            "contributing",
        );
    }
}

// --- Combinations: strictest wins, precedence names the reason on ties ---

struct Combo {
    name: &'static str,
    settings: Settings,
    readings: Readings,
    manual: Manual,
    target: u32,
    pause: Pause,
    code: &'static str,
}

#[test]
fn combinations_table() {
    let zoom = || vec!["zoom".to_owned()];
    let zoom_settings = || Settings {
        exclusive_apps: vec!["zoom".into()],
        ..Settings::default()
    };
    let night_only = || Settings {
        schedule: schedule(r#"{"monday": ["22:00-06:00"]}"#),
        exclusive_apps: vec!["zoom".into()],
        ..Settings::default()
    };
    let battery = |percent| Power::Battery {
        percent: Some(percent),
    };
    let cases = [
        Combo {
            name: "manual pause beats the schedule",
            settings: night_only(),
            readings: calm(),
            manual: Manual::indefinite(),
            target: 0,
            pause: Pause::Now,
            code: "paused_indefinitely",
        },
        Combo {
            name: "schedule and exclusive app tie: schedule named",
            settings: night_only(),
            readings: Readings {
                running_apps: zoom(),
                ..calm()
            },
            manual: Manual::None,
            target: 0,
            pause: Pause::Finish,
            code: "outside_hours",
        },
        Combo {
            name: "exclusive app and battery finish tie: app named",
            settings: zoom_settings(),
            readings: Readings {
                running_apps: zoom(),
                power: battery(50),
                ..calm()
            },
            manual: Manual::None,
            target: 0,
            pause: Pause::Finish,
            code: "exclusive_app",
        },
        Combo {
            name: "finish-then-pause yields to a stricter low battery",
            settings: Settings::default(),
            readings: Readings {
                power: battery(5),
                ..calm()
            },
            manual: Manual::finish_then_pause(),
            target: 0,
            pause: Pause::Now,
            code: "battery_low",
        },
        Combo {
            name: "battery pause_now beats an exclusive app's finish",
            settings: Settings {
                on_battery: BatteryMode::PauseNow,
                ..zoom_settings()
            },
            readings: Readings {
                running_apps: zoom(),
                power: battery(50),
                ..calm()
            },
            manual: Manual::None,
            target: 0,
            pause: Pause::Now,
            code: "on_battery",
        },
        Combo {
            name: "battery keep cannot loosen the owner's limit",
            settings: Settings {
                on_battery: BatteryMode::Keep,
                battery_cpus: 4,
                ..Settings::default()
            },
            readings: Readings {
                power: battery(80),
                idle: Some(secs(1)),
                ..calm()
            },
            manual: Manual::None,
            target: 2,
            pause: Pause::None,
            code: "owner_active",
        },
        Combo {
            name: "battery keep below the owner's limit is named",
            settings: Settings {
                on_battery: BatteryMode::Keep,
                battery_cpus: 1,
                ..Settings::default()
            },
            readings: Readings {
                power: battery(80),
                idle: Some(secs(1)),
                ..calm()
            },
            manual: Manual::None,
            target: 1,
            pause: Pause::None,
            code: "on_battery",
        },
        Combo {
            name: "a pause beats a zero-CPU limit",
            settings: Settings::default(),
            readings: Readings {
                power: battery(50),
                temperature_c: Some(99.0),
                ..calm()
            },
            manual: Manual::None,
            target: 0,
            pause: Pause::Finish,
            code: "on_battery",
        },
        Combo {
            name: "too hot and low memory tie: heat named",
            settings: Settings::default(),
            readings: Readings {
                temperature_c: Some(99.0),
                available_memory_fraction: Some(0.01),
                ..calm()
            },
            manual: Manual::None,
            target: 0,
            pause: Pause::None,
            code: "too_hot",
        },
        Combo {
            name: "low memory beats the owner's active level",
            settings: Settings::default(),
            readings: Readings {
                available_memory_fraction: Some(0.01),
                idle: Some(secs(1)),
                ..calm()
            },
            manual: Manual::None,
            target: 0,
            pause: Pause::None,
            code: "low_memory",
        },
        Combo {
            name: "input is named before ramping",
            settings: Settings::default(),
            readings: Readings {
                idle: None,
                ..calm()
            },
            manual: Manual::None,
            target: 2,
            pause: Pause::None,
            code: "owner_active",
        },
        Combo {
            name: "power unknown, idle unknown, temperature unknown: polite but running",
            settings: Settings::default(),
            readings: Readings {
                power: Power::Unknown,
                idle: None,
                temperature_c: None,
                owner_cpu_load: None,
                available_memory_fraction: None,
                ..calm()
            },
            manual: Manual::None,
            target: 2,
            pause: Pause::None,
            code: "owner_active",
        },
        Combo {
            name: "everything at once: manual pause named",
            settings: night_only(),
            readings: Readings {
                running_apps: zoom(),
                power: battery(5),
                temperature_c: Some(120.0),
                available_memory_fraction: Some(0.0),
                idle: Some(secs(0)),
                owner_cpu_load: Some(1.0),
                ..calm()
            },
            manual: Manual::indefinite(),
            target: 0,
            pause: Pause::Now,
            code: "paused_indefinitely",
        },
    ];
    for case in cases {
        let d = once(case.settings, &case.readings, &case.manual);
        assert_eq!(
            (d.target_cpus, d.pause, d.reason.code()),
            (case.target, case.pause, case.code),
            "{}",
            case.name
        );
    }
}

#[test]
fn busy_owner_is_named_before_the_ramp() {
    let settings = Settings {
        owner_load_trigger_secs: 0,
        ..Settings::default()
    };
    let readings = Readings {
        idle: Some(secs(100)),
        owner_cpu_load: Some(0.9),
        ..calm()
    };
    expect(
        &once(settings, &readings, &Manual::None),
        2,
        Pause::None,
        "owner_busy",
    );
}

// --- Memory across ticks ---

#[test]
fn first_input_drops_the_offer_in_the_same_tick() {
    let mut policy = Policy::new(Settings::default());
    expect(
        &policy.decide(&calm(), &Manual::None, secs(0)),
        10,
        Pause::None,
        "contributing",
    );
    let typing = Readings {
        idle: Some(Duration::from_millis(300)),
        ..calm()
    };
    expect(
        &policy.decide(&typing, &Manual::None, secs(1)),
        2,
        Pause::None,
        "owner_active",
    );
}

#[test]
fn increases_are_spaced_a_ramp_up_period_apart() {
    let mut policy = Policy::new(Settings::default());
    let idle = |s| Readings {
        idle: Some(secs(s)),
        ..calm()
    };
    let low_memory = Readings {
        available_memory_fraction: Some(0.05),
        ..calm()
    };
    let steps = [
        (0, low_memory.clone(), 0, "low_memory"),
        (1, idle(3600), 10, "contributing"),
        (2, low_memory.clone(), 0, "low_memory"),
        (3, idle(3600), 0, "settling"),
        (4, idle(0), 0, "settling"),
        (100, idle(96), 0, "settling"),
        (181, idle(177), 2, "ramping_up"),
        (184, idle(180), 2, "settling"),
        (360, idle(356), 2, "settling"),
        (361, idle(357), 10, "contributing"),
    ];
    for (t, readings, target, code) in steps {
        let d = policy.decide(&readings, &Manual::None, secs(t));
        assert_eq!((d.target_cpus, d.reason.code()), (target, code), "t={t}");
    }
}

#[test]
fn settling_reasons_read_naturally() {
    let mut policy = Policy::new(Settings::default());
    let low = Readings {
        available_memory_fraction: Some(0.05),
        ..calm()
    };
    policy.decide(&low, &Manual::None, secs(0));
    policy.decide(&calm(), &Manual::None, secs(1));
    policy.decide(&low, &Manual::None, secs(2));
    let d = policy.decide(&calm(), &Manual::None, secs(31));
    assert_eq!(d.reason.text(Lang::En), "Resuming in 3 min");
    assert_eq!(d.reason.text(Lang::Es), "Se reanuda dentro de 3 min");
    let typing = Readings {
        idle: Some(secs(0)),
        ..calm()
    };
    expect(
        &policy.decide(&typing, &Manual::None, secs(200)),
        2,
        Pause::None,
        "owner_active",
    );
    let d = policy.decide(&calm(), &Manual::None, secs(201));
    assert_eq!(
        d.reason.text(Lang::En),
        "Contributing 2 of 10 CPUs, more in 3 min"
    );
    assert_eq!(
        d.reason.text(Lang::Es),
        "Aportando 2 de 10 CPU; más dentro de 3 min"
    );
}

#[test]
fn memory_hysteresis() {
    let mut policy = Policy::new(Settings::default());
    let free = |f| Readings {
        available_memory_fraction: Some(f),
        ..calm()
    };
    let script = [
        (0, 0.10, 0),
        (1, 0.16, 0),
        (2, 0.19, 0),
        (3, 0.21, 10),
        (4, 0.16, 10),
        (5, 0.14, 0),
    ];
    for (t, f, target) in script {
        let d = policy.decide(&free(f), &Manual::None, secs(t));
        assert_eq!(d.target_cpus, target, "t={t} free={f}");
    }
}

#[test]
fn temperature_hysteresis() {
    let mut policy = Policy::new(Settings::default());
    let temp = |c| Readings {
        temperature_c: Some(c),
        ..calm()
    };
    let script = [
        (0, 91.0, 0),
        (1, 88.0, 0),
        (2, 85.5, 0),
        (3, 85.0, 10),
        (4, 89.0, 10),
    ];
    for (t, c, target) in script {
        let d = policy.decide(&temp(c), &Manual::None, secs(t));
        assert_eq!(d.target_cpus, target, "t={t} {c} °C");
    }
}

#[test]
fn low_battery_hysteresis_and_lost_charge_reading() {
    let settings = Settings {
        on_battery: BatteryMode::Ignore,
        ..Settings::default()
    };
    let mut policy = Policy::new(settings);
    let charge = |p| Readings {
        power: Power::Battery { percent: p },
        ..calm()
    };
    let script = [
        (0, Some(19), Pause::Now),
        (1, Some(22), Pause::Now),
        (2, None, Pause::Now),
        (3, Some(25), Pause::None),
        (4, None, Pause::None),
        (5, Some(19), Pause::Now),
    ];
    for (t, p, pause) in script {
        let d = policy.decide(&charge(p), &Manual::None, secs(t));
        assert_eq!(d.pause, pause, "t={t} {p:?}");
    }
    let d = policy.decide(&calm(), &Manual::None, secs(6));
    assert_eq!(d.pause, Pause::None, "plugging in lifts it");
}

#[test]
fn clock_going_backwards_does_not_speed_anything_up() {
    let mut policy = Policy::new(Settings::default());
    let low = Readings {
        available_memory_fraction: Some(0.05),
        ..calm()
    };
    policy.decide(&low, &Manual::None, secs(1000));
    policy.decide(&calm(), &Manual::None, secs(1001));
    policy.decide(&low, &Manual::None, secs(1002));
    let d = policy.decide(&calm(), &Manual::None, secs(10));
    expect(&d, 0, Pause::None, "settling");
}

#[test]
fn reloaded_settings_keep_the_history() {
    let mut policy = Policy::new(Settings::default());
    let low = Readings {
        available_memory_fraction: Some(0.05),
        ..calm()
    };
    policy.decide(&low, &Manual::None, secs(0));
    policy.decide(&calm(), &Manual::None, secs(1));
    policy.decide(&low, &Manual::None, secs(2));
    policy.set_settings(Settings {
        keep_cpus_for_owner: 2,
        ..Settings::default()
    });
    assert_eq!(policy.settings().keep_cpus_for_owner, 2);
    expect(
        &policy.decide(&calm(), &Manual::None, secs(3)),
        0,
        Pause::None,
        "settling",
    );
    expect(
        &policy.decide(&calm(), &Manual::None, secs(181)),
        8,
        Pause::None,
        "contributing",
    );
}

#[test]
fn unknown_core_count_offers_nothing() {
    let readings = Readings {
        total_cpus: 0,
        ..calm()
    };
    assert_eq!(once_default(&readings).target_cpus, 0);
}

// --- explain ---

#[test]
fn explain_lists_every_rule_in_precedence_order() {
    let settings = Settings {
        exclusive_apps: vec!["zoom".into()],
        ..Settings::default()
    };
    let policy = Policy::new(settings);
    let readings = Readings {
        running_apps: vec!["zoom".into()],
        idle: Some(secs(5)),
        available_memory_fraction: Some(0.05),
        ..calm()
    };
    let explanation = policy.explain(&readings, &Manual::None, secs(0));
    let rules: Vec<Rule> = explanation.verdicts.iter().map(|v| v.rule).collect();
    assert_eq!(rules, Rule::ALL);
    let fired: Vec<&str> = explanation
        .verdicts
        .iter()
        .filter(|v| v.fired)
        .map(|v| v.rule.name())
        .collect();
    assert_eq!(fired, ["exclusive_apps", "memory", "owner"]);
    expect(&explanation.decision, 0, Pause::Finish, "exclusive_app");
    let apps = &explanation.verdicts[3];
    assert_eq!(apps.target_cpus, Some(0));
    assert_eq!(apps.pause, Pause::Finish);
    assert_eq!(apps.detail.get(Lang::En), "zoom is running: no new tasks");
    assert_eq!(
        apps.detail.get(Lang::Es),
        "zoom está en ejecución: sin tareas nuevas"
    );
    for verdict in &explanation.verdicts {
        assert!(!verdict.detail.en.is_empty(), "{verdict:?}");
        assert_ne!(verdict.detail.en, verdict.detail.es, "{verdict:?}");
    }
}

#[test]
fn explain_does_not_change_the_policy() {
    let mut policy = Policy::new(Settings::default());
    let low = Readings {
        available_memory_fraction: Some(0.05),
        ..calm()
    };
    policy.decide(&low, &Manual::None, secs(0));
    let preview = policy.explain(&calm(), &Manual::None, secs(1));
    let again = policy.explain(&calm(), &Manual::None, secs(1));
    assert_eq!(preview, again);
    assert_eq!(
        policy.decide(&calm(), &Manual::None, secs(1)),
        preview.decision
    );
}

#[test]
fn explain_shows_the_settle_rule_holding() {
    let mut policy = Policy::new(Settings::default());
    let low = Readings {
        available_memory_fraction: Some(0.05),
        ..calm()
    };
    policy.decide(&low, &Manual::None, secs(0));
    policy.decide(&calm(), &Manual::None, secs(1));
    policy.decide(&low, &Manual::None, secs(2));
    let explanation = policy.explain(&calm(), &Manual::None, secs(61));
    let settle = explanation.verdicts.last().unwrap();
    assert_eq!(settle.rule, Rule::Settle);
    assert!(settle.fired);
    assert_eq!(settle.target_cpus, Some(0));
    assert_eq!(
        settle.detail.en,
        "Last increase 1 min ago, less than 3 min: Resuming in 2 min"
    );
}

#[test]
fn decisions_serialise_with_codes() {
    let readings = Readings {
        power: Power::Battery { percent: Some(42) },
        ..calm()
    };
    let json = serde_json::to_value(once_default(&readings)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "target_cpus": 0,
            "pause": "finish",
            "reason": {"code": "on_battery", "percent": 42}
        })
    );
    let manual = Manual::for_duration(secs(0), monday(13, 0), secs(3600));
    let json = serde_json::to_value(once(Settings::default(), &calm(), &manual)).unwrap();
    assert_eq!(
        json["reason"],
        serde_json::json!({"code": "paused_until", "until": {"at": "14:00", "weekday": null}})
    );
    let explanation = Policy::new(Settings::default()).explain(&calm(), &Manual::None, secs(0));
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["verdicts"][0]["rule"], "sleep");
    assert_eq!(json["verdicts"][1]["rule"], "manual");
    assert_eq!(json["verdicts"][1]["detail"]["es"], "Sin pausa manual");
}

// --- a node started with fewer CPUs than the machine has ---

/// `calm()` on a machine of `machine` cores whose node was started with `node` CPUs.
fn node_of(machine: u32, node: u32) -> Readings {
    Readings {
        total_cpus: machine,
        node_cpus: Some(node),
        ..calm()
    }
}

fn texts(d: &Decision) -> (String, String) {
    (d.reason.text(Lang::En), d.reason.text(Lang::Es))
}

#[test]
fn a_node_lends_at_most_its_own_cpus_and_says_so() {
    // `--cpus 1` on a two-core machine.
    let d = once_default(&node_of(2, 1));
    expect(&d, 1, Pause::None, "contributing");
    assert_eq!(
        d.reason,
        Reason::Contributing {
            cpus: 1,
            total: 1,
            machine: 2
        }
    );
    assert_eq!(
        texts(&d),
        (
            "Contributing this node's only CPU".into(),
            "Aportando la única CPU de este nodo".into()
        )
    );

    let d = once_default(&node_of(10, 4));
    expect(&d, 4, Pause::None, "contributing");
    assert_eq!(
        texts(&d),
        (
            "Contributing all 4 CPUs of this node".into(),
            "Aportando las 4 CPU de este nodo".into()
        )
    );

    // A node with as many CPUs as the machine, or more, reads as before.
    for node in [10, 16] {
        let d = once_default(&node_of(10, node));
        expect(&d, 10, Pause::None, "contributing");
        assert_eq!(
            texts(&d),
            (
                "Contributing all 10 CPUs".into(),
                "Aportando las 10 CPU".into()
            ),
            "node {node}"
        );
    }
}

#[test]
fn keep_cpus_for_owner_counts_from_the_machine_not_the_node() {
    let keep = |n| Settings {
        keep_cpus_for_owner: n,
        ..Settings::default()
    };
    // Two cores, one kept: one to lend, which a one-CPU node lends whole.
    let d = once(keep(1), &node_of(2, 1), &Manual::None);
    expect(&d, 1, Pause::None, "contributing");
    assert_eq!(
        texts(&d),
        (
            "Contributing this node's only CPU".into(),
            "Aportando la única CPU de este nodo".into()
        )
    );
    // Ten cores, two kept: eight to lend, more than a six-CPU node has.
    let d = once(keep(2), &node_of(10, 6), &Manual::None);
    expect(&d, 6, Pause::None, "contributing");
    assert_eq!(
        texts(&d),
        (
            "Contributing all 6 CPUs of this node".into(),
            "Aportando las 6 CPU de este nodo".into()
        )
    );
    // Ten cores, six kept: four to lend, fewer than the node has; the owner keeps six.
    let d = once(keep(6), &node_of(10, 6), &Manual::None);
    expect(&d, 4, Pause::None, "contributing");
    assert_eq!(
        texts(&d),
        (
            "Contributing 4 of this node's 6 CPUs (keeping 6 for you)".into(),
            "Aportando 4 de las 6 CPU de este nodo (6 reservadas para ti)".into()
        )
    );
    // Three cores, two kept: one of a two-CPU node's.
    let d = once(keep(2), &node_of(3, 2), &Manual::None);
    expect(&d, 1, Pause::None, "contributing");
    assert_eq!(
        texts(&d),
        (
            "Contributing 1 of this node's 2 CPUs (keeping 2 for you)".into(),
            "Aportando 1 de las 2 CPU de este nodo (2 reservadas para ti)".into()
        )
    );
    // Without a node cap the owner's share is unchanged: one of two cores kept.
    let d = once(
        keep(1),
        &Readings {
            total_cpus: 2,
            ..calm()
        },
        &Manual::None,
    );
    expect(&d, 1, Pause::None, "contributing");
    assert_eq!(
        texts(&d),
        (
            "Contributing 1 of 2 CPUs (keeping 1 for you)".into(),
            "Aportando 1 de 2 CPU (1 reservada para ti)".into()
        )
    );
}

#[test]
fn ramping_up_promises_the_nodes_cpus_not_the_machines() {
    let idle = |r: Readings| Readings {
        idle: Some(secs(65)),
        ..r
    };
    let d = once_default(&idle(node_of(10, 4)));
    expect(&d, 2, Pause::None, "ramping_up");
    assert_eq!(
        texts(&d),
        (
            "Idle for 1 min, contributing all 4 CPUs of this node in 2 min".into(),
            "Sin uso desde hace 1 min; aportará las 4 CPU de este nodo dentro de 2 min".into()
        )
    );
    let none_while_active = Settings {
        active_cpus: 0,
        ..Settings::default()
    };
    let d = once(none_while_active, &idle(node_of(2, 1)), &Manual::None);
    expect(&d, 0, Pause::None, "ramping_up");
    assert_eq!(
        texts(&d),
        (
            "Idle for 1 min, contributing this node's only CPU in 2 min".into(),
            "Sin uso desde hace 1 min; aportará la única CPU de este nodo dentro de 2 min".into()
        )
    );
}

#[test]
fn a_held_offer_counts_against_the_nodes_cpus() {
    let mut policy = Policy::new(Settings::default());
    let away = node_of(10, 4);
    let typing = Readings {
        idle: Some(secs(0)),
        ..away.clone()
    };
    expect(
        &policy.decide(&away, &Manual::None, secs(0)),
        4,
        Pause::None,
        "contributing",
    );
    expect(
        &policy.decide(&typing, &Manual::None, secs(1)),
        2,
        Pause::None,
        "owner_active",
    );
    expect(
        &policy.decide(&away, &Manual::None, secs(2)),
        4,
        Pause::None,
        "contributing",
    );
    expect(
        &policy.decide(&typing, &Manual::None, secs(3)),
        2,
        Pause::None,
        "owner_active",
    );
    let d = policy.decide(&away, &Manual::None, secs(4));
    expect(&d, 2, Pause::None, "settling");
    assert_eq!(
        texts(&d),
        (
            "Contributing 2 of this node's 4 CPUs, more in 3 min".into(),
            "Aportando 2 de las 4 CPU de este nodo; más dentro de 3 min".into()
        )
    );
}

// --- sleep and shutdown announced by the OS ---

#[test]
fn an_announced_sleep_or_shutdown_stops_at_once_over_every_other_rule() {
    // The strictest of the other rules at the same time: a manual pause and a low battery.
    let readings = Readings {
        power: Power::Battery { percent: Some(5) },
        idle: Some(secs(0)),
        ..calm()
    };
    for (leaving, code, en, es) in [
        (
            Leaving::Sleep,
            "going_to_sleep",
            "Going to sleep",
            "Entrando en reposo",
        ),
        (
            Leaving::ShutDown,
            "shutting_down",
            "Shutting down",
            "Apagándose",
        ),
    ] {
        for (r, manual) in [(&calm(), Manual::None), (&readings, Manual::indefinite())] {
            let mut policy = Policy::new(Settings::default());
            policy.set_leaving(Some(leaving));
            assert!(policy.hands_back());
            let d = policy.decide(r, &manual, secs(1000));
            expect(&d, 0, Pause::Now, code);
            assert_eq!(d.reason.text(Lang::En), en);
            assert_eq!(d.reason.text(Lang::Es), es);
        }
    }
}

#[test]
fn after_wake_the_offer_comes_back_without_waiting_for_a_ramp() {
    let mut policy = Policy::new(Settings::default());
    expect(
        &policy.decide(&calm(), &Manual::None, secs(1000)),
        10,
        Pause::None,
        "contributing",
    );
    policy.set_leaving(Some(Leaving::Sleep));
    expect(
        &policy.decide(&calm(), &Manual::None, secs(1001)),
        0,
        Pause::Now,
        "going_to_sleep",
    );
    policy.set_leaving(None);
    assert!(!policy.hands_back());
    // The machine left for its own reasons: what it lent before comes back at once, without
    // the settle rule's wait between two increases.
    let d = policy.decide(&calm(), &Manual::None, secs(1002));
    expect(&d, 10, Pause::None, "contributing");
}

#[test]
fn after_wake_the_offer_comes_back_only_to_what_it_was() {
    let mut policy = Policy::new(Settings::default());
    let busy = Readings {
        idle: Some(secs(0)),
        ..calm()
    };
    expect(
        &policy.decide(&busy, &Manual::None, secs(900)),
        2,
        Pause::None,
        "owner_active",
    );
    expect(
        &policy.decide(&calm(), &Manual::None, secs(1000)),
        10,
        Pause::None,
        "contributing",
    );
    expect(
        &policy.decide(&busy, &Manual::None, secs(1001)),
        2,
        Pause::None,
        "owner_active",
    );
    policy.set_leaving(Some(Leaving::Sleep));
    policy.decide(&busy, &Manual::None, secs(1002));
    policy.set_leaving(None);
    // Away after wake: the rise from 2 to 10 is an increase like any other, and waits.
    let d = policy.decide(&calm(), &Manual::None, secs(1003));
    expect(&d, 2, Pause::None, "settling");
}

#[test]
fn on_sleep_ignore_keeps_the_work_and_says_so() {
    let settings = Settings {
        on_sleep: OnSleep::Ignore,
        ..Settings::default()
    };
    let mut policy = Policy::new(settings);
    policy.set_leaving(Some(Leaving::Sleep));
    assert!(!policy.hands_back());
    let explanation = policy.explain(&calm(), &Manual::None, secs(0));
    expect(&explanation.decision, 10, Pause::None, "contributing");
    let sleep = &explanation.verdicts[0];
    assert_eq!(sleep.rule, Rule::Sleep);
    assert!(!sleep.fired);
    assert!(sleep.detail.get(Lang::En).contains("ignore"), "{sleep:?}");
}

#[test]
fn keep_awake_needs_the_setting_mains_power_lending_and_the_owner_away() {
    let on = Settings {
        keep_awake: true,
        ..Settings::default()
    };
    let lending = once(on.clone(), &calm(), &Manual::None);
    assert!(keeps_awake(&on, &calm(), &lending));
    // Unknown power counts as mains (desktops).
    let unknown = Readings {
        power: Power::Unknown,
        ..calm()
    };
    assert!(keeps_awake(&on, &unknown, &lending));
    // Off by default.
    assert!(!keeps_awake(&Settings::default(), &calm(), &lending));
    // On battery.
    let battery = Readings {
        power: Power::Battery { percent: Some(80) },
        ..calm()
    };
    assert!(!keeps_awake(&on, &battery, &lending));
    // The owner is at the machine (or idle time is unknown).
    for idle in [Some(secs(1)), None] {
        let here = Readings { idle, ..calm() };
        assert!(!keeps_awake(&on, &here, &lending));
    }
    // Not lending: paused, or nothing offered.
    let paused = once(on.clone(), &calm(), &Manual::indefinite());
    assert!(!keeps_awake(&on, &calm(), &paused));
    let hot = Readings {
        temperature_c: Some(110.0),
        ..calm()
    };
    let none = once(on.clone(), &hot, &Manual::None);
    assert_eq!(none.target_cpus, 0);
    assert!(!keeps_awake(&on, &hot, &none));
}
