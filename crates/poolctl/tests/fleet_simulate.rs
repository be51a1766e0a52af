//! `poolctl fleet simulate` at a scale CI runs in about half a minute: 200 instances (400
//! during the rolling update) over 4 processes, each a real pool engine on in-memory
//! connections, sharing a budget of 600 through the real lease script in the Redis of the
//! test environment; 20 killed at once, then 10 cut off from Redis while the others still
//! reach it. The sum of every instance's open connections, sampled every 100 ms, never
//! exceeds the budget; the cut-off instances are down to their floor before their lease
//! expires; the dead and cut-off instances' room goes back to the others.

mod common;

use common::{json, redis_url_checked, run};

#[test]
fn a_fleet_of_200_never_exceeds_its_budget() {
    let redis = redis_url_checked();
    let (code, out, err) = run(
        &[
            "fleet",
            "simulate",
            "--instances",
            "200",
            "--ttl",
            "2s",
            "--rolling",
            "10s",
            "--kill",
            "20",
            "--partition",
            "10",
            "--processes",
            "4",
            "--redis",
            &redis,
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out);
    eprintln!("{v}");
    let budget = v["budget"].as_i64().unwrap();
    assert_eq!(budget, 600);
    assert!(
        v["samples"].as_u64().unwrap() > 150,
        "sampled every 100 ms: {v}"
    );
    assert_eq!(v["above_budget"], 0, "{v}");
    let peak = v["peak"].as_i64().unwrap();
    assert!(peak <= budget, "peak {peak} above the budget {budget}");
    assert!(peak > budget * 9 / 10, "the budget is used: {peak}");
    // Cut off from Redis: at the floor before the lease (1.5 s) less the drift margin,
    // counted from the last renewal, which came before the cut.
    let shed = v["shed_ms"].as_u64().expect("the cut-off instances shed");
    assert!(
        shed <= v["shed_deadline_ms"].as_u64().unwrap(),
        "shed {shed} ms after the cut: {v}"
    );
    // The others take the room back: the lease, plus a renewal period or two.
    for what in ["dead_share_ms", "partition_share_ms"] {
        let ms = v[what].as_u64().unwrap_or_else(|| panic!("{what}: {v}"));
        assert!(ms <= 4000, "{what}: {ms} ms");
    }
    let new = v["new_share_ms"][1].as_u64().unwrap();
    assert!(
        new <= 4000,
        "p95 of a new instance's wait for its share: {new} ms"
    );
}
