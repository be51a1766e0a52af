//! PostgreSQL URLs as `DATABASE_URL` and comma lists as `DATABASE_READ_URL`, raw and with
//! a password marker spliced in: no panic, and the password never shows in an error, the
//! config's `Debug` or the target.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "PKFZSECRET";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("PKFZ") {
        return; // the marker must come from the splice below, not from the input
    }
    let with_password = format!("postgres://user:{SECRET}@{text}");
    for url in [text.to_owned(), with_password.clone()] {
        let read = format!("{url},{with_password}");
        let lookup = |k: &str| match k {
            "DATABASE_URL" => Some(url.clone()),
            "DATABASE_READ_URL" => Some(read.clone()),
            _ => None,
        };
        match poolkit_postgres::Config::from_lookup("DATABASE", &lookup) {
            Ok(config) => {
                let shown = format!("{config:?} {}", config.target());
                assert!(!shown.contains(SECRET), "{shown}");
                if let Err(e) = config.pg_config() {
                    assert!(!e.to_string().contains(SECRET), "{e}");
                }
            }
            Err(e) => assert!(!e.to_string().contains(SECRET), "{e}"),
        }
        let redacted = poolkit_core::redact_url(&url);
        assert!(!redacted.contains(SECRET), "{redacted}");
    }
});
