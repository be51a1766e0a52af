//! HTTP base URLs (`P_URL`), request URLs and header names and values, split from the
//! input at NUL bytes: no panic; an origin's text parses back to itself; a secret header
//! value never shows in `Debug`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let base = parts.next().unwrap_or("");
    let url = parts.next().unwrap_or("/");
    let name = parts.next().unwrap_or("x-test");
    let value = parts.next().unwrap_or("");
    let _ = poolkit_http::fuzzing::url_and_header(base, url, name, value);
    let _ = poolkit_http::fuzzing::url_and_header("http://127.0.0.1:1", base, name, value);
});
