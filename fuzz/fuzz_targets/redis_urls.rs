//! Redis URLs as `REDIS_URL` (a comma list is a cluster seed list), raw and with a password
//! marker spliced in: no panic, and the password never shows in an error or `Debug`.
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
    let with_password = format!("redis://:{SECRET}@{text}");
    let list = format!("{with_password},{with_password}");
    for url in [text.to_owned(), with_password, list] {
        let lookup = |k: &str| (k == "REDIS_URL").then(|| url.clone());
        match poolkit_redis::Config::from_lookup("REDIS", &lookup) {
            Ok(config) => {
                let shown = format!("{config:?} {}", config.target());
                assert!(!shown.contains(SECRET), "{shown}");
                if let Err(e) = config.connection_info() {
                    assert!(!e.to_string().contains(SECRET), "{e}");
                }
            }
            Err(e) => assert!(!e.to_string().contains(SECRET), "{e}"),
        }
    }
});
