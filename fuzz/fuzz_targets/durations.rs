//! `parse_duration` and the number parsers on any text: no panic; an error names the
//! variable; an accepted duration written back in milliseconds parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolkit_core::env::{parse_duration, parse_u32, parse_u64};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration("FZ_TIMEOUT", text) {
        Ok(d) => {
            if d.subsec_nanos() % 1_000_000 == 0 {
                let back = parse_duration("FZ_TIMEOUT", &format!("{}ms", d.as_millis()));
                assert_eq!(back.ok(), Some(d), "{text:?}");
            }
        }
        Err(e) => assert_eq!(e.var(), "FZ_TIMEOUT", "{e}"),
    }
    if let Err(e) = parse_u32("FZ_POOL_SIZE", text, 1, 10_000) {
        assert_eq!(e.var(), "FZ_POOL_SIZE", "{e}");
    }
    if let Err(e) = parse_u64("FZ_MAX_USES", text, 0, u64::MAX) {
        assert_eq!(e.var(), "FZ_MAX_USES", "{e}");
    }
});
