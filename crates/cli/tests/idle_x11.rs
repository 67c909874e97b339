//! Idle time from a real X server: Xvfb, with input injected by xdotool (Debian packages `xvfb`,
//! `xdotool`, `libxss1`, `libx11-6`; `tests/run` installs them), read by the sensor itself and
//! by `flotilla sensors --json` as a user runs it.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_host::sensors::Sensors;

use flotilla_testkit::xvfb;
use xvfb::start_xvfb;

fn move_pointer(display: &str, x: u32, y: u32) {
    let status = Command::new("xdotool")
        .args(["mousemove", &x.to_string(), &y.to_string()])
        .env("DISPLAY", display)
        .status()
        .unwrap_or_else(|e| panic!("cannot run xdotool ({e}): install the xdotool package"));
    assert!(status.success(), "xdotool mousemove: {status}");
}

/// One display at a time: two tests choosing a free display at once could pick the same one.
static DISPLAYS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cli_idle_secs(display: &str) -> (f64, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["sensors", "--json"])
        .env("FLOTILLA_HOME", home.path())
        .env("DISPLAY", display)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let idle = &v["idle_secs"];
    (
        idle["value"].as_f64().unwrap(),
        idle["from"].as_str().unwrap().to_string(),
    )
}

#[test]
fn flotilla_sensors_reports_the_displays_idle_time() {
    let _one = DISPLAYS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let xvfb = start_xvfb(&tmp.path().join("xvfb.log"));
    move_pointer(&xvfb.display, 300, 300);
    // The command samples for one second before it prints: idle is at most about that.
    let (idle, from) = cli_idle_secs(&xvfb.display);
    assert_eq!(from, format!("x11-screensaver:{}", xvfb.display));
    assert!(idle < 1.5, "right after input: {idle} s");
    move_pointer(&xvfb.display, 310, 300);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let (idle, _) = cli_idle_secs(&xvfb.display);
    assert!(
        idle >= 5.0,
        "after {:?} without input: {idle} s",
        t.elapsed()
    );
}

#[test]
fn x11_idle_time_follows_input_and_survives_the_server_going_away() {
    let _one = DISPLAYS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let xvfb = start_xvfb(&tmp.path().join("xvfb.log"));
    let sensors = Sensors::with_display(xvfb.display.clone());
    let from = format!("x11-screensaver:{}", xvfb.display);

    move_pointer(&xvfb.display, 100, 200);
    let reading = sensors.idle();
    assert_eq!(reading.from, from, "libXss.so.1 and libX11.so.6 are needed");
    let idle = reading.idle.unwrap();
    assert!(idle < Duration::from_secs(1), "right after input: {idle:?}");

    std::thread::sleep(Duration::from_millis(5_500));
    let reading = sensors.idle();
    assert_eq!(reading.from, from);
    let idle = reading.idle.unwrap();
    assert!(
        idle >= Duration::from_secs(5),
        "after 5.5 s without input: {idle:?}"
    );
    assert!(idle < Duration::from_secs(60), "{idle:?}");

    // Input again, read through a clone (which shares the connection).
    move_pointer(&xvfb.display, 640, 400);
    let idle = sensors.clone().idle().idle.unwrap();
    assert!(idle < Duration::from_secs(1), "after new input: {idle:?}");

    // The X server goes away (the owner logged out): Xlib would exit the process by default;
    // the sensor must instead fall through to the next source.
    let display = xvfb.display.clone();
    drop(xvfb);
    let reading = sensors.idle();
    assert!(
        !reading.from.starts_with("x11-screensaver"),
        "read from a dead server: {reading:?}"
    );
    assert!(
        reading.from.contains(&format!("x11 {display}: ")),
        "{reading:?}"
    );
}
