//! The ports the tests give the servers they start as child processes
//! (`tests/common/ports.rs`), checked once here rather than in every binary that includes it.

#[path = "common/ports.rs"]
mod ports;

#[test]
fn ports_for_child_servers_lie_outside_the_ephemeral_range_and_never_repeat() {
    let (first, last) = ports::ephemeral_range();
    let taken: Vec<u16> = (0..64).map(|_| ports::child_port()).collect();
    assert!(
        taken
            .iter()
            .all(|&p| !(first..=last).contains(&u32::from(p))),
        "{taken:?} against the ephemeral range {first}–{last}"
    );
    let mut unique = taken.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), taken.len(), "{taken:?}");
    let two = ports::child_port_on(&["127.0.0.1", "127.0.0.2"]);
    assert!(std::net::TcpListener::bind(("127.0.0.2", two)).is_ok());
}
