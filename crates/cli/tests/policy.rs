//! `flotilla sensors` and `flotilla policy explain` as a user runs them.
//!
//! Linux only: it runs the binary through the Unix helpers of `common` (a private home, its
//! environment); `flotilla sensors --json` is checked on Windows by `tests/cross-os` under Wine.

#![cfg(target_os = "linux")]

mod common;
use common::flotilla;

use std::process::Output;

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn explain_in_spanish_translates_every_reason() {
    let home = tempfile::tempdir().unwrap();
    let en = json(
        &flotilla(home.path())
            .args(["policy", "explain", "--json"])
            .output()
            .unwrap(),
    );
    let es = json(
        &flotilla(home.path())
            .args(["policy", "explain", "--json", "--lang", "es"])
            .output()
            .unwrap(),
    );
    let (ven, ves) = (
        en["verdicts"].as_array().unwrap(),
        es["verdicts"].as_array().unwrap(),
    );
    assert_eq!(ven.len(), ves.len());
    assert!(ven.len() >= 8, "one verdict per rule: {ven:?}");
    for (a, b) in ven.iter().zip(ves) {
        assert_eq!(a["rule"], b["rule"]);
        assert_ne!(
            a["detail"], b["detail"],
            "rule {} is not translated",
            a["rule"]
        );
    }
    assert!(!es["reason"].as_str().unwrap().is_empty());
    let human = flotilla(home.path())
        .args(["policy", "explain", "--lang", "es"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with("Decisión: "), "{text}");
    assert!(text.contains("Reglas (por orden de precedencia)"), "{text}");
}

#[test]
fn an_invalid_config_names_file_line_field_and_what_is_accepted() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    let file = cfg.join("flotilla.toml");
    for (text, line, field, accepted) in [
        (
            "[policy]\nactive_cpus = -1\n",
            2,
            "policy.active_cpus",
            "whole number",
        ),
        (
            "[policy]\nactive_cpus = 2\nbogus = 1\n",
            3,
            "policy.bogus",
            "expected one of",
        ),
        (
            "[policy.schedule]\nmonday = [\"25:00-08:00\"]\n",
            2,
            "policy.schedule.monday",
            "25:00",
        ),
        (
            "[policy]\nmin_free_memory_fraction = 2\n",
            2,
            "policy.min_free_memory_fraction",
            "0.9",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = flotilla(home.path())
            .args(["policy", "explain"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:{line}: {field}: ", file.display());
        assert!(err.contains(&want), "{text:?}: {err}");
        assert!(err.contains(accepted), "{text:?}: {err}");
    }
}

#[test]
fn sensors_report_every_reading_with_its_source() {
    let home = tempfile::tempdir().unwrap();
    let v = json(
        &flotilla(home.path())
            .args(["sensors", "--json"])
            .output()
            .unwrap(),
    );
    for key in [
        "idle_secs",
        "power",
        "battery_percent",
        "available_memory_fraction",
        "machine_load",
        "owner_load",
        "temperature_c",
        "running_programs",
    ] {
        let from = v[key]["from"].as_str().unwrap_or_default();
        assert!(!from.is_empty(), "{key} has no source: {v}");
    }
    #[cfg(target_os = "linux")]
    {
        let mem = v["available_memory_fraction"]["value"].as_f64().unwrap();
        assert!(mem > 0.0 && mem <= 1.0, "{v}");
        let load = v["machine_load"]["value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&load), "{v}");
        assert!(v["load_window_secs"].as_f64().unwrap() >= 0.9, "{v}");
    }
}

/// `flotilla ... | head -1` with the reader gone before the command prints: the command ends
/// quietly (as any command-line tool does), not with a panic about a broken pipe.
#[test]
fn a_closed_pipe_ends_a_printing_command_quietly() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["policy", "explain"][..],
        &["sensors", "--json"],
        &["policy", "explain", "--json"],
    ] {
        let mut child = flotilla(home.path())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Both sample the machine for a second before printing: the reader is gone by then.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && out.status.code() != Some(101),
            "flotilla {}: {:?}\n{stderr}",
            args.join(" "),
            out.status
        );
    }
}
