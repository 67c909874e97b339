//! Join codes come from people: pasted, cut short, mangled. Parsing never panics, and a code
//! that parses encodes back to a code that parses to the same value; a code found in pasted
//! text is one that parses.
#![no_main]

use flotilla_proto::JoinCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = JoinCode::parse(text) {
        let again = JoinCode::parse(&code.encode()).expect("an encoded code parses");
        assert_eq!(again, code, "a code survives encode -> parse");
    }
    if let Ok(code) = JoinCode::find(text) {
        let again = JoinCode::parse(&code.encode()).expect("a found code encodes to one");
        assert_eq!(again, code, "a found code survives encode -> parse");
    }
});
