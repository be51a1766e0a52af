//! The multiplexed core with an in-memory socket (pure pool logic, no I/O): routing to
//! the least-loaded socket or the first with room, caps, FIFO waiting for room and for sockets, death, GOAWAY,
//! lifetime and retirement with drain, connects that outlive their caller, stalls,
//! resizing and closing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolkit_core::metrics::CloseReason;
use poolkit_core::mux::{Multiplexer, MuxConfig, MuxError, MuxPool, Opened, Routing};
use tokio::sync::oneshot;

/// One in-memory socket.
#[derive(Debug)]
struct Sock {
    id: u64,
    goaway: AtomicBool,
}

/// Opens numbered sockets; the test can fail or slow connects and end sockets.
#[derive(Debug, Default)]
struct Mem {
    next: AtomicU64,
    fail: AtomicBool,
    slow: Mutex<Duration>,
    /// Each open socket's "connection task": dropping the sender ends it.
    ends: Mutex<Vec<(u64, oneshot::Sender<()>)>>,
}

#[derive(Debug)]
struct Refused;
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused by test")
    }
}

#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mem>);

impl Multiplexer for Shared {
    type Socket = Arc<Sock>;
    type Error = Refused;
    async fn connect(&self) -> Result<Opened<Arc<Sock>>, Refused> {
        let slow = *self.0.slow.lock().unwrap();
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        if self.0.fail.load(Ordering::SeqCst) {
            return Err(Refused);
        }
        let id = self.0.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.0.ends.lock().unwrap().push((id, tx));
        Ok(Opened::new(
            Arc::new(Sock {
                id,
                goaway: AtomicBool::new(false),
            }),
            async move {
                let _ = rx.await;
            },
        ))
    }
    fn usable(&self, socket: &Arc<Sock>) -> bool {
        !socket.goaway.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn kill(&self, id: u64) {
        self.0.ends.lock().unwrap().retain(|(i, _)| *i != id);
    }
    fn connects(&self) -> u64 {
        self.0.next.load(Ordering::SeqCst)
    }
}

fn config(sockets: usize) -> MuxConfig {
    let mut c = MuxConfig::new("mem", sockets);
    c.connect_timeout = Duration::from_secs(2);
    c
}

async fn started(sockets: usize, f: impl FnOnce(&mut MuxConfig)) -> (MuxPool<Shared>, Shared) {
    let mem = Shared::default();
    let mut c = config(sockets);
    f(&mut c);
    let pool = MuxPool::start(mem.clone(), c, None);
    pool.wait_ready(Duration::from_secs(2)).await.unwrap();
    wait_for(|| pool.sockets() == sockets).await;
    (pool, mem)
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 2 s");
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn requests_go_to_the_least_loaded_socket() {
    let (pool, _mem) = started(3, |_| {}).await;
    let mut leases = Vec::new();
    for _ in 0..9 {
        leases.push(pool.lease(T).await.unwrap());
    }
    let mut loads = pool.loads();
    loads.sort_unstable();
    assert_eq!(loads, vec![3, 3, 3]);
    assert_eq!(pool.in_flight(), 9);
    // Free two on one socket: the next two go there.
    let id = leases[0].socket_id();
    let mut freed = 0;
    leases.retain(|l| {
        if freed < 2 && l.socket_id() == id {
            freed += 1;
            false
        } else {
            true
        }
    });
    for _ in 0..2 {
        assert_eq!(pool.lease(T).await.unwrap().socket_id(), id);
    }
    drop(leases);
    assert_eq!(pool.in_flight(), 0);
}

#[tokio::test]
async fn fill_first_routing_keeps_requests_on_one_socket_until_it_is_full_or_gone() {
    let (pool, mem) = started(2, |c| {
        c.routing = Routing::FirstWithRoom;
        c.per_socket = 4;
    })
    .await;
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(pool.lease(T).await.unwrap());
    }
    let first = leases[0].socket_id();
    assert!(
        leases.iter().all(|l| l.socket_id() == first),
        "one socket below its cap"
    );
    assert_eq!(pool.loads().iter().filter(|&&l| l > 0).count(), 1);
    // Past the cap the next socket takes the overflow, and only that.
    for _ in 0..3 {
        leases.push(pool.lease(T).await.unwrap());
    }
    let mut loads = pool.loads();
    loads.sort_unstable();
    assert_eq!(loads, vec![2, 4]);
    // Room on the first again: it is the one used.
    leases.retain(|l| l.socket_id() != first);
    let next = pool.lease(T).await.unwrap();
    assert_eq!(next.socket_id(), first);
    // The first gone: everything goes to the other, which is open already.
    mem.kill(next.id);
    drop(next);
    wait_for(|| pool.opened() == 3).await;
    let other = leases[0].socket_id();
    for _ in 0..2 {
        let again = pool.lease(T).await.unwrap();
        assert_eq!(again.socket_id(), other, "the longest open socket first");
    }
}

#[tokio::test]
async fn in_flight_is_capped_per_socket_and_waiters_are_served_in_order() {
    let (pool, _mem) = started(2, |c| c.per_socket = 2).await;
    let held: Vec<_> = futures_held(&pool, 4).await;
    assert!(pool.try_lease().is_none(), "4 = 2 sockets × 2");
    let err = pool.lease(Duration::from_millis(20)).await.unwrap_err();
    assert!(matches!(err, MuxError::Timeout { .. }), "{err}");

    // Three waiters queue; each place given back serves the oldest.
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for k in 0..3 {
        let (p, order) = (pool.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let lease = p.lease(T).await.unwrap();
            order.lock().unwrap().push(k);
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(lease);
        }));
        wait_for(|| pool.pending() == k + 1).await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!((pool.in_flight(), pool.pending()), (0, 0));
}

async fn futures_held(pool: &MuxPool<Shared>, n: usize) -> Vec<poolkit_core::mux::Lease<Shared>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.lease(T).await.unwrap());
    }
    v
}

#[tokio::test]
async fn the_pool_cap_holds_over_all_sockets() {
    let (pool, _mem) = started(3, |c| c.max_in_flight = 4).await;
    let held = futures_held(&pool, 4).await;
    assert!(pool.try_lease().is_none());
    drop(held);
    assert!(pool.try_lease().is_some());
}

#[tokio::test]
async fn a_dead_socket_drains_and_its_slot_reconnects() {
    let (pool, mem) = started(2, |_| {}).await;
    let a = pool.lease(T).await.unwrap();
    let dead = a.socket_id();
    mem.kill(a.id);
    wait_for(|| pool.draining() == 1).await;
    // New requests go to the other socket until the slot reconnects.
    for _ in 0..4 {
        assert_ne!(pool.lease(T).await.unwrap().socket_id(), dead);
    }
    wait_for(|| pool.sockets() == 2).await;
    assert_eq!(pool.reconnects(), 1);
    assert_eq!(pool.open(), 3, "two live, one draining");
    drop(a);
    assert_eq!((pool.draining(), pool.open()), (0, 2));
}

#[tokio::test]
async fn a_socket_that_says_goaway_is_retired_at_the_next_lease() {
    let (pool, mem) = started(1, |_| {}).await;
    let a = pool.lease(T).await.unwrap();
    a.goaway.store(true, Ordering::SeqCst);
    let b = pool.lease(T).await.unwrap();
    assert_ne!(b.socket_id(), a.socket_id(), "served by the replacement");
    assert_eq!(mem.connects(), 2);
    drop((a, b));
    assert_eq!(pool.draining(), 0);
}

#[tokio::test]
async fn retire_takes_a_socket_out_of_routing_and_reopens_it() {
    let (pool, mem) = started(1, |_| {}).await;
    let a = pool.lease(T).await.unwrap();
    pool.retire(&a, CloseReason::Broken);
    pool.retire(&a, CloseReason::Broken); // once only
    let b = pool.lease(T).await.unwrap();
    assert_ne!(b.socket_id(), a.socket_id());
    assert_eq!(mem.connects(), 2);
    assert_eq!(pool.reconnects(), 1);
}

#[tokio::test]
async fn sockets_are_recycled_at_their_lifetime_with_drain() {
    let (pool, mem) = started(2, |c| c.max_lifetime = Some(Duration::from_millis(60))).await;
    let held = pool.lease(T).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        mem.connects() >= 4,
        "both slots reopened: {}",
        mem.connects()
    );
    assert_eq!(pool.sockets(), 2);
    assert!(pool.draining() >= 1, "the held request's socket drains");
    drop(held);
    wait_for(|| pool.draining() == 0).await;
}

#[tokio::test]
async fn callers_wait_for_a_socket_in_order_and_a_connect_outlives_them() {
    let mem = Shared::default();
    mem.0.fail.store(true, Ordering::SeqCst);
    let pool = MuxPool::start(mem.clone(), config(1), None);
    let err = pool.wait_ready(T).await.unwrap_err();
    assert!(matches!(err, MuxError::Connect(_)), "{err}");
    let err = pool.lease(Duration::from_millis(50)).await.unwrap_err();
    match err {
        MuxError::Timeout { connect, .. } => assert!(connect.is_some(), "names the connect error"),
        other => panic!("{other}"),
    }
    // Waiters queue while connects fail; the socket that comes serves them in order.
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for k in 0..5 {
        let (p, order) = (pool.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let _lease = p.lease(T).await.unwrap();
            order.lock().unwrap().push(k);
        }));
        wait_for(|| pool.pending() == k + 1).await;
    }
    *mem.0.slow.lock().unwrap() = Duration::from_millis(50);
    mem.0.fail.store(false, Ordering::SeqCst);
    // A caller with a short timeout gives up during the slow connect; the connect goes on.
    assert!(pool.lease(Duration::from_millis(10)).await.is_err());
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(pool.sockets(), 1);
}

#[tokio::test]
async fn a_cancelled_lease_takes_no_place() {
    let (pool, _mem) = started(1, |c| c.per_socket = 1).await;
    let held = pool.lease(T).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(20), pool.lease(T)).await;
    assert!(waiting.is_err());
    assert_eq!(pool.pending(), 0);
    drop(held);
    assert!(pool.try_lease().is_some());
}

#[tokio::test]
async fn a_stalled_socket_is_avoided_and_reported() {
    let (pool, _mem) = started(2, |c| c.stall = Some(Duration::from_millis(20))).await;
    let slow = pool.lease(T).await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert!(!pool.all_stalled(Duration::from_millis(20)));
    // Both sockets equal by load after this one: the stalled one is still avoided.
    let other = pool.lease(T).await.unwrap();
    assert_ne!(other.socket_id(), slow.socket_id());
    let again = pool.lease(T).await.unwrap();
    assert_ne!(
        again.socket_id(),
        slow.socket_id(),
        "a flowing socket, even with more load"
    );
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert!(pool.all_stalled(Duration::from_millis(20)));
    drop((slow, other, again));
    assert!(!pool.all_stalled(Duration::from_millis(20)));
}

#[tokio::test]
async fn resizing_opens_and_drains_sockets() {
    let mut c = config(1);
    c.max_sockets = 4;
    let mem = Shared::default();
    let pool = MuxPool::start(mem.clone(), c, None);
    pool.wait_ready(T).await.unwrap();
    pool.set_sockets(4);
    wait_for(|| pool.sockets() == 4).await;
    let held = futures_held(&pool, 4).await;
    pool.set_sockets(2);
    wait_for(|| pool.sockets() == 2).await;
    assert_eq!(pool.draining(), 2);
    drop(held);
    assert_eq!(
        (pool.draining(), pool.open(), pool.wanted_sockets()),
        (0, 2, 2)
    );
}

#[tokio::test]
async fn closing_fails_waiters_and_later_callers() {
    let (pool, _mem) = started(1, |c| c.per_socket = 1).await;
    let held = pool.lease(T).await.unwrap();
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.lease(T).await.map(|_| ()) });
    wait_for(|| pool.pending() == 1).await;
    pool.close();
    assert!(matches!(waiter.await.unwrap(), Err(MuxError::Closed)));
    assert!(matches!(pool.lease(T).await, Err(MuxError::Closed)));
    assert_eq!(pool.sockets(), 0);
    drop(held);
    assert_eq!(pool.open(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_few_sockets_and_every_count_settles() {
    let (pool, mem) = started(3, |c| {
        c.per_socket = 16;
        c.max_lifetime = Some(Duration::from_millis(30));
    })
    .await;
    let mut tasks = Vec::new();
    for k in 0..200 {
        let (pool, mem) = (pool.clone(), mem.clone());
        tasks.push(tokio::spawn(async move {
            for r in 0..50 {
                let lease = pool.lease(T).await.unwrap();
                if (k + r) % 97 == 0 {
                    mem.kill(lease.id);
                }
                tokio::task::yield_now().await;
                drop(lease);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!((pool.in_flight(), pool.pending()), (0, 0));
    wait_for(|| pool.sockets() == 3 && pool.draining() == 0).await;
}

#[tokio::test]
async fn complete_reports_the_time_at_the_head_and_idle_leases_skip_busy_sockets() {
    let (pool, _mem) = started(2, |_| {}).await;
    let a = pool.lease(T).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b = pool.try_lease_idle().expect("the other socket is idle");
    assert_ne!(a.socket_id(), b.socket_id());
    assert!(pool.try_lease_idle().is_none(), "both sockets busy");
    let held = a.complete_timed().head;
    assert!(held >= Duration::from_millis(30), "{held:?}");
    let quick = b.complete_timed().head;
    assert!(
        quick < Duration::from_millis(30),
        "b started on its idle socket just now: {quick:?}"
    );
    assert_eq!(pool.in_flight(), 0);
}
