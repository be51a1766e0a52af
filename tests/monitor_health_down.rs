//! placeholder
#![cfg(all(feature = "monitor", feature = "postgres"))]
