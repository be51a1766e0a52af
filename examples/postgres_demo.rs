//! The PostgreSQL demo (written next).
fn main() {}
