use std::path::{Path, PathBuf};

use super::kernel::{self, COMM_MAX_BYTES};
use super::*;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn power_of(name: &str) -> PowerReading {
    kernel::power_from_dir(&fixture(&format!("power/{name}/sys/class/power_supply")))
}

fn supply_from(name: &str, supply: &str) -> String {
    // Joined the way the reader joins it, so the separators match on every OS.
    let dir = fixture(&format!("power/{name}/sys/class/power_supply"));
    format!("sysfs:{}", dir.join(supply).display())
}

/// Writes one supply's attributes under `dir/name`, as sysfs does (one value and a newline).
fn write_supply(dir: &Path, name: &str, attrs: &[(&str, &str)]) {
    let supply = dir.join(name);
    std::fs::create_dir_all(&supply).unwrap();
    for (attr, value) in attrs {
        std::fs::write(supply.join(attr), format!("{value}\n")).unwrap();
    }
}

// Power.

#[test]
fn laptop_on_its_charger_is_on_ac_with_its_charge() {
    let reading = power_of("laptop_ac");
    assert_eq!(reading.source, PowerSource::Ac);
    assert_eq!(reading.battery_percent, Some(87));
    assert_eq!(reading.from, supply_from("laptop_ac", "AC"));
}

#[test]
fn laptop_off_its_charger_is_on_battery() {
    let reading = power_of("laptop_battery");
    assert_eq!(reading.source, PowerSource::Battery);
    assert_eq!(reading.battery_percent, Some(42));
    assert_eq!(reading.from, supply_from("laptop_battery", "BAT0"));
}

#[test]
fn desktop_without_supplies_is_on_ac() {
    let reading = power_of("desktop");
    assert_eq!(
        reading,
        PowerReading {
            source: PowerSource::Ac,
            battery_percent: None,
            from: "no battery: desktop".into(),
        }
    );
}

#[test]
fn desktop_on_a_ups_on_line_is_on_ac() {
    let reading = power_of("desktop_ups");
    assert_eq!(reading.source, PowerSource::Ac);
    assert_eq!(reading.battery_percent, None);
    assert_eq!(reading.from, supply_from("desktop_ups", "ups"));
}

#[test]
fn desktop_on_a_discharging_ups_is_on_battery() {
    let reading = power_of("desktop_ups_outage");
    assert_eq!(reading.source, PowerSource::Battery);
    assert_eq!(reading.battery_percent, Some(64));
    assert_eq!(reading.from, supply_from("desktop_ups_outage", "ups"));
}

#[test]
fn a_mouse_battery_does_not_count_as_the_laptops() {
    let reading = power_of("laptop_mouse");
    assert_eq!(reading.source, PowerSource::Ac);
    assert_eq!(reading.battery_percent, Some(100), "not the mouse's 15");
    assert_eq!(reading.from, supply_from("laptop_mouse", "ADP1"));

    let reading = power_of("laptop_mouse_battery");
    assert_eq!(reading.source, PowerSource::Battery);
    assert_eq!(reading.battery_percent, Some(55), "not the mouse's 90");
    assert_eq!(reading.from, supply_from("laptop_mouse_battery", "BAT0"));
}

#[test]
fn a_desktop_with_only_a_mouse_battery_is_a_desktop() {
    let reading = power_of("desktop_mouse");
    assert_eq!(reading.source, PowerSource::Ac);
    assert_eq!(reading.battery_percent, None);
    assert_eq!(reading.from, "no battery: desktop");
}

#[test]
fn usb_c_charging_counts_as_ac_and_two_batteries_average() {
    let reading = power_of("laptop_usbc");
    assert_eq!(reading.source, PowerSource::Ac);
    assert_eq!(reading.battery_percent, Some(70));
    assert_eq!(
        reading.from,
        supply_from("laptop_usbc", "ucsi-source-psy-USBC000-001")
    );
}

#[test]
fn a_missing_power_supply_directory_is_unknown() {
    let reading = power_of("no_such_machine");
    assert_eq!(reading.source, PowerSource::Unknown);
    assert_eq!(reading.battery_percent, None);
    assert!(reading.from.starts_with("sysfs:"), "{}", reading.from);
}

#[test]
fn battery_status_decides_when_there_is_no_mains_supply() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("Charging", PowerSource::Ac),
        ("Full", PowerSource::Ac),
        ("Not charging", PowerSource::Ac),
        ("Discharging", PowerSource::Battery),
        ("Unknown", PowerSource::Unknown),
    ];
    for (i, (status, expected)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        write_supply(
            &dir,
            "BAT0",
            &[("type", "Battery"), ("status", status), ("capacity", "103")],
        );
        let reading = kernel::power_from_dir(&dir);
        assert_eq!(reading.source, expected, "status {status}");
        assert_eq!(reading.battery_percent, Some(100), "capacity is capped");
    }
}

#[test]
fn an_offline_charger_means_battery_even_if_the_battery_status_is_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    write_supply(tmp.path(), "AC", &[("type", "Mains"), ("online", "0")]);
    write_supply(
        tmp.path(),
        "BAT0",
        &[("type", "Battery"), ("status", "Unknown")],
    );
    let reading = kernel::power_from_dir(tmp.path());
    assert_eq!(reading.source, PowerSource::Battery);
    assert_eq!(reading.battery_percent, None);
}

// Memory.

#[test]
fn meminfo_gives_total_and_available_in_bytes() {
    let text = std::fs::read_to_string(fixture("proc/proc/meminfo")).unwrap();
    let reading = kernel::memory_from_meminfo(&text, "test");
    assert_eq!(reading.total_bytes, Some(16_318_488 * 1024));
    assert_eq!(reading.available_bytes, Some(9_876_540 * 1024));
    assert_eq!(reading.from, "test");
    let fraction = reading.available_fraction().unwrap();
    assert!((fraction - 9_876_540.0 / 16_318_488.0).abs() < 1e-12);
}

#[test]
fn old_kernels_without_mem_available_get_an_estimate_that_says_so() {
    let text = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n";
    let reading = kernel::memory_from_meminfo(text, "procfs:/proc/meminfo");
    assert_eq!(reading.total_bytes, Some(1000 * 1024));
    assert_eq!(reading.available_bytes, Some(420 * 1024));
    assert_eq!(
        reading.from,
        "procfs:/proc/meminfo (MemFree+Buffers+Cached)"
    );
}

#[test]
fn unreadable_meminfo_is_unknown() {
    let reading = kernel::memory_from_meminfo("garbage\nMemTotal: lots kB\n", "x");
    assert_eq!(reading.total_bytes, None);
    assert_eq!(reading.available_bytes, None);
    assert_eq!(reading.available_fraction(), None);

    let reading = kernel::read_meminfo(&fixture("proc/proc/no-meminfo"));
    assert_eq!(reading.total_bytes, None);
    assert!(reading.from.starts_with("procfs:"), "{}", reading.from);
}

#[test]
fn available_fraction_handles_zero_and_overfull() {
    let mut reading = MemoryReading {
        total_bytes: Some(0),
        available_bytes: Some(0),
        from: String::new(),
    };
    assert_eq!(reading.available_fraction(), None);
    reading.total_bytes = Some(100);
    reading.available_bytes = Some(150);
    assert_eq!(reading.available_fraction(), Some(1.0));
    reading.available_bytes = Some(25);
    assert_eq!(reading.available_fraction(), Some(0.25));
}

// CPU.

#[test]
fn proc_stat_first_cpu_line_is_parsed() {
    let text = std::fs::read_to_string(fixture("proc/proc/stat")).unwrap();
    let times = kernel::parse_cpu_times(&text).unwrap();
    assert_eq!(
        times,
        CpuTimes {
            user: 4705,
            nice: 356,
            system: 584,
            idle: 3_699_176,
            iowait: 23_060,
            irq: 0,
            softirq: 277,
            steal: 0,
        }
    );
    assert_eq!(times.busy(), 4705 + 356 + 584 + 277);
    assert_eq!(times.total(), times.busy() + 3_699_176 + 23_060);
}

#[test]
fn proc_stat_from_old_kernels_and_garbage() {
    let old = kernel::parse_cpu_times("cpu  10 20 30 40\ncpu0 10 20 30 40\n").unwrap();
    assert_eq!((old.user, old.idle, old.iowait, old.steal), (10, 40, 0, 0));
    assert_eq!(kernel::parse_cpu_times("cpu0 1 2 3 4 5\n"), None);
    assert_eq!(kernel::parse_cpu_times("cpu  1 2 3\n"), None);
    assert_eq!(kernel::parse_cpu_times("cpu  1 2 x 4\n"), None);
    assert_eq!(kernel::parse_cpu_times(""), None);
}

fn times(busy: u64, idle: u64) -> CpuTimes {
    CpuTimes {
        user: busy,
        idle,
        ..CpuTimes::default()
    }
}

#[test]
fn busy_fraction_between_two_samples() {
    let a = times(100, 900);
    let b = CpuTimes {
        user: 130,
        system: 10,
        steal: 10,
        idle: 1000,
        iowait: 50,
        ..CpuTimes::default()
    };
    // 50 busy ticks out of 50 + 100 idle + 50 iowait.
    assert_eq!(busy_fraction(&a, &b), Some(0.25));
    assert_eq!(busy_fraction(&a, &a), None, "no time passed");
    assert_eq!(busy_fraction(&b, &a), None, "wrong order");
}

#[test]
fn owner_load_is_machine_load_minus_flotillas() {
    let a = times(1000, 1000);
    let b = times(1600, 1400);
    // 600 busy ticks of 1000; Flotilla's tree used 450 of them.
    assert_eq!(owner_busy_fraction(&a, &b, 50, 500), Some(0.15));
    assert_eq!(owner_busy_fraction(&a, &b, 0, 0), busy_fraction(&a, &b));
    // A member that exited took its ticks with it: the tree's delta is negative, counted as 0.
    assert_eq!(owner_busy_fraction(&a, &b, 500, 100), Some(0.6));
    // More ticks than the machine's busy ones (sampled at slightly different moments): 0.
    assert_eq!(owner_busy_fraction(&a, &b, 0, 700), Some(0.0));
    assert_eq!(owner_busy_fraction(&b, &a, 0, 0), None);
}

#[test]
fn process_stat_is_read_from_the_last_parenthesis() {
    let text = std::fs::read_to_string(fixture("proc/proc/4242/stat")).unwrap();
    assert!(text.starts_with("4242 (ray::IDLE (x)) S"));
    assert_eq!(kernel::parse_process_ticks(&text), Some(1500 + 250));

    // A name built to fool a parser that splits on spaces or stops at the first ')'.
    let tricky = "7 (a) 1 2 3 4 5 6 7 8 9 10 11 12 13 (b) R 1 1 1 0 -1 0 0 0 0 0 30 12 0 0";
    assert_eq!(kernel::parse_process_ticks(tricky), Some(42));
    assert_eq!(
        kernel::parse_process_ticks("7 (cut) R 1 1 1 0 -1 0 0"),
        None
    );
    assert_eq!(kernel::parse_process_ticks("no parenthesis 1 2 3"), None);
}

// Running programs.

#[test]
fn running_apps_are_the_comm_of_numeric_entries_sorted_and_deduplicated() {
    let reading = kernel::read_running_apps(&fixture("proc/proc"));
    assert_eq!(
        reading.names,
        Some(vec![
            "firefox".to_owned(),
            "ray::IDLE (x)".to_owned(),
            "systemd".to_owned(),
        ])
    );
    assert_eq!(
        reading.contains("steam"),
        Some(false),
        "not a pid directory"
    );
    assert_eq!(reading.contains("firefox"), Some(true));
}

#[test]
fn long_names_match_their_comm() {
    assert_eq!(COMM_MAX_BYTES, 15);
    assert_eq!(kernel::comm_of("short"), "short");
    assert_eq!(
        kernel::comm_of("steamwebhelper-renderer"),
        "steamwebhelper-"
    );
    // 14 ASCII bytes then a 2-byte character: cut before it, not through it.
    assert_eq!(kernel::comm_of("abcdefghijklmné"), "abcdefghijklmn");

    let reading = AppsReading {
        names: Some(vec!["steamwebhelper-".into()]),
        from: String::new(),
    };
    assert_eq!(reading.contains("steamwebhelper-renderer"), Some(true));
    assert_eq!(reading.contains("steamwebhelper"), Some(false));
    assert_eq!(AppsReading::unknown("x").contains("steam"), None);
}

// The facade.

#[test]
fn is_supported_on_linux_macos_and_windows() {
    assert_eq!(
        IS_SUPPORTED,
        cfg!(any(target_os = "linux", target_os = "macos", windows))
    );
}

#[cfg(target_os = "linux")]
#[test]
fn facade_reads_a_fixture_root() {
    let sensors = Sensors::with_root(fixture("proc"));
    let memory = sensors.memory();
    assert_eq!(memory.total_bytes, Some(16_318_488 * 1024));
    assert_eq!(
        memory.from,
        format!("procfs:{}", fixture("proc/proc/meminfo").display())
    );
    assert_eq!(sensors.cpu_times().times.map(|t| t.user), Some(4705));
    assert_eq!(sensors.process_cpu(4242).ticks, Some(1750));
    assert_eq!(sensors.process_cpu(4242).pid, 4242);
    assert_eq!(sensors.process_cpu(99_999).ticks, None);
    // 4244 has no stat (it exited between the two reads); 99999 never existed.
    let tree = sensors.processes_cpu([4242, 4243, 4242, 4244, 99_999]);
    assert_eq!(tree.ticks, Some(1750 + 82_100));
    assert_eq!((tree.counted, tree.asked), (2, 4));
    assert_eq!(sensors.processes_cpu([99_999]).ticks, None);
    assert_eq!(sensors.running_apps().names.map(|n| n.len()), Some(3));
    // The fixture root has no sys/: that says nothing about the machine.
    assert_eq!(sensors.power().source, PowerSource::Unknown);

    let laptop = Sensors::with_root(fixture("power/laptop_battery"));
    assert_eq!(laptop.power().source, PowerSource::Battery);
    assert_eq!(laptop.memory().total_bytes, None);
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
#[test]
fn facade_is_unknown_where_unsupported() {
    let sensors = Sensors::with_root(fixture("proc"));
    assert_eq!(sensors.power(), PowerReading::unknown(UNSUPPORTED));
    assert_eq!(sensors.memory(), MemoryReading::unknown(UNSUPPORTED));
    assert_eq!(sensors.cpu_times(), CpuReading::unknown(UNSUPPORTED));
    assert_eq!(
        sensors.process_cpu(4242),
        ProcessCpuReading::unknown(4242, UNSUPPORTED)
    );
    assert_eq!(sensors.processes_cpu([4242]).ticks, None);
    assert_eq!(sensors.running_apps(), AppsReading::unknown(UNSUPPORTED));
}

#[cfg(target_os = "linux")]
#[test]
fn the_real_system_gives_readings() {
    let sensors = Sensors::new();
    let memory = sensors.memory();
    let total = memory.total_bytes.expect("MemTotal");
    let available = memory.available_bytes.expect("MemAvailable");
    assert!(total > 0 && available <= total, "{memory:?}");
    assert_eq!(memory.from, "procfs:/proc/meminfo");

    let cpu = sensors.cpu_times().times.expect("/proc/stat");
    assert!(cpu.total() > 0);

    let power = sensors.power();
    assert!(
        power.from.starts_with("sysfs:/sys/class/power_supply")
            || power.from == "no battery: desktop",
        "{power:?}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn this_process_cpu_time_grows_while_it_computes() {
    let sensors = Sensors::new();
    let pid = std::process::id();
    let before = sensors
        .process_cpu(pid)
        .ticks
        .expect("own /proc/<pid>/stat");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut x = 0u64;
    loop {
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let now = sensors
            .process_cpu(pid)
            .ticks
            .expect("own /proc/<pid>/stat");
        if now > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tick in 10 s of work"
        );
    }
    let tree = sensors.processes_cpu([pid]);
    assert_eq!((tree.counted, tree.asked), (1, 1));
    assert!(tree.ticks.unwrap() > before);
}

#[cfg(target_os = "linux")]
#[test]
fn the_test_process_is_among_the_running_apps() {
    let apps = Sensors::new().running_apps();
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_name().unwrap().to_str().unwrap();
    assert_eq!(apps.contains(name), Some(true), "{name} in {apps:?}");
    let own = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(apps.names.unwrap().contains(&own.trim_end().to_owned()));
}

// macOS and Windows read the real system only (no fixture roots): these run on the machine
// itself, and on Windows under Wine too, which implements the calls used.

#[cfg(any(target_os = "macos", windows))]
#[test]
fn the_real_system_gives_readings_from_its_own_calls() {
    let sensors = Sensors::new();
    let memory = sensors.memory();
    let total = memory.total_bytes.expect("total memory");
    let available = memory.available_bytes.expect("available memory");
    assert!(total > 0 && available <= total, "{memory:?}");
    assert_eq!(memory.from, "sysinfo:memory");

    let cpu = sensors.cpu_times();
    assert!(cpu.times.expect("CPU times").total() > 0, "{cpu:?}");
    assert_ne!(cpu.from, UNSUPPORTED);

    let power = sensors.power();
    assert_ne!(power.from, UNSUPPORTED);
}

#[cfg(any(target_os = "macos", windows))]
#[test]
fn this_process_cpu_time_grows_while_it_computes_here_too() {
    let sensors = Sensors::new();
    let pid = std::process::id();
    let before = sensors.process_cpu(pid).ticks.expect("own CPU time");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut x = 0u64;
    loop {
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        if sensors.process_cpu(pid).ticks.expect("own CPU time") > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tick in 20 s of work"
        );
    }
    let tree = sensors.processes_cpu([pid, u32::MAX - 7]);
    assert_eq!((tree.counted, tree.asked), (1, 2));
    assert!(tree.ticks.unwrap() > before);
    assert_eq!(tree.from, "sysinfo:process table");
}

#[cfg(any(target_os = "macos", windows))]
#[test]
fn the_test_process_is_among_the_running_apps_here_too() {
    let apps = Sensors::new().running_apps();
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_stem().unwrap().to_str().unwrap();
    assert_eq!(apps.contains(name), Some(true), "{name} in {apps:?}");
}

// Idle time.

/// Creates `<root>/dev/<rel>` and sets its access time to `secs_ago` seconds before `now`.
#[cfg(target_os = "linux")]
fn terminal(root: &Path, rel: &str, now: std::time::SystemTime, secs_ago: u64) {
    let path = root.join("dev").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    let atime = now - Duration::from_secs(secs_ago);
    file.set_times(std::fs::FileTimes::new().set_accessed(atime))
        .unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn idle_is_the_time_since_the_most_recently_used_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    terminal(tmp.path(), "tty1", now, 3_600);
    terminal(tmp.path(), "tty12", now, 900);
    terminal(tmp.path(), "pts/0", now, 7_200);
    terminal(tmp.path(), "pts/3", now, 120);
    // Not terminals a person types on: recently touched, and ignored.
    terminal(tmp.path(), "tty", now, 0);
    terminal(tmp.path(), "ttyS0", now, 0);
    terminal(tmp.path(), "pts/ptmx", now, 0);
    terminal(tmp.path(), "null", now, 0);

    let reading = idle::terminals_idle(&tmp.path().join("dev"), now).unwrap();
    assert_eq!(reading.idle, Some(Duration::from_secs(120)));
    let pts3 = tmp.path().join("dev").join("pts").join("3");
    assert_eq!(reading.from, format!("tty-atime:{}", pts3.display()));

    // Through the facade, against the real clock: the same terminal, at least as long ago.
    let reading = Sensors::with_root(tmp.path()).idle();
    assert_eq!(reading.from, format!("tty-atime:{}", pts3.display()));
    let idle = reading.idle.unwrap();
    assert!(
        idle >= Duration::from_secs(120) && idle < Duration::from_secs(180),
        "{idle:?}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_console_used_after_every_pseudo_terminal_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    terminal(tmp.path(), "pts/1", now, 600);
    terminal(tmp.path(), "tty2", now, 5);
    let reading = idle::terminals_idle(&tmp.path().join("dev"), now).unwrap();
    assert_eq!(reading.idle, Some(Duration::from_secs(5)));
    assert!(reading.from.ends_with("tty2"), "{}", reading.from);
}

#[cfg(target_os = "linux")]
#[test]
fn an_access_time_in_the_future_counts_as_just_now() {
    let tmp = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    terminal(tmp.path(), "pts/0", now + Duration::from_secs(60), 0);
    let reading = idle::terminals_idle(&tmp.path().join("dev"), now).unwrap();
    assert_eq!(reading.idle, Some(Duration::ZERO));
}

#[cfg(target_os = "linux")]
#[test]
fn no_display_and_no_terminals_is_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    // A /dev with only things that are not terminals.
    let now = std::time::SystemTime::now();
    terminal(tmp.path(), "pts/ptmx", now, 0);
    terminal(tmp.path(), "console", now, 0);
    assert_eq!(
        Sensors::with_root(tmp.path()).idle(),
        IdleReading::unknown(NO_IDLE_SOURCE)
    );
    // And without any /dev at all.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        Sensors::with_root(empty.path()).idle(),
        IdleReading::unknown("no display and no terminals")
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_display_that_cannot_be_opened_falls_through_and_says_why() {
    // No X server listens on this display (its socket would be /tmp/.X11-unix/X9999, absent
    // unless someone runs one).
    let display = ":9999";
    assert!(!Path::new("/tmp/.X11-unix/X9999").exists());
    let mut sensors = Sensors::with_display(display);
    let tmp = tempfile::tempdir().unwrap();
    sensors.paths.dev = tmp.path().join("dev");
    let reading = sensors.idle();
    assert_eq!(reading.idle, None);
    assert!(
        reading.from.starts_with("x11 :9999: ") && reading.from.ends_with("; no terminals"),
        "{}",
        reading.from
    );

    terminal(tmp.path(), "pts/0", std::time::SystemTime::now(), 30);
    let reading = sensors.idle();
    assert!(reading.idle.unwrap() >= Duration::from_secs(30));
    assert!(
        reading.from.starts_with("tty-atime:") && reading.from.contains("(x11 :9999: "),
        "{}",
        reading.from
    );
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
#[test]
fn idle_is_unknown_where_unsupported() {
    assert_eq!(Sensors::new().idle(), IdleReading::unknown(UNSUPPORTED));
}

#[test]
fn sensors_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Sensors>();
}
