//! x

/// The HTTP pool (feature `http`): see [`poolkit_http`].
#[cfg(feature = "http")]
pub use poolkit_http as http;
