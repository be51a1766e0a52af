//! The pool's shared connections: statements run on the `Pool` itself are pipelined over
//! a few tokio-postgres clients through poolkit-core's multiplexed core
//! ([`poolkit_core::mux`]). This file holds the connection side (opening a shared client,
//! how many there are, the `auto` controller) and the session-state check; the
//! statements themselves are in `pipelined.rs`.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use poolkit_core::Operation;
use poolkit_core::autosize::{Controller, Sample};
use poolkit_core::mux::{Multiplexer, MuxConfig, MuxPool, Opened};
use tokio_postgres::Client;

use crate::connect::ConnectError;
use crate::manager::Manager;

/// Statements in flight on one shared connection at most; callers beyond it wait first
/// come, first served in the multiplexed core's gate. The server runs a connection's
/// statements one after another, so a deeper pipeline does not go faster: a few hundred
/// cover the round trip and let writes batch. Unbounded, 10,000 callers were all in
/// flight at once, their order left to the runtime's scheduling (p95 about twice the
/// p50); capped, they keep their order in the gate (docs/benchmarks.md). Two connections
/// carry 1,024 before anyone waits, so 1,000 callers never do.
pub(crate) const DEPTH: usize = 512;

/// The default `P_SHARED_SPILL`.
pub(crate) const DEFAULT_SPILL: Duration = Duration::from_millis(5);

/// How many shared connections a pool keeps (`P_SHARED_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SharedConnections {
    /// Sized from what it measures (the default), by the controller of `P_POOL_SIZE=auto`
    /// (its own instance): starts at 1, grows while statements queue behind busy
    /// connections and another connection adds throughput, backs off when it does not,
    /// shrinks when they idle. At most a quarter of the ceiling (at least 1, at most 16);
    /// off when the ceiling is 1.
    #[default]
    Auto,
    /// This many, always.
    Fixed(u32),
    /// None: statements on the pool check out a connection (`P_SHARED_CONNECTIONS=0`).
    Off,
}

impl SharedConnections {
    /// Parses `auto`, `0`/`off` or a number.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Some(Self::Auto);
        }
        if s.eq_ignore_ascii_case("off") {
            return Some(Self::Off);
        }
        match s.parse::<u32>().ok()? {
            0 => Some(Self::Off),
            n => Some(Self::Fixed(n)),
        }
    }

    /// (first, most) shared connections for a pool whose ceiling is `ceiling`; `None`
    /// when off.
    pub(crate) fn range(self, ceiling: u32) -> Option<(usize, usize)> {
        match self {
            Self::Off => None,
            Self::Fixed(n) => Some((n as usize, n as usize)),
            Self::Auto if ceiling < 2 => None,
            Self::Auto => {
                let most = (ceiling / 4).clamp(1, 16) as usize;
                Some((1, most))
            }
        }
    }
}

impl fmt::Display for SharedConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Off => f.write_str("0"),
        }
    }
}

/// Whether a shared connection may open now, given how many shared connections are open
/// or opening (the one asking included): the pool's server connections, exclusive and
/// shared, stay within its ceiling or fleet share.
pub(crate) type Room = Box<dyn Fn(u32) -> bool + Send + Sync>;

/// Opens shared tokio-postgres clients with the pool's manager (TLS, credentials,
/// resolver, `target_session_attrs`, keep-alive and `statement_timeout` as for every
/// connection); a client's end is seen when its connection task ends.
///
/// A connection opens only when it fits beside the exclusive ones ([`Room`]). The pool
/// caps its exclusive side for the shared connections before they open, but a connection
/// checked out above the new cap closes only when it comes back: a shared connection
/// opened at once would put the pool one over its ceiling (a fleet one over its budget)
/// until then. So the connect waits for the room, within its connect timeout.
#[derive(Clone)]
pub(crate) struct PgMux {
    manager: Manager,
    /// Shared connections open or opening.
    held: Arc<AtomicUsize>,
    room: Arc<Room>,
}

impl fmt::Debug for PgMux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgMux")
            .field("manager", &self.manager)
            .field("held", &self.held.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// One shared connection open or opening, counted in [`PgMux::held`] until dropped.
struct Held(Arc<AtomicUsize>);

impl Held {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Relaxed);
        Self(Arc::clone(count))
    }

    fn count(&self) -> u32 {
        u32::try_from(self.0.load(Relaxed)).unwrap_or(u32::MAX)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl PgMux {
    /// Shared connections open or opening, until each one's connection task ends.
    fn held(&self) -> usize {
        self.held.load(Relaxed)
    }
}

impl Multiplexer for PgMux {
    type Socket = Client;
    type Error = ConnectError;

    async fn connect(&self) -> Result<Opened<Client>, ConnectError> {
        let held = Held::new(&self.held);
        let mut pause = Duration::from_millis(1);
        while !(self.room)(held.count()) {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        let (client, ended) = self.manager.connect_watched().await?;
        // Counted until the core lets the connection go (it drops this future then) or
        // its connection task ends.
        Ok(Opened::new(client, async move {
            let _held = held;
            let _ = ended.await;
        }))
    }

    fn usable(&self, client: &Client) -> bool {
        !client.is_closed()
    }
}

/// Statements seen to hold a shared connection's head longer than the spill bound, by SQL
/// text: they then run on a shared connection only when one is idle, else on a checkout,
/// so the fast statements pipelined behind them are not held up.
///
/// A run is slow when it held its connection's head longer than the bound. Two slow
/// runs in a row mark a statement, or one that held an idle connection's head ten times
/// longer than the bound (a busy runtime can delay a fast statement's task past the
/// bound now and then; hardly ten times over). A fast run clears it, with one care: how
/// long a statement held the head is read when the task that waited for its answer
/// runs, and on a busy runtime tasks do not always run in the order their answers came.
/// A slow statement's task may run after the fast one queued behind it, which then reads
/// the slow one's time as its own and leaves the slow one a short one. A statement marked
/// slow runs alone (on an idle shared connection or a checkout), and only its whole time
/// from lease to answer, which such a mix-up cannot shorten, clears it: it never goes
/// back into the pipeline by mistake.
#[derive(Debug, Default)]
pub(crate) struct SlowStatements {
    any: std::sync::atomic::AtomicBool,
    /// Strikes, and whether a run alone took more than [`CLEARLY_SLOW`] times the bound
    /// (confirmed: a fast statement hardly looks that slow on its own).
    strikes: std::sync::RwLock<std::collections::HashMap<Box<str>, (u8, bool)>>,
}

/// Strikes that mark a statement slow: a slow run gives one, a run alone over
/// [`CLEARLY_SLOW`] times the bound all of them.
const STRIKES: u8 = 2;

/// A run alone this many times over the bound is slow at once.
const CLEARLY_SLOW: u32 = 10;

/// More distinct slow statements than this and the set starts over.
const SLOW_LIMIT: usize = 1024;

/// How a run of a statement was measured (see [`SlowStatements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// How long it held its connection's head (on a checkout: its whole time).
    pub(crate) head: Duration,
    /// Its whole time from lease to answer, when that is its own service time: it
    /// started on an idle shared connection or ran on a checkout (`None`: pipelined
    /// behind others).
    pub(crate) alone: Option<Duration>,
}

impl SlowStatements {
    /// Whether `sql` is marked slow.
    pub(crate) fn is_slow(&self, sql: &str) -> bool {
        self.slow(sql).is_some()
    }

    /// `Some` when `sql` is marked slow, with whether that was confirmed by a run of its
    /// own (alone on a connection) over [`CLEARLY_SLOW`] times the bound: a statement
    /// marked from its time at a pipeline's head, or a little over the bound alone, may be
    /// a fast one that a busy runtime (a loaded machine's scheduler takes a thread away
    /// for several milliseconds) or a mix-up made look slow.
    pub(crate) fn slow(&self, sql: &str) -> Option<bool> {
        if !self.any.load(Relaxed) {
            return None;
        }
        self.strikes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sql)
            .filter(|(s, _)| *s >= STRIKES)
            .map(|(_, confirmed)| *confirmed)
    }

    /// `sql` ran as `run` (`bound`: the spill bound).
    pub(crate) fn observe(&self, sql: &str, run: Run, bound: Duration) {
        if run.head > bound {
            let strikes = if run.alone.is_some() && run.head > bound * CLEARLY_SLOW {
                STRIKES
            } else {
                1
            };
            let mut map = self
                .strikes
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() >= SLOW_LIMIT {
                map.clear();
            }
            let (s, confirmed) = map.entry(sql.into()).or_insert((0, false));
            *s = s.saturating_add(strikes).min(STRIKES);
            *confirmed |= strikes == STRIKES;
            self.any.store(true, Relaxed);
        } else if run.alone.is_none_or(|whole| whole <= bound) && self.any.load(Relaxed) {
            let known = self
                .strikes
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(sql);
            if known {
                let mut map = self
                    .strikes
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.remove(sql);
                self.any.store(!map.is_empty(), Relaxed);
            }
        }
    }
}

/// The shared side of one pool.
pub(crate) struct Shared {
    /// Statements known to be slow.
    pub(crate) slow: SlowStatements,
    pub(crate) mux: MuxPool<PgMux>,
    pub(crate) spill: Duration,
    /// Statements sent to an exclusive checkout because every shared connection stalled.
    pub(crate) spilled: AtomicU64,
    /// Statements run on the shared connections.
    pub(crate) statements: AtomicU64,
    /// Statements confirmed slow waiting for a checkout now (not those only marked from
    /// their time at a pipeline's head: a fast statement marked by mistake sends its
    /// callers to the checkouts until its first run there clears it, and were the others
    /// to follow them, a burst would keep the whole pool on checkouts for a while).
    waiting: AtomicUsize,

    /// Of the spilled statements, those sent to a checkout because every shared
    /// connection was stalled: the only spills that say the shared connections are too
    /// few (a known-slow statement, or one waiting its turn behind those, would go to a
    /// checkout with any number of them).
    pub(crate) stalled: AtomicU64,
    pub(crate) auto: bool,
    /// The most shared connections (the range's top).
    pub(crate) most: usize,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("mux", &self.mux)
            .field("spill", &self.spill)
            .field("auto", &self.auto)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Starts the shared connections (they open in the background), at most `limit` (a
    /// fleet share) of them.
    pub(crate) fn start(
        manager: Manager,
        config: &crate::Config,
        telemetry: Arc<poolkit_core::Telemetry>,
        limit: Option<u32>,
        room: Room,
    ) -> Option<Arc<Self>> {
        let (first, most) = config.shared.range(config.pool.ceiling())?;
        let limit = limit.map_or(usize::MAX, |l| l as usize);
        let first = first.min(limit).max(1);
        let mut mc = MuxConfig::new(&config.pool.name, first);
        mc.max_sockets = most.max(first);
        mc.connect_timeout = config
            .connect_timeout
            .unwrap_or(config.pool.acquire_timeout.min(Duration::from_secs(10)));
        mc.max_lifetime = config.pool.max_lifetime;
        mc.stall = Some(config.shared_spill);
        mc.per_socket = DEPTH;
        // The ceiling counts server connections, which checkouts share: a shared
        // connection is `used` while it carries a statement (statements in flight are in
        // `Pool::shared_connections()`), so utilization stays a share of connections.
        mc.used_gauge = poolkit_core::mux::UsedGauge::Sockets;
        let mux = MuxPool::start(
            PgMux {
                manager,
                held: Arc::new(AtomicUsize::new(0)),
                room: Arc::new(room),
            },
            mc,
            Some(telemetry),
        );
        Some(Arc::new(Self {
            mux,
            spill: config.shared_spill,
            spilled: AtomicU64::new(0),
            statements: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            stalled: AtomicU64::new(0),
            slow: SlowStatements::default(),
            auto: config.shared == SharedConnections::Auto,
            most,
        }))
    }

    /// Spilled statements so far.
    pub(crate) fn spilled(&self) -> u64 {
        self.spilled.load(Relaxed)
    }

    /// Whether checkouts queue long: statements confirmed slow wait for one.
    pub(crate) fn queue_long(&self) -> bool {
        self.waiting.load(Relaxed) > 0
    }

    /// Counts one statement waiting for a checkout until the guard drops (the checkout
    /// came, failed, or the caller gave up).
    pub(crate) fn in_line(&self) -> InLine<'_> {
        self.waiting.fetch_add(1, Relaxed);
        InLine(&self.waiting)
    }
}

/// One statement on the pool waiting for a checkout (see [`Shared::in_line`]).
pub(crate) struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What a statement leaves behind on a shared connection, if anything: the kind, for
/// [`crate::Error::SessionState`]. Looks at the first keyword of each `;`-separated
/// statement and for the session-level functions; statements that change session state
/// from inside a function or a `DO` block cannot be seen (docs/postgres.md lists them).
///
/// This runs before every statement on the pool, so it reads the SQL once: one search
/// finds the `;`s and the `_`s; the keywords are told apart by their first letter, and
/// the function names are looked for only around the `_`s (each has one at a fixed
/// place). Found with callgrind: searching the whole text once per function name cost
/// 4,700 instructions for pgbench's 52-byte statement, a third of a raw client's whole
/// cost.
#[must_use]
pub fn shared_refusal(sql: &str) -> Option<&'static str> {
    const ADVISORY: [&[u8]; 3] = [
        b"pg_advisory_lock",
        b"pg_try_advisory_lock",
        b"pg_advisory_unlock",
    ];
    let b = sql.as_bytes();
    let at = |from: usize, name: &[u8]| {
        b.get(from..from + name.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
    };
    // A statement's keyword counts before any function in the whole text.
    let (mut start, mut advisory, mut set_config) = (0, false, false);
    let mut seen = |i: usize| {
        if b[i] == b';' {
            // `;` is ASCII: `i` is a character boundary.
            let kind = refused_keyword(&sql[start..i]);
            start = i + 1;
            kind
        } else {
            advisory |= i >= 2 && ADVISORY.iter().any(|name| at(i - 2, name));
            set_config |= i >= 3 && at(i - 3, b"set_config(");
            None
        }
    };
    for i in memchr::memchr2_iter(b';', b'_', b) {
        if let Some(kind) = seen(i) {
            return Some(kind);
        }
    }
    if let Some(kind) = refused_keyword(&sql[start..]) {
        return Some(kind);
    }
    if advisory {
        return Some("a session advisory lock (use pg_advisory_xact_lock)");
    }
    if set_config && !contains_ci(sql, "true") {
        return Some("set_config(…, false)");
    }
    None
}

/// What a statement on the pool needs from its SQL text before it runs: the session-state
/// refusal ([`shared_refusal`]) and the `operation` label ([`Operation::sql`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SqlFacts {
    pub(crate) refusal: Option<&'static str>,
    pub(crate) operation: Operation,
}

impl SqlFacts {
    fn of(sql: &str) -> Self {
        Self {
            refusal: shared_refusal(sql),
            operation: Operation::sql(sql),
        }
    }
}

/// Texts remembered per thread, and the longest remembered.
const FACT_WAYS: usize = 16;
const FACT_MAX_LEN: usize = 2048;

/// One remembered text (a copy) and its facts.
type Remembered = Option<(Box<str>, SqlFacts)>;

thread_local! {
    /// The facts of the last texts seen on this thread, by a hash of their length and
    /// three of their bytes (so a text built anew each call finds its entry too).
    static FACTS: RefCell<[Remembered; FACT_WAYS]> =
        const { RefCell::new([const { None }; FACT_WAYS]) };
}

/// [`SqlFacts`] of `sql`, remembered per thread: an application runs the same few texts
/// over and over, and reading one again (a comparison of its bytes with the copy kept)
/// costs a fraction of working them out (some 500 instructions for pgbench's statement,
/// callgrind). A text is taken as remembered only when all its bytes match.
pub(crate) fn sql_facts(sql: &str) -> SqlFacts {
    let b = sql.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return SqlFacts::of(sql);
    };
    if b.len() > FACT_MAX_LEN {
        return SqlFacts::of(sql);
    }
    let key = (b.len() as u64)
        ^ (u64::from(first) << 16)
        ^ (u64::from(b[b.len() / 2]) << 24)
        ^ (u64::from(last) << 32);
    #[allow(clippy::cast_possible_truncation)] // the top 4 bits
    let way = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % FACT_WAYS;
    FACTS
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let entry = &mut cache[way];
            if let Some((text, facts)) = entry.as_ref()
                && **text == *sql
            {
                return *facts;
            }
            let facts = SqlFacts::of(sql);
            *entry = Some((sql.into(), facts));
            facts
        })
        // The thread is ending.
        .unwrap_or_else(|_| SqlFacts::of(sql))
}

/// The kind of session state `stmt`'s first keyword leaves, if any. The keywords are
/// told apart by length and first letter, so a word that is none of them (`SELECT`,
/// `INSERT`, `UPDATE`, …) is set aside after two comparisons.
fn refused_keyword(stmt: &str) -> Option<&'static str> {
    const CURSOR: &str = "a cursor (DECLARE/FETCH/CLOSE)";
    const END: &str = "COMMIT/ROLLBACK";
    let word = first_word(stmt);
    // `first_word` holds ASCII letters only.
    let first = word.as_bytes().first().map(u8::to_ascii_lowercase)?;
    let is = |w: &str| word.eq_ignore_ascii_case(w);
    let next_is = |words: &[&str]| {
        let next = first_word(after_word(stmt));
        words.iter().any(|w| next.eq_ignore_ascii_case(w))
    };
    match (word.len(), first) {
        (3, b's') if is("set") => (!next_is(&["local", "transaction"])).then_some("SET"),
        (3, b'e') if is("end") => Some(END),
        (4, b'm') if is("move") => Some(CURSOR),
        (5, b'a') if is("abort") => Some(END),
        (5, b'b') if is("begin") => Some("BEGIN"),
        (5, b'c') if is("close") => Some(CURSOR),
        (5, b'f') if is("fetch") => Some(CURSOR),
        (5, b'r') if is("reset") => Some("RESET"),
        (5, b's') if is("start") => Some("BEGIN"),
        (6, b'c') if is("commit") => Some(END),
        (6, b'c') if is("create") => next_is(&["temp", "temporary"]).then_some("a temporary table"),
        (6, b'l') if is("listen") => Some("LISTEN"),
        (7, b'd') if is("declare") => Some(CURSOR),
        (7, b'd') if is("discard") => Some("DISCARD"),
        (7, b'p') if is("prepare") => Some("PREPARE"),
        (7, b'r') if is("release") => Some("SAVEPOINT"),
        (8, b'r') if is("rollback") => Some(END),
        (8, b'u') if is("unlisten") => Some("UNLISTEN"),
        (9, b's') if is("savepoint") => Some("SAVEPOINT"),
        (10, b'd') if is("deallocate") => Some("DEALLOCATE"),
        _ => None,
    }
}

/// ASCII whitespace as `char::is_whitespace` has it (with the vertical tab, which
/// `u8::is_ascii_whitespace` leaves out).
fn ascii_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r')
}

/// The statement without leading blanks and `--` / `/* */` comments: ASCII blanks are
/// skipped a byte at a time; a comment or a non-ASCII character (Unicode whitespace)
/// next takes the general path.
fn skip_blank(s: &str) -> &str {
    let b = s.as_bytes();
    let i = b.iter().position(|&c| !ascii_blank(c)).unwrap_or(b.len());
    match b.get(i) {
        // Only ASCII bytes were skipped: `i` is a character boundary.
        Some(&c) if c >= 0x80 || c == b'-' || c == b'/' => skip_blank_general(&s[i..]),
        _ => &s[i..],
    }
}

fn skip_blank_general(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return s;
        }
    }
}

/// Where the leading ASCII letters of `s` end (a non-ASCII character's first byte is not
/// one, so this is a character boundary).
fn word_end(s: &str) -> usize {
    s.bytes()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(s.len())
}

fn first_word(s: &str) -> &str {
    let s = skip_blank(s);
    &s[..word_end(s)]
}

fn after_word(s: &str) -> &str {
    let s = skip_blank(s);
    &s[word_end(s)..]
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.as_bytes()
        .windows(n.len())
        .any(|w| w.eq_ignore_ascii_case(n))
}

/// What the `auto` task needs from the pool around the shared side.
pub(crate) struct AutoHooks {
    /// The most shared connections allowed now: the range's top
    /// ([`SharedConnections::range`]), under the fleet share.
    pub(crate) ceiling: Box<dyn Fn() -> u32 + Send + Sync>,
    /// Whether callers wait for a checkout now.
    pub(crate) checkouts_waiting: Box<dyn Fn() -> bool + Send + Sync>,
    /// Called with the new count after a resize (the pool caps its checkouts for it).
    pub(crate) on_resize: Box<dyn Fn(usize) + Send + Sync>,
}

/// Polls of the shared connections per interval (how busy their heads are is their
/// mean).
const POLLS: u32 = 20;

/// Low use for this long (or the idle timeout, if shorter) and the shared connections
/// shrink: each one is a checkout the exclusive side goes without.
const SHRINK_AFTER: Duration = Duration::from_secs(5);

/// What one interval's polls of the shared side saw, turned into the controller's
/// [`Sample`] by [`Polls::sample`].
struct Polls {
    at: std::time::Instant,
    statements: u64,
    stalled: u64,
    n: u32,
    /// Sum over the polls of connections with a statement at their head.
    busy: usize,
    /// Sum over the polls of statements queued behind a head or for room.
    queued: usize,
    /// Polls that saw any statement queued.
    queued_polls: u32,
    /// A confirmed-slow statement waited for a checkout at some poll.
    long: bool,
}

impl Polls {
    fn new(shared: &Shared) -> Self {
        Self {
            at: std::time::Instant::now(),
            statements: shared.statements.load(Relaxed),
            stalled: shared.stalled.load(Relaxed),
            n: 0,
            busy: 0,
            queued: 0,
            queued_polls: 0,
            long: false,
        }
    }

    fn poll(&mut self, shared: &Shared) {
        let loads = shared.mux.loads();
        let busy = loads.iter().filter(|&&l| l > 0).count();
        let behind = loads.iter().map(|l| l.saturating_sub(1)).sum::<usize>();
        let queued = behind + shared.mux.pending();
        self.n += 1;
        self.busy += busy;
        self.queued += queued;
        self.queued_polls += u32::from(queued > 0);
        self.long |= shared.queue_long();
    }

    /// The interval's sample, in the units of [`Controller::pipelined`]: a unit is a
    /// shared connection, *busy* while a statement is at its head (its backend at work),
    /// and its hold time the mean time a statement held a head: by Little's law the
    /// connections busy on average over the statements finished per second. Statements
    /// in flight would be the wrong measure: a pipeline carries hundreds whatever the
    /// number of connections, while its backend runs one at a time. Callers *queue* when
    /// statements wait behind a head or for room (another connection would run them in
    /// parallel), or spilled to a checkout because every shared connection stalled.
    ///
    /// What the controller cannot know, and the sample says for it: no queue counts
    /// while a statement confirmed slow waits for a checkout, or while callers wait for
    /// a checkout and no statement spilled for a stall. Another shared connection would
    /// be one checkout fewer, taken from the slow statements, which no number of shared
    /// connections would run (they run alone).
    #[allow(clippy::cast_precision_loss)]
    fn sample(&mut self, shared: &Shared, hooks: &AutoHooks) -> Sample {
        let next = Self::new(shared);
        let elapsed = next.at.saturating_duration_since(self.at);
        let statements = next.statements.saturating_sub(self.statements);
        let stalled = next.stalled.saturating_sub(self.stalled);
        let n = f64::from(self.n.max(1));
        let busy = self.busy as f64 / n;
        let blocked = self.long || (stalled == 0 && (hooks.checkouts_waiting)());
        let (pending, waited_share) = if blocked {
            (0, 0.0)
        } else {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let queued = (self.queued as f64 / n).round() as u64;
            (queued + stalled, f64::from(self.queued_polls) / n)
        };
        let s = Sample {
            elapsed,
            acquires: statements,
            hold_secs: if statements == 0 {
                0.0
            } else {
                busy * elapsed.as_secs_f64() / statements as f64
            },
            returns: statements,
            busy: shared.mux.loads().iter().filter(|&&l| l > 0).count() as u64,
            pending,
            waited_share,
            ceiling: (hooks.ceiling)(),
        };
        *self = next;
        s
    }
}

/// `P_SHARED_CONNECTIONS=auto`: the shared connections are sized by the same controller
/// as `P_POOL_SIZE=auto` ([`Controller::pipelined`]), an instance of their own, fed once
/// per `every` (`P_POOL_AUTO_INTERVAL`) a sample of the shared statements (see
/// [`Polls::sample`]). It starts at 1, grows while statements queue behind busy heads and
/// another connection adds statements per second, backs off when the heads slow down
/// with no more throughput (the server, or the client, is out of cores), and shrinks
/// after [`SHRINK_AFTER`] of low use; within `1..=ceiling` (the range's top, under a
/// fleet share). The pool caps its checkouts for each change (`on_resize`), and a new
/// connection opens only when it fits beside them (see [`PgMux`]).
pub(crate) fn start_auto(
    shared: &Arc<Shared>,
    hooks: AutoHooks,
    every: Duration,
    idle: Option<Duration>,
) {
    let weak = Arc::downgrade(shared);
    let every = every.max(Duration::from_millis(10));
    let shrink = idle.unwrap_or(SHRINK_AFTER).min(SHRINK_AFTER);
    let shrink_after =
        u32::try_from(shrink.as_millis() / every.as_millis().max(1)).unwrap_or(u32::MAX);
    let mut controller = Controller::pipelined(1, shrink_after);
    let mut polls = Polls::new(shared);
    let mut reserved = shared.mux.wanted_sockets();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every / POLLS);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            if shared.mux.is_closed() {
                return;
            }
            polls.poll(&shared);
            // The checkouts get a shared connection's place back only once it closed (a
            // retired one finishes its statements first, and its backend is held until
            // its task ends): the pool never holds more than its ceiling.
            let reserve = shared
                .mux
                .wanted_sockets()
                .max(shared.mux.multiplexer().held());
            if reserve != reserved {
                reserved = reserve;
                (hooks.on_resize)(reserve);
            }
            if polls.n < POLLS {
                continue;
            }
            let sample = polls.sample(&shared, &hooks);
            let Some(change) = controller.decide(&sample) else {
                continue;
            };
            tracing::debug!(
                pool = %shared.mux.config().name,
                from = change.from,
                to = change.to,
                ceiling = sample.ceiling,
                throughput = sample.throughput(),
                head_ms = sample.hold_secs * 1e3,
                reason = %change.reason,
                "shared connections resized"
            );
            shared.mux.set_sockets(change.to as usize);
            if change.to as usize > reserved {
                reserved = change.to as usize;
                (hooks.on_resize)(reserved);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_is_refused_on_shared_connections() {
        for (sql, kind) in [
            ("SET search_path = app", "SET"),
            ("  set statement_timeout to 5", "SET"),
            ("RESET ALL", "RESET"),
            ("LISTEN jobs", "LISTEN"),
            ("unlisten *", "UNLISTEN"),
            ("PREPARE q AS SELECT 1", "PREPARE"),
            ("BEGIN", "BEGIN"),
            ("start transaction", "BEGIN"),
            ("SELECT 1; COMMIT", "COMMIT/ROLLBACK"),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                "a cursor (DECLARE/FETCH/CLOSE)",
            ),
            ("create temp table t (x int)", "a temporary table"),
            ("-- note\nSET x = 1", "SET"),
            ("/* c */ DISCARD ALL", "DISCARD"),
        ] {
            assert_eq!(shared_refusal(sql), Some(kind), "{sql}");
        }
        assert!(shared_refusal("select pg_advisory_lock(1)").is_some());
        assert!(shared_refusal("select set_config('a.b', '1', false)").is_some());
        for sql in [
            "SELECT 1",
            "SET LOCAL statement_timeout = 5",
            "select pg_advisory_xact_lock(1)",
            "select set_config('a.b', '1', true)",
            "INSERT INTO settings (name) VALUES ('begin')",
            "create table t (x int)",
            "UPDATE t SET x = 1",
        ] {
            assert_eq!(shared_refusal(sql), None, "{sql}");
        }
    }

    /// The check as first written (every keyword compared in turn, each function name
    /// searched for over the whole text), kept to hold the faster one to its answers.
    fn reference_refusal(sql: &str) -> Option<&'static str> {
        fn skip(mut s: &str) -> &str {
            loop {
                s = s.trim_start();
                if let Some(rest) = s.strip_prefix("--") {
                    s = rest.find('\n').map_or("", |i| &rest[i..]);
                } else if let Some(rest) = s.strip_prefix("/*") {
                    s = rest.find("*/").map_or("", |i| &rest[i + 2..]);
                } else {
                    return s;
                }
            }
        }
        fn word(s: &str) -> &str {
            let s = skip(s);
            &s[..s
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(s.len())]
        }
        fn after(s: &str) -> &str {
            let s = skip(s);
            &s[s.find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(s.len())..]
        }
        for stmt in sql.split(';') {
            let w = word(stmt);
            let is = |x: &str| w.eq_ignore_ascii_case(x);
            let kind = if is("set") {
                let next = word(after(stmt));
                if next.eq_ignore_ascii_case("local") || next.eq_ignore_ascii_case("transaction") {
                    None
                } else {
                    Some("SET")
                }
            } else if is("reset") {
                Some("RESET")
            } else if is("listen") {
                Some("LISTEN")
            } else if is("unlisten") {
                Some("UNLISTEN")
            } else if is("prepare") {
                Some("PREPARE")
            } else if is("deallocate") {
                Some("DEALLOCATE")
            } else if is("begin") || is("start") {
                Some("BEGIN")
            } else if is("commit") || is("end") || is("rollback") || is("abort") {
                Some("COMMIT/ROLLBACK")
            } else if is("savepoint") || is("release") {
                Some("SAVEPOINT")
            } else if is("declare") || is("fetch") || is("move") || is("close") {
                Some("a cursor (DECLARE/FETCH/CLOSE)")
            } else if is("discard") {
                Some("DISCARD")
            } else if is("create") {
                let next = word(after(stmt));
                (next.eq_ignore_ascii_case("temp") || next.eq_ignore_ascii_case("temporary"))
                    .then_some("a temporary table")
            } else {
                None
            };
            if kind.is_some() {
                return kind;
            }
        }
        if contains_ci(sql, "pg_advisory_lock")
            || contains_ci(sql, "pg_try_advisory_lock")
            || contains_ci(sql, "pg_advisory_unlock")
        {
            return Some("a session advisory lock (use pg_advisory_xact_lock)");
        }
        if contains_ci(sql, "set_config(") && !contains_ci(sql, "true") {
            return Some("set_config(…, false)");
        }
        None
    }

    /// The fast check gives the reference's answer on every string built from pieces
    /// that sit at its edges: each keyword in both cases, the words after SET and CREATE,
    /// blanks (the vertical tab, Unicode ones), comments, `;`, the function names, names
    /// cut short, `_`s at the text's ends, and non-ASCII text next to them.
    #[test]
    fn the_fast_refusal_answers_as_the_reference() {
        let pieces = [
            "",
            " ",
            "\t",
            "\x0B",
            "\u{a0}",
            "\u{2003}",
            "\n",
            "-- c\n",
            "/* c */",
            "/* open",
            "--",
            "-",
            "/",
            "(",
            ";",
            "é",
            "_",
            "__",
            "x_",
            "SELECT 1",
            "select",
            "set",
            "SET",
            "Set",
            "local",
            "LOCAL",
            "transaction",
            "x = 1",
            "reset",
            "listen",
            "unlisten",
            "prepare",
            "deallocate",
            "begin",
            "start",
            "commit",
            "end",
            "rollback",
            "abort",
            "savepoint",
            "release",
            "declare",
            "fetch",
            "move",
            "close",
            "discard",
            "create",
            "CREATE",
            "temp",
            "TEMPORARY",
            "table",
            "ends",
            "settle",
            "sets",
            "créate",
            "pg_advisory_lock(1)",
            "PG_ADVISORY_LOCK",
            "pg_try_advisory_lock",
            "pg_advisory_unlock",
            "pg_advisory_xact_lock(1)",
            "pg_advisory_loc",
            "pg_",
            "g_advisory_lock",
            "éPg_advisory_unlock",
            "set_config('a', '1', false)",
            "SET_CONFIG(",
            "set_config",
            "set_confi(",
            "true",
            "TRUE",
            "tru",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for sep in ["", " ", ";", "_", "\u{a0}"] {
                    // Short, and long enough for the vector search's wide steps.
                    let pad = " ".repeat(64);
                    for sql in [
                        format!("{a}{sep}{b}"),
                        format!("{b}{sep}{a} {b}"),
                        format!("{a}{pad}{sep}{b}"),
                    ] {
                        assert_eq!(shared_refusal(&sql), reference_refusal(&sql), "{sql:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, pieces.len() * pieces.len() * 5 * 3);
    }

    /// The facts remembered per thread are those worked out afresh, for texts seen
    /// again, texts that share an entry (same length, first, middle and last byte: only
    /// the bytes between differ) and texts too long to keep.
    #[test]
    fn remembered_facts_are_the_texts_own() {
        let long = format!("SET x = 1; {}", "a".repeat(FACT_MAX_LEN));
        let texts = [
            "SELECT 1",
            "SET x = 1",
            "SAT x = 1", // the same entry as "SET x = 1"
            "select pg_advisory_lock(1)",
            "select pg_advisory_xact_lock(1)",
            "BEGIN",
            "",
            " ",
            long.as_str(),
            "(SELECT 1)",
        ];
        for _ in 0..3 {
            for t in texts {
                let built = String::from(t); // a text built anew: another address
                for sql in [t, built.as_str()] {
                    assert_eq!(
                        sql_facts(sql),
                        SqlFacts {
                            refusal: shared_refusal(sql),
                            operation: Operation::sql(sql),
                        },
                        "{sql:?}"
                    );
                }
            }
        }
        assert_eq!(sql_facts("SET x = 1").refusal, Some("SET"));
        assert_eq!(sql_facts("SAT x = 1").refusal, None);
        assert_eq!(sql_facts("SET x = 1").refusal, Some("SET"));
        assert_eq!(sql_facts("(SELECT 1)").operation.as_str(), "select");
    }

    #[test]
    fn slow_runs_mark_a_statement_and_a_fast_one_clears_it() {
        let slow = SlowStatements::default();
        let bound = Duration::from_millis(5);
        let ms = Duration::from_millis;
        let piped = |head| Run { head, alone: None };
        let alone = |d| Run {
            head: d,
            alone: Some(d),
        };
        let sleep = "SELECT pg_sleep(1)";
        slow.observe(sleep, piped(ms(20)), bound);
        assert!(!slow.is_slow(sleep), "one slow run is not enough");
        slow.observe(sleep, piped(ms(20)), bound);
        assert_eq!(
            slow.slow(sleep),
            Some(false),
            "two in a row are, unconfirmed"
        );
        assert!(!slow.is_slow("SELECT 1"));
        slow.observe("SELECT 1", piped(ms(0)), bound);
        assert!(slow.is_slow(sleep));
        // Its task ran after the fast one behind it: a short time at the head, but its
        // whole time says it was slow.
        slow.observe(
            sleep,
            Run {
                head: ms(0),
                alone: Some(ms(1000)),
            },
            bound,
        );
        assert_eq!(slow.slow(sleep), Some(false), "not cleared by a mix-up");
        slow.observe(sleep, alone(ms(20)), bound);
        assert_eq!(
            slow.slow(sleep),
            Some(false),
            "a little slow alone: not confirmed"
        );
        slow.observe(sleep, alone(ms(1000)), bound);
        assert_eq!(
            slow.slow(sleep),
            Some(true),
            "confirmed by a run alone ten times over"
        );
        slow.observe(sleep, alone(ms(1)), bound);
        assert!(!slow.is_slow(sleep), "a fast run clears it");
        slow.observe(sleep, alone(ms(20)), bound);
        assert!(
            !slow.is_slow(sleep),
            "a little over the bound once is not enough"
        );
        slow.observe(sleep, alone(ms(1)), bound);
        slow.observe(sleep, alone(ms(60)), bound);
        assert!(
            slow.is_slow(sleep),
            "ten times over on an idle connection is"
        );
        slow.observe(sleep, alone(ms(1)), bound);
        slow.observe(sleep, piped(ms(20)), bound);
        slow.observe(sleep, piped(ms(1)), bound);
        slow.observe(sleep, piped(ms(20)), bound);
        assert!(!slow.is_slow(sleep), "strikes count in a row only");
    }

    #[test]
    fn shared_connections_parse_and_range() {
        assert_eq!(
            SharedConnections::parse("auto"),
            Some(SharedConnections::Auto)
        );
        assert_eq!(SharedConnections::parse("0"), Some(SharedConnections::Off));
        assert_eq!(
            SharedConnections::parse("4"),
            Some(SharedConnections::Fixed(4))
        );
        assert_eq!(SharedConnections::parse("many"), None);
        assert_eq!(SharedConnections::Auto.range(1), None);
        assert_eq!(SharedConnections::Auto.range(2), Some((1, 1)));
        assert_eq!(SharedConnections::Auto.range(20), Some((1, 5)));
        assert_eq!(SharedConnections::Fixed(3).range(20), Some((3, 3)));
    }
}
