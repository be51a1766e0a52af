//! The PostgreSQL benchmark (written next).
fn main() {}
