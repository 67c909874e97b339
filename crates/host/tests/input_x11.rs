//! The input watch on a real X server: Xvfb, with input injected by xdotool (Debian packages
//! `xvfb`, `xdotool`, `libx11-6`, `libxi6`; `tests/run` installs them). The pointer is moved
//! with `mousemove_relative` (XTest motion, as a mouse makes it): xdotool's absolute `mousemove`
//! warps the pointer, which is not input and makes no raw event.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use flotilla_host::input::InputWatch;
use flotilla_testkit::xvfb::start_xvfb;

fn xdotool(display: &str, args: &[&str]) {
    let status = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .status()
        .unwrap_or_else(|e| panic!("cannot run xdotool ({e}): install the xdotool package"));
    assert!(status.success(), "xdotool {args:?}: {status}");
}

/// Waits (at most a minute, a guard against hanging) for the watch's next callback.
fn next(rx: &mpsc::Receiver<()>, what: &str) {
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no callback after {what}"));
}

/// Takes the callbacks already made, waiting a little for late ones.
fn drain(rx: &mpsc::Receiver<()>) {
    while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
}

/// One display at a time: two tests choosing a free display at once could pick the same one.
static DISPLAYS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn key_presses_and_pointer_moves_call_back_and_a_lost_display_is_survived() {
    let _one = DISPLAYS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let xvfb = start_xvfb(&tmp.path().join("xvfb.log"));
    let (tx, rx) = mpsc::channel();
    let watch = InputWatch::start(Some(xvfb.display.clone()), move || {
        let _ = tx.send(());
    })
    .expect("libX11.so.6 and libXi.so.6 are needed");
    assert_eq!(watch.source(), format!("xinput2:{}", xvfb.display));

    xdotool(&xvfb.display, &["mousemove_relative", "20", "30"]);
    next(&rx, "a pointer move");
    drain(&rx);
    xdotool(&xvfb.display, &["key", "a"]);
    next(&rx, "a key press");
    drain(&rx);
    xdotool(&xvfb.display, &["click", "1"]);
    next(&rx, "a button press");
    drain(&rx);

    // No input, no callback.
    assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());

    // A pointer moving in many small steps calls back too.
    let steps: Vec<&str> = (0..40)
        .flat_map(|_| ["mousemove_relative", "1", "0"])
        .collect();
    xdotool(&xvfb.display, &steps);
    next(&rx, "a stream of moves");
    drain(&rx);

    // The X server goes away (the owner logged out): Xlib would exit the process by default;
    // the watch keeps its thread, and stops when dropped.
    drop(xvfb);
    std::thread::sleep(Duration::from_millis(500));
    drop(watch);
}

#[test]
fn without_a_display_there_is_no_watch_and_the_reason_says_why() {
    let err = InputWatch::start(None, || {}).unwrap_err();
    assert_eq!(err, "no X display configured");
    let err = InputWatch::start(Some(":89".into()), || {}).unwrap_err();
    assert!(err.starts_with("x11 :89: "), "{err}");
}
