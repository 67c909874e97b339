//! `flotilla.toml` is edited by hand: any text gets a clear error or a valid config, never a
//! panic; the fleet's defaults merged with a machine's file too, and the head's `[alerts]`.
#![no_main]

use flotilla_agent::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::parse(text, std::path::Path::new("flotilla.toml"));
    // The same text as the fleet's defaults and as this machine's settings.
    let _ = config::merge_policy(text, "");
    let _ = config::merge_policy("", text);
    if let Ok(Some(alerts)) = flotilla_head::alerts::AlertsConfig::from_file_text(text) {
        // A checked config has sane figures.
        assert!(alerts.settings.check_every >= std::time::Duration::from_secs(1));
        assert!((0.0..1.0).contains(&alerts.settings.head_disk_free_below));
        assert!((0.0..1.0).contains(&alerts.settings.head_memory_free_below));
    }
});
