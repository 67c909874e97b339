//! The secrets file (`secrets.json`, or what `systemd-creds` gives back for `secrets.cred`) can
//! be damaged on disk or edited by hand: any bytes get a clear error or the secrets they hold,
//! never a panic, and the error never quotes the file's content.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match flotilla_secrets::parse_secrets_file(data) {
        Ok(count) => assert!(count <= data.len()),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("(input)"), "{message}");
            // A value-like run of the input (a long token) never appears in the message.
            if let Ok(text) = std::str::from_utf8(data)
                && text.len() >= 24
                && text.chars().all(|c| c.is_ascii_alphanumeric())
            {
                assert!(!message.contains(text), "{message}");
            }
        }
    }
});
