//! Entry points for the fuzz targets in `fuzz/` (not a public API: hidden from the docs
//! and free to change): the pool's own URL and header handling, without a network.

use poolkit_core::Secret;

/// Reads `base` as `FUZZ_URL`, joins `url` to it and takes the origin as a request does,
/// and gives `name: value` to [`crate::Builder`] as a plain and as a secret default header.
/// Returns the origin's text when the URL is usable.
///
/// # Panics
/// When an invariant breaks: an origin whose text does not parse back to itself, or a
/// secret header value visible in the builder's `Debug`.
#[must_use]
pub fn url_and_header(base: &str, url: &str, name: &str, value: &str) -> Option<String> {
    let lookup = |k: &str| (k == "FUZZ_URL").then(|| base.to_owned());
    if let Ok(config) = crate::Config::from_lookup("FUZZ", crate::Config::new("fuzz"), &lookup) {
        let _ = format!("{config:?}");
    }
    let _ = crate::Pool::builder().header(name, value);
    let marked = format!("PKFZ{value}");
    if http::HeaderName::try_from(name).is_ok() && http::HeaderValue::try_from(&marked).is_ok() {
        let builder = crate::Pool::builder().secret_header(name, &Secret::new(marked.clone()));
        let shown = format!("{builder:?}");
        assert!(
            !shown.contains(&marked),
            "a secret header value in Debug: {shown}"
        );
    }
    let uri = crate::url::resolve(Some(base), url).ok()?;
    let origin = crate::url::Origin::of(&uri).expect("resolve checked the origin");
    let shown = origin.to_string();
    let again = crate::url::Origin::parse(&shown)
        .unwrap_or_else(|e| panic!("the origin {shown:?} of {uri} does not parse back: {e}"));
    assert_eq!(
        again, origin,
        "the origin's text parses back to another origin"
    );
    Some(shown)
}
