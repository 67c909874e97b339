//! Properties that must hold for any settings and any sequence of readings.

use std::time::Duration;

use flotilla_policy::{
    BatteryMode, Decision, Lang, LocalTime, Manual, Pause, Policy, Power, Readings, Settings,
    Weekday,
};
use proptest::prelude::*;

fn settings() -> impl Strategy<Value = Settings> {
    let timing = (1u64..=120, 0u64..=300, 0u64..=30, 0u64..=60);
    let cpus = (0u32..=6, 0u32..=6, 0u32..=8);
    let limits = (
        prop_oneof![
            Just(BatteryMode::Finish),
            Just(BatteryMode::PauseNow),
            Just(BatteryMode::Keep),
            Just(BatteryMode::Ignore),
        ],
        0u8..=40,
        0.05f64..=1.0,
        0.0f64..=0.5,
        prop::option::of(60.0f64..=100.0),
        any::<bool>(),
    );
    (timing, cpus, limits).prop_map(
        |(
            (active_after, extra_ramp, trigger, release),
            (active_cpus, keep, battery_cpus),
            (on_battery, battery_floor, load_threshold, min_free, max_temp, scheduled),
        )| Settings {
            active_after_input_secs: active_after,
            ramp_up_after_secs: active_after + extra_ramp,
            active_cpus,
            keep_cpus_for_owner: keep,
            on_battery,
            battery_cpus,
            pause_below_battery_percent: battery_floor,
            owner_load_threshold: load_threshold,
            owner_load_trigger_secs: trigger,
            owner_load_release_secs: release,
            min_free_memory_fraction: min_free,
            max_temperature_c: max_temp,
            schedule: scheduled.then(|| {
                serde_json::from_str(
                    r#"{"monday": ["08:00-18:00"], "tuesday": ["22:00-06:00"],
                        "saturday": ["00:00-24:00"]}"#,
                )
                .unwrap()
            }),
            exclusive_apps: vec!["zoom".into()],
            ..Settings::default()
        },
    )
}

fn fraction() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(f64::NAN)),
        8 => (0.0f64..=1.0).prop_map(Some),
    ]
}

fn readings(total_cpus: u32) -> impl Strategy<Value = Readings> {
    let idle = prop_oneof![
        1 => Just(None),
        9 => (0u64..=500).prop_map(|s| Some(Duration::from_secs(s))),
    ];
    let power = prop_oneof![
        6 => Just(Power::Ac),
        2 => prop::option::of(0u8..=100).prop_map(|percent| Power::Battery { percent }),
        1 => Just(Power::Unknown),
    ];
    let temperature = prop_oneof![1 => Just(None), 6 => (40.0f64..=110.0).prop_map(Some)];
    let apps = prop_oneof![
        6 => Just(Vec::new()),
        1 => Just(vec!["Zoom.exe".to_owned()]),
    ];
    let local = (0u32..7, 0u32..86_400)
        .prop_map(|(day, secs)| LocalTime::from_seconds(Weekday::from_index(day), secs).unwrap());
    (
        idle,
        power,
        fraction(),
        fraction(),
        temperature,
        apps,
        local,
    )
        .prop_map(
            move |(idle, power, load, memory, temperature_c, running_apps, local_time)| Readings {
                total_cpus,
                node_cpus: None,
                idle,
                power,
                owner_cpu_load: load,
                available_memory_fraction: memory,
                temperature_c,
                running_apps,
                local_time,
            },
        )
}

fn manual() -> impl Strategy<Value = Manual> {
    prop_oneof![
        12 => Just(Manual::None),
        1 => Just(Manual::indefinite()),
        1 => Just(Manual::finish_then_pause()),
        2 => (0u64..=4000).prop_map(|deadline| Manual::PausedUntil {
            deadline: Duration::from_secs(deadline),
            ends_at: LocalTime::new(Weekday::Monday, 14, 0, 0).unwrap(),
        }),
    ]
}

/// A tick: seconds since the previous one, readings, manual state.
type Tick = (u64, Readings, Manual);

fn ticks(total_cpus: u32, max_len: usize) -> impl Strategy<Value = Vec<Tick>> {
    prop::collection::vec((0u64..=40, readings(total_cpus), manual()), 1..max_len)
}

/// Settings, machine size, a history, and one more set of readings.
fn scenario() -> impl Strategy<Value = (Settings, Vec<Tick>, Readings)> {
    (settings(), 1u32..=32)
        .prop_flat_map(|(settings, total)| (Just(settings), ticks(total, 80), readings(total)))
}

/// Plays the ticks, returning each decision with its monotonic time.
fn play(policy: &mut Policy, ticks: &[Tick]) -> (Vec<(Duration, Decision)>, Duration) {
    let mut now = Duration::from_secs(1_000);
    let mut out = Vec::with_capacity(ticks.len());
    for (step, readings, manual) in ticks {
        now += Duration::from_secs(*step);
        out.push((now, policy.decide(readings, manual, now)));
    }
    (out, now)
}

proptest! {
    #[test]
    fn never_above_the_configured_maximum((settings, history, _) in scenario()) {
        let keep = settings.keep_cpus_for_owner;
        let mut policy = Policy::new(settings);
        let (decisions, _) = play(&mut policy, &history);
        for ((_, readings, _), (_, decision)) in history.iter().zip(&decisions) {
            prop_assert!(decision.target_cpus <= readings.total_cpus.saturating_sub(keep), "{decision:?}");
            if decision.pause != Pause::None {
                prop_assert_eq!(decision.target_cpus, 0);
            }
        }
    }

    #[test]
    fn at_most_one_step_up_per_ramp_up_period((settings, history, _) in scenario()) {
        let period = Duration::from_secs(settings.ramp_up_after_secs);
        let mut policy = Policy::new(settings);
        let (decisions, _) = play(&mut policy, &history);
        let mut last_raise: Option<Duration> = None;
        for pair in decisions.windows(2) {
            let ((_, before), (now, after)) = (&pair[0], &pair[1]);
            if after.target_cpus > before.target_cpus {
                if let Some(previous) = last_raise {
                    prop_assert!(
                        *now - previous >= period,
                        "raised at {previous:?} and again at {now:?}, period {period:?}"
                    );
                }
                last_raise = Some(*now);
            }
        }
    }

    #[test]
    fn input_drops_the_offer_in_the_same_tick(
        (settings, history, last) in scenario(),
        idle_fraction in 0.0f64..1.0,
    ) {
        let active_after = settings.active_after_input_secs;
        let limit = settings
            .active_cpus
            .min(last.total_cpus.saturating_sub(settings.keep_cpus_for_owner));
        let mut policy = Policy::new(settings);
        let (_, now) = play(&mut policy, &history);
        let typing = Readings {
            idle: Some(Duration::from_secs_f64(active_after as f64 * idle_fraction)),
            ..last
        };
        let decision = policy.decide(&typing, &Manual::None, now + Duration::from_secs(1));
        prop_assert!(decision.target_cpus <= limit, "{decision:?} above {limit}");
    }

    #[test]
    fn more_owner_load_never_yields_more_cpus(
        (settings, history, last) in scenario(),
        lower in 0.0f64..=1.0,
        extra in 0.0f64..=1.0,
        step in 0u64..=40,
    ) {
        let mut policy = Policy::new(settings);
        let (_, now) = play(&mut policy, &history);
        let now = now + Duration::from_secs(step);
        let mut light = policy.clone();
        let mut heavy = policy;
        let with_load = |load: f64| Readings { owner_cpu_load: Some(load), ..last.clone() };
        let light = light.decide(&with_load(lower), &Manual::None, now);
        let heavy = heavy.decide(&with_load((lower + extra).min(1.0)), &Manual::None, now);
        prop_assert!(heavy.target_cpus <= light.target_cpus, "{heavy:?} > {light:?}");
    }

    #[test]
    fn explain_agrees_with_decide_and_decisions_are_repeatable(
        (settings, history, _) in scenario(),
    ) {
        let mut first = Policy::new(settings.clone());
        let mut second = Policy::new(settings);
        let mut now = Duration::ZERO;
        for (step, readings, manual) in &history {
            now += Duration::from_secs(*step);
            let preview = first.explain(readings, manual, now);
            prop_assert_eq!(preview.verdicts.len(), flotilla_policy::Rule::ALL.len());
            let decision = first.decide(readings, manual, now);
            prop_assert_eq!(&preview.decision, &decision);
            prop_assert_eq!(second.decide(readings, manual, now), decision);
        }
    }

    #[test]
    fn every_decision_reads_in_both_languages((settings, history, _) in scenario()) {
        let mut policy = Policy::new(settings);
        let (decisions, _) = play(&mut policy, &history);
        for (_, decision) in decisions {
            let en = decision.reason.text(Lang::En);
            let es = decision.reason.text(Lang::Es);
            prop_assert!(!en.is_empty());
            prop_assert_ne!(en, es);
        }
    }

    #[test]
    fn calm_long_enough_always_gives_everything_back((settings, history, last) in scenario()) {
        let settings = Settings { schedule: None, ..settings };
        let wait = settings.owner_load_release_secs + settings.ramp_up_after_secs + 5;
        let max = last.total_cpus.saturating_sub(settings.keep_cpus_for_owner);
        let mut policy = Policy::new(settings);
        let (_, start) = play(&mut policy, &history);
        let calm = Readings {
            idle: Some(Duration::from_secs(86_400)),
            power: Power::Ac,
            owner_cpu_load: Some(0.0),
            available_memory_fraction: Some(0.9),
            temperature_c: Some(40.0),
            running_apps: Vec::new(),
            ..last
        };
        let mut decision = None;
        for t in (0..=wait).step_by(5) {
            decision = Some(policy.decide(&calm, &Manual::None, start + Duration::from_secs(t)));
        }
        let decision = decision.unwrap();
        prop_assert_eq!(decision.target_cpus, max, "{:?}", decision);
        prop_assert_eq!(decision.pause, Pause::None);
    }
}
